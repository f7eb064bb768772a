//! One test per row of DESIGN.md's table of semantics (the auth rows are in auth.rs).

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

#[tokio::test]
async fn an_unknown_bot_gets_the_vendors_400() {
    let app = TestApp::spawn().await;
    let bot = "st-ffffffff-0000-0000-0000-000000000000";
    let mut body = seed();
    body["botId"] = json!(bot);
    let (status, answer) = app
        .post(
            &format!("/agentai/api/v1/hooks/{bot}"),
            "token",
            &token(),
            &body,
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        answer,
        json!({"code": 400, "message": "Linked bot details couldn't be found. Please verify that the botId provided in the request body is correct."})
    );
}

#[tokio::test]
async fn a_body_bot_that_differs_from_the_path_is_named_in_a_400() {
    let app = TestApp::spawn().await;
    let mut body = seed();
    body["botId"] = json!(OTHER_BOT);
    let (status, answer) = app.hook(&body).await;
    assert_eq!(status, 400);
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.starts_with("botId ") && message.contains(OTHER_BOT) && message.contains(BOT),
        "{message}"
    );
}

#[tokio::test]
async fn an_unknown_event_name_lists_the_supported_ones() {
    let app = TestApp::spawn().await;
    let mut body = seed();
    body["events"][0]["name"] = json!("CONVERSATION_PAUSED");
    let (status, answer) = app.hook(&body).await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["message"],
        "events[0].name \"CONVERSATION_PAUSED\" is not a supported event (supported: END_OF_CONVERSATION, INTERNAL_TRANSFER_EVENT, TRIGGER_SUMMARY_EVENT)"
    );
}

/// Issue 23, low: an end followed by another event in one request stored nothing but was
/// answered 409 "ended at …". It is a 400 saying what it is; the same end alone then works.
#[tokio::test]
async fn an_event_after_the_end_in_the_same_request_is_a_400_that_says_so() {
    let app = TestApp::spawn().await;
    let c = unique("same");
    let end = seed_with(&c)["events"][0].clone();
    let (status, answer) = app.hook(&event_body(&c, json!([end, summary()]))).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["message"],
        "events[1]: TRIGGER_SUMMARY_EVENT follows the END_OF_CONVERSATION at events[0] in the same request; the end must be the last event; nothing of this request was stored"
    );
    assert_eq!(app.conversation(&c).await.0, 404);
    assert_eq!(app.hook(&event_body(&c, json!([end]))).await.0, 200);
}

#[tokio::test]
async fn an_event_after_the_end_gets_409_saying_when_it_ended() {
    let app = TestApp::spawn().await;
    let c = unique("after");
    app.end(&c).await;
    let (_, conv) = app.conversation(&c).await;
    let (status, answer) = app.hook(&event_body(&c, json!([summary()]))).await;
    assert_eq!(status, 409);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains(conv["endedAt"].as_str().unwrap()),
        "{answer}"
    );
    let (status, _) = app
        .hook(&json!({"botId": BOT, "conversationId": c, "query": "late"}))
        .await;
    assert_eq!(status, 409, "a message after the end is refused too");
    let (_, after) = app.conversation(&c).await;
    assert_eq!(after["eventCount"], conv["eventCount"]);
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let app = TestApp::build()
        .server("max_body_bytes = 4096")
        .spawn()
        .await;
    let mut body = seed();
    body["padding"] = json!("x".repeat(5000));
    let (status, answer) = app.hook(&body).await;
    assert_eq!((status.as_u16(), answer["code"].clone()), (413, json!(413)));
    // Also when the client does not declare a length (chunked).
    let payload = body.to_string();
    let raw = format!(
        "POST /agentai/api/v1/hooks/{BOT} HTTP/1.1\r\nhost: x\r\ntoken: {}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{payload}\r\n0\r\n\r\n",
        token(),
        payload.len()
    );
    let answer = raw_exchange(&app, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

/// Sends raw bytes and returns what the server answers first (bounded to 10 s).
async fn raw_exchange(app: &TestApp, bytes: &[u8]) -> String {
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("the server answers by itself")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_wrong_or_missing_content_type_gets_415() {
    let app = TestApp::spawn().await;
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = app
            .client
            .post(format!("{}/agentai/api/v1/hooks/{BOT}", app.base))
            .header("token", token())
            .body(SEED_BODY);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let (status, answer) = into_json(req.send().await.unwrap()).await;
        assert_eq!(status, 415, "{ct:?}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("application/json")
        );
    }
    let resp = app
        .client
        .post(format!("{}/agentai/api/v1/hooks/{BOT}", app.base))
        .header("token", token())
        .header("content-type", "application/json; charset=utf-8")
        .body(SEED_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "a charset parameter is fine");
}

#[tokio::test]
async fn malformed_json_gets_a_400() {
    let app = TestApp::spawn().await;
    for body in ["", "{", "{\"botId\": }", "[1,2]", "\"x\"", "\u{feff}{}"] {
        let resp = app
            .client
            .post(format!("{}/agentai/api/v1/hooks/{BOT}", app.base))
            .header("token", token())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, answer) = into_json(resp).await;
        assert_eq!(status, 400, "{body:?}: {answer}");
        assert_eq!(answer["code"], 400);
    }
}

#[tokio::test]
async fn too_many_events_in_one_request_get_a_400() {
    let app = TestApp::build()
        .server("max_events_per_request = 5")
        .spawn()
        .await;
    let events: Vec<_> = (0..6).map(|_| summary()).collect();
    let (status, answer) = app.hook(&event_body(&unique("many"), json!(events))).await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["message"],
        "events has 6 events; at most 5 are allowed in one request"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_vendors_shape() {
    let app = TestApp::spawn().await;
    let (status, answer) = into_json(app.get("/nope").await).await;
    assert_eq!((status.as_u16(), answer["code"].clone()), (404, json!(404)));
    let (status, answer) = into_json(app.get(&format!("/agentai/api/v1/hooks/{BOT}")).await).await;
    assert_eq!((status.as_u16(), answer["code"].clone()), (405, json!(405)));
    let (status, _) = app.conversation("never-seen").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408() {
    let app = TestApp::build()
        .server("body_read_timeout = \"300ms\"")
        .spawn()
        .await;
    let head = format!(
        "POST /agentai/api/v1/hooks/{BOT} HTTP/1.1\r\nhost: x\r\ntoken: {}\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{{\"botId\":",
        token()
    );
    let answer = raw_exchange(&app, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn headers_that_never_finish_are_cut_off() {
    let app = TestApp::build()
        .server("header_read_timeout = \"300ms\"")
        .spawn()
        .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /agentai/api/v1/hooks/x HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    // The server closes the connection (read returns 0 or a 408) instead of waiting forever.
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await;
    assert!(read.is_ok(), "the connection was left open");
}

/// DESIGN.md: "store down → 503 with Retry-After", proven on a real full disk: the
/// database lives on a 2 MiB tmpfs that a filler file fills up. Needs root (CI is).
#[tokio::test]
async fn a_full_disk_gets_503_and_the_server_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(dir.path())
        .status()
        .expect("mount runs");
    assert!(mount.success(), "this test mounts a tmpfs and needs root");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.path().to_owned());
    let dir_path = dir.path().to_owned();
    let app = TestApp::build().dir(dir).server("").spawn().await;
    assert_eq!(app.end("before-full").await.0, 200);

    let filler = dir_path.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        let c = format!("full-{i}-{}", "x".repeat(200));
        let resp = app
            .client
            .post(format!("{}/agentai/api/v1/hooks/{BOT}", app.base))
            .header("token", token())
            .json(&seed_with(&c))
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            200 => acknowledged.push(c),
            503 => {
                assert_eq!(resp.headers()["retry-after"], "5");
                refused += 1;
                if refused >= 3 {
                    break;
                }
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        refused >= 3,
        "the disk never filled ({} acknowledged)",
        acknowledged.len()
    );
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503, "readiness reports the store");

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        app.end("after-full").await.0,
        200,
        "recovers without a restart"
    );
    // (A readiness check is reused for a second.)
    eventually("ready again", || async {
        (app.get("/readyz").await.status() == 200).then_some(())
    })
    .await;
    for c in acknowledged
        .iter()
        .chain([&"before-full".to_owned(), &"after-full".to_owned()])
    {
        let (status, conv) = app.conversation(c).await;
        assert_eq!(
            (status.as_u16(), conv["status"].clone()),
            (200, json!("ended"))
        );
    }
    app.stop().await;
}

/// Issue 25, item 16: a store that refuses a write (here a constraint the operator added)
/// is a fault, not an outage: a 500 without Retry-After, so a client does not retry it
/// forever, and the log carries the whole cause (the driver's words, the constraint's
/// name), which the client never sees. The store stays up.
#[tokio::test]
async fn a_write_the_store_refuses_is_a_500_with_its_cause_logged_not_a_503() {
    let refusing = Refusing::start("wrapup_refuse", 2, "operator_says_no CHECK (false)").await;
    let (base, logs) = (&refusing.base, &refusing.logs);

    let resp = client()
        .post(format!("{base}/agentai/api/v1/hooks/{BOT}"))
        .header("token", token())
        .json(&seed_with(&unique("refused")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert!(resp.headers().get("retry-after").is_none());
    let (_, body) = into_json(resp).await;
    assert_eq!(body, json!({"code": 500, "message": "internal error"}));

    let line = eventually("the cause is logged", || async {
        logs.lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["fields"]["message"] == "internal error")
    })
    .await;
    let cause = line["fields"]["cause"].as_str().unwrap();
    assert!(cause.contains("operator_says_no"), "{cause}");
    assert!(cause.contains(": "), "the cause is a chain: {cause}");

    let (status, _) = into_json(client().get(format!("{base}/readyz")).send().await.unwrap()).await;
    assert_eq!(status, 200, "a refusal is not an outage");
    refusing.drop_schema().await;
}

/// Issue 26: on PostgreSQL the requests waiting together are written in one transaction;
/// when one of them fails there (here a constraint refuses its conversation), the batch
/// rolls back and each request runs again alone: only that one fails, every other end is
/// stored and acknowledged. The rounds go on until the failing request has shared a
/// batch (the server logs each such batch).
#[tokio::test]
async fn one_failing_request_in_a_postgres_batch_fails_alone() {
    let refusing = Refusing::start(
        "wrapup_batch",
        8,
        "no_poison CHECK (conversation_id NOT LIKE 'poison%')",
    )
    .await;
    let (base, logs) = (&refusing.base, &refusing.logs);
    let shared = || {
        logs.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("a batch failed; its requests run one by one"))
    };
    let mut rounds = 0;
    while !shared() {
        rounds += 1;
        assert!(rounds <= 20, "the failing request never shared a batch");
        let ids: Vec<String> = (0..32)
            .map(|i| unique(if i == 16 { "poison" } else { "batched" }))
            .collect();
        for (c, status) in ids.iter().zip(ends_at_once(base, &ids).await) {
            if c.starts_with("poison") {
                assert_eq!(status, 500, "{c}");
            } else {
                assert_eq!(status, 200, "{c}");
            }
        }
        let ended: Vec<String> = ids
            .iter()
            .filter(|c| !c.starts_with("poison"))
            .cloned()
            .collect();
        assert_ended(base, &ended).await;
    }
    // Without the failing request, the same burst is written in batches: more requests
    // committed than commits made.
    let ids: Vec<String> = (0..32).map(|_| unique("batched")).collect();
    assert!(ends_at_once(base, &ids).await.iter().all(|s| *s == 200));
    assert_ended(base, &ids).await;
    let metrics = metrics_text(base).await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    assert!(value("wrapup_commit_batch_size_sum") > value("wrapup_commit_batch_size_count"));
    refusing.drop_schema().await;
}

/// Ends `conversations` all at once; their statuses, in order.
async fn ends_at_once(base: &str, conversations: &[String]) -> Vec<u16> {
    let client = client();
    let answers = futures::future::join_all(conversations.iter().map(|c| {
        client
            .post(format!("{base}/agentai/api/v1/hooks/{BOT}"))
            .header("token", token())
            .json(&seed_with(c))
            .send()
    }))
    .await;
    answers
        .into_iter()
        .map(|a| a.expect("an answer").status().as_u16())
        .collect()
}

/// A server on PostgreSQL whose conversations table carries an extra constraint (added
/// `NOT VALID`, as an operator might), to make the store refuse chosen writes.
struct Refusing {
    _server: crate::crash::Server,
    base: String,
    logs: crate::crash::Logs,
    pool: sqlx::PgPool,
    schema: String,
}

impl Refusing {
    async fn start(prefix: &str, pool_size: u32, constraint: &str) -> Refusing {
        let dir = tempfile::tempdir().unwrap();
        let (store, schema) = pg_store(prefix, pool_size);
        let config = write_config(dir.path(), &config_for_store(&store, "", ""));
        let (server, started, logs) = crate::crash::serve_env(&config, &[]);
        let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
        sqlx::query(&format!(
            "ALTER TABLE {schema}.conversations ADD CONSTRAINT {constraint} NOT VALID"
        ))
        .execute(&pool)
        .await
        .unwrap();
        Refusing {
            _server: server,
            base: format!("http://{}", started["listen"].as_str().unwrap()),
            logs,
            pool,
            schema,
        }
    }

    async fn drop_schema(&self) {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&self.pool)
            .await
            .unwrap();
    }
}
