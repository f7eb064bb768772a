use super::*;
use crate::domain::payload::{End, Participant, Summary};

const T: Target<'static> = Target {
    bot_id: "st-1",
    conversation_id: "c-1",
};

fn event(kind: EventKind) -> Event {
    Event {
        raw: format!("{{\"name\":\"{}\"}}", kind.name()),
        kind,
        redactions: Default::default(),
    }
}

fn end() -> Event {
    event(EventKind::End(End {
        reason: "agent_initiated".into(),
        language: "en".into(),
        experience: "voice".into(),
        participant: Participant {
            identity: "a1".into(),
            name: "A".into(),
            kind: "agent".into(),
            custom_fields: Default::default(),
        },
    }))
}

fn summary() -> Event {
    event(EventKind::Summary(Summary {
        language: "English".into(),
        locale: "en".into(),
        kind: "post".into(),
    }))
}

fn actions(n: usize) -> Arc<[ActionRef]> {
    (0..n)
        .map(|i| ActionRef::on_end(&format!("hook{i}"), "webhook", format!("dest{i}"), 3))
        .collect()
}

fn bot(n: usize) -> Bot {
    Bot {
        on_end: actions(n),
        caps: Caps::default(),
        summary: None,
    }
}

#[test]
fn the_first_end_schedules_one_job_per_action_with_the_record_at_the_end() {
    let now = Timestamp::from_millis(1_000);
    let events = [summary(), end()];
    let p = plan(T, None, &events, &bot(2), now).expect("accepted");
    assert_eq!(
        p.outcome,
        Accepted {
            stored: 2,
            duplicate_ends: 0,
            ended: true
        }
    );
    assert_eq!(
        p.appends
            .iter()
            .map(|a| (a.seq, a.name))
            .collect::<Vec<_>>(),
        [(1, "TRIGGER_SUMMARY_EVENT"), (2, "END_OF_CONVERSATION")]
    );
    let jobs = p.jobs.expect("jobs");
    assert_eq!(jobs.actions.len(), 2);
    let record: serde_json::Value = serde_json::from_str(&jobs.payload).expect("json");
    assert_eq!(record["conversationId"], "c-1");
    assert_eq!(record["status"], "ended");
}

#[test]
fn a_repeated_end_is_counted_and_schedules_nothing() {
    let now = Timestamp::from_millis(1_000);
    let events = [end()];
    let first = plan(T, None, &events, &bot(1), now).expect("accepted");
    let again = plan(T, Some(first.state), &events, &bot(1), now).expect("accepted");
    assert_eq!(
        again.outcome,
        Accepted {
            stored: 0,
            duplicate_ends: 1,
            ended: false
        }
    );
    assert!(again.appends.is_empty() && again.jobs.is_none());
}

#[test]
fn another_event_after_the_end_refuses_the_whole_request() {
    let now = Timestamp::from_millis(1_000);
    let (one, two) = ([end()], [end(), summary()]);
    let ended = plan(T, None, &one, &bot(1), now).expect("accepted");
    assert_eq!(
        plan(T, Some(ended.state), &two, &bot(1), now),
        Err(Refusal::EndedAlready { ended_at: now })
    );
}

#[test]
fn a_bot_without_actions_gets_no_jobs() {
    let now = Timestamp::from_millis(1_000);
    let events = [end()];
    let p = plan(T, None, &events, &bot(0), now).expect("accepted");
    assert!(p.outcome.ended && p.jobs.is_none());
}

#[test]
fn expiry_ends_an_active_conversation_once_and_logs_why() {
    let t0 = Timestamp::from_millis(1_000);
    let events = [summary()];
    let active = plan(T, None, &events, &bot(1), t0).expect("accepted");
    let now = Timestamp::from_millis(61_000);
    let p = plan_expiry(T, active.state, 60_000, &actions(1), now).expect("expired");
    assert_eq!(p.appends.len(), 1);
    assert_eq!(p.appends[0].seq, 2);
    assert_eq!(p.appends[0].name, "INACTIVITY_TIMEOUT");
    let body: serde_json::Value = serde_json::from_str(&p.appends[0].body).expect("json");
    assert_eq!(body["inactivityTimeoutMs"], 60_000);
    assert_eq!(body["lastEventAt"], t0.to_rfc3339());
    assert!(p.jobs.is_some());
    assert_eq!(p.state.end_reason.as_deref(), Some(INACTIVITY_REASON));
    assert!(plan_expiry(T, p.state, 60_000, &actions(1), now).is_none());
}

/// Two requests of one conversation written together (the PostgreSQL batch) write what
/// the same events in one request would: the same state, tags, log entries and jobs.
#[test]
fn a_plan_then_the_next_writes_what_one_request_with_both_would() {
    let now = Timestamp::from_millis(1_000);
    let (first, second, both) = ([summary()], [end()], [summary(), end()]);
    let one = plan(T, None, &first, &bot(2), now).expect("accepted");
    let mut next = plan(T, Some(one.state.clone()), &second, &bot(2), now).expect("accepted");
    let next_jobs = next.jobs.take();
    let merged = one.then(next);
    let whole = plan(T, None, &both, &bot(2), now).expect("accepted");
    assert_eq!(merged.state_json, whole.state_json);
    assert_eq!(merged.tags, whole.tags);
    assert_eq!(merged.tags_before, whole.tags_before);
    let log = |p: &Plan<'_>| {
        p.appends
            .iter()
            .map(|a| (a.seq, a.name, a.body.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(log(&merged), log(&whole));
    assert_eq!((merged.jobs, next_jobs), (None, whole.jobs));
}
