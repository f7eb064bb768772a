//! Reads refused for their query leave the token's jti unused, and the event log's
//! `after` is refused past the range of a sequence number instead of wrapping.

use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::helpers::*;

async fn get_with(
    app: &TestApp,
    path: &str,
    token: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
    let resp = app
        .client
        .get(format!("{}{path}", app.base))
        .header("token", token)
        .send()
        .await
        .expect("request");
    into_json(resp).await
}

#[tokio::test]
async fn a_read_refused_for_its_query_does_not_use_the_jti() {
    let app = TestApp::spawn().await;
    let token = sign(
        Algorithm::HS256,
        JTI_SECRET,
        json!({"appId": JTI_APP, "jti": unique("read")}),
    );
    let list = format!("/api/v1/bots/{BOT}/conversations");
    for bad in ["?limit=0", "?cursor=%%%", "?status=sideways"] {
        let (status, body) = get_with(&app, &format!("{list}{bad}"), &token).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = get_with(&app, &list, &token).await;
    assert_eq!(status, 200, "{body}");
    // Now it is used.
    let (status, _) = get_with(&app, &list, &token).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn after_past_the_largest_sequence_number_is_refused() {
    let app = TestApp::spawn().await;
    let c = unique("after");
    assert_eq!(app.end(&c).await.0, 200);
    let events = format!("/api/v1/bots/{BOT}/conversations/{c}/events");
    let (status, body) = get_with(
        &app,
        &format!("{events}?after=18446744073709551615"),
        &token(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("after"),
        "{body}"
    );
    let (status, body) = get_with(
        &app,
        &format!("{events}?after=9223372036854775807"),
        &token(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"], json!([]));
    let (status, body) = get_with(&app, &format!("{events}?after=0"), &token()).await;
    assert_eq!(status, 200);
    assert_eq!(body["events"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn every_answer_says_nosniff() {
    let app = TestApp::spawn().await;
    for path in [
        "/healthz",
        "/no/such/endpoint",
        "/api/v1/bots/x/conversations",
    ] {
        let resp = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("request");
        assert_eq!(
            resp.headers()
                .get("x-content-type-options")
                .map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{path}"
        );
    }
}

/// Records and admin answers hold callers' data: no cache may keep them (issue 23, low).
#[tokio::test]
async fn records_and_admin_answers_say_no_store() {
    let app = TestApp::spawn().await;
    for (path, admin) in [
        (format!("/api/v1/bots/{BOT}/conversations"), false),
        ("/api/v1/bots/x/conversations".to_owned(), false),
        ("/admin/v1/jobs".to_owned(), true),
    ] {
        let mut req = app
            .client
            .get(format!("{}{path}", app.base))
            .header("auth", token());
        if admin {
            req = req.bearer_auth(ADMIN_TOKEN);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(
            resp.headers().get("cache-control").map(|v| v.as_bytes()),
            Some(&b"no-store"[..]),
            "{path}: {}",
            resp.status()
        );
    }
    // The health check may be cached as before.
    let resp = app.get("/healthz").await;
    assert!(resp.headers().get("cache-control").is_none());
}

/// A stored event is served again three levels deeper inside an events page; bodies
/// nesting deeper than 64 levels are refused, so every page stays readable by JSON
/// readers that stop at 128.
#[tokio::test]
async fn a_body_nested_deeper_than_64_levels_is_refused() {
    let app = TestApp::spawn().await;
    let c = unique("deep");
    let nested = |n: usize| format!("{}0{}", "[".repeat(n), "]".repeat(n));
    let body = |n: usize| {
        format!(
            r#"{{"botId":"{BOT}","conversationId":"{c}","query":"q","author":{{"type":"USER"}},"x":{}}}"#,
            nested(n)
        )
    };
    let (status, answer) = app.hook_raw(body(100)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("64 levels"),
        "{answer}"
    );
    // 63 levels inside the root object: 64 in all.
    let (status, answer) = app.hook_raw(body(63)).await;
    assert_eq!(status, 200, "{answer}");
    let (status, page) = get_with(
        &app,
        &format!("/api/v1/bots/{BOT}/conversations/{c}/events"),
        &token(),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"][0]["event"]["query"], "q");
}
