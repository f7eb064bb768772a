use proptest::prelude::*;

use super::*;
use crate::domain::payload::{End, Participant, Summary, Transfer, TransferType, Transition};

fn participant(who: usize, fields: usize) -> Participant {
    Participant {
        identity: format!("agent{who}"),
        name: "A".into(),
        kind: "agent".into(),
        custom_fields: (0..fields)
            .map(|i| (format!("k{i}"), serde_json::json!("v".repeat(40))))
            .collect(),
    }
}

fn any_event() -> impl Strategy<Value = Event> {
    let kind = prop_oneof![
        1 => (0usize..3).prop_map(|f| EventKind::End(End {
            reason: "r".into(),
            language: "en".into(),
            experience: "voice".into(),
            participant: participant(0, f * 20),
        })),
        2 => Just(EventKind::Summary(Summary {
            language: "English".into(),
            locale: "en".into(),
            kind: "post".into(),
        })),
        6 => (0usize..4, 0usize..2, 0usize..12, 0usize..4).prop_map(|(tt, tr, who, f)| {
            EventKind::Transfer(Transfer {
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
                participant: participant(who, f * 3),
                reason: None,
            })
        }),
    ];
    kind.prop_map(|kind| Event {
        raw: format!("{{\"name\":\"{}\"}}", kind.name()),
        kind,
        redactions: Default::default(),
    })
}

proptest! {
    /// Whatever the requests: a request with an end is never refused for a cap; an
    /// accepted request without one leaves the conversation within every cap.
    #[test]
    fn caps_hold_and_an_end_is_never_refused_for_them(
        requests in prop::collection::vec(prop::collection::vec(any_event(), 1..8), 1..40)
    ) {
        let caps = Caps {
            agents: 5,
            segments: 12,
            summary_requests: 3,
            events: 40,
            log_bytes: 800,
            custom_fields_keys: 6,
            custom_fields_bytes: 300,
            state_bytes: 3000,
        };
        let bot = Bot { on_end: Arc::from([]), caps, summary: None };
        let t = Target { bot_id: "b", conversation_id: "c" };
        let mut state: Option<Conversation> = None;
        for (i, events) in requests.iter().enumerate() {
            let now = Timestamp::from_millis(i as i64);
            match plan(t, state.clone(), events, &bot, now) {
                Ok(p) => {
                    prop_assert_eq!(&p.state_json, &serde_json::to_string(&p.state).unwrap());
                    if !has_end(events) {
                        let c = &p.state;
                        prop_assert!(c.agents.len() <= caps.agents);
                        prop_assert!(c.agents.iter().map(|a| a.segments.len()).sum::<usize>() <= caps.segments);
                        prop_assert!(c.summary_requests.len() <= caps.summary_requests);
                        prop_assert!(c.event_count <= caps.events);
                        prop_assert!(c.log_bytes <= caps.log_bytes);
                        prop_assert!(p.state_json.len() <= caps.state_bytes);
                    }
                    state = Some(p.state);
                }
                Err(Refusal::OverCap(_)) => prop_assert!(!has_end(events), "an end refused for a cap"),
                Err(Refusal::EndedAlready { .. }) => {
                    // After an earlier end, or an end earlier in the same request.
                    prop_assert!(state.as_ref().is_some_and(Conversation::is_ended) || has_end(events));
                }
            }
        }
    }
}
