//! Caps on what one conversation accumulates: a request past a cap is refused whole
//! (422 naming the cap, nothing stored, its jti unused), an end never is.

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::helpers::*;

fn warm_entries(from: usize, n: usize) -> Value {
    let events: Vec<Value> = (from..from + n)
        .map(|i| transfer("WARM", "entry", &format!("{i:0>256}")))
        .collect();
    json!(events)
}

async fn record_bytes(app: &TestApp, conversation: &str) -> usize {
    let (status, record) = app.conversation(conversation).await;
    assert_eq!(status, 200, "{record}");
    record.to_string().len()
}

/// The security review's reproduction: 20 requests of 100 WARM entries with distinct
/// 256-character identities took one record to 52 MB. Now the first of them is refused,
/// the record stays small, and the conversation still ends with 100 COLD entries.
#[tokio::test]
async fn the_growth_attack_is_refused_at_the_first_request_and_the_conversation_still_ends() {
    let app = TestApp::spawn().await;
    let c = unique("grow");
    let (status, _) = app
        .hook(&event_body(&c, json!([transfer("NA", "entry", "a0")])))
        .await;
    assert_eq!(status, 200);

    for round in 0..20 {
        let (status, body) = app
            .hook(&event_body(&c, warm_entries(round * 100, 100)))
            .await;
        assert_eq!(status, 422, "round {round}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("caps.agents") && message.contains("64"),
            "{message}"
        );
    }
    let bytes = record_bytes(&app, &c).await;
    assert!(bytes < 4096, "record of {bytes} bytes after refusals");

    // An end is never refused for a cap, even one that brings 100 new agents with it.
    let mut events: Vec<Value> = (0..99)
        .map(|i| transfer("COLD", "entry", &format!("cold{i:0>252}")))
        .collect();
    let mut end = seed()["events"][0].clone();
    end["participant"]["customFields"] = json!({"big": "x".repeat(100_000)});
    events.push(end);
    let (status, body) = app.hook(&event_body(&c, json!(events))).await;
    assert_eq!(status, 200, "{body}");
    let (_, record) = app.conversation(&c).await;
    assert_eq!(record["status"], "ended");
    // The end was stored; the events that would have passed a cap were not, and the
    // record says so; the end's oversized customFields were not kept either.
    assert_eq!(record["eventCount"], 2, "{record}");
    assert_eq!(record["agents"].as_array().map(Vec::len), Some(1));
    let codes: Vec<&str> = record["anomalies"]
        .as_array()
        .expect("anomalies")
        .iter()
        .filter_map(|a| a["code"].as_str())
        .collect();
    assert!(codes.contains(&"events_dropped_over_cap"), "{codes:?}");
    assert!(codes.contains(&"end_custom_fields_dropped"), "{codes:?}");
    assert!(record["endedBy"].get("customFields").is_none());
    assert!(record_bytes(&app, &c).await < 8192);
    // Anomaly messages list at most three agents, whatever the number active.
    for anomaly in record["anomalies"].as_array().expect("anomalies") {
        let message = anomaly["message"].as_str().unwrap_or_default();
        assert!(message.len() < 600, "{} bytes: {message}", message.len());
    }
}

#[tokio::test]
async fn each_cap_is_set_per_bot_and_named_in_the_refusal() {
    let app = TestApp::build()
        .actions("[bots.caps]\nsummary_requests = 2\nevents = 6\ncustom_fields_keys = 3\n")
        .spawn()
        .await;

    let c = unique("sum");
    for _ in 0..2 {
        let (status, _) = app.hook(&event_body(&c, json!([summary()]))).await;
        assert_eq!(status, 200);
    }
    let (status, body) = app.hook(&event_body(&c, json!([summary()]))).await;
    assert_eq!(status, 422);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("caps.summary_requests"),
        "{body}"
    );

    let c = unique("keys");
    let mut entry = transfer("NA", "entry", "a1");
    entry["participant"]["customFields"] = json!({"a": 1, "b": 2, "c": 3, "d": 4});
    let (status, body) = app.hook(&event_body(&c, json!([entry]))).await;
    assert_eq!(status, 422);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("caps.custom_fields_keys"),
        "{body}"
    );
    // Nothing of the refused request was stored: the conversation was never created.
    assert_eq!(app.conversation(&c).await.0, 404);

    let c = unique("events");
    let (status, _) = app
        .hook(&event_body(&c, json!([summary(), summary()])))
        .await;
    assert_eq!(status, 200);
    let many: Vec<Value> = (0..5)
        .map(|i| transfer("NA", if i % 2 == 0 { "entry" } else { "exit" }, "a"))
        .collect();
    let (status, body) = app.hook(&event_body(&c, json!(many))).await;
    assert_eq!(status, 422);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("caps.events"),
        "{body}"
    );
    let (_, record) = app.conversation(&c).await;
    assert_eq!(record["eventCount"], 2);
    // The end still goes through, past the events cap.
    let (status, _) = app.end(&c).await;
    assert_eq!(status, 200);
    let (_, record) = app.conversation(&c).await;
    assert_eq!(record["status"], "ended");
    assert_eq!(record["eventCount"], 3);
}

#[tokio::test]
async fn the_stored_state_is_capped_in_bytes() {
    let app = TestApp::build()
        .actions("[bots.caps]\nstate_bytes = 8192\n")
        .spawn()
        .await;
    let c = unique("bytes");
    let mut refused = None;
    for i in 0..40 {
        let mut entry = transfer(
            if i == 0 { "NA" } else { "WARM" },
            "entry",
            &unique("agent"),
        );
        entry["participant"]["name"] = json!("n".repeat(500));
        let (status, body) = app.hook(&event_body(&c, json!([entry]))).await;
        if status == 422 {
            refused = Some((i, body));
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let (i, body) = refused.expect("a request past 8 KiB of state is refused");
    assert!(i > 5, "refused after {i} agents");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("caps.state_bytes"),
        "{body}"
    );
    assert!(record_bytes(&app, &c).await < 8192 * 2);
}

/// The README promises that a refused request does not use its token's jti.
#[tokio::test]
async fn a_request_refused_for_a_cap_does_not_use_its_jti() {
    let app = TestApp::build()
        .actions("[bots.caps]\nsummary_requests = 1\n")
        .spawn()
        .await;
    let c = unique("jti-cap");
    let (status, _) = app.hook(&event_body(&c, json!([summary()]))).await;
    assert_eq!(status, 200);
    let token = sign(
        Algorithm::HS256,
        JTI_SECRET,
        json!({"appId": JTI_APP, "jti": unique("j")}),
    );
    let path = format!("/agentai/api/v1/hooks/{BOT}");
    let (status, _) = app
        .post(&path, "token", &token, &event_body(&c, json!([summary()])))
        .await;
    assert_eq!(status, 422);
    // The same token is still good for a request within the caps.
    let (status, body) = app.post(&path, "token", &token, &seed_with(&c)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_cap_of_zero_is_a_configuration_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_with_actions(
        &dir.path().join("wrapup.db"),
        "",
        "[bots.caps]\nagents = 0\n",
    );
    let config = write_config(dir.path(), &text);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wrapup"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .expect("run wrapup");
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bots[1].caps.agents") && stderr.contains("between 1 and"),
        "{stderr}"
    );
}

/// The event log is bounded in bytes too: unknown fields are kept with each event, so
/// count alone would let a conversation's log grow to 10,000 request bodies.
#[tokio::test]
async fn the_event_log_is_capped_in_bytes() {
    let app = TestApp::build()
        .actions("[bots.caps]\nlog_bytes = 4096\n")
        .spawn()
        .await;
    let c = unique("log");
    let message = |i: usize| {
        json!({"botId": BOT, "conversationId": c, "query": format!("m{i}"),
               "author": {"type": "USER"}, "pad": "p".repeat(1500)})
    };
    assert_eq!(app.hook(&message(0)).await.0, 200);
    assert_eq!(app.hook(&message(1)).await.0, 200);
    let (status, body) = app.hook(&message(2)).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("caps.log_bytes"),
        "{body}"
    );
    assert_eq!(app.end(&c).await.0, 200);
}
