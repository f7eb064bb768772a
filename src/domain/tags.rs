//! What a conversation can be found by: its agents, their queues, its end reason, its
//! experience and its anomalies, each a `kind:value` string the stores index beside the
//! conversation's sort time, so a filtered list reads one index range newest first.
//!
//! The tags are derived from the state here, once, and both stores write what this
//! returns: a write replaces the conversation's tags with the new state's.

use std::collections::BTreeSet;

use serde_json::Value;

use super::Conversation;

/// A conversation is indexed by at most this many tags (agents and anomalies beyond
/// are still in the record, but not findable by filter).
pub const MAX_TAGS: usize = 64;
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
    /// The conversation's tags, sorted, without repeats, at most [`MAX_TAGS`].
    pub fn tags(&self) -> Vec<String> {
        let mut set = BTreeSet::new();
        let mut add = |kind: TagKind, value: &str| {
            if !value.is_empty() && value.len() <= MAX_VALUE_BYTES {
                set.insert(tag(kind, value));
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
        // The "any anomaly" tag sorts first ("anomaly" < "anomaly:…"), so it survives the cap.
        set.into_iter().take(MAX_TAGS).collect()
    }
}
