//! Health, readiness, metrics and request ids.

use futures::StreamExt;
use serde_json::json;

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
        "wrapup_http_requests_total{route=\"/agentai/api/v1/hooks/{botId}\",status=\"200\",bot=",
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

/// A shutdown answers every request already in flight — here twenty clients mid-upload
/// when it begins — and each answered end is stored (read back after a restart on the
/// same database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_requests_already_in_flight() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut app = TestApp::spawn().await;
    let url = format!("{}/agentai/api/v1/hooks/{BOT}", app.base);
    let sending = std::sync::Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let inflight: Vec<_> = (0..20)
        .map(|i| {
            let c = format!("inflight-{}-{i}", unique("s"));
            let body = serde_json::to_vec(&seed_with(&c)).unwrap();
            let (head, tail) = body.split_at(body.len() / 2);
            let (head, tail) = (head.to_vec(), tail.to_vec());
            let (sending, mut released) = (sending.clone(), released.clone());
            // The first half now, the rest once the shutdown has begun.
            let stream = futures::stream::once(async move {
                sending.fetch_add(1, Ordering::SeqCst);
                head
            })
            .chain(futures::stream::once(async move {
                let _ = released.wait_for(|r| *r).await;
                tail
            }))
            .map(|part| {
                Ok::<_, std::io::Error>(hyper::body::Frame::data(hyper::body::Bytes::from(part)))
            });
            let request = app
                .client
                .post(&url)
                .header("token", token())
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap(http_body_util::StreamBody::new(stream)));
            tokio::spawn(async move { (c, request.send().await.map(|r| r.status().as_u16())) })
        })
        .collect();
    eventually("every client is mid-upload", || async {
        (sending.load(Ordering::SeqCst) == 20).then_some(())
    })
    .await;
    app.begin_shutdown();
    release.send(true).unwrap();
    let mut answered = Vec::new();
    for handle in inflight {
        let (c, status) = handle.await.unwrap();
        assert_eq!(status.ok(), Some(200), "{c} was cut off");
        answered.push(c);
    }
    app.restart().await;
    for c in answered {
        let (status, record) = app.conversation(&c).await;
        assert_eq!(
            (status.as_u16(), record["status"].as_str()),
            (200, Some("ended")),
            "{c}"
        );
    }
}

/// Issue 17, item 2: the database files hold transcripts; they are created for their owner
/// only, whatever the umask.
#[tokio::test]
async fn the_database_files_are_created_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let app = TestApp::build().dir(dir).server("").spawn().await;
    assert_eq!(app.end(&unique("private")).await.0, 200);
    for name in ["wrapup.db", "wrapup.db-wal", "wrapup.db-shm"] {
        let mode = std::fs::metadata(path.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
    }
}

#[tokio::test]
async fn every_metric_has_help_and_the_labels_name_bot_and_action() {
    let app = TestApp::spawn().await;
    let c = unique("metrics");
    app.end(&c).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(typed.len() >= 8, "{text}");
    for name in &typed {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "{name} has no HELP"
        );
    }
    assert!(
        text.contains(&format!(
            "wrapup_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("wrapup_conversations_ended_total{")
                && l.contains(&format!("bot=\"{BOT}\""))),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("wrapup_http_requests_total{")
                && l.contains(&format!("bot=\"{BOT}\""))),
        "{text}"
    );
}

#[tokio::test]
async fn the_access_log_has_a_line_per_request_and_refused_tokens_say_why_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_text(&dir.path().join("w.db"), ""));
    let (_server, started, logs) = crate::crash::serve_env(&config, &[]);
    let base = format!("http://{}", started["listen"].as_str().unwrap());
    let client = client();
    let c = unique("access");
    let resp = client
        .post(format!("{base}/agentai/api/v1/hooks/{BOT}"))
        .header("token", token())
        .json(&seed_with(&c))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let wrong = sign(
        jsonwebtoken::Algorithm::HS256,
        "not-the-secret-0123456789abcdef",
        json!({"appId": HS256_APP}),
    );
    let expired = sign(
        jsonwebtoken::Algorithm::HS256,
        HS256_SECRET,
        json!({"appId": HS256_APP, "exp": 1_000_000_000}),
    );
    let stranger = sign(
        jsonwebtoken::Algorithm::HS256,
        HS256_SECRET,
        json!({"appId": "cs-nobody"}),
    );
    for t in [&wrong, &expired, &stranger] {
        let resp = client
            .post(format!("{base}/agentai/api/v1/hooks/{BOT}"))
            .header("token", t)
            .json(&seed_with(&c))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    let lines = eventually("the log lines are written", || async {
        let lines = logs.lock().unwrap().clone();
        (lines.iter().filter(|l| l.contains("token refused")).count() >= 3).then_some(lines)
    })
    .await;
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let access = parsed
        .iter()
        .find(|v| v["fields"]["request_id"] == request_id.as_str())
        .expect("an access line for the request");
    assert_eq!(access["target"], "wrapup::access");
    assert_eq!(access["fields"]["method"], "POST");
    assert_eq!(access["fields"]["route"], "/agentai/api/v1/hooks/{botId}");
    assert_eq!(access["fields"]["status"], 200);
    assert_eq!(access["fields"]["app"], HS256_APP);
    assert_eq!(access["fields"]["bot"], BOT);
    let reasons: Vec<&str> = parsed
        .iter()
        .filter(|v| v["fields"]["message"] == "token refused")
        .map(|v| v["fields"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        vec![
            format!("wrong signature or algorithm for app {HS256_APP}"),
            "the token has expired".to_owned(),
            "unknown app cs-nobody".to_owned(),
        ]
    );
    let all = lines.join("\n");
    for t in [token(), wrong, expired, stranger] {
        assert!(!all.contains(&t), "a token is in the log");
    }
    assert!(!all.contains(HS256_SECRET));
}

/// Issue 25, item 14: every metric name the docs, the README and the example alert rules
/// mention is one the server exports, and every metric it exports is in
/// docs/monitoring.md's table.
#[tokio::test]
async fn the_docs_and_alert_rules_name_exactly_the_metrics_the_server_exports() {
    // A job that fails (a closed port) and one delivered, so the job gauges and the
    // attempt and delivery histograms exist.
    let receiver = crate::receiver::Receiver::start().await;
    let app = TestApp::build().actions(&format!(
        "[[bots.on_end]]\nkind = \"webhook\"\nname = \"down\"\nurl = \"http://127.0.0.1:1/\"\nsecret = \"whsec_dGVzdC13ZWJob29rLWtleS0wMTIzNDU2Nzg5YWJjZGVm\"\nretry = {{ max_attempts = 1 }}\n\n[[bots.on_end]]\nkind = \"webhook\"\nname = \"up\"\nurl = \"{}\"\nsecret = \"whsec_dGVzdC13ZWJob29rLWtleS0wMTIzNDU2Nzg5YWJjZGVm\"\n",
        receiver.url
    )).spawn()
    .await;
    let c = unique("metrics-docs");
    app.end(&c).await;
    app.settled_jobs(&c, 2).await;
    let exported = app.get("/metrics").await.text().await.unwrap();
    let typed: std::collections::BTreeSet<&str> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.push(root.join("README.md"));
    files.push(root.join("examples/alerts.yml"));
    // Names that are not metrics: PostgreSQL's migrations table.
    let not_metrics = ["wrapup_schema"];
    let mut named = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("wrapup_") && !not_metrics.contains(&word) {
                named += 1;
                assert!(
                    typed.contains(word),
                    "{} names {word}, which the server does not export",
                    file.display()
                );
            }
        }
    }
    assert!(named >= 30, "{named}");
    let table = std::fs::read_to_string(root.join("docs/monitoring.md")).unwrap();
    for name in typed.iter().filter(|n| n.starts_with("wrapup_")) {
        assert!(
            table.contains(&format!("`{name}")),
            "docs/monitoring.md does not list {name}"
        );
    }
}

#[tokio::test]
async fn a_nul_byte_in_a_path_or_an_id_is_a_400_and_a_request_id_must_look_like_one() {
    let app = TestApp::spawn().await;
    for path in [
        format!("/api/v1/bots/{BOT}/conversations/a%00b"),
        "/admin/v1/jobs/a%00b".to_owned(),
        "/admin/v1/jobs?bot=a%00b".to_owned(),
    ] {
        let resp = app
            .client
            .get(format!("{}{path}", app.base))
            .header("auth", token())
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{path}");
    }
    for body in [json!({"ids": ["a\u{0}b"]}), json!({"ids": [""]})] {
        let (status, answer) = app
            .post("/admin/v1/jobs/discard", "bearer", ADMIN_TOKEN, &body)
            .await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer["message"].as_str().unwrap().starts_with("ids:"));
        let (status, _) = app
            .post("/admin/v1/jobs/retry", "bearer", ADMIN_TOKEN, &body)
            .await;
        assert_eq!(status, 400);
    }
    // A caller's id is kept when it looks like one, replaced otherwise.
    for (sent, kept) in [
        ("trace-1234.abc:9", true),
        (&*token(), false),
        (&*"x".repeat(65), false),
    ] {
        let resp = app
            .client
            .get(format!("{}/healthz", app.base))
            .header("x-request-id", sent)
            .send()
            .await
            .unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(id == sent, kept, "{sent}");
    }
}

/// A 429 flood is not a log flood: at most one access line per route and second for 429
/// answers, each saying how many it left out; every request is still counted.
#[tokio::test]
async fn a_flood_of_429s_writes_at_most_one_access_line_per_second() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&dir.path().join("w.db"), "").replace(
        &format!("client_id = \"{HS512_APP}\"\n"),
        &format!("client_id = \"{HS512_APP}\"\nrate_limit = 1\nrate_burst = 1\n"),
    );
    assert!(text.contains("rate_burst = 1"));
    let config = write_config(dir.path(), &text);
    let (_server, started, logs) = crate::crash::serve_env(&config, &[]);
    let base = format!("http://{}", started["listen"].as_str().unwrap());
    let client = client();
    let limited = sign(
        jsonwebtoken::Algorithm::HS512,
        HS512_SECRET,
        json!({"appId": HS512_APP}),
    );
    let refused_now = || async {
        let resp = client
            .post(format!("{base}/agentai/api/v1/hooks/{BOT}"))
            .header("token", &limited)
            .json(&seed_with(&unique("flood")))
            .send()
            .await
            .unwrap();
        resp.status() == 429
    };
    let began = std::time::Instant::now();
    let mut refused = 0u64;
    for _ in 0..400 {
        refused += u64::from(refused_now().await);
    }
    let seconds = began.elapsed().as_secs();
    assert!(refused >= 350, "{refused} of 400 refused");
    // A second later, one more 429 (the first request may take the token that came back):
    // its line reports what the flood's last second left out.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut last_refused = false;
    for _ in 0..5 {
        if refused_now().await {
            refused += 1;
            last_refused = true;
            break;
        }
    }
    let lines: Vec<serde_json::Value> = eventually("the access lines are written", || async {
        let lines: Vec<serde_json::Value> = logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|v: &serde_json::Value| {
                v["target"] == "wrapup::access" && v["fields"]["status"] == 429
            })
            .collect();
        // The log is read by another thread: wait for the last refusal's line (it says
        // what the flood's last second left out), not only for the first line.
        let accounted = lines.len() as u64
            + lines
                .iter()
                .filter_map(|l| l["fields"]["suppressed"].as_u64())
                .sum::<u64>();
        (!lines.is_empty() && (!last_refused || accounted >= refused)).then_some(lines)
    })
    .await;
    assert!(
        (lines.len() as u64) <= seconds + 3,
        "{} access lines for 429s in {seconds} s",
        lines.len()
    );
    let accounted: u64 = lines.len() as u64
        + lines
            .iter()
            .map(|l| l["fields"]["suppressed"].as_u64().unwrap())
            .sum::<u64>();
    assert!(accounted <= refused, "{accounted} > {refused}");
    if last_refused {
        // Every refusal but those of the last line's own second is written or counted.
        assert_eq!(accounted, refused, "{lines:?}");
    }
    let metrics = metrics_text(&base).await;
    let counted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("wrapup_http_requests_total{") && l.contains("status=\"429\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, refused, "every 429 is counted");
}

/// Issue 25, item 4: a fresh instance exports every documented counter at zero, with the
/// label values its configuration implies, before anything happened (a process of its
/// own: the registry is the process's).
#[tokio::test]
async fn a_fresh_instance_exports_every_counter_at_zero_with_its_configured_labels() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &config_with_actions(
            &dir.path().join("wrapup.db"),
            "",
            "[[bots.on_end]]\nkind = \"webhook\"\nname = \"crm\"\nurl = \"http://127.0.0.1:1/\"\nsecret = \"whsec_dGVzdC13ZWJob29rLWtleS0wMTIzNDU2Nzg5YWJjZGVm\"\n\n[bots.summary]\nprovider = \"extractive\"\n",
        ),
    );
    let (_server, started, _logs) = crate::crash::serve_env(&config, &[]);
    let base = format!("http://{}", started["listen"].as_str().unwrap());
    let text = metrics_text(&base).await;
    let mut expected: Vec<String> = [
        "wrapup_events_stored_total",
        "wrapup_requests_rate_limited_total",
        "wrapup_connections_dropped_total",
        "wrapup_connections_idle_closed_total",
        "wrapup_http_panics_total",
        "wrapup_jobs_orphaned_total",
        "wrapup_jobs_purged_total",
        "wrapup_retention_purged_total",
        "wrapup_jti_purged_total",
        "wrapup_events_received_total{name=\"END_OF_CONVERSATION\"}",
        "wrapup_events_received_total{name=\"MESSAGE\"}",
        "wrapup_connections_refused_total{reason=\"full\"}",
        "wrapup_connections_refused_total{reason=\"per_address\"}",
        "wrapup_requests_over_cap_total{cap=\"agents\"}",
        "wrapup_requests_over_cap_total{cap=\"log_bytes\"}",
    ]
    .map(String::from)
    .to_vec();
    for bot in [BOT, OTHER_BOT] {
        for name in [
            "wrapup_conversations_ended_total",
            "wrapup_conversations_expired_total",
            "wrapup_duplicate_ends_total",
        ] {
            expected.push(format!("{name}{{bot=\"{bot}\"}}"));
        }
    }
    for (kind, action, event) in [
        ("webhook", "crm", "conversation.ended"),
        ("webhook", "crm", "conversation.summarized"),
        ("summary", "summary", "summary"),
    ] {
        for outcome in ["succeeded", "failed"] {
            expected.push(format!("wrapup_action_attempts_total{{kind=\"{kind}\",bot=\"{BOT}\",action=\"{action}\",event=\"{event}\",outcome=\"{outcome}\"}}"));
        }
    }
    for series in &expected {
        assert!(
            text.lines().any(|l| l == format!("{series} 0")),
            "{series} 0 is not exported:\n{text}"
        );
    }
    // The store answered this scrape's check.
    for gauge in ["wrapup_ready 1", "wrapup_store_up 1"] {
        assert!(text.lines().any(|l| l == gauge), "{gauge}:\n{text}");
    }
    // And the counters move from there.
    assert_eq!(
        client()
            .post(format!("{base}/agentai/api/v1/hooks/{BOT}"))
            .header("token", token())
            .json(&seed_with(&unique("zero")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let text = metrics_text(&base).await;
    let ended = format!("wrapup_conversations_ended_total{{bot=\"{BOT}\"}} 1");
    assert!(text.lines().any(|l| l == ended), "{ended}:\n{text}");
}
