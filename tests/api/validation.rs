//! Every required field of the seed's table, removed or mistyped, is named in a 400.

use serde_json::{Value, json};

use crate::helpers::*;

/// Removes the value at `path` (dot-separated, `events.0` for array items).
fn remove(body: &mut Value, path: &str) {
    let (parent, last) = match path.rsplit_once('.') {
        Some((p, l)) => (pointer(p), l.to_owned()),
        None => (String::new(), path.to_owned()),
    };
    body.pointer_mut(&parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(&last);
}

fn set(body: &mut Value, path: &str, value: Value) {
    *body.pointer_mut(&pointer(path)).unwrap() = value;
}

fn pointer(path: &str) -> String {
    path.split('.').map(|p| format!("/{p}")).collect()
}

fn message_path(path: &str) -> String {
    path.replace("events.0", "events[0]")
}

const REQUIRED: [&str; 11] = [
    "conversationId",
    "botId",
    "events",
    "events.0.name",
    "events.0.reason",
    "events.0.language",
    "events.0.experience",
    "events.0.participant",
    "events.0.participant.identity",
    "events.0.participant.name",
    "events.0.participant.type",
];

#[tokio::test]
async fn removing_any_required_field_answers_400_naming_it() {
    let app = TestApp::spawn().await;
    for path in REQUIRED {
        let mut body = seed_with(&unique("missing"));
        remove(&mut body, path);
        let (status, answer) = app.hook(&body).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert_eq!(answer["code"], 400);
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.starts_with(&message_path(path)),
            "{path}: {message}"
        );
        assert!(message.contains("required"), "{path}: {message}");
    }
}

#[tokio::test]
async fn a_wrong_json_type_for_any_field_answers_400_naming_it() {
    let app = TestApp::spawn().await;
    let mut cases: Vec<(&str, Value)> = REQUIRED.iter().map(|p| (*p, json!(42))).collect();
    cases.extend([
        ("events.0.participant.identity", json!(["agent1"])),
        ("events.0.reason", json!({"why": "x"})),
        ("events.0.experience", json!(true)),
        ("events.0.participant.customFields", json!("queue11")),
        ("events", json!({"name": "END_OF_CONVERSATION"})),
        ("events.0", json!("END_OF_CONVERSATION")),
    ]);
    for (path, value) in cases {
        let mut body = seed_with(&unique("type"));
        set(&mut body, path, value.clone());
        let (status, answer) = app.hook(&body).await;
        assert_eq!(status, 400, "{path} = {value}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.starts_with(&message_path(path)),
            "{path} = {value}: {message}"
        );
        assert!(message.contains("must be"), "{path} = {value}: {message}");
    }
}

#[tokio::test]
async fn empty_strings_in_required_fields_are_refused() {
    let app = TestApp::spawn().await;
    let mut body = seed_with(&unique("empty"));
    set(&mut body, "events.0.participant.identity", json!(""));
    let (status, answer) = app.hook(&body).await;
    assert_eq!(
        (status.as_u16(), answer["message"].as_str().unwrap()),
        (400, "events[0].participant.identity must not be empty")
    );
}

#[tokio::test]
async fn optional_custom_fields_may_be_absent_or_carry_any_keys() {
    let app = TestApp::spawn().await;
    let mut body = seed_with(&unique("cf"));
    remove(&mut body, "events.0.participant.customFields");
    assert_eq!(app.hook(&body).await.0, 200);

    let c = unique("cf");
    let mut body = seed_with(&c);
    set(
        &mut body,
        "events.0.participant.customFields",
        json!({"agentEmail": "a@b.c", "skill": {"level": 3}, "tags": ["x"]}),
    );
    assert_eq!(app.hook(&body).await.0, 200);
    let (_, conv) = app.conversation(&c).await;
    assert_eq!(
        conv["endedBy"]["customFields"]["skill"]["level"], 3,
        "extra keys are kept as they came"
    );
}

#[tokio::test]
async fn the_vendors_transfer_spellings_are_accepted_and_others_named() {
    let app = TestApp::spawn().await;
    let c = unique("spell");
    for (tt, tr, ext) in [
        ("NA", "entry", json!("true")),
        ("COLD", "exit", json!(true)),
        ("cold", "Entry", json!("false")),
        ("Warm", "entry", json!(false)),
        ("REDIAL", "entry", json!(null)),
    ] {
        let mut event = transfer(tt, tr, "a1");
        event["isExtAD"] = ext.clone();
        let (status, answer) = app.hook(&event_body(&c, json!([event]))).await;
        assert_eq!(status, 200, "{tt} {tr} {ext}: {answer}");
    }
    let (status, answer) = app
        .hook(&event_body(&c, json!([transfer("HOT", "entry", "a1")])))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["message"],
        "events[0].transfertype \"HOT\" is not one of NA, COLD, WARM, redial"
    );
    let mut event = transfer("NA", "entry", "a1");
    event["isExtAD"] = json!("maybe");
    let (status, answer) = app.hook(&event_body(&c, json!([event]))).await;
    assert_eq!(
        (status.as_u16(), answer["message"].as_str().unwrap()),
        (
            400,
            "events[0].isExtAD must be true or false (got \"maybe\")"
        )
    );
}

#[tokio::test]
async fn a_summary_request_needs_its_data_fields() {
    let app = TestApp::spawn().await;
    let mut event = summary();
    event["data"].as_object_mut().unwrap().remove("locale");
    let (status, answer) = app.hook(&event_body(&unique("s"), json!([event]))).await;
    assert_eq!(
        (status.as_u16(), answer["message"].as_str().unwrap()),
        (400, "events[0].data.locale is required")
    );
}

#[tokio::test]
async fn the_second_event_of_a_request_is_checked_before_the_first_is_stored() {
    let app = TestApp::spawn().await;
    let c = unique("second");
    let mut bad = transfer("NA", "exit", "a1");
    bad.as_object_mut().unwrap().remove("participant");
    let (status, answer) = app
        .hook(&event_body(&c, json!([transfer("NA", "entry", "a1"), bad])))
        .await;
    assert_eq!(
        (status.as_u16(), answer["message"].as_str().unwrap()),
        (400, "events[1].participant is required")
    );
    assert_eq!(app.conversation(&c).await.0, 404);
}

/// Issue 25, item 2: a body with both `events` and `query` (the contract's oneOf forbids
/// it) is a 400 naming both; it used to be stored as its events, the message dropped.
#[tokio::test]
async fn a_body_with_both_events_and_a_query_is_refused_naming_both() {
    let app = TestApp::spawn().await;
    let c = unique("both");
    let mut body = seed_with(&c);
    body["query"] = json!("and a message");
    body["author"] = json!({"type": "USER"});
    let (status, answer) = app.hook(&body).await;
    assert_eq!(status, 400, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("query") && message.contains("events"),
        "{message}"
    );
    // Nothing was stored.
    let resp = app
        .client
        .get(format!("{}/api/v1/bots/{BOT}/conversations/{c}", app.base))
        .header("token", token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // A null query beside events is no query.
    body["query"] = json!(null);
    assert_eq!(app.hook(&body).await.0, 200);
}

/// Issue 25 (the hostile review): a NUL anywhere in a body — a `customFields` value, an
/// unknown field, a key — is a 400 naming where (PostgreSQL's jsonb cannot hold one: a
/// stored one once stopped a bot's retention for good).
#[tokio::test]
async fn a_nul_anywhere_in_a_body_is_a_400_naming_where() {
    let app = TestApp::spawn().await;
    let mut body = seed_with(&unique("nul"));
    body["events"][0]["participant"]["customFields"]["note"] = json!("a\u{0}b");
    let (status, answer) = app.hook(&body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .starts_with("events[0].participant.customFields.note holds a NUL"),
        "{answer}"
    );
    let mut body = seed_with(&unique("nul"));
    body["extra"] = json!({"k\u{0}ey": 1});
    let (status, answer) = app.hook(&body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .starts_with("extra.k\\u0000ey holds a NUL"),
        "{answer}"
    );
}
