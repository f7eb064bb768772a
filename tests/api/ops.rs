//! Health, readiness, metrics and request ids.

use crate::helpers::*;

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let (status, body) = into_json(app.get("/readyz").await).await;
    assert_eq!(
        (status.as_u16(), body["status"].as_str()),
        (200, Some("ready"))
    );
}

#[tokio::test]
async fn metrics_count_requests_events_ends_and_duplicates() {
    let app = TestApp::spawn().await;
    let c = unique("m");
    app.end(&c).await;
    app.end(&c).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    for name in [
        "wrapup_http_requests_total{route=\"/agentai/api/v1/hooks/{botId}\",status=\"200\"}",
        "wrapup_events_received_total{name=\"END_OF_CONVERSATION\"}",
        "wrapup_conversations_ended_total",
        "wrapup_duplicate_ends_total",
        "wrapup_commit_batch_size_bucket",
        "wrapup_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let resp = app.get("/healthz").await;
    assert!(!resp.headers()["x-request-id"].is_empty());
    let resp = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn shutdown_answers_requests_already_in_flight() {
    let app = TestApp::spawn().await;
    let client = app.client.clone();
    let url = format!("{}/agentai/api/v1/hooks/{BOT}", app.base);
    let inflight: Vec<_> = (0..20)
        .map(|i| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                client
                    .post(url)
                    .header("token", token())
                    .json(&seed_with(&format!("inflight-{i}")))
                    .send()
                    .await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    app.stop().await;
    for handle in inflight {
        // Each request either completed with 200 or never reached the server; none is cut mid-way.
        if let Ok(resp) = handle.await.unwrap() {
            assert_eq!(resp.status(), 200);
        }
    }
}

/// Issue 17, item 2: the database files hold transcripts; they are created for their owner
/// only, whatever the umask.
#[tokio::test]
async fn the_database_files_are_created_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let app = TestApp::spawn_in(dir, "").await;
    assert_eq!(app.end(&unique("private")).await.0, 200);
    for name in ["wrapup.db", "wrapup.db-wal", "wrapup.db-shm"] {
        let mode = std::fs::metadata(path.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
    }
}
