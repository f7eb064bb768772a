//! Misbehaving destinations next to healthy ones: each destination has its own
//! connections, so a closed port or a server that never speaks fails only its own jobs.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;
use crate::receiver::Receiver;

const ONE_ATTEMPT: &str = "timeout = \"2s\"\nretry = { max_attempts = 1 }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_silent_destination_never_fails_a_healthy_one() {
    // A "NATS server" that accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let client = async_nats::connect("127.0.0.1:4222")
        .await
        .expect("NATS runs on 127.0.0.1:4222");
    let js = async_nats::jetstream::new(client);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let stream_name = format!("WRAPUP_DEST_{run}");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("wrapupdest.{run}.>")],
        max_age: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .expect("JetStream is enabled");

    let tail = format!(
        "[[bots.on_end]]\nname = \"cache\"\nkind = \"redis_cleanup\"\nurl = \"redis://127.0.0.1:6379\"\nkeys = [\"wrapupdest:{run}:{{conversationId}}\"]\n{ONE_ATTEMPT}\
         [[bots.on_end]]\nname = \"dead-cache\"\nkind = \"redis_cleanup\"\nurl = \"redis://127.0.0.1:1\"\nkeys = [\"wrapupdest:{run}:{{conversationId}}\"]\n{ONE_ATTEMPT}\
         [[bots.on_end]]\nname = \"bus\"\nkind = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"wrapupdest.{run}.ended\"\n{ONE_ATTEMPT}\
         [[bots.on_end]]\nname = \"silent-bus\"\nkind = \"nats\"\nurl = \"nats://{silent_addr}\"\nsubject = \"wrapupdest.{run}.silent\"\n{ONE_ATTEMPT}\
         [workers]\npause_after = 0\n"
    );
    let app = TestApp::build().actions(&tail).spawn().await;
    let ids: Vec<String> = (0..20).map(|_| unique("dest")).collect();
    for (status, _) in futures::future::join_all(ids.iter().map(|c| app.end(c))).await {
        assert_eq!(status, 200);
    }
    let mut by_action: std::collections::HashMap<String, Vec<Value>> = Default::default();
    for c in &ids {
        for job in app.settled_jobs(c, 4).await {
            by_action
                .entry(job["action"].as_str().unwrap_or_default().to_owned())
                .or_default()
                .push(job);
        }
    }
    let states = |action: &str| -> Vec<String> {
        by_action[action]
            .iter()
            .map(|j| j["state"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert!(
        states("cache").iter().all(|s| s == "succeeded"),
        "{:?}",
        by_action["cache"]
    );
    assert!(
        states("bus").iter().all(|s| s == "succeeded"),
        "{:?}",
        by_action["bus"]
    );
    assert!(states("dead-cache").iter().all(|s| s == "dead"));
    assert!(states("silent-bus").iter().all(|s| s == "dead"));
    // Each failure says what happened to it.
    for job in &by_action["dead-cache"] {
        let error = job["lastError"].as_str().unwrap_or_default();
        assert!(error.contains("cannot connect to Redis"), "{job}");
    }
    for job in &by_action["silent-bus"] {
        let error = job["lastError"].as_str().unwrap_or_default();
        assert!(error.contains("no answer within 2s"), "{error}");
    }
    // A job keeps its nature: a cache cleanup is never re-pointed to a delivery, nor a
    // delivery to a key deletion (each refusal says why).
    for (from, to, why) in [
        (
            "dead-cache",
            "bus",
            "a redis_cleanup job goes only to a redis_cleanup action",
        ),
        (
            "silent-bus",
            "cache",
            "a delivery goes only to a webhook or nats action",
        ),
    ] {
        let (status, body) = app
            .post(
                "/admin/v1/jobs/repoint",
                "bearer",
                ADMIN_TOKEN,
                &serde_json::json!({"bot": BOT, "from": from, "to": to, "state": "dead"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["repointed"], 0, "{body}");
        let refused = body["notRepointed"].as_array().unwrap();
        assert_eq!(refused.len(), 20, "{body}");
        assert!(
            refused[0]["reason"].as_str().unwrap().contains(why),
            "{body}"
        );
        assert_eq!(body["more"], false);
    }
    js.delete_stream(&stream_name).await.expect("cleanup");
}

fn two_webhooks(a: &Receiver, b: &Receiver, which: &[char]) -> String {
    let retry = "retry = { max_attempts = 5, initial_delay = \"1h\", max_delay = \"1h\" }";
    let mut tail = String::new();
    for w in which {
        let url = if *w == 'a' { &a.url } else { &b.url };
        tail.push_str(&format!(
            "[[bots.on_end]]\nkind = \"webhook\"\nname = \"{w}\"\nurl = \"{url}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n{retry}\n"
        ));
    }
    // Longer than the retry delay (48 to 60 min with jitter), so a waiting job is overdue
    // by less than this when the hour has passed.
    tail + "[workers]\norphan_after = \"2h\"\n"
}

/// Every job of `conversations` failed once and waits for its retry.
async fn all_waiting(app: &TestApp, conversations: &[String], per: usize) -> Vec<Value> {
    let mut all = Vec::new();
    for c in conversations {
        let jobs = eventually("the first attempts fail", || async {
            let jobs = app.jobs_of(c).await;
            (jobs.len() == per
                && jobs
                    .iter()
                    .all(|j| j["state"] == "pending" && j["attempts"] == 1))
            .then_some(jobs)
        })
        .await;
        all.extend(jobs);
    }
    all
}

fn ids_of(jobs: &[Value], pick: impl Fn(&Value) -> bool) -> Vec<String> {
    jobs.iter()
        .filter(|j| pick(j))
        .map(|j| j["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Issue 16, high 1: a job runs only against the destination it was scheduled for. Two
/// unnamed webhooks swap places in the configuration (so their default names swap), then
/// one is removed: no job ever reaches the other receiver; the removed one's jobs wait as
/// `orphaned` until an operator re-points or discards them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reaches_only_its_own_destination_whatever_the_configuration_becomes() {
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    a.always(Some(500));
    b.always(Some(500));
    let mut app = TestApp::build()
        .actions(&two_webhooks(&a, &b, &['a', 'b']))
        .spawn()
        .await;
    let first: Vec<String> = (0..3).map(|_| unique("swap")).collect();
    for c in &first {
        assert_eq!(app.end(c).await.0, 200);
    }
    let jobs = all_waiting(&app, &first, 2).await;
    // Each job is its action's, by name.
    let for_a = ids_of(&jobs, |j| j["action"] == "a");
    let for_b = ids_of(&jobs, |j| j["action"] == "b");

    // The order swapped: each job still follows its action's name.
    app.reconfigure(&two_webhooks(&a, &b, &['b', 'a'])).await;
    a.always(None);
    b.always(None);
    app.advance(Duration::from_secs(3601));
    for c in &first {
        let settled = app.settled_jobs(c, 2).await;
        assert!(
            settled.iter().all(|j| j["state"] == "succeeded"),
            "{settled:#?}"
        );
    }
    let delivered = |r: &Receiver| -> Vec<String> {
        let mut ids: Vec<String> = r.deliveries().iter().map(|d| d.id()).collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(delivered(&a), sorted(for_a.clone()), "A got only A's jobs");
    assert_eq!(delivered(&b), sorted(for_b.clone()), "B got only B's jobs");

    // A is removed while its jobs wait for their retry.
    a.always(Some(500));
    b.always(Some(500));
    let second: Vec<String> = (0..2).map(|_| unique("removed")).collect();
    for c in &second {
        assert_eq!(app.end(c).await.0, 200);
    }
    let jobs = all_waiting(&app, &second, 2).await;
    let a_jobs: Vec<Value> = jobs
        .iter()
        .filter(|j| j["action"] == "a")
        .cloned()
        .collect();
    assert_eq!(a_jobs.len(), 2);
    let a_before = a.deliveries().len();
    app.reconfigure(&two_webhooks(&a, &b, &['b'])).await;
    a.always(None);
    b.always(None);
    let b_before = b.deliveries().len();
    app.advance(Duration::from_secs(3601));
    // B's own jobs are delivered; A's are never claimed, then orphaned after orphan_after.
    eventually("B's jobs are delivered", || async {
        (b.deliveries().len() >= b_before + 2).then_some(())
    })
    .await;
    // Meanwhile A's jobs wait, and say for how long.
    let id = a_jobs[0]["id"].as_str().unwrap_or_default();
    let (_, waiting) = app
        .admin(reqwest::Method::GET, &format!("/jobs/{id}"))
        .await;
    assert_eq!(waiting["state"], "pending", "{waiting}");
    assert!(
        waiting["overdueMs"].as_u64().unwrap_or(0) >= 1000,
        "{waiting}"
    );
    app.advance(Duration::from_secs(2 * 3600 + 1));
    for job in &a_jobs {
        let id = job["id"].as_str().unwrap_or_default();
        let orphaned = eventually("A's job is orphaned", || async {
            let (_, j) = app
                .admin(reqwest::Method::GET, &format!("/jobs/{id}"))
                .await;
            (j["state"] == "orphaned").then_some(j)
        })
        .await;
        assert!(
            orphaned["lastError"]
                .as_str()
                .unwrap_or_default()
                .contains("not in the configuration"),
            "{orphaned}"
        );
    }
    assert_eq!(a.deliveries().len(), a_before, "nothing more reached A");
    assert_eq!(
        b.deliveries().len(),
        b_before + 2,
        "A's jobs never reached B"
    );

    // The operator decides: retrying an orphaned job is refused with the way out, one is
    // re-pointed at B, the other discarded.
    let (first_id, second_id) = (
        a_jobs[0]["id"].as_str().unwrap_or_default(),
        a_jobs[1]["id"].as_str().unwrap_or_default(),
    );
    let (status, body) = app
        .admin(reqwest::Method::POST, &format!("/jobs/{first_id}/retry"))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("repoint")
    );
    let resp = app
        .client
        .post(format!("{}/admin/v1/jobs/{first_id}/repoint", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"action": "b"}))
        .send()
        .await
        .expect("request");
    let (status, body) = into_json(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "pending");
    eventually("the re-pointed job reaches B", || async {
        b.deliveries()
            .iter()
            .any(|d| d.id() == first_id)
            .then_some(())
    })
    .await;
    // A re-pointed job counts as its new action's: in the action filter, and in the
    // destination statistics (no row for a name no configuration has).
    let (_, listed) = app
        .admin(reqwest::Method::GET, "/jobs?action=b&limit=1000")
        .await;
    assert!(
        listed["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == first_id),
        "{listed}"
    );
    let (_, stats) = app.admin(reqwest::Method::GET, "/destinations").await;
    for d in stats["destinations"].as_array().unwrap() {
        assert!(!d["action"].as_str().unwrap().contains("re-pointed"), "{d}");
    }
    let (status, body) = app
        .admin(reqwest::Method::POST, &format!("/jobs/{second_id}/discard"))
        .await;
    assert_eq!(
        (status.as_u16(), body["state"].clone()),
        (200, serde_json::json!("discarded"))
    );
    let (status, _) = app
        .admin(reqwest::Method::POST, &format!("/jobs/{second_id}/discard"))
        .await;
    assert_eq!(status, 409, "a discarded job is not discarded again");
    assert_eq!(a.deliveries().len(), a_before);
}

/// Issue 16, low 6: a receiver that says *wait* (429 or 503 with Retry-After) is retried
/// after that long, not on the action's schedule; one that says *never* (410 Gone) ends the
/// job at once, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_says_wait_or_never_is_heard() {
    let (busy, gone) = (Receiver::start().await, Receiver::start().await);
    let moved = Receiver::start().await;
    moved.always(Some(404));
    busy.answer(&[429]);
    busy.retry_after(Some(3600));
    gone.always(Some(410));
    let fast = "retry = { max_attempts = 5, initial_delay = \"100ms\", max_delay = \"8h\" }";
    let tail = format!(
        "[[bots.on_end]]\nname = \"busy\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n{fast}\n\
         [[bots.on_end]]\nname = \"gone\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n{fast}\n\
         [[bots.on_end]]\nname = \"moved\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\ngive_up_on = [404]\n{fast}\n",
        busy.url, gone.url, moved.url
    );
    let app = TestApp::build().actions(&tail).spawn().await;
    let c = unique("advice");
    assert_eq!(app.end(&c).await.0, 200);
    let (waiting, dead) = eventually("both first attempts are recorded", || async {
        let jobs = app.jobs_of(&c).await;
        let find = |name: &str| jobs.iter().find(|j| j["action"] == name).cloned();
        match (find("busy"), find("gone")) {
            (Some(b), Some(g))
                if b["attempts"] == 1 && b["state"] == "pending" && g["state"] == "dead" =>
            {
                Some((b, g))
            }
            _ => None,
        }
    })
    .await;
    let wait = millis(&waiting["dueAt"]) - millis(&waiting["updatedAt"]);
    assert!(
        (3_599_000..=3_601_000).contains(&wait),
        "due {wait} ms later: {waiting}"
    );
    assert_eq!(dead["attempts"], 1, "410 is not retried: {dead}");
    assert!(
        dead["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("410"),
        "{dead}"
    );
    assert_eq!(gone.deliveries().len(), 1);
    // The hour passes: the busy receiver gets its retry.
    app.advance(Duration::from_secs(3601));
    let jobs = app.settled_jobs(&c, 3).await;
    // The action that gives up on 404 did so after its first attempt.
    let moved_job = jobs.iter().find(|j| j["action"] == "moved").expect("moved");
    assert_eq!(
        (moved_job["state"].clone(), moved_job["attempts"].clone()),
        (serde_json::json!("dead"), serde_json::json!(1))
    );
    let busy_job = jobs.iter().find(|j| j["action"] == "busy").expect("busy");
    assert_eq!(
        (busy_job["state"].clone(), busy_job["attempts"].clone()),
        (serde_json::json!("succeeded"), serde_json::json!(2))
    );
    assert_eq!(busy.deliveries().len(), 2);
}

/// Issue 16, medium 3: bulkheads. A slow receiver gets at most `per_destination` attempts
/// at once, and the destinations next to it are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_destination_fills_only_its_own_bulkhead() {
    let (slow, fast) = (Receiver::start().await, Receiver::start().await);
    slow.delay(Duration::from_millis(700));
    let hook = |name: &str, url: &str| {
        format!(
            "[[bots.on_end]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
        )
    };
    let tail = format!(
        "{}{}[workers]\nconcurrency = 4\nper_destination = 2\n",
        hook("slow", &slow.url),
        hook("fast", &fast.url)
    );
    let app = TestApp::build().actions(&tail).spawn().await;
    for _ in 0..10 {
        assert_eq!(app.end(&unique("bulkhead")).await.0, 200);
    }
    // Ten fast deliveries go through while the slow receiver has worked through at most a
    // few of its own (two at a time, 0.7 s each).
    let slow_done = eventually("the fast receiver gets all ten", || async {
        (fast.deliveries().len() == 10).then(|| slow.deliveries().len())
    })
    .await;
    assert!(
        slow_done <= 6,
        "the fast destination waited for the slow one: {slow_done}"
    );
    eventually("the slow receiver gets all ten", || async {
        (slow.deliveries().len() == 10).then_some(())
    })
    .await;
    assert_eq!(
        slow.most_in_flight(),
        2,
        "the slow destination stayed in its bulkhead"
    );
}

/// Issue 26, item 4: a destination claims ahead. With its `per_destination` slots busy, as
/// many jobs again are claimed and wait for a slot (in claim order), so the next attempt
/// starts when a slot frees instead of after another claim (a commit); the receiver still
/// gets at most `per_destination` at once, and every job is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_claims_ahead_yet_runs_at_most_per_destination_at_once() {
    let slow = Receiver::start().await;
    slow.delay(Duration::from_millis(700));
    let tail = format!(
        "[[bots.on_end]]\nname = \"crm\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\ntimeout = \"5s\"\n[workers]\nconcurrency = 16\nper_destination = 2\n",
        slow.url
    );
    let app = TestApp::build().actions(&tail).spawn().await;
    let ids: Vec<String> = (0..10).map(|_| unique("ahead")).collect();
    for c in &ids {
        assert_eq!(app.end(c).await.0, 200);
    }
    // Two at the receiver, two more claimed (`running`, leased) and waiting their turn.
    eventually("four jobs are claimed while two run", || async {
        let (status, body) = app
            .admin(reqwest::Method::GET, "/jobs?state=running&limit=100")
            .await;
        assert_eq!(status, 200, "{body}");
        let running = body["jobs"].as_array().map_or(0, Vec::len);
        assert!(
            running <= 4,
            "claimed beyond twice per_destination: {running}"
        );
        (running == 4).then_some(())
    })
    .await;
    eventually("every end is delivered", || async {
        (slow.deliveries().len() == 10).then_some(())
    })
    .await;
    assert_eq!(slow.most_in_flight(), 2, "at most per_destination at once");
    for c in &ids {
        let jobs = app.settled_jobs(c, 1).await;
        assert_eq!(jobs[0]["state"], "succeeded", "{}", jobs[0]);
        assert_eq!(jobs[0]["attempts"], 1, "{}", jobs[0]);
    }
}

/// Issue 26, item 4: a destination whose lease cannot cover a wait and an attempt
/// (`2 × timeout + lease_margin / 2 > lease`: 40 s timeouts, the default 30 s margin) does
/// not claim ahead: it never holds more jobs than it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_with_a_long_timeout_does_not_claim_ahead() {
    let slow = Receiver::start().await;
    slow.delay(Duration::from_millis(500));
    let tail = format!(
        "[[bots.on_end]]\nname = \"crm\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\ntimeout = \"40s\"\n[workers]\nconcurrency = 16\nper_destination = 2\n",
        slow.url
    );
    let app = TestApp::build().actions(&tail).spawn().await;
    for _ in 0..8 {
        assert_eq!(app.end(&unique("no-ahead")).await.0, 200);
    }
    let mut most = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while slow.deliveries().len() < 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "8 deliveries within 60 s"
        );
        let (status, body) = app
            .admin(reqwest::Method::GET, "/jobs?state=running&limit=100")
            .await;
        assert_eq!(status, 200, "{body}");
        most = most.max(body["jobs"].as_array().map_or(0, Vec::len));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Claiming ahead would hold 4 at once; 3 can show for a moment (a claim committed in
    // an earlier batch than the finish of the attempt whose slot it took).
    assert!(
        (2..=3).contains(&most),
        "held per_destination, never twice that: {most}"
    );
}

/// Issue 16, low 7: retrying a dead job whose destination is gone is refused with the way
/// out, instead of answering `{"retried": 1}` and letting it die again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixing_a_url_delivers_the_queue_and_a_retried_dead_job_to_the_new_url() {
    // The operator's reproduction: an action points at a closed port; jobs wait for their
    // retry; the URL is corrected and the configuration reloaded.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let (first, fixed) = (Receiver::start().await, Receiver::start().await);
    let hook = |url: &str, name: &str, kind_extra: &str| {
        format!(
            "[[bots.on_end]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretry = {{ max_attempts = 5, initial_delay = \"60s\", max_delay = \"60s\" }}\n{kind_extra}"
        )
    };
    // One job first dies at once (410 from the first receiver), then five wait.
    first.always(Some(410));
    let mut app = TestApp::build()
        .actions(&hook(&first.url, "crm", ""))
        .spawn()
        .await;
    let dead_c = unique("dead");
    assert_eq!(app.end(&dead_c).await.0, 200);
    let dead = app.settled_jobs(&dead_c, 1).await;
    assert_eq!(dead[0]["state"], "dead");
    app.reconfigure(&hook(&closed_url, "crm", "")).await;
    let waiting: Vec<String> = (0..5).map(|_| unique("queued")).collect();
    for c in &waiting {
        assert_eq!(app.end(c).await.0, 200);
    }
    let jobs = all_waiting(&app, &waiting, 1).await;
    let ids: Vec<String> = jobs
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();

    // The URL fixed: the queue is delivered there, each job under its own webhook-id.
    app.reconfigure(&hook(&fixed.url, "crm", "")).await;
    app.advance(Duration::from_secs(61));
    for c in &waiting {
        let settled = app.settled_jobs(c, 1).await;
        assert_eq!(settled[0]["state"], "succeeded", "{settled:?}");
    }
    let delivered: Vec<String> = fixed.deliveries().iter().map(|d| d.id()).collect();
    for id in &ids {
        assert!(delivered.contains(id), "{id} in {delivered:?}");
    }
    // The dead one, retried, goes to the corrected URL too.
    let dead_id = dead[0]["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .admin(reqwest::Method::POST, &format!("/jobs/{dead_id}/retry"))
        .await;
    assert_eq!(status, 200, "{body}");
    eventually("the retried dead job reaches the fixed URL", || async {
        fixed
            .deliveries()
            .iter()
            .any(|d| d.id() == dead_id)
            .then_some(())
    })
    .await;

    // Renamed with previous_names, the action keeps the old name's jobs.
    fixed.always(Some(500));
    let renamed = unique("renamed");
    assert_eq!(app.end(&renamed).await.0, 200);
    all_waiting(&app, std::slice::from_ref(&renamed), 1).await;
    fixed.always(None);
    app.reconfigure(&hook(&fixed.url, "sales", "previous_names = [\"crm\"]\n"))
        .await;
    app.advance(Duration::from_secs(61));
    let settled = app.settled_jobs(&renamed, 1).await;
    assert_eq!(settled[0]["state"], "succeeded", "{settled:?}");

    // A kind change under the same name is another destination: the jobs are orphaned,
    // never sent over NATS.
    fixed.always(Some(500));
    let changed = unique("kind");
    assert_eq!(app.end(&changed).await.0, 200);
    let jobs = all_waiting(&app, std::slice::from_ref(&changed), 1).await;
    app.reconfigure(
        "[[bots.on_end]]\nname = \"sales\"\nkind = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"wrapuptest.kind\"\n\n[workers]\norphan_after = \"2h\"\n",
    )
    .await;
    app.advance(Duration::from_secs(3 * 3600));
    let id = jobs[0]["id"].as_str().unwrap_or_default().to_owned();
    let orphaned = eventually("the webhook job is orphaned", || async {
        let (_, j) = app
            .admin(reqwest::Method::GET, &format!("/jobs/{id}"))
            .await;
        (j["state"] == "orphaned").then_some(j)
    })
    .await;
    assert_eq!(orphaned["attempts"], 1, "{orphaned}");
}

/// A destination that keeps failing is paused: its jobs wait without spending attempts,
/// one probe runs per `pause_for`, and its first success resumes it — while a healthy
/// destination of the same bot is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_is_paused_probed_and_resumed_without_spending_attempts() {
    let (down, healthy) = (Receiver::start().await, Receiver::start().await);
    down.always(Some(503));
    let hook = |name: &str, url: &str| {
        format!(
            "[[bots.on_end]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretry = {{ max_attempts = 3, initial_delay = \"100ms\", max_delay = \"100ms\" }}\n"
        )
    };
    let tail = format!(
        "{}{}[workers]\npause_after = 3\npause_for = \"1s\"\n",
        hook("crm", &down.url),
        hook("audit", &healthy.url)
    );
    let app = TestApp::build().actions(&tail).spawn().await;
    let ids: Vec<String> = (0..10).map(|_| unique("paused")).collect();
    for c in &ids {
        assert_eq!(app.end(c).await.0, 200);
    }
    eventually("the healthy destination gets all ten", || async {
        (healthy.deliveries().len() == 10).then_some(())
    })
    .await;
    let (_, stats) = eventually("crm is paused", || async {
        let (status, stats) = app.admin(reqwest::Method::GET, "/destinations").await;
        let crm = stats["destinations"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["action"] == "crm").cloned());
        crm.filter(|c| c["paused"] == true).map(|c| (status, c))
    })
    .await;
    assert!(stats["failuresInRow"].as_u64().unwrap_or(0) >= 3, "{stats}");
    // Paused: one probe per `pause_for` (1 s) reaches it, after at most one attempt that
    // was on its way when it paused. Unpaused, ten jobs retrying every 100 ms would send
    // four attempts within a fraction of a second; paused, the fourth (the third probe)
    // comes two seconds on, so at least one second is a bound noise cannot break. No job
    // died (three attempts each would have killed them all without the pause).
    let (at_pause, paused_at) = (down.started(), std::time::Instant::now());
    eventually("three probes reach the paused destination", || async {
        (down.started() - at_pause >= 4).then_some(())
    })
    .await;
    let waited = paused_at.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "four attempts reached the paused destination in {waited:?}"
    );
    for c in &ids {
        assert!(app.jobs_of(c).await.iter().all(|j| j["state"] != "dead"));
    }
    // It recovers: the next probe succeeds and the queue is delivered.
    down.always(None);
    for c in &ids {
        let jobs = app.settled_jobs(c, 2).await;
        assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{jobs:?}");
    }
    let (_, stats) = app.admin(reqwest::Method::GET, "/destinations").await;
    let crm = stats["destinations"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["action"] == "crm").cloned())
        .unwrap_or_default();
    assert_eq!(crm["paused"], false, "{crm}");
}

/// Issue 16, low 6: a record larger than the NATS server's `max_payload` would never fit;
/// the job is dead at its first attempt, with that reason, instead of retried for a day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_nats_max_payload_is_dead_at_once() {
    let client = async_nats::connect("127.0.0.1:4222")
        .await
        .expect("NATS runs on 127.0.0.1:4222");
    let max_payload = client.server_info().max_payload;
    let js = async_nats::jetstream::new(client);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let stream_name = format!("WRAPUP_BIG_{run}");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("wrapupbig.{run}.>")],
        max_age: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .expect("JetStream is enabled");
    // Caps and the body limit raised so that one agent's customFields outgrow max_payload.
    let big = max_payload + 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_with_actions(
        &dir.path().join("wrapup.db"),
        &format!("max_body_bytes = {}", big * 2),
        &format!(
            "[bots.caps]\ncustom_fields_bytes = {}\nstate_bytes = {}\n[[bots.on_end]]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"wrapupbig.{run}.ended\"\nretry = {{ max_attempts = 5, initial_delay = \"100ms\" }}\n",
            big * 2,
            big * 4
        ),
    );
    let app = TestApp::build().dir(dir).config(&text).spawn().await;
    let c = unique("big");
    let mut entry = transfer("NA", "entry", "a1");
    entry["participant"]["customFields"] = serde_json::json!({"notes": "n".repeat(big)});
    let (status, body) = app.hook(&event_body(&c, serde_json::json!([entry]))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.end(&c).await.0, 200);
    let jobs = app.settled_jobs(&c, 1).await;
    assert_eq!(
        (jobs[0]["state"].clone(), jobs[0]["attempts"].clone()),
        (serde_json::json!("dead"), serde_json::json!(1)),
        "{jobs:#?}"
    );
    assert!(
        jobs[0]["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("max_payload"),
        "{jobs:#?}"
    );
    js.delete_stream(&stream_name).await.expect("cleanup");
}

/// Issue 16, low 8: a 200 whose body is cut off mid-way still counts (the receiver said
/// 200), and the attempt record says the answer did not arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cut_off_mid_way_is_recorded_as_such() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = socket.read(&mut buf).await;
            // Promises 100 bytes, sends 5, hangs up.
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
                .await;
            let _ = socket.shutdown().await;
        }
    });
    let app = TestApp::build().actions(&format!(
        "[[bots.on_end]]\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
    )).spawn()
    .await;
    let c = unique("cut");
    assert_eq!(app.end(&c).await.0, 200);
    let jobs = app.settled_jobs(&c, 1).await;
    assert_eq!(jobs[0]["state"], "succeeded");
    let id = jobs[0]["id"].as_str().unwrap_or_default();
    let (_, job) = app
        .admin(reqwest::Method::GET, &format!("/jobs/{id}"))
        .await;
    let response = job["attemptLog"][0]["response"]
        .as_str()
        .unwrap_or_default();
    assert!(
        response.starts_with("short") && response.contains("cut off"),
        "{job}"
    );
}

/// An action removed (or renamed without `previous_names`): its jobs are orphaned, and an
/// operator re-points them all to another action in one call — by the admin API and by
/// the CLI, which says what was done and exits 0, or says on standard error that nothing
/// matched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actions_orphaned_jobs_are_re_pointed_in_bulk() {
    let (old, new) = (Receiver::start().await, Receiver::start().await);
    old.always(Some(500));
    let hook = |name: &str, url: &str| {
        format!(
            "[[bots.on_end]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretry = {{ max_attempts = 5, initial_delay = \"1h\", max_delay = \"1h\" }}\n"
        )
    };
    let orphan_fast = "[workers]\norphan_after = \"1s\"\n";
    let mut app = TestApp::build()
        .actions(&hook("hubspot", &old.url))
        .spawn()
        .await;
    let ids: Vec<String> = (0..4).map(|_| unique("bulk")).collect();
    for c in &ids {
        assert_eq!(app.end(c).await.0, 200);
    }
    all_waiting(&app, &ids, 1).await;
    // hubspot is replaced by crm: its waiting jobs are orphaned.
    app.reconfigure(&format!("{}{orphan_fast}", hook("crm", &new.url)))
        .await;
    app.advance(Duration::from_secs(2 * 3600));
    for c in &ids {
        eventually("orphaned", || async {
            app.jobs_of(c)
                .await
                .iter()
                .all(|j| j["state"] == "orphaned")
                .then_some(())
        })
        .await;
    }
    // A target that is no action: refused, naming the field…
    let resp = app
        .client
        .post(format!("{}/admin/v1/jobs/repoint", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"bot": BOT, "from": "hubspot", "to": "nowhere"}))
        .send()
        .await
        .unwrap();
    let (status, body) = into_json(resp).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().starts_with("to:"),
        "{body}"
    );
    // …the rest through the CLI, first with a window that holds none of them.
    let cli = |from: &str, window: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wrapup"))
            .args([
                "jobs",
                "repoint",
                "--url",
                &app.base,
                "--admin-token",
                ADMIN_TOKEN,
                "--bot",
                BOT,
                "--from",
                from,
                "--action",
                "crm",
            ])
            .args(window)
            .output()
            .expect("wrapup runs")
    };
    let out = cli("hubspot", &["--until", "2000-01-01T00:00:00Z"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job matched"));
    let out = cli("hubspot", &["--since", "2000-01-01T00:00:00Z"]);
    assert!(out.status.success(), "{out:?}");
    let said: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["repointed"], 4, "{said}");
    for c in &ids {
        let jobs = app.settled_jobs(c, 1).await;
        assert_eq!(jobs[0]["state"], "succeeded", "{jobs:?}");
    }
    assert_eq!(new.deliveries().len(), 4);
    // Nothing left: exit 0, and standard error says so.
    let out = cli("hubspot", &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job matched"));
}
