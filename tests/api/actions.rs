//! Post-conversation actions against real receivers: an HTTP server, the machine's
//! NATS JetStream and Redis.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::receiver::Receiver;

fn webhook_action(url: &str, retry: &str) -> String {
    format!(
        "[[bots.on_end]]\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{}\"\ntimeout = \"2s\"\nheaders = {{ \"x-tenant\" = \"acme\" }}\n{retry}\n",
        whsec()
    )
}

const FAST_RETRY: &str =
    "retry = { max_attempts = 4, initial_delay = \"100ms\", max_delay = \"400ms\" }";

#[tokio::test]
async fn an_end_delivers_one_webhook_whose_signature_an_independent_verifier_accepts() {
    let receiver = Receiver::start().await;
    let app = TestApp::build()
        .actions(&webhook_action(&receiver.url, ""))
        .spawn()
        .await;
    let c = unique("wh");
    assert_eq!(app.end(&c).await.0, 200);
    let jobs = app.settled_jobs(&c, 1).await;
    assert_eq!(jobs[0]["state"], "succeeded");
    assert_eq!(jobs[0]["kind"], "webhook");
    assert_eq!(jobs[0]["action"], "webhook");

    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 1);
    let d = &deliveries[0];
    assert_eq!(d.id(), jobs[0]["id"].as_str().unwrap());
    assert_eq!(d.headers["x-tenant"], "acme");
    let verifier = standardwebhooks::Webhook::new(&whsec()).unwrap();
    verifier
        .verify(&d.body, &d.headers)
        .expect("the signature verifies");
    let mut tampered = d.body.to_vec();
    let pos = tampered.iter().position(|b| *b == b'a').unwrap();
    tampered[pos] = b'b';
    assert!(
        verifier.verify(&tampered, &d.headers).is_err(),
        "a tampered body fails"
    );

    let body: Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(body["type"], "conversation.ended");
    assert_eq!(body["data"]["conversationId"], c.as_str());
    assert_eq!(body["data"]["status"], "ended");
    assert_eq!(body["data"]["endReason"], "agent_initiated");
    assert_eq!(body["timestamp"], body["data"]["endedAt"]);
}

#[tokio::test]
async fn duplicate_ends_never_create_a_second_set_of_jobs() {
    let receiver = Receiver::start().await;
    let tail = format!(
        "{}{}",
        webhook_action(&receiver.url, ""),
        // The same receiver, another destination (two actions of a bot may not share one).
        webhook_action(&format!("{}?to=crm", receiver.url), "name = \"crm\"")
    );
    let app = TestApp::build().actions(&tail).spawn().await;
    let c = unique("dupjobs");
    for (status, _) in futures::future::join_all((0..20).map(|_| app.end(&c))).await {
        assert_eq!(status, 200);
    }
    let jobs = app.settled_jobs(&c, 2).await;
    let names: Vec<_> = jobs
        .iter()
        .map(|j| j["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec!["webhook", "crm"]);
    assert_eq!(app.end(&c).await.0, 200);
    // Jobs are scheduled in the end's own transaction: the repeat scheduled none, and the
    // two there are have delivered once each.
    assert_eq!(app.jobs_of(&c).await.len(), 2);
    assert_eq!(receiver.deliveries().len(), 2);
}

#[tokio::test]
async fn a_failing_receiver_gets_retries_with_the_same_id_and_backoff_between_them() {
    let receiver = Receiver::start().await;
    receiver.answer(&[500, 503]);
    let app = TestApp::build()
        .actions(&webhook_action(&receiver.url, FAST_RETRY))
        .spawn()
        .await;
    let c = unique("retry");
    app.end(&c).await;
    let jobs = app.settled_jobs(&c, 1).await;
    assert_eq!(jobs[0]["state"], "succeeded");
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 3);
    assert!(
        deliveries.iter().all(|d| d.id() == deliveries[0].id()),
        "one webhook-id for every attempt"
    );
    // 100 ms then 200 ms nominal, jitter at most -20 %.
    assert!(deliveries[1].at - deliveries[0].at >= Duration::from_millis(80));
    assert!(deliveries[2].at - deliveries[1].at >= Duration::from_millis(160));

    let (_, job) = app
        .admin(
            reqwest::Method::GET,
            &format!("/jobs/{}", jobs[0]["id"].as_str().unwrap()),
        )
        .await;
    let log = job["attemptLog"].as_array().unwrap();
    let outcomes: Vec<_> = log
        .iter()
        .map(|a| (a["outcome"].clone(), a["statusCode"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (json!("failed"), json!(500)),
            (json!("failed"), json!(503)),
            (json!("succeeded"), json!(200))
        ]
    );
    assert_eq!(job["attempts"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_failing_dies_and_wrapup_jobs_retry_delivers_it() {
    let receiver = Receiver::start().await;
    receiver.always(Some(500));
    let retry = "retry = { max_attempts = 2, initial_delay = \"50ms\", max_delay = \"50ms\" }";
    let app = TestApp::build()
        .actions(&webhook_action(&receiver.url, retry))
        .spawn()
        .await;
    let c = unique("dead");
    app.end(&c).await;
    let jobs = app.settled_jobs(&c, 1).await;
    assert_eq!(jobs[0]["state"], "dead");
    assert_eq!(jobs[0]["attempts"], 2);
    assert!(jobs[0]["lastError"].as_str().unwrap().contains("500"));
    let id = jobs[0]["id"].as_str().unwrap().to_owned();

    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wrapup"))
            .args(["jobs", "--url", &app.base])
            .args(args)
            .env("WRAPUP_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .unwrap()
    };
    let list = cli(&["list", "--state", "dead", "--conversation", &c]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success() && text.contains(&id) && text.contains("2/2"),
        "{text} {}",
        String::from_utf8_lossy(&list.stderr)
    );

    receiver.always(None);
    let retried = cli(&["retry", &id]);
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stdout)
    );
    let jobs = app.settled_jobs(&c, 1).await;
    assert_eq!(jobs[0]["state"], "succeeded");
    assert_eq!(jobs[0]["attempts"], 3);
    assert_eq!(receiver.deliveries().len(), 3);

    let again = cli(&["retry", &id]);
    assert!(!again.status.success(), "a succeeded job is not retried");
    let show = cli(&["show", &id]);
    let shown: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["attemptLog"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn retrying_all_dead_jobs_of_a_bot_requeues_each_once() {
    let receiver = Receiver::start().await;
    receiver.always(Some(500));
    let retry = "retry = { max_attempts = 1 }";
    let app = TestApp::build()
        .actions(&webhook_action(&receiver.url, retry))
        .spawn()
        .await;
    let ids: Vec<String> = (0..3).map(|_| unique("deadbot")).collect();
    for c in &ids {
        app.end(c).await;
    }
    for c in &ids {
        assert_eq!(app.settled_jobs(c, 1).await[0]["state"], "dead");
    }
    receiver.always(None);
    let (status, body) = app
        .admin(reqwest::Method::POST, &format!("/bots/{BOT}/jobs/retry"))
        .await;
    assert_eq!((status.as_u16(), body["retried"].as_u64()), (200, Some(3)));
    for c in &ids {
        assert_eq!(app.settled_jobs(c, 1).await[0]["state"], "succeeded");
    }
}

#[tokio::test]
async fn the_admin_api_needs_its_token() {
    let app = TestApp::spawn().await;
    let resp = app.get("/admin/v1/jobs").await;
    assert_eq!(resp.status(), 401);
    let resp = app
        .client
        .get(format!("{}/admin/v1/jobs", app.base))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(app.admin(reqwest::Method::GET, "/jobs").await.0, 200);
    assert_eq!(
        app.admin(reqwest::Method::GET, "/jobs?state=exploded")
            .await
            .0,
        400
    );
    assert_eq!(
        app.admin(reqwest::Method::GET, "/jobs/job_nope").await.0,
        404
    );
}

#[tokio::test]
async fn shutdown_lets_a_running_attempt_finish_and_records_it() {
    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_millis(500));
    let mut app = TestApp::build()
        .actions(&webhook_action(&receiver.url, ""))
        .spawn()
        .await;
    let c = unique("graceful");
    app.end(&c).await;
    eventually("the attempt starts", || async {
        (receiver.started() > 0).then_some(())
    })
    .await;
    app.restart().await; // graceful stop while the receiver is still answering
    let jobs = app.jobs_of(&c).await;
    assert_eq!(jobs[0]["state"], "succeeded", "{jobs:#?}");
    assert_eq!(jobs[0]["attempts"], 1);
    assert_eq!(receiver.deliveries().len(), 1);
}

#[tokio::test]
async fn job_metrics_are_exported() {
    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_millis(300));
    let app = TestApp::build()
        .actions(&webhook_action(&receiver.url, ""))
        .spawn()
        .await;
    let c = unique("metrics");
    app.end(&c).await;
    let during = app.get("/metrics").await.text().await.unwrap();
    assert!(
        during.contains("wrapup_jobs{kind=\"webhook\",state=\"pending\"} 1")
            || during.contains("wrapup_jobs{kind=\"webhook\",state=\"running\"} 1"),
        "{during}"
    );
    app.settled_jobs(&c, 1).await;
    // Regression: a state whose jobs all moved on used to keep its last count. (The
    // counts are reused for a second between scrapes.)
    let text = eventually("the pending and running counts back to 0", || async {
        let text = app.get("/metrics").await.text().await.unwrap();
        (text.contains("wrapup_jobs{kind=\"webhook\",state=\"pending\"} 0")
            && text.contains("wrapup_jobs{kind=\"webhook\",state=\"running\"} 0"))
        .then_some(text)
    })
    .await;
    for name in [
        "wrapup_jobs{kind=\"webhook\",state=\"succeeded\"}",
        "wrapup_jobs_due",
        "wrapup_jobs_oldest_due_age_seconds",
        &format!(
            "wrapup_action_attempts_total{{kind=\"webhook\",bot=\"{BOT}\",action=\"webhook\",event=\"conversation.ended\",outcome=\"succeeded\"}}"
        ),
        "wrapup_action_delivery_latency_seconds_bucket",
    ] {
        assert!(text.contains(name), "missing {name}");
    }
}

#[tokio::test]
async fn nats_publishes_once_to_jetstream_and_the_stream_drops_a_retried_publish() {
    let (mut stream, js, run) = test_stream("wrapuptest").await;

    let tail = format!(
        "[[bots.on_end]]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"wrapuptest.{run}.{{botId}}.conversation.ended\"\n"
    );
    let app = TestApp::build().actions(&tail).spawn().await;
    let c = unique("nats");
    app.end(&c).await;
    let jobs = app.settled_jobs(&c, 1).await;
    assert_eq!(jobs[0]["state"], "succeeded", "{jobs:#?}");
    let job_id = jobs[0]["id"].as_str().unwrap();

    let messages = stream_messages(&stream).await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(
        m.subject.as_str(),
        format!("wrapuptest.{run}.{BOT}.conversation.ended")
    );
    assert_eq!(
        m.headers
            .as_ref()
            .unwrap()
            .get("Nats-Msg-Id")
            .unwrap()
            .as_str(),
        job_id
    );
    let body: Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(body["data"]["conversationId"], c.as_str());

    // What a retried attempt sends: the same message id again. The stream keeps one.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", job_id);
    let ack = js
        .publish_with_headers(m.subject.to_string(), headers, m.payload.clone())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(ack.duplicate);
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    js.delete_stream(format!("WRAPUP_TEST_{run}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn redis_cleanup_removes_exactly_the_templated_keys() {
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis runs on 127.0.0.1:6379");
    let run = uuid::Uuid::new_v4().simple().to_string();
    let c = "glob*conv";
    let prefix = format!("wrapuptest:{run}:{BOT}");
    let doomed = [
        format!("{prefix}:{c}"),
        format!("{prefix}:{c}:state"),
        format!("{prefix}:{c}:agents"),
    ];
    let kept = [
        format!("{prefix}:globbyconv:state"),
        format!("{prefix}:other:state"),
        format!("{prefix}:{c}x:state"),
    ];
    for k in doomed.iter().chain(&kept) {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg("v")
            .arg("EX")
            .arg(600)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let tail = format!(
        "[[bots.on_end]]\nkind = \"redis_cleanup\"\nurl = \"redis://127.0.0.1:6379\"\nkeys = [\"wrapuptest:{run}:{{botId}}:{{conversationId}}\", \"wrapuptest:{run}:{{botId}}:{{conversationId}}:*\"]\n"
    );
    let app = TestApp::build().actions(&tail).spawn().await;
    app.end(c).await;
    let jobs = app.settled_jobs(c, 1).await;
    assert_eq!(jobs[0]["state"], "succeeded", "{jobs:#?}");
    for k in &doomed {
        let exists: bool = redis::cmd("EXISTS")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!exists, "{k} should be gone");
    }
    for k in &kept {
        let exists: bool = redis::cmd("EXISTS")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(exists, "{k} should stay");
        let _: () = redis::cmd("DEL")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let (_, job) = app
        .admin(
            reqwest::Method::GET,
            &format!("/jobs/{}", jobs[0]["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(job["attemptLog"][0]["response"], "deleted 3 keys");
}

/// Security review, low 4: credentials and query values of a destination's URL never
/// reach lastError or the attempt log (nor, through the same strings, the logs).
#[tokio::test]
async fn secrets_in_a_destination_url_are_masked_wherever_a_failure_is_reported() {
    // Port 1 on loopback: the connection is refused at once.
    let url = "http://operator:hunter2pass@127.0.0.1:1/hook?apikey=topsecretkey";
    let app = TestApp::build()
        .actions(&webhook_action(
            url,
            "retry = { max_attempts = 1, initial_delay = \"100ms\", max_delay = \"100ms\" }",
        ))
        .spawn()
        .await;
    let c = unique("mask");
    assert_eq!(app.end(&c).await.0, 200);
    let jobs = app.settled_jobs(&c, 1).await;
    assert_eq!(jobs[0]["state"], "dead");
    let id = jobs[0]["id"].as_str().expect("id");
    let (status, job) = app
        .admin(reqwest::Method::GET, &format!("/jobs/{id}"))
        .await;
    assert_eq!(status, 200);
    let shown = job.to_string();
    assert!(shown.contains("127.0.0.1:1/***?apikey=***"), "{shown}");
    for secret in ["hunter2pass", "topsecretkey", "operator"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[tokio::test]
async fn finished_jobs_go_after_keep_finished_jobs_dead_ones_stay_until_discarded() {
    let receiver = Receiver::start().await;
    // An idle conversation ends for inactivity at the first sweep after 5 days: what says
    // a sweep ran (its round purges finished jobs before it ends idle conversations).
    let tail = format!(
        "inactivity_timeout = \"5d\"\n{}{}[workers]\nkeep_finished_jobs = \"7d\"\n",
        webhook_action(&receiver.url, ""),
        webhook_action(
            "http://127.0.0.1:1/hook",
            "retry = { max_attempts = 1 }\nname = \"closed\""
        ),
    );
    let app = TestApp::build().actions(&tail).spawn().await;
    let c = unique("keep");
    app.end(&c).await;
    let jobs = app.settled_jobs(&c, 2).await;
    let state_of = |name: &str| {
        jobs.iter()
            .find(|j| j["action"] == name)
            .map(|j| (j["id"].as_str().unwrap().to_owned(), j["state"].clone()))
            .unwrap()
    };
    let (done, s) = state_of("webhook");
    assert_eq!(s, "succeeded");
    let (dead, s) = state_of("closed");
    assert_eq!(s, "dead");

    // Six days on, after a sweep, both are there; eight days on, the succeeded job and its
    // attempts are gone.
    let idle = unique("idle");
    let (status, _) = app
        .hook(&event_body(&idle, json!([transfer("NA", "entry", "a1")])))
        .await;
    assert_eq!(status, 200);
    app.advance(Duration::from_secs(6 * 24 * 3600));
    eventually("a sweep ran (the idle conversation ended)", || async {
        (app.conversation(&idle).await.1["status"] == "ended").then_some(())
    })
    .await;
    assert_eq!(app.jobs_of(&c).await.len(), 2);
    app.advance(Duration::from_secs(2 * 24 * 3600));
    eventually("the succeeded job purged", || async {
        (app.jobs_of(&c).await.len() == 1).then_some(())
    })
    .await;
    let (status, _) = app
        .admin(reqwest::Method::GET, &format!("/jobs/{done}"))
        .await;
    assert_eq!(status, 404);
    let (status, job) = app
        .admin(reqwest::Method::GET, &format!("/jobs/{dead}"))
        .await;
    assert_eq!(
        (status.as_u16(), job["state"].as_str()),
        (200, Some("dead"))
    );

    // Discarding clears it (and a discarded job then ages out like a succeeded one).
    let (status, body) = app
        .post(
            "/admin/v1/jobs/discard",
            "bearer",
            ADMIN_TOKEN,
            &json!({ "ids": [dead, done, "job_nope"] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["discarded"], 1);
    assert_eq!(body["notDiscarded"].as_array().unwrap().len(), 2, "{body}");
    let (status, _) = app
        .post(
            "/admin/v1/jobs/discard",
            "bearer",
            ADMIN_TOKEN,
            &json!({ "ids": [] }),
        )
        .await;
    assert_eq!(status, 400);
    app.advance(Duration::from_secs(8 * 24 * 3600));
    eventually("the discarded job purged", || async {
        app.jobs_of(&c).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_pending_job_waiting_out_its_backoff_can_be_retried_now() {
    let receiver = Receiver::start().await;
    receiver.answer(&[503]);
    let tail = webhook_action(
        &receiver.url,
        "retry = { max_attempts = 5, initial_delay = \"1h\", max_delay = \"2h\" }",
    );
    let app = TestApp::build().actions(&tail).spawn().await;
    let c = unique("now");
    app.end(&c).await;
    let job = eventually("the first attempt failed", || async {
        app.jobs_of(&c)
            .await
            .into_iter()
            .find(|j| j["attempts"] == 1 && j["state"] == "pending")
    })
    .await;
    let id = job["id"].as_str().unwrap();
    let (status, body) = app
        .admin(reqwest::Method::POST, &format!("/jobs/{id}/retry"))
        .await;
    assert_eq!(status, 200, "{body}");
    let jobs = app.settled_jobs(&c, 1).await;
    assert_eq!(jobs[0]["state"], "succeeded");
    assert_eq!(jobs[0]["attempts"], 2);
    // The budget is the one it had: a pending job is not given fresh attempts.
    assert_eq!(jobs[0]["maxAttempts"], 5);
    // A succeeded job cannot be retried.
    let (status, body) = app
        .admin(reqwest::Method::POST, &format!("/jobs/{id}/retry"))
        .await;
    assert_eq!(status, 409, "{body}");
}
