//! Bounds on what one conversation may accumulate, so that no caller can make the work
//! of every later request (the writer loads and rewrites the state each time), a record
//! read or a delivery's body grow without end.
//!
//! The defaults are far above what a real contact-center conversation reaches; each bot
//! may set its own in `[bots.caps]`. A request that would take a conversation past a
//! cap is refused whole; a request carrying an `END_OF_CONVERSATION` never is, so a
//! conversation can always end and its actions always run.

use std::fmt;

use serde_json::{Map, Value};

/// The caps of one bot's conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Distinct agents (participant identities) in one conversation.
    pub agents: usize,
    /// Agent segments (entries) in one conversation, all agents together.
    pub segments: usize,
    /// `TRIGGER_SUMMARY_EVENT`s kept in one conversation.
    pub summary_requests: usize,
    /// Events in one conversation's log.
    pub events: u64,
    /// Bytes of one conversation's event log (each event as received).
    pub log_bytes: u64,
    /// Keys of one participant's `customFields`.
    pub custom_fields_keys: usize,
    /// Bytes of one participant's `customFields`, as JSON.
    pub custom_fields_bytes: usize,
    /// Bytes of the conversation's stored state, as JSON.
    pub state_bytes: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            agents: 64,
            segments: 256,
            summary_requests: 32,
            events: 10_000,
            log_bytes: 64 << 20,
            custom_fields_keys: 64,
            custom_fields_bytes: 8 * 1024,
            state_bytes: 256 * 1024,
        }
    }
}

/// Which cap a request would have passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    Agents,
    Segments,
    SummaryRequests,
    Events,
    LogBytes,
    CustomFieldsKeys,
    CustomFieldsBytes,
    StateBytes,
}

impl Cap {
    pub const ALL: [Cap; 8] = [
        Cap::Agents,
        Cap::Segments,
        Cap::SummaryRequests,
        Cap::Events,
        Cap::LogBytes,
        Cap::CustomFieldsKeys,
        Cap::CustomFieldsBytes,
        Cap::StateBytes,
    ];

    /// The cap's key in `[bots.caps]`.
    pub fn key(self) -> &'static str {
        match self {
            Cap::Agents => "agents",
            Cap::Segments => "segments",
            Cap::SummaryRequests => "summary_requests",
            Cap::Events => "events",
            Cap::LogBytes => "log_bytes",
            Cap::CustomFieldsKeys => "custom_fields_keys",
            Cap::CustomFieldsBytes => "custom_fields_bytes",
            Cap::StateBytes => "state_bytes",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Cap::Agents => "agents",
            Cap::Segments => "agent segments",
            Cap::SummaryRequests => "summary requests",
            Cap::Events => "events",
            Cap::LogBytes => "bytes of event log",
            Cap::CustomFieldsKeys => "keys in one participant's customFields",
            Cap::CustomFieldsBytes => "bytes of one participant's customFields",
            Cap::StateBytes => "bytes of stored state",
        }
    }
}

/// A cap a request would pass, with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverCap {
    pub cap: Cap,
    pub limit: u64,
}

impl fmt::Display for OverCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the conversation would have more than {} {} (caps.{})",
            self.limit,
            self.cap.what(),
            self.cap.key()
        )
    }
}

impl Caps {
    fn over(cap: Cap, limit: impl TryInto<u64>) -> OverCap {
        OverCap {
            cap,
            limit: limit.try_into().unwrap_or(u64::MAX),
        }
    }

    /// Checks one participant's `customFields` as sent (they replace the agent's).
    pub fn check_custom_fields(&self, fields: &Map<String, Value>) -> Result<(), OverCap> {
        if fields.len() > self.custom_fields_keys {
            return Err(Self::over(Cap::CustomFieldsKeys, self.custom_fields_keys));
        }
        // Bounded by the request body: measuring costs what parsing it did.
        let bytes = serde_json::to_vec(fields).map(|v| v.len()).unwrap_or(0);
        if bytes > self.custom_fields_bytes {
            return Err(Self::over(Cap::CustomFieldsBytes, self.custom_fields_bytes));
        }
        Ok(())
    }

    /// Checks the counts of a conversation after a request.
    pub fn check_counts(
        &self,
        agents: usize,
        segments: usize,
        summary_requests: usize,
        events: u64,
    ) -> Result<(), OverCap> {
        if agents > self.agents {
            return Err(Self::over(Cap::Agents, self.agents));
        }
        if segments > self.segments {
            return Err(Self::over(Cap::Segments, self.segments));
        }
        if summary_requests > self.summary_requests {
            return Err(Self::over(Cap::SummaryRequests, self.summary_requests));
        }
        if events > self.events {
            return Err(Self::over(Cap::Events, self.events));
        }
        Ok(())
    }

    pub fn check_log_bytes(&self, bytes: u64) -> Result<(), OverCap> {
        if bytes > self.log_bytes {
            return Err(Self::over(Cap::LogBytes, self.log_bytes));
        }
        Ok(())
    }

    pub fn check_state_bytes(&self, bytes: usize) -> Result<(), OverCap> {
        if bytes > self.state_bytes {
            return Err(Self::over(Cap::StateBytes, self.state_bytes));
        }
        Ok(())
    }
}

/// At most this many names in an anomaly's message; the rest are counted.
const NAMES_SHOWN: usize = 3;
/// Each name shown is cut to this many characters.
const NAME_CHARS: usize = 64;

/// `a, b, c and 4 more`: a bounded rendering of a list of identities for a message.
pub fn names(list: &[&str]) -> String {
    let mut out = String::new();
    for (i, name) in list.iter().take(NAMES_SHOWN).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let mut chars = name.chars();
        out.extend(chars.by_ref().take(NAME_CHARS));
        if chars.next().is_some() {
            out.push('…');
        }
    }
    if list.len() > NAMES_SHOWN {
        out.push_str(&format!(" and {} more", list.len() - NAMES_SHOWN));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_however_many_and_however_long() {
        let long = "x".repeat(300);
        let list: Vec<&str> = std::iter::repeat_n(long.as_str(), 100).collect();
        let shown = names(&list);
        assert!(shown.chars().count() < 4 * (NAME_CHARS + 3) + 20, "{shown}");
        assert!(shown.ends_with("and 97 more"), "{shown}");
        assert_eq!(names(&["a", "b"]), "a, b");
        assert_eq!(names(&[]), "");
    }

    #[test]
    fn custom_fields_past_either_cap_are_refused() {
        let caps = Caps {
            custom_fields_keys: 2,
            custom_fields_bytes: 20,
            ..Caps::default()
        };
        let fields = |json: &str| -> Map<String, Value> { serde_json::from_str(json).unwrap() };
        assert!(
            caps.check_custom_fields(&fields(r#"{"a":1,"b":2}"#))
                .is_ok()
        );
        assert_eq!(
            caps.check_custom_fields(&fields(r#"{"a":1,"b":2,"c":3}"#))
                .unwrap_err()
                .cap,
            Cap::CustomFieldsKeys
        );
        assert_eq!(
            caps.check_custom_fields(&fields(r#"{"a":"0123456789012345"}"#))
                .unwrap_err()
                .cap,
            Cap::CustomFieldsBytes
        );
    }
}
