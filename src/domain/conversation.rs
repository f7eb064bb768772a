//! The conversation lifecycle: `(state, event) -> state`, with no IO.
//!
//! Invariants every store relies on:
//! - a conversation ends at most once; a later `END_OF_CONVERSATION` only bumps
//!   `duplicate_ends` and changes nothing else;
//! - any other event after the end is refused ([`EndedAfter`]), so the caller can
//!   answer 409 and store nothing of that request.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::payload::EventKind;
use super::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Anomaly {
    pub code: String,
    pub message: String,
    pub event_seq: u64,
}

/// The stored state of one conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub status: Status,
    pub created_at: Timestamp,
    pub last_event_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub end_reason: Option<String>,
    /// The participant of the end event, as parsed.
    pub ended_by: Option<Value>,
    pub experience: Option<String>,
    pub language: Option<String>,
    pub duplicate_ends: u64,
    pub event_count: u64,
    #[serde(default)]
    pub anomalies: Vec<Anomaly>,
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
            anomalies: Vec::new(),
        }
    }

    pub fn is_ended(&self) -> bool {
        self.status == Status::Ended
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
        self.event_count += 1;
        let seq = self.event_count;
        self.last_event_at = at;
        match event {
            EventKind::End(end) => {
                self.status = Status::Ended;
                self.ended_at = Some(at);
                self.end_reason = Some(end.reason.clone());
                self.ended_by = serde_json::to_value(&end.participant).ok();
                self.experience = Some(end.experience.clone());
                self.language = Some(end.language.clone());
            }
            EventKind::Transfer(t) => {
                self.experience = Some(t.experience.clone());
                if let Some(lang) = &t.language {
                    self.language = Some(lang.clone());
                }
            }
            EventKind::Summary(_) => {}
            EventKind::Message(m) => {
                if let Some(e) = &m.experience {
                    self.experience = Some(e.clone());
                }
                if let Some(l) = &m.language {
                    self.language = Some(l.clone());
                }
                if !m.missing.is_empty() {
                    self.anomalies.push(Anomaly {
                        code: "message_fields_missing".into(),
                        message: format!(
                            "message without {}; accepted{}",
                            m.missing.join(", "),
                            if m.author.is_none() {
                                ", author unknown"
                            } else {
                                ""
                            }
                        ),
                        event_seq: seq,
                    });
                }
            }
        }
        Ok(Applied::Stored { seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::payload::{End, Participant, Summary};

    fn end(reason: &str) -> EventKind {
        EventKind::End(End {
            reason: reason.into(),
            language: "en".into(),
            experience: "voice".into(),
            participant: Participant {
                identity: "agent1".into(),
                name: "Agent AI".into(),
                kind: "agent".into(),
                custom_fields: Default::default(),
            },
        })
    }

    fn summary() -> EventKind {
        EventKind::Summary(Summary {
            language: "English".into(),
            locale: "en".into(),
            kind: "post".into(),
        })
    }

    #[test]
    fn the_first_end_ends_and_repeats_are_only_counted() {
        let t0 = Timestamp::from_millis(1_000);
        let mut c = Conversation::new(t0);
        assert_eq!(c.apply(&summary(), t0), Ok(Applied::Stored { seq: 1 }));
        let t1 = Timestamp::from_millis(2_000);
        assert_eq!(
            c.apply(&end("agent_initiated"), t1),
            Ok(Applied::Stored { seq: 2 })
        );
        let before = c.clone();
        assert_eq!(
            c.apply(&end("other"), Timestamp::from_millis(3_000)),
            Ok(Applied::DuplicateEnd)
        );
        assert_eq!(c.duplicate_ends, 1);
        assert_eq!(c.end_reason.as_deref(), Some("agent_initiated"));
        assert_eq!(c.ended_at, Some(t1));
        assert_eq!(c.event_count, before.event_count);
        assert_eq!(c.last_event_at, before.last_event_at);
    }

    #[test]
    fn other_events_after_the_end_are_refused_with_the_end_time() {
        let t = Timestamp::from_millis(5);
        let mut c = Conversation::new(t);
        c.apply(&end("x"), t).unwrap();
        assert_eq!(c.apply(&summary(), t), Err(EndedAfter { ended_at: t }));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::payload::{Message, Summary};

    fn any_event() -> impl Strategy<Value = EventKind> {
        prop_oneof![
            "[a-z]{1,8}".prop_map(|r| {
                EventKind::End(crate::domain::payload::End {
                    reason: r,
                    language: "en".into(),
                    experience: "voice".into(),
                    participant: crate::domain::payload::Participant {
                        identity: "a".into(),
                        name: "A".into(),
                        kind: "agent".into(),
                        custom_fields: Default::default(),
                    },
                })
            }),
            Just(EventKind::Summary(Summary {
                language: "English".into(),
                locale: "en".into(),
                kind: "post".into(),
            })),
            any::<bool>().prop_map(|bare| {
                EventKind::Message(Message {
                    query: "q".into(),
                    agent_id: None,
                    author: None,
                    source: None,
                    experience: None,
                    language: None,
                    send_user_message: None,
                    send_agent_message: None,
                    missing: if bare { vec!["author"] } else { vec![] },
                })
            }),
        ]
    }

    proptest! {
        /// Whatever arrives in whatever order: one end at most, fixed once made; every
        /// later end only counts; every other event after it is refused and changes nothing.
        #[test]
        fn a_conversation_ends_at_most_once(events in prop::collection::vec(any_event(), 1..40)) {
            let mut c = Conversation::new(Timestamp::from_millis(0));
            let mut first_end: Option<(Timestamp, Option<String>)> = None;
            let (mut stored, mut ends) = (0u64, 0u64);
            for (i, e) in events.iter().enumerate() {
                let at = Timestamp::from_millis(i as i64 + 1);
                let before = c.clone();
                match c.apply(e, at) {
                    Ok(Applied::Stored { seq }) => {
                        stored += 1;
                        prop_assert_eq!(seq, stored);
                        if matches!(e, EventKind::End(_)) {
                            ends += 1;
                            first_end = Some((at, c.end_reason.clone()));
                        }
                    }
                    Ok(Applied::DuplicateEnd) => {
                        ends += 1;
                        prop_assert!(first_end.is_some());
                        prop_assert_eq!(c.duplicate_ends, before.duplicate_ends + 1);
                        prop_assert_eq!(c.event_count, before.event_count);
                    }
                    Err(EndedAfter { ended_at }) => {
                        prop_assert_eq!(Some(ended_at), first_end.as_ref().map(|f| f.0));
                        prop_assert_eq!(&c, &before);
                    }
                }
                if let Some((at, reason)) = &first_end {
                    prop_assert_eq!(c.ended_at, Some(*at));
                    prop_assert_eq!(&c.end_reason, reason);
                    prop_assert_eq!(c.status, Status::Ended);
                }
            }
            prop_assert_eq!(c.event_count, stored);
            prop_assert_eq!(c.duplicate_ends, ends.saturating_sub(1));
        }
    }
}
