//! The one place that decides what a write does to a conversation.
//!
//! A store loads the conversation's state (locked for update), asks [`plan`] (a client's
//! request) or [`plan_expiry`] (the server's own end for inactivity) what to do, and
//! writes the returned [`Plan`] in one transaction: the new state, the log entries to
//! append, and — when this write ended the conversation — one job per configured action
//! with the record at the end as payload (the transactional outbox). The store decides
//! nothing; both stores write the same plan, so their behaviour cannot drift.
//!
//! What stays with the store is IO only: recording the request's `jti` before the plan
//! (a replay stores nothing), the job ids, and the commit.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::json;

use super::caps::{Cap, Caps, OverCap};
use super::conversation::{Conversation, EndedAfter, INACTIVITY_REASON};
use super::payload::Event;
use super::record::ConversationRecord;
use super::tags::TagRows;
use super::time::Timestamp;
use super::{Applied, EventKind};

/// What scheduling needs to know of one of the bot's `on_end` actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRef {
    /// The job's name, unique per conversation: the action's (`crm`), or one wrapup makes
    /// (`summary@7`, `crm@summary@7`). Shown, never parsed: the columns below say what it is.
    pub name: String,
    /// The configured action the job belongs to.
    pub action: String,
    pub kind: &'static str,
    /// The destination's identity (`webhook:crm@st-1`), stored with the job.
    pub destination: String,
    pub max_attempts: u32,
    pub event: super::outbox::JobEvent,
    /// The event number of the trigger the job came from; `None` for the end's.
    pub trigger: Option<u64>,
}

impl ActionRef {
    /// An `on_end` action's: its jobs deliver `conversation.ended` under its own name.
    pub fn on_end(name: &str, kind: &'static str, destination: String, max_attempts: u32) -> Self {
        ActionRef {
            name: name.to_owned(),
            action: name.to_owned(),
            kind,
            destination,
            max_attempts,
            event: super::outbox::JobEvent::Ended,
            trigger: None,
        }
    }
}

/// One entry to append to the conversation's event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append<'a> {
    /// The event's number in the conversation, 1-based.
    pub seq: u64,
    pub name: &'static str,
    /// The JSON kept in the log: the event as received, or the server's own entry.
    pub body: Cow<'a, str>,
}

/// The jobs an end schedules: one per action, sharing one payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jobs {
    /// The conversation record as it stands at the end, JSON.
    pub payload: String,
    pub actions: Arc<[ActionRef]>,
}

/// What a write does; the store applies all of it in one transaction or none of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan<'a> {
    pub state: Conversation,
    /// `state` as stored (JSON), serialized once here, where its size is checked.
    pub state_json: String,
    pub appends: Vec<Append<'a>>,
    /// What the conversation can be found by after this write (see [`super::tags`]).
    pub tags: TagRows,
    /// Its rows before this write (none for a new conversation): the store replaces
    /// these with `tags`.
    pub tags_before: Option<TagRows>,
    /// Present only when this write ended the conversation and the bot has actions.
    pub jobs: Option<Jobs>,
    pub outcome: Accepted,
}

/// The outcome of a request that is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Events appended to the log.
    pub stored: u32,
    /// Repeated ends: acknowledged and counted, nothing else.
    pub duplicate_ends: u32,
    /// This request ended the conversation (its jobs are scheduled).
    pub ended: bool,
}

/// Why a request is refused as a whole; nothing of it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A non-end event for a conversation that had ended.
    EndedAlready { ended_at: Timestamp },
    /// The request would take the conversation past one of its caps.
    OverCap(OverCap),
}

/// The conversation being written, as the plan needs to name it in the job payload.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub bot_id: &'a str,
    pub conversation_id: &'a str,
}

/// What the plan needs to know of the bot.
#[derive(Debug, Clone)]
pub struct Bot {
    pub on_end: Arc<[ActionRef]>,
    pub caps: Caps,
    /// With `[bots.summary]`: the summary job a stored TRIGGER_SUMMARY_EVENT schedules
    /// (named `summary@<its event number>` when scheduled).
    pub summary: Option<ActionRef>,
}

impl Default for Bot {
    fn default() -> Self {
        Self {
            on_end: Arc::from([]),
            caps: Caps::default(),
            summary: None,
        }
    }
}

/// Plans a client's request: its events applied in order to `state` (a new conversation
/// created at `now` when there is none). Refused as a whole if one event comes after the
/// end, or if the request would take the conversation past one of the bot's caps — unless
/// it carries an end: a conversation can always end. The first end schedules the bot's
/// jobs.
///
/// Work is proportional to the request and to the state, which the caps bound.
pub fn plan<'a>(
    target: Target<'_>,
    state: Option<Conversation>,
    events: &'a [Event],
    bot: &Bot,
    now: Timestamp,
) -> Result<Plan<'a>, Refusal> {
    if !has_end(events) {
        // A conversation at its events cap refuses before any work on its state.
        let count = state.as_ref().map_or(0, |c| c.event_count);
        if count.saturating_add(events.len() as u64) > bot.caps.events {
            return Err(Refusal::OverCap(OverCap {
                cap: Cap::Events,
                limit: bot.caps.events,
            }));
        }
        return plan_events(target, state, events.iter(), bot, now);
    }
    // A request with an end is planned whole when it stays within the caps; otherwise
    // its ends alone are (the rest is not stored, and the record says so): a
    // conversation can always end, and an end never carries more than itself past them.
    match plan_events(target, state.clone(), events.iter(), bot, now) {
        Err(Refusal::OverCap(over)) => {
            let ends = events
                .iter()
                .filter(|e| matches!(e.kind, EventKind::End(_)));
            let mut plan = plan_events(target, state, ends, bot, now)?;
            let dropped = events.len() as u64
                - u64::from(plan.outcome.stored)
                - u64::from(plan.outcome.duplicate_ends);
            if let Some(seq) = plan.appends.last().map(|a| a.seq) {
                plan.state.anomaly(
                    "events_dropped_over_cap",
                    format!("{dropped} event(s) sent with the END_OF_CONVERSATION were not stored: {over}; the end was"),
                    seq,
                );
            }
            plan.state_json = state_json(&plan.state);
            plan.jobs = plan
                .outcome
                .ended
                .then(|| jobs(target, &plan.state, &bot.on_end))
                .flatten();
            Ok(plan)
        }
        other => other,
    }
}

/// Applies `events` in order and checks the caps: every event but an end is held to
/// them, and an end's participant keeps its `customFields` only within them.
fn plan_events<'a>(
    target: Target<'_>,
    state: Option<Conversation>,
    events: impl Iterator<Item = &'a Event>,
    bot: &Bot,
    now: Timestamp,
) -> Result<Plan<'a>, Refusal> {
    let tags_before = state.as_ref().map(Conversation::tag_rows);
    let mut conv = state.unwrap_or_else(|| Conversation::new(now));
    let was_ended = conv.is_ended();
    let mut appends = Vec::new();
    let mut duplicate_ends = 0u32;
    let mut only_ends = true;
    // Summary jobs of the triggers this request stores, scheduled with the events.
    let mut triggers: Vec<ActionRef> = Vec::new();
    for event in events {
        match &event.kind {
            EventKind::Transfer(t) => {
                only_ends = false;
                bot.caps
                    .check_custom_fields(&t.participant.custom_fields)
                    .map_err(Refusal::OverCap)?;
            }
            EventKind::End(_) => {}
            _ => only_ends = false,
        }
        match conv.apply(&event.kind, now) {
            Ok(Applied::Stored { seq }) => {
                conv.log_bytes = conv.log_bytes.saturating_add(event.raw.len() as u64);
                if let (EventKind::Summary(_), Some(summary)) = (&event.kind, &bot.summary) {
                    triggers.push(ActionRef {
                        name: format!("summary@{seq}"),
                        trigger: Some(seq),
                        ..summary.clone()
                    });
                }
                for (kind, n) in &event.redactions {
                    let total = conv.redactions.entry(kind.clone()).or_default();
                    *total = total.saturating_add(*n);
                }
                appends.push(Append {
                    seq,
                    name: event.kind.name(),
                    body: Cow::Borrowed(event.raw.as_str()),
                })
            }
            Ok(Applied::DuplicateEnd) => duplicate_ends += 1,
            Err(EndedAfter { ended_at }) => return Err(Refusal::EndedAlready { ended_at }),
        }
    }
    let ended = !was_ended && conv.is_ended();
    if ended {
        bound_ended_by(&mut conv, &bot.caps);
    }
    if !only_ends {
        let segments = conv.agents.iter().map(|a| a.segments.len()).sum();
        bot.caps
            .check_counts(
                conv.agents.len(),
                segments,
                conv.summary_requests.len(),
                conv.event_count,
            )
            .map_err(Refusal::OverCap)?;
        bot.caps
            .check_log_bytes(conv.log_bytes)
            .map_err(Refusal::OverCap)?;
    }
    let state_json = state_json(&conv);
    if !only_ends {
        bot.caps
            .check_state_bytes(state_json.len())
            .map_err(Refusal::OverCap)?;
    }
    let jobs = match (ended, triggers.is_empty()) {
        (true, true) => jobs(target, &conv, &bot.on_end),
        (true, false) => {
            let all: Arc<[ActionRef]> = bot.on_end.iter().cloned().chain(triggers).collect();
            jobs(target, &conv, &all)
        }
        (false, false) => jobs(target, &conv, &Arc::from(triggers)),
        (false, true) => None,
    };
    Ok(Plan {
        outcome: Accepted {
            stored: appends.len() as u32,
            duplicate_ends,
            ended,
        },
        tags: conv.tag_rows(),
        tags_before,
        state: conv,
        state_json,
        appends,
        jobs,
    })
}

/// The end's participant is kept on the record (`endedBy`); its `customFields` only
/// within the caps, since the end itself is never refused.
fn bound_ended_by(conv: &mut Conversation, caps: &Caps) {
    let Some(serde_json::Value::Object(by)) = conv.ended_by.as_mut() else {
        return;
    };
    let over = match by.get("customFields") {
        Some(serde_json::Value::Object(fields)) => caps.check_custom_fields(fields).err(),
        _ => None,
    };
    if let Some(over) = over {
        by.remove("customFields");
        let seq = conv.event_count;
        conv.anomaly(
            "end_custom_fields_dropped",
            format!("the END_OF_CONVERSATION participant's customFields were not kept on the record: {over}"),
            seq,
        );
    }
}

/// Plans the server's own end of a conversation silent since its last event: the same
/// end as a client's (segments closed, jobs scheduled), logged as `INACTIVITY_TIMEOUT`.
/// `None` if the conversation has ended meanwhile.
pub fn plan_expiry(
    target: Target<'_>,
    mut conv: Conversation,
    timeout_ms: i64,
    on_end: &Arc<[ActionRef]>,
    now: Timestamp,
) -> Option<Plan<'static>> {
    let idle_since = conv.last_event_at;
    let tags_before = Some(conv.tag_rows());
    let seq = conv.expire(now, timeout_ms)?;
    let body = json!({
        "name": "INACTIVITY_TIMEOUT",
        "reason": INACTIVITY_REASON,
        "lastEventAt": idle_since.to_rfc3339(),
        "inactivityTimeoutMs": timeout_ms,
    })
    .to_string();
    conv.log_bytes = conv.log_bytes.saturating_add(body.len() as u64);
    let jobs = jobs(target, &conv, on_end);
    Some(Plan {
        state_json: state_json(&conv),
        tags: conv.tag_rows(),
        tags_before,
        state: conv,
        appends: vec![Append {
            seq,
            name: "INACTIVITY_TIMEOUT",
            body: Cow::Owned(body),
        }],
        jobs,
        outcome: Accepted {
            stored: 1,
            duplicate_ends: 0,
            ended: true,
        },
    })
}

/// The state as stored. A state is plain strings, numbers and JSON values that came
/// from JSON: serializing it cannot fail.
fn state_json(conv: &Conversation) -> String {
    serde_json::to_string(conv).unwrap_or_default()
}

/// The end's jobs, if the bot has actions: the record at the end is their payload.
fn jobs(target: Target<'_>, conv: &Conversation, on_end: &Arc<[ActionRef]>) -> Option<Jobs> {
    if on_end.is_empty() {
        return None;
    }
    let mut record = ConversationRecord::new(target.bot_id, target.conversation_id, conv);
    // Filled by `Jobs::payload_with` with the summaries completed by the end.
    record.summaries = Some(Vec::new());
    // A record is plain strings, numbers and JSON values: serializing it cannot fail.
    let payload = serde_json::to_string(&record).unwrap_or_default();
    Some(Jobs {
        payload,
        actions: on_end.clone(),
    })
}

impl Jobs {
    /// The payload with the conversation's COMPLETED summaries among `stored` (every
    /// summary's JSON, oldest first) in its `summaries`.
    pub fn payload_with(&self, stored: &[String]) -> Cow<'_, str> {
        const EMPTY: &str = "\"summaries\":[]}";
        let done: Vec<&str> = stored
            .iter()
            .map(String::as_str)
            .filter(|s| super::summary::is_completed(s))
            .collect();
        // `summaries` is the record's last field, serialized empty by the plan.
        match self.payload.strip_suffix(EMPTY) {
            Some(head) if !done.is_empty() => {
                Cow::Owned(format!("{head}\"summaries\":[{}]}}", done.join(",")))
            }
            _ => Cow::Borrowed(&self.payload),
        }
    }
}

impl<'a> Plan<'a> {
    /// True when the plan ends the conversation (an end or an expiry).
    pub fn ends(&self) -> bool {
        self.outcome.ended
    }

    /// One write for this plan followed by `next`, planned against this one's state: the
    /// last state and tags, the rows of the tags before this one and every log entry. The
    /// outcome stays this plan's (each request keeps its own), and so do the jobs: each
    /// plan's have a payload of their own, so the caller takes `next`'s out first
    /// (`Option::take`) and schedules both.
    pub fn then(mut self, next: Plan<'a>) -> Plan<'a> {
        debug_assert!(next.jobs.is_none(), "take the next plan's jobs first");
        self.appends.extend(next.appends);
        self.state = next.state;
        self.state_json = next.state_json;
        self.tags = next.tags;
        self
    }
}

/// True if any of `events` is an end.
pub fn has_end(events: &[Event]) -> bool {
    events.iter().any(|e| matches!(e.kind, EventKind::End(_)))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
