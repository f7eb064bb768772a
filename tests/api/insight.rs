//! The views the console is built on, through the HTTP API: the list's filters, the
//! search across bots, destination statistics, the overview, and bulk retry.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::receiver::Receiver;

async fn list(app: &TestApp, query: &str) -> (u16, Value) {
    let resp = app
        .client
        .get(format!(
            "{}/api/v1/bots/{BOT}/conversations?{query}",
            app.base
        ))
        .header("auth", token())
        .send()
        .await
        .unwrap();
    let (status, body) = into_json(resp).await;
    (status.as_u16(), body)
}

fn ids(body: &Value) -> Vec<String> {
    body["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["conversationId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_list_filters_by_agent_queue_reason_experience_and_anomaly() {
    let app = TestApp::spawn().await;
    let p = unique("f");
    let (alice, bob) = (format!("{p}-alice"), format!("{p}-bob"));
    // c0: alice only, ended; c1: alice then bob (cold), a repeated NA entry (anomaly);
    // c2: bob only, active.
    let c: Vec<String> = (0..3).map(|i| format!("{p}-c{i}")).collect();
    let steps = [
        vec![
            transfer("NA", "entry", &alice),
            json!({"name": "END_OF_CONVERSATION", "reason": "customer_hangup", "language": "en", "experience": "chat", "participant": {"identity": alice, "name": "A", "type": "agent"}}),
        ],
        vec![
            transfer("NA", "entry", &alice),
            transfer("NA", "entry", &bob),
        ],
        vec![transfer("NA", "entry", &bob)],
    ];
    for (c, events) in c.iter().zip(steps) {
        let (status, _) = app.hook(&event_body(c, json!(events))).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        ids(&list(&app, &format!("agent={alice}")).await.1),
        [c[1].clone(), c[0].clone()]
    );
    assert_eq!(
        ids(&list(&app, &format!("agent={bob}")).await.1),
        [c[2].clone(), c[1].clone()]
    );
    assert_eq!(
        ids(
            &list(&app, &format!("agent={bob}&anomaly=repeated_na_entry"))
                .await
                .1
        ),
        [c[1].clone()]
    );
    let any = ids(&list(&app, "anomaly=any&limit=500").await.1);
    assert!(any.contains(&c[1]) && !any.contains(&c[2]), "{any:?}");
    assert_eq!(
        ids(
            &list(&app, &format!("agent={alice}&reason=customer_hangup"))
                .await
                .1
        ),
        [c[0].clone()]
    );
    assert_eq!(
        ids(&list(&app, &format!("agent={alice}&experience=chat"))
            .await
            .1),
        [c[0].clone()]
    );
    // transfer() puts every agent in queue "1".
    assert_eq!(
        ids(&list(&app, &format!("queue=1&agent={bob}&status=active"))
            .await
            .1),
        [c[2].clone(), c[1].clone()]
    );
    let (status, body) = list(&app, "agent=").await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("agent"),
        "{body}"
    );
    let (status, _) = list(&app, &format!("queue={}", "q".repeat(300))).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn an_admin_finds_a_conversation_id_across_bots() {
    let app = TestApp::spawn().await;
    let c = unique("find");
    app.end(&c).await;
    let (status, body) = app
        .admin(reqwest::Method::GET, &format!("/conversations?id={c}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["conversations"][0]["botId"], BOT);
    assert_eq!(body["conversations"][0]["status"], "ended");
    let (_, none) = app
        .admin(reqwest::Method::GET, "/conversations?id=nobody-has-this")
        .await;
    assert_eq!(none["conversations"], json!([]));
    assert_eq!(
        app.admin(reqwest::Method::GET, "/conversations?id=")
            .await
            .0,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_jobs_of_an_action_since_an_instant_are_retried_in_bulk_and_counted() {
    let receiver = Receiver::start().await;
    receiver.always(Some(500));
    let tail = format!(
        "[[bots.on_end]]\nname = \"crm\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec_dGVzdC13ZWJob29rLWtleS0wMTIzNDU2Nzg5YWJjZGVm\"\nretry = {{ max_attempts = 1 }}\n",
        receiver.url
    );
    let app = TestApp::build().actions(&tail).spawn().await;
    let since = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let convs: Vec<String> = (0..3).map(|_| unique("bulk")).collect();
    for c in &convs {
        app.end(c).await;
    }
    for c in &convs {
        assert_eq!(app.settled_jobs(c, 1).await[0]["state"], "dead");
    }
    // Statistics: three failed attempts, a 0 success rate, the last error.
    let (status, stats) = app.admin(reqwest::Method::GET, "/destinations").await;
    assert_eq!(status, 200, "{stats}");
    let crm = stats["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["action"] == "crm")
        .cloned()
        .unwrap();
    assert_eq!(crm["jobs"]["dead"], 3, "{crm}");
    assert_eq!(crm["attempts1h"], 3);
    assert_eq!(crm["successRate1h"], 0.0);
    assert_eq!(crm["lastError"]["statusCode"], 500);
    let (_, overview) = app.admin(reqwest::Method::GET, "/overview").await;
    assert_eq!(overview["jobs"]["dead"], 3, "{overview}");
    assert_eq!(overview["traffic"].as_array().unwrap().len(), 90);
    // Ten minutes later the dead jobs are still waiting for a person: the gauge the
    // oldest-job alert reads says so (the due gauge cannot: a dead job is not due).
    app.advance(std::time::Duration::from_secs(700));
    let waiting = || async {
        let text = app.get("/metrics").await.text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("wrapup_jobs_oldest_waiting_age_seconds "))
            .and_then(|v| v.parse::<f64>().ok())
    };
    eventually("the oldest dead job's wait is exported", || async {
        waiting().await.filter(|s| *s >= 700.0)
    })
    .await;

    receiver.always(None);
    let retry = |body: Value| {
        let app = &app;
        async move {
            let resp = app
                .client
                .post(format!("{}/admin/v1/jobs/retry", app.base))
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            into_json(resp).await
        }
    };
    let (status, body) = retry(json!({"bot": BOT, "action": "nope", "since": since})).await;
    assert_eq!(status, 400, "{body}");
    // `summary` is an action only for a bot with `[bots.summary]`.
    let (status, body) = retry(json!({"bot": BOT, "action": "summary", "since": since})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no action \"summary\""),
        "{body}"
    );
    let (status, body) = retry(json!({"bot": BOT})).await;
    assert_eq!(status, 400, "{body}");
    // An empty window matches nothing (the contract cannot say until must follow since);
    // the CLI refuses one as a usage mistake.
    let (status, body) =
        retry(json!({"bot": BOT, "action": "crm", "since": since, "until": since})).await;
    assert_eq!(
        (status.as_u16(), &body["retried"]),
        (200, &json!(0)),
        "{body}"
    );
    let cli_retry = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wrapup"))
            .args(["jobs", "retry", "--url", &app.base])
            .args(["--admin-token", ADMIN_TOKEN])
            .args(args)
            .output()
            .expect("wrapup runs")
    };
    let backwards = cli_retry(&[
        "--bot",
        BOT,
        "--action",
        "crm",
        "--since",
        "2026-01-02T00:00:00Z",
        "--until",
        "2026-01-01T00:00:00Z",
    ]);
    assert_eq!(backwards.status.code(), Some(2), "{backwards:?}");
    assert!(String::from_utf8_lossy(&backwards.stderr).contains("--until must be after --since"));
    // The window through the CLI: every dead job of crm created in it.
    let out = cli_retry(&[
        "--bot",
        BOT,
        "--action",
        "crm",
        "--since",
        &since,
        "--until",
        "2100-01-01T00:00:00Z",
    ]);
    assert!(out.status.success(), "{out:?}");
    let said: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["retried"], 3, "{said}");
    assert_eq!(said["more"], false, "{said}");
    // A bot that is not configured is an error, not "nothing matched".
    let out = cli_retry(&["--bot", "st-not-configured"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("bot: st-not-configured"));
    for c in &convs {
        assert_eq!(app.settled_jobs(c, 1).await[0]["state"], "succeeded");
    }
    eventually("nothing waits for a person any more", || async {
        waiting().await.filter(|s| *s == 0.0)
    })
    .await;
    // Selected jobs: a succeeded one is not retried, and says why.
    let id = app.jobs_of(&convs[0]).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = retry(json!({"ids": [id, "job_nope"]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["retried"], 0);
    assert_eq!(body["notRetried"].as_array().unwrap().len(), 2);
    // The traffic reaches the store within a flush (two seconds).
    eventually("the ends are counted", || async {
        let (_, o) = app.admin(reqwest::Method::GET, "/overview").await;
        let ends: u64 = o["traffic"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["ends"].as_u64().unwrap())
            .sum();
        (ends >= 3).then_some(())
    })
    .await;
}

/// Issue 23, item 4: a filtered page examines at most 2,000 conversations, however few
/// match: a filter that passes over them answers a short (here empty) page whose
/// `nextCursor` continues where examining stopped, and the walk still finds every match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_that_matches_almost_nothing_examines_a_bounded_page_and_walks_on() {
    let app = TestApp::spawn().await;
    let p = unique("walk");
    let agent = format!("{p}-busy");
    // The oldest conversation is the only one that ended with this reason.
    let first = format!("{p}-0000");
    let end = json!({"name": "END_OF_CONVERSATION", "reason": "customer_hangup", "language": "en", "experience": "voice", "participant": {"identity": agent, "name": "A", "type": "agent"}});
    assert_eq!(
        app.hook(&event_body(
            &first,
            json!([transfer("NA", "entry", &agent), end])
        ))
        .await
        .0,
        200
    );
    let app = std::sync::Arc::new(app);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (app, agent, p) = (app.clone(), agent.clone(), p.clone());
        tasks.spawn(async move {
            for i in (1..=2050).filter(|i| i % 8 == worker) {
                let c = format!("{p}-{i:04}");
                let (status, _) = app
                    .hook(&event_body(&c, json!([transfer("NA", "entry", &agent)])))
                    .await;
                assert_eq!(status, 200);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let query = format!("agent={agent}&reason=customer_hangup");
    let (status, page) = list(&app, &query).await;
    assert_eq!(status, 200);
    assert!(
        ids(&page).is_empty(),
        "the newest 2,000 examined hold no match"
    );
    let cursor = page["nextCursor"]
        .as_str()
        .expect("a cursor on an empty page");
    let (status, page) = list(&app, &format!("{query}&cursor={cursor}")).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&page), [first]);
    assert!(page["nextCursor"].is_null(), "the walk is complete");
}
