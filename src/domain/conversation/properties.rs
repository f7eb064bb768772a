use proptest::prelude::*;

use super::*;
use crate::domain::payload::{Message, Summary};
use crate::domain::payload::{TransferType, Transition};

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
        (0usize..4, 0usize..2, 0usize..4).prop_map(|(tt, tr, who)| {
            EventKind::Transfer(crate::domain::payload::Transfer {
                transfer_type: [
                    TransferType::Na,
                    TransferType::Cold,
                    TransferType::Warm,
                    TransferType::Redial,
                ][tt],
                transition: [Transition::Entry, Transition::Exit][tr],
                is_ext_ad: None,
                language: None,
                experience: "voice".into(),
                participant: crate::domain::payload::Participant {
                    identity: format!("agent{who}"),
                    name: "A".into(),
                    kind: "agent".into(),
                    custom_fields: Default::default(),
                },
                reason: None,
            })
        }),
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
        // Segments are well formed, and all closed once the conversation ended.
        for agent in &c.agents {
            for (i, s) in agent.segments.iter().enumerate() {
                let last = i + 1 == agent.segments.len();
                prop_assert!(s.ended_at.is_some() || last, "only an agent's last segment may be open");
                prop_assert!(s.ended_at.is_none_or(|e| e >= s.started_at));
                if c.is_ended() {
                    prop_assert!(s.ended_at.is_some(), "an open segment survived the end");
                }
            }
        }
        prop_assert!(c.anomalies.len() <= MAX_ANOMALIES);
    }

    /// The server's own end closes everything too, and happens at most once.
    #[test]
    fn expiry_ends_once_and_closes_every_segment(events in prop::collection::vec(any_event(), 0..30)) {
        let mut c = Conversation::new(Timestamp::from_millis(0));
        for (i, e) in events.iter().enumerate() {
            let _ = c.apply(e, Timestamp::from_millis(i as i64 + 1));
        }
        let was_ended = c.is_ended();
        let expired = c.expire(Timestamp::from_millis(1_000), 500);
        prop_assert_eq!(expired.is_some(), !was_ended);
        prop_assert!(c.expire(Timestamp::from_millis(2_000), 500).is_none());
        prop_assert!(c.is_ended());
        prop_assert!(c.agents.iter().all(|a| !a.is_active()));
    }
}
