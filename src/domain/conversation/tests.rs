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
