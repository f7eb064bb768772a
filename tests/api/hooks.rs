//! The endpoint's happy paths and the exactly-once end.

use futures::future::join_all;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn the_seed_sample_is_accepted_verbatim_on_every_path_with_every_header_spelling() {
    let app = TestApp::spawn().await;
    let token = token();
    for prefix in [
        "/agentai/api/v1/hooks",
        "/agentassist/api/v1/hooks",
        "/api/v1/hooks",
    ] {
        for header in ["auth", "token", "bearer"] {
            let req = app
                .client
                .post(format!("{}{prefix}/{BOT}", app.base))
                .header("Content-Type", "application/json")
                .body(SEED_BODY);
            let req = if header == "bearer" {
                req.bearer_auth(&token)
            } else {
                req.header(header, &token)
            };
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200, "{prefix} with {header}");
            assert_eq!(
                resp.text().await.unwrap(),
                r#"{"STATUS":"OK"}"#,
                "{prefix} with {header}"
            );
        }
    }
    let (status, conv) = app.conversation("atesta-mlxxxxxx").await;
    assert_eq!(status, 200);
    assert_eq!(conv["status"], "ended");
    assert_eq!(conv["endReason"], "agent_initiated");
    assert_eq!(conv["endedBy"]["identity"], "agent1");
    assert_eq!(conv["endedBy"]["customFields"]["queueName"], "queue11");
    assert_eq!(conv["experience"], "voice");
    assert_eq!(conv["language"], "en");
    assert_eq!(conv["eventCount"], 1);
    assert_eq!(
        conv["duplicateEnds"], 8,
        "nine identical ends: one end, eight duplicates"
    );
}

#[tokio::test]
async fn a_token_built_by_hand_from_the_documented_payload_is_accepted() {
    let app = TestApp::spawn().await;
    let token = handmade_hs256(
        HS256_SECRET,
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"sub": "1234567890", "appId": HS256_APP}),
    );
    let (status, body) = app
        .post(
            &format!("/agentai/api/v1/hooks/{BOT}"),
            "auth",
            &token,
            &seed(),
        )
        .await;
    assert_eq!((status.as_u16(), body), (200, json!({"STATUS": "OK"})));
}

#[tokio::test]
async fn fifty_concurrent_identical_ends_end_the_conversation_once() {
    let app = TestApp::spawn().await;
    let conversation = unique("race");
    let body = seed_with(&conversation);
    let answers = join_all((0..50).map(|_| app.hook(&body))).await;
    for (status, body) in &answers {
        assert_eq!((status.as_u16(), body), (200, &json!({"STATUS": "OK"})));
    }
    let (_, conv) = app.conversation(&conversation).await;
    assert_eq!(conv["status"], "ended");
    assert_eq!(conv["eventCount"], 1);
    assert_eq!(conv["duplicateEnds"], 49);
}

#[tokio::test]
async fn a_repeated_end_is_acknowledged_but_changes_nothing_but_the_count() {
    let app = TestApp::spawn().await;
    let conversation = unique("dup");
    assert_eq!(app.end(&conversation).await.0, 200);
    let (_, first) = app.conversation(&conversation).await;
    let mut other = seed_with(&conversation);
    other["events"][0]["reason"] = json!("customer_hangup");
    assert_eq!(app.hook(&other).await.0, 200);
    let (_, second) = app.conversation(&conversation).await;
    assert_eq!(second["duplicateEnds"], 1);
    for field in [
        "endedAt",
        "endReason",
        "lastEventAt",
        "eventCount",
        "endedBy",
    ] {
        assert_eq!(first[field], second[field], "{field} changed");
    }
}

#[tokio::test]
async fn a_full_conversation_in_the_prescribed_order_is_stored_and_ended() {
    let app = TestApp::spawn().await;
    let c = unique("life");
    for events in [
        json!([transfer("NA", "entry", "a1")]),
        json!([
            transfer("COLD", "exit", "a1"),
            transfer("cold", "entry", "a2")
        ]),
        json!([
            transfer("WARM", "entry", "a3"),
            transfer("WARM", "exit", "a3")
        ]),
        json!([transfer("NA", "exit", "a2")]),
        json!([
            transfer("redial", "entry", "a2"),
            transfer("NA", "exit", "a2")
        ]),
        json!([summary()]),
    ] {
        let (status, body) = app.hook(&event_body(&c, events)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, conv) = app.conversation(&c).await;
    assert_eq!(
        (conv["status"].clone(), conv["eventCount"].clone()),
        (json!("active"), json!(9))
    );
    assert_eq!(app.end(&c).await.0, 200);
    let (_, conv) = app.conversation(&c).await;
    assert_eq!(
        (conv["status"].clone(), conv["eventCount"].clone()),
        (json!("ended"), json!(10))
    );
}

#[tokio::test]
async fn a_request_is_stored_whole_or_not_at_all() {
    let app = TestApp::spawn().await;
    let c = unique("atomic");
    let mut end = seed()["events"][0].clone();
    end["reason"] = json!("agent_initiated");
    let (status, body) = app
        .hook(&event_body(
            &c,
            json!([summary(), end, transfer("NA", "exit", "a1")]),
        ))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        app.conversation(&c).await.0,
        404,
        "nothing of the refused request was stored"
    );
}

#[tokio::test]
async fn events_out_of_the_prescribed_order_are_accepted() {
    let app = TestApp::spawn().await;
    let c = unique("order");
    assert_eq!(
        app.hook(&event_body(&c, json!([transfer("NA", "exit", "ghost")])))
            .await
            .0,
        200
    );
    assert_eq!(
        app.hook(&event_body(
            &c,
            json!([transfer("NA", "entry", "a1"), transfer("NA", "entry", "a1")])
        ))
        .await
        .0,
        200
    );
    assert_eq!(app.end(&c).await.0, 200);
}

#[tokio::test]
async fn a_bare_message_is_accepted_and_what_it_lacked_is_noted() {
    let app = TestApp::spawn().await;
    let c = unique("bare");
    let (status, _) = app
        .hook(&json!({"agentId": "agent1", "botId": BOT, "conversationId": c, "query": "hello"}))
        .await;
    assert_eq!(status, 200);
    let (_, conv) = app.conversation(&c).await;
    assert_eq!(conv["eventCount"], 1);
    let anomaly = conv["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["code"] == "message_fields_missing")
        .expect("the missing fields are noted");
    assert!(
        anomaly["message"]
            .as_str()
            .unwrap()
            .contains("author, source, experience, language")
    );
    assert_eq!(anomaly["eventSeq"], 1);
}

#[tokio::test]
async fn a_full_message_with_unknown_fields_is_accepted() {
    let app = TestApp::spawn().await;
    let body = json!({
        "botId": BOT, "conversationId": unique("msg"), "query": "I need help", "agentId": "agent1",
        "experience": "chat", "author": {"type": "USER"}, "source": "genesys",
        "sendUserMessage": "true", "sendAgentMessage": false, "language": "en",
        "fromThirdParty": true, "isAnonymous": "false"
    });
    let (status, body) = app.hook(&body).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn acknowledged_events_survive_a_restart() {
    let mut app = TestApp::spawn().await;
    let ids: Vec<String> = (0..20).map(|i| format!("restart-{i}")).collect();
    for (status, _) in join_all(ids.iter().map(|c| app.end(c))).await {
        assert_eq!(status, 200);
    }
    app.restart().await;
    for c in &ids {
        let (status, conv) = app.conversation(c).await;
        assert_eq!(
            (status.as_u16(), conv["status"].clone()),
            (200, json!("ended")),
            "{c}"
        );
    }
}

/// The README's curl, run by curl itself, on every path and header spelling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_sample_sent_with_curl_gets_the_seeds_response() {
    let app = TestApp::spawn().await;
    let token = token();
    for prefix in [
        "/agentai/api/v1/hooks",
        "/agentassist/api/v1/hooks",
        "/api/v1/hooks",
    ] {
        for header in [
            format!("token: {token}"),
            format!("auth: {token}"),
            format!("Authorization: Bearer {token}"),
        ] {
            let out = std::process::Command::new("curl")
                .args(["-s", "--location", &format!("{}{prefix}/{BOT}", app.base)])
                .args([
                    "--header",
                    &header,
                    "--header",
                    "Content-Type: application/json",
                    "--data",
                    SEED_BODY,
                ])
                .output()
                .expect("curl runs");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                r#"{"STATUS":"OK"}"#,
                "{prefix} {header}"
            );
        }
    }
}
