//! What a conversation can be found by: its agents, their queues, its end reason, its
//! experience and its anomalies, each a `kind:value` string the stores index beside the
//! conversation's sort time, so a filtered list reads one index range newest first.
//!
//! The tags are derived from the state here, once, and both stores write what this
//! returns. A write replaces the rows of the state before ([`Plan::tags_before`], keyed by
//! tag and sort time, so each row is one entry of one index) with the new state's.
//! Changing what [`Conversation::tags`] returns therefore needs a migration that rebuilds
//! the rows (as the first one did): rows written by other rules would not be found to be
//! replaced.
//!
//! [`Plan::tags_before`]: super::ingest::Plan::tags_before

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Conversation, Status, Timestamp};

/// A conversation's rows in the tag index: each tag at its sort time, with its status.
#[derive(Debug, Clone, PartialEq)]
pub struct TagRows {
    pub tags: Vec<String>,
    pub sort_at: Timestamp,
    pub status: Status,
}

impl TagRows {
    /// The rows of `self` that `next` does not have with the same key (tag and sort
    /// time): what a write replacing `self` by `next` deletes.
    pub fn gone_in(&self, next: &TagRows) -> Vec<&str> {
        self.tags
            .iter()
            .filter(|t| self.sort_at != next.sort_at || !next.tags.contains(t))
            .map(String::as_str)
            .collect()
    }

    /// The rows of `next` a write must insert or update (all but those unchanged).
    pub fn changed_in<'n>(before: Option<&TagRows>, next: &'n TagRows) -> Vec<&'n str> {
        next.tags
            .iter()
            .filter(|t| {
                before.is_none_or(|b| {
                    b.sort_at != next.sort_at || b.status != next.status || !b.tags.contains(t)
                })
            })
            .map(String::as_str)
            .collect()
    }
}

/// A conversation is indexed by at most this many agents, queues and anomaly codes each
/// (those beyond are still in the record, but not findable by filter); its reason, its
/// experience and "any anomaly" always are.
pub const MAX_PER_KIND: usize = 32;
/// A value longer than this many bytes is not indexed.
pub const MAX_VALUE_BYTES: usize = 256;

/// The dimensions a list can be filtered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// An anomaly code.
    Anomaly,
    /// An agent's `identity`.
    Agent,
    /// An agent's `customFields.queueId` or `customFields.queueName`.
    Queue,
    /// The end's `reason`.
    Reason,
    /// The conversation's `experience`.
    Experience,
}

impl TagKind {
    fn prefix(self) -> &'static str {
        match self {
            TagKind::Anomaly => "anomaly:",
            TagKind::Agent => "agent:",
            TagKind::Queue => "queue:",
            TagKind::Reason => "reason:",
            TagKind::Experience => "experience:",
        }
    }
}

/// The tag for `value` of `kind`.
pub fn tag(kind: TagKind, value: &str) -> String {
    format!("{}{value}", kind.prefix())
}

/// Carried by every conversation with at least one anomaly.
pub const ANY_ANOMALY: &str = "anomaly";

impl Conversation {
    /// Where the conversation sorts in lists: its end, or its last event while active.
    pub fn sort_at(&self) -> Timestamp {
        self.ended_at.unwrap_or(self.last_event_at)
    }

    /// Its rows in the tag index.
    pub fn tag_rows(&self) -> TagRows {
        TagRows {
            tags: self.tags(),
            sort_at: self.sort_at(),
            status: self.status,
        }
    }

    /// The conversation's tags, sorted, without repeats: at most [`MAX_PER_KIND`] agents,
    /// queues and anomaly codes each (the first ones), its reason, its experience, and
    /// "any anomaly". A value that is empty, longer than [`MAX_VALUE_BYTES`] or holds a
    /// NUL (which PostgreSQL's text cannot store) is not indexed.
    pub fn tags(&self) -> Vec<String> {
        let mut set = BTreeSet::new();
        let mut counts = [0usize; 5];
        let mut add = |kind: TagKind, value: &str| {
            let slot = &mut counts[kind as usize];
            let limited = matches!(kind, TagKind::Agent | TagKind::Queue | TagKind::Anomaly);
            if value.is_empty()
                || value.len() > MAX_VALUE_BYTES
                || value.contains('\0')
                || (limited && *slot >= MAX_PER_KIND)
            {
                return;
            }
            if set.insert(tag(kind, value)) {
                *slot += 1;
            }
        };
        for a in &self.agents {
            add(TagKind::Agent, &a.identity);
            let json = a.custom_fields.json();
            // Most fields carry no queue: only those that do are parsed.
            if !json.contains("queue") {
                continue;
            }
            if let Ok(fields) = serde_json::from_str::<serde_json::Map<String, Value>>(json) {
                for key in ["queueId", "queueName"] {
                    match fields.get(key) {
                        Some(Value::String(s)) => add(TagKind::Queue, s),
                        Some(Value::Number(n)) => add(TagKind::Queue, &n.to_string()),
                        _ => {}
                    }
                }
            }
        }
        if let Some(r) = &self.end_reason {
            add(TagKind::Reason, r);
        }
        if let Some(e) = &self.experience {
            add(TagKind::Experience, e);
        }
        for a in &self.anomalies {
            add(TagKind::Anomaly, &a.code);
        }
        if !self.anomalies.is_empty() || self.anomalies_dropped > 0 {
            set.insert(ANY_ANOMALY.to_owned());
        }
        set.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::conversation::{Agent, Anomaly};

    fn conversation() -> Conversation {
        serde_json::from_value(serde_json::json!({
            "status": "ended", "created_at": 0, "last_event_at": 0, "event_count": 1
        }))
        .expect("a minimal state")
    }

    #[test]
    fn many_agents_never_push_out_the_reason_or_the_anomalies() {
        let mut c = conversation();
        c.status = Status::Ended;
        c.end_reason = Some("rare_reason".into());
        c.experience = Some("chat".into());
        for i in 0..100 {
            c.agents.push(Agent {
                identity: format!("agent-{i:03}"),
                name: String::new(),
                custom_fields: crate::domain::conversation::Fields::from_map(
                    &serde_json::json!({"queueId": i, "queueName": format!("q{i}")})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                ),
                segments: Vec::new(),
            });
            c.anomalies.push(Anomaly {
                code: format!("code_{i}"),
                message: String::new(),
                event_seq: i,
            });
        }
        let tags = c.tags();
        let count = |p: &str| tags.iter().filter(|t| t.starts_with(p)).count();
        assert_eq!(count("agent:"), MAX_PER_KIND);
        assert_eq!(count("queue:"), MAX_PER_KIND);
        assert_eq!(count("anomaly:"), MAX_PER_KIND);
        for t in [
            "reason:rare_reason",
            "experience:chat",
            ANY_ANOMALY,
            "agent:agent-000",
        ] {
            assert!(tags.contains(&t.to_owned()), "{t} in {tags:?}");
        }
    }

    #[test]
    fn a_write_deletes_only_the_rows_it_does_not_keep_and_writes_only_changed_ones() {
        let rows = |tags: &[&str], at: i64, status: Status| TagRows {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            sort_at: Timestamp::from_millis(at),
            status,
        };
        let before = rows(&["agent:a", "queue:q"], 10, Status::Active);
        // Same time: the dropped tag goes, the new one comes, the kept one stays.
        let next = rows(&["agent:a", "agent:b"], 10, Status::Active);
        assert_eq!(before.gone_in(&next), ["queue:q"]);
        assert_eq!(TagRows::changed_in(Some(&before), &next), ["agent:b"]);
        // A new time moves every row.
        let later = rows(&["agent:a"], 11, Status::Active);
        assert_eq!(before.gone_in(&later), ["agent:a", "queue:q"]);
        assert_eq!(TagRows::changed_in(Some(&before), &later), ["agent:a"]);
        // Same time and tags, new status: rewritten in place, nothing deleted.
        let ended = rows(&["agent:a", "queue:q"], 10, Status::Ended);
        assert!(before.gone_in(&ended).is_empty());
        assert_eq!(TagRows::changed_in(Some(&before), &ended).len(), 2);
        assert_eq!(TagRows::changed_in(None, &ended).len(), 2);
        assert!(TagRows::changed_in(Some(&before), &before).is_empty());
    }

    #[test]
    fn empty_long_and_nul_values_are_not_indexed() {
        let mut c = conversation();
        for id in ["", "a\0b", &"x".repeat(MAX_VALUE_BYTES + 1), "ok"] {
            c.agents.push(Agent {
                identity: id.to_owned(),
                name: String::new(),
                custom_fields: Default::default(),
                segments: Vec::new(),
            });
        }
        assert_eq!(c.tags(), vec!["agent:ok".to_owned()]);
    }
}
