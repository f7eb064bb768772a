//! The conversation lifecycle: `(state, event) -> (state, effects)`, with no IO.
//!
//! Invariants every store relies on:
//! - a conversation ends at most once; a later `END_OF_CONVERSATION` only bumps
//!   `duplicate_ends` and changes nothing else;
//! - any other event after the end is refused ([`EndedAfter`]), so the caller can
//!   answer 409 and store nothing of that request;
//! - at the end every open agent segment is closed at the end time.
//!
//! Departures from the vendor's prescribed order (NA entry, COLD/WARM transfers, NA
//! exit, summary, end) are accepted and recorded as [`Anomaly`]s that say plainly what
//! the client sent wrong.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::caps::names;
use super::payload::{AuthorType, EventKind, Participant, TransferType, Transition};
use super::time::Timestamp;

/// At most this many anomalies are kept per conversation; later ones are only counted.
pub const MAX_ANOMALIES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Ended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Ended => "ended",
        }
    }
}

/// A departure from what the vendor prescribes that was accepted anyway, kept so
/// integrators can see what their side sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Anomaly {
    pub code: String,
    pub message: String,
    pub event_seq: u64,
}

/// One stretch of time an agent spent on the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    pub transfer_type: TransferType,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub identity: String,
    pub name: String,
    #[serde(default)]
    pub custom_fields: Fields,
    pub segments: Vec<Segment>,
}

/// A participant's `customFields`, kept as the JSON text they arrived as: the state is
/// read and written on every request, and these are most of its bytes, so they are
/// copied through without being parsed into a map or escaped again (BENCHMARKS.md,
/// "a message at a conversation's caps").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fields(Box<RawValue>);

impl Fields {
    pub fn from_map(map: &Map<String, Value>) -> Self {
        // A map of JSON values always serializes.
        Self(serde_json::value::to_raw_value(map).unwrap_or_else(|_| empty()))
    }

    /// The fields as JSON text (an object).
    pub fn json(&self) -> &str {
        self.0.get()
    }
}

fn empty() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!("{{}} is JSON"))
}

impl Default for Fields {
    fn default() -> Self {
        Self(empty())
    }
}

impl PartialEq for Fields {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Agent {
    pub fn is_active(&self) -> bool {
        self.segments.last().is_some_and(|s| s.ended_at.is_none())
    }

    /// Closed segments' time, plus open ones up to `now`.
    pub fn handle_time_ms(&self, now: Timestamp) -> i64 {
        self.segments
            .iter()
            .map(|s| (s.ended_at.unwrap_or(now).millis() - s.started_at.millis()).max(0))
            .sum()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Transfers {
    pub cold: u64,
    pub warm: u64,
    pub redial: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageCounts {
    pub user: u64,
    pub agent: u64,
    /// Bare messages that did not say who wrote them.
    pub unknown: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryRequest {
    pub language: String,
    pub locale: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub requested_at: Timestamp,
    pub event_seq: u64,
}

/// The stored state of one conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub status: Status,
    pub created_at: Timestamp,
    pub last_event_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// The participant of the end event, as parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experience: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub duplicate_ends: u64,
    pub event_count: u64,
    /// Bytes of the event log's entries as stored (for `caps.log_bytes`); counted from
    /// the version that added it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub log_bytes: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<Anomaly>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub anomalies_dropped: u64,
    /// When the first NA entry arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<Agent>,
    #[serde(default, skip_serializing_if = "Transfers::is_empty")]
    pub transfers: Transfers,
    #[serde(default, skip_serializing_if = "MessageCounts::is_empty")]
    pub messages: MessageCounts,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub summary_requests: Vec<SummaryRequest>,
    /// Event number of the last NA exit, while no agent has entered since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub na_exit_seq: Option<u64>,
    /// What redaction replaced in the stored events, by kind.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub redactions: super::pii::Redactions,
}

// The stored state leaves defaults out: it is written on every event, and its size is
// most of what the writer spends per request (see BENCHMARKS.md).
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Transfers {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl MessageCounts {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Appended to the log as event number `seq` (1-based).
    Stored { seq: u64 },
    /// A repeated end: counted, nothing else changed, nothing appended.
    DuplicateEnd,
}

/// A non-end event arrived for a conversation that had already ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndedAfter {
    pub ended_at: Timestamp,
}

/// The reason and `endedBy` of a conversation the server ended for inactivity.
pub const INACTIVITY_REASON: &str = "inactivity_timeout";

impl Conversation {
    pub fn new(at: Timestamp) -> Self {
        Self {
            status: Status::Active,
            created_at: at,
            last_event_at: at,
            ended_at: None,
            end_reason: None,
            ended_by: None,
            experience: None,
            language: None,
            duplicate_ends: 0,
            event_count: 0,
            log_bytes: 0,
            anomalies: Vec::new(),
            anomalies_dropped: 0,
            started_at: None,
            agents: Vec::new(),
            transfers: Transfers::default(),
            messages: MessageCounts::default(),
            summary_requests: Vec::new(),
            na_exit_seq: None,
            redactions: Default::default(),
        }
    }

    pub fn is_ended(&self) -> bool {
        self.status == Status::Ended
    }

    /// Agents with an open segment, in order of first appearance.
    pub fn active_agents(&self) -> Vec<&str> {
        self.agents
            .iter()
            .filter(|a| a.is_active())
            .map(|a| a.identity.as_str())
            .collect()
    }

    /// Applies one event received at `at`.
    pub fn apply(&mut self, event: &EventKind, at: Timestamp) -> Result<Applied, EndedAfter> {
        if let Some(ended_at) = self.ended_at {
            return match event {
                EventKind::End(_) => {
                    self.duplicate_ends += 1;
                    Ok(Applied::DuplicateEnd)
                }
                _ => Err(EndedAfter { ended_at }),
            };
        }
        let seq = self.next_seq(at);
        match event {
            EventKind::End(end) => {
                let open = names(&self.active_agents());
                if self.agents.is_empty() {
                    self.anomaly(
                        "end_without_agent",
                        "END_OF_CONVERSATION for a conversation no agent ever entered: the INTERNAL_TRANSFER_EVENT NA entry (mandatory, first) was never sent".into(),
                        seq,
                    );
                } else if !open.is_empty() {
                    self.anomaly(
                        "end_without_na_exit",
                        format!(
                            "END_OF_CONVERSATION while {open} still active: no INTERNAL_TRANSFER_EVENT NA exit was sent before the end; the open segments were closed at the end"
                        ),
                        seq,
                    );
                }
                self.experience = Some(end.experience.clone());
                self.language = Some(end.language.clone());
                self.finish(
                    at,
                    end.reason.clone(),
                    serde_json::to_value(&end.participant).unwrap_or(Value::Null),
                );
            }
            EventKind::Transfer(t) => {
                self.experience = Some(t.experience.clone());
                if let Some(lang) = &t.language {
                    self.language = Some(lang.clone());
                }
                self.transfer(t.transfer_type, t.transition, &t.participant, at, seq);
            }
            EventKind::Summary(s) => {
                let open = names(&self.active_agents());
                if !open.is_empty() {
                    self.anomaly(
                        "summary_before_na_exit",
                        format!("TRIGGER_SUMMARY_EVENT while {open} still active: the summary is due after the last agent's NA exit"),
                        seq,
                    );
                }
                self.summary_requests.push(SummaryRequest {
                    language: s.language.clone(),
                    locale: s.locale.clone(),
                    kind: s.kind.clone(),
                    requested_at: at,
                    event_seq: seq,
                });
            }
            EventKind::Message(m) => {
                if let Some(e) = &m.experience {
                    self.experience = Some(e.clone());
                }
                if let Some(l) = &m.language {
                    self.language = Some(l.clone());
                }
                match m.author {
                    Some(AuthorType::User) => self.messages.user += 1,
                    Some(AuthorType::Agent) => self.messages.agent += 1,
                    None => self.messages.unknown += 1,
                }
                if self.agents.is_empty()
                    && !self
                        .anomalies
                        .iter()
                        .any(|a| a.code == "message_before_agent_entry")
                {
                    self.anomaly(
                        "message_before_agent_entry",
                        "a message arrived before any agent entered (no INTERNAL_TRANSFER_EVENT NA entry yet); recorded once per conversation".into(),
                        seq,
                    );
                }
                if !m.missing.is_empty() {
                    self.anomaly(
                        "message_fields_missing",
                        format!(
                            "message without {}; accepted{}",
                            m.missing.join(", "),
                            if m.author.is_none() {
                                ", author unknown"
                            } else {
                                ""
                            }
                        ),
                        seq,
                    );
                }
            }
        }
        Ok(Applied::Stored { seq })
    }

    /// Ends a conversation the client went silent on (the server's own end).
    /// `None` if it had already ended.
    pub fn expire(&mut self, at: Timestamp, timeout_ms: i64) -> Option<u64> {
        if self.is_ended() {
            return None;
        }
        let seq = self.next_seq(at);
        self.anomaly(
            "ended_by_inactivity",
            format!(
                "no END_OF_CONVERSATION and no other event for {} s (the bot's inactivity_timeout): the server ended the conversation",
                timeout_ms / 1000
            ),
            seq,
        );
        self.finish(
            at,
            INACTIVITY_REASON.into(),
            json!({"identity": "wrapup", "type": "system"}),
        );
        Some(seq)
    }

    fn next_seq(&mut self, at: Timestamp) -> u64 {
        self.event_count += 1;
        self.last_event_at = at;
        self.event_count
    }

    /// The built-in end step: closes every open segment at the end time.
    fn finish(&mut self, at: Timestamp, reason: String, ended_by: Value) {
        for agent in &mut self.agents {
            for segment in &mut agent.segments {
                if segment.ended_at.is_none() {
                    segment.ended_at = Some(at);
                }
            }
        }
        self.status = Status::Ended;
        self.ended_at = Some(at);
        self.end_reason = Some(reason);
        self.ended_by = Some(ended_by);
    }

    pub(super) fn anomaly(&mut self, code: &str, message: String, seq: u64) {
        if self.anomalies.len() >= MAX_ANOMALIES {
            self.anomalies_dropped += 1;
            return;
        }
        self.anomalies.push(Anomaly {
            code: code.to_owned(),
            message,
            event_seq: seq,
        });
    }

    fn agent_mut(&mut self, p: &Participant) -> &mut Agent {
        let i = match self.agents.iter().position(|a| a.identity == p.identity) {
            Some(i) => i,
            None => {
                self.agents.push(Agent {
                    identity: p.identity.clone(),
                    name: p.name.clone(),
                    custom_fields: Fields::default(),
                    segments: Vec::new(),
                });
                self.agents.len() - 1
            }
        };
        let agent = &mut self.agents[i];
        agent.name = p.name.clone();
        if !p.custom_fields.is_empty() {
            agent.custom_fields = Fields::from_map(&p.custom_fields);
        }
        agent
    }
}

mod transfer;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
