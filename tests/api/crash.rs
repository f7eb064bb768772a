//! Durability through SIGKILL: what was acknowledged is there after a restart.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::Mutex;

use crate::helpers::*;

/// A `wrapup serve` process that is killed when the guard drops, so a failing test never
/// leaves a server running.
pub struct Server(pub Child);

impl std::ops::Deref for Server {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `wrapup serve` as a process on a free port and returns it with its base URL.
pub fn serve(config: &Path) -> (Server, String) {
    let (server, started, _) = serve_env(config, &[]);
    let addr = started["listen"].as_str().unwrap().to_owned();
    (server, format!("http://{addr}"))
}

/// Every log line a server wrote, as it writes them.
pub type Logs = Arc<std::sync::Mutex<Vec<String>>>;

/// `wrapup serve` with more environment; the start-up line's fields (its listeners), and
/// its log.
pub fn serve_env(config: &Path, env: &[(&str, &str)]) -> (Server, serde_json::Value, Logs) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wrapup"))
        .args(["serve", "--config"])
        .arg(config)
        .env("WRAPUP_LOG", "info")
        .env(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("wrapup starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let started = loop {
        let line = lines
            .next()
            .expect("wrapup logs its address")
            .expect("log line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["fields"]["message"] == "wrapup listening" {
            break v["fields"].clone();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    let logs = Logs::default();
    let kept = logs.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Ok(mut l) = kept.lock() {
                l.push(line);
            }
        }
    });
    (Server(child), started, logs)
}

#[tokio::test]
async fn every_end_acknowledged_before_a_sigkill_is_there_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_text(&dir.path().join("wrapup.db"), ""));

    let (mut child, base) = serve(&config);
    let client = client();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let token = token();
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (client, base, token, acknowledged, sent) = (
                client.clone(),
                base.clone(),
                token.clone(),
                acknowledged.clone(),
                sent.clone(),
            );
            tokio::spawn(async move {
                for i in 0..10_000 {
                    let c = format!("kill-{w}-{i}");
                    sent.fetch_add(1, Ordering::SeqCst);
                    let resp = client
                        .post(format!("{base}/agentai/api/v1/hooks/{BOT}"))
                        .header("token", &token)
                        .json(&seed_with(&c))
                        .send()
                        .await;
                    match resp {
                        Ok(r) if r.status() == 200 => acknowledged.lock().await.push(c),
                        Ok(r) => panic!("unexpected {}", r.status()),
                        Err(_) => return, // the server is gone
                    }
                }
            })
        })
        .collect();
    // Kill while requests are in flight, once a few hundred were acknowledged.
    eventually("300 ends are acknowledged", || async {
        (acknowledged.lock().await.len() >= 300).then_some(())
    })
    .await;
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let acknowledged = acknowledged.lock().await.clone();
    assert!(
        sent.load(Ordering::SeqCst) > acknowledged.len(),
        "some requests were in flight at the kill"
    );

    let (mut child, base) = serve(&config);
    assert_ended(&base, &acknowledged).await;
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!(
        "{} acknowledged ends all present after SIGKILL",
        acknowledged.len()
    );
}

/// SIGKILL while webhook deliveries are in flight: after a restart every job is
/// delivered at least once, and the attempts the kill cut short show as `lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_in_flight_at_a_sigkill_are_delivered_after_restart() {
    let receiver = crate::receiver::Receiver::start().await;
    receiver.delay(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let secret = "whsec_dGVzdC13ZWJob29rLWtleS0wMTIzNDU2Nzg5YWJjZGVm";
    let tail = format!(
        "[[bots.on_end]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{secret}\"\ntimeout = \"2s\"\n\n[workers]\nlease_margin = \"1s\"\npoll_interval = \"100ms\"\n",
        receiver.url
    );
    let config = write_config(
        dir.path(),
        &config_with_actions(&dir.path().join("wrapup.db"), "", &tail),
    );

    let (mut child, base) = serve(&config);
    let client = client();
    let conversations: Vec<String> = (0..40).map(|i| format!("deliver-{i}")).collect();
    for c in &conversations {
        let resp = client
            .post(format!("{base}/agentai/api/v1/hooks/{BOT}"))
            .header("token", token())
            .json(&seed_with(c))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    eventually("5 attempts start", || async {
        (receiver.started() >= 5).then_some(())
    })
    .await;
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let (mut child, base) = serve(&config);
    let jobs = all_succeed(&client, &base, 40, Duration::from_secs(60)).await;
    let delivered: std::collections::HashSet<String> =
        receiver.deliveries().iter().map(|d| d.id()).collect();
    for job in &jobs {
        assert!(
            delivered.contains(job["id"].as_str().unwrap()),
            "{job} was never delivered"
        );
    }
    let mut lost = 0;
    for job in &jobs {
        let resp = client
            .get(format!(
                "{base}/admin/v1/jobs/{}",
                job["id"].as_str().unwrap()
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let (_, detail) = into_json(resp).await;
        lost += detail["attemptLog"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["outcome"] == "lost")
            .count();
    }
    assert!(lost >= 1, "the kill cut no attempt short");
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!(
        "40 jobs, {} deliveries received, {lost} attempts lost to the kill and redone",
        receiver.deliveries().len()
    );
}

/// Issue 26: jobs claimed ahead and still waiting for a slot when the server stops are
/// given back unattempted: after a restart they run at once, each with one attempt, none
/// recorded as lost (left leased, they would wait for their lease, 35 s here, and then
/// count a lost attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_claimed_ahead_are_given_back_at_a_graceful_stop() {
    let receiver = crate::receiver::Receiver::start().await;
    receiver.delay(Duration::from_millis(1500));
    let dir = tempfile::tempdir().unwrap();
    let tail = format!(
        "[[bots.on_end]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec_dGVzdC13ZWJob29rLWtleS0wMTIzNDU2Nzg5YWJjZGVm\"\ntimeout = \"5s\"\n\n[workers]\nconcurrency = 16\nper_destination = 2\n",
        receiver.url
    );
    let config = write_config(
        dir.path(),
        &config_with_actions(&dir.path().join("wrapup.db"), "", &tail),
    );
    let (child, base) = serve(&config);
    let client = client();
    for i in 0..6 {
        let resp = client
            .post(format!("{base}/agentai/api/v1/hooks/{BOT}"))
            .header("token", token())
            .json(&seed_with(&format!("ahead-stop-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    eventually(
        "two attempts run and two more jobs wait, claimed",
        || async {
            let running = admin_jobs(&client, &base, "state=running&limit=100").await;
            (receiver.started() == 2 && running.len() == 4).then_some(())
        },
    )
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = child;
    assert!(child.wait().unwrap().success(), "a clean stop");

    let (_child, base) = serve(&config);
    let jobs = all_succeed(&client, &base, 6, Duration::from_secs(30)).await;
    for job in &jobs {
        assert_eq!(job["attempts"], 1, "{job}");
    }
    assert_eq!(receiver.deliveries().len(), 6, "each delivered once");
}

/// The jobs `GET /admin/v1/jobs?{query}` lists.
async fn admin_jobs(client: &reqwest::Client, base: &str, query: &str) -> Vec<serde_json::Value> {
    let resp = client
        .get(format!("{base}/admin/v1/jobs?{query}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let (_, body) = into_json(resp).await;
    body["jobs"].as_array().cloned().unwrap_or_default()
}

/// Waits (up to `within`) until there are `n` jobs, every one succeeded; returns them.
async fn all_succeed(
    client: &reqwest::Client,
    base: &str,
    n: usize,
    within: Duration,
) -> Vec<serde_json::Value> {
    eventually_within(within, &format!("all {n} jobs succeed"), || async {
        let jobs = admin_jobs(client, base, "limit=1000").await;
        (jobs.len() == n && jobs.iter().all(|j| j["state"] == "succeeded")).then_some(jobs)
    })
    .await
}

/// One full conversation's requests, in the vendor's order.
fn full_conversation(c: &str) -> Vec<serde_json::Value> {
    vec![
        event_body(c, json!([transfer("NA", "entry", "a1")])),
        json!({"botId": BOT, "conversationId": c, "query": "hello", "author": {"type": "USER"}, "agentId": "a1", "source": "test", "experience": "chat", "language": "en"}),
        json!({"botId": BOT, "conversationId": c, "query": "hi, how can I help", "author": {"type": "AGENT"}, "agentId": "a1", "source": "test", "experience": "chat", "language": "en"}),
        event_body(c, json!([transfer("NA", "exit", "a1")])),
        event_body(c, json!([summary()])),
        seed_with(c),
    ]
}

/// The crash loop: a steady load of full conversations, the server SIGKILLed at random
/// moments and restarted, `kills` times; then every acknowledged event must be stored,
/// no conversation ended twice, and every end's webhook delivered at least once.
/// `WRAPUP_KILLS` sets the count (CI runs the default; `WRAPUP_KILLS=20` is the long mode).
async fn crash_loop(store_toml: String, label: &str) {
    let kills: usize = std::env::var("WRAPUP_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(5);
    let receiver = crate::receiver::Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tail = format!(
        "[[bots.on_end]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec_dGVzdC13ZWJob29rLWtleS0wMTIzNDU2Nzg5YWJjZGVm\"\ntimeout = \"2s\"\nretry = {{ initial_delay = \"100ms\", max_delay = \"500ms\" }}\n\n[bots.summary]\nretry = {{ initial_delay = \"100ms\", max_delay = \"500ms\" }}\n\n[workers]\nlease_margin = \"1s\"\npoll_interval = \"100ms\"\n",
        receiver.url
    );
    let config = write_config(dir.path(), &config_for_store(&store_toml, "", &tail));
    let client = client();
    let acked: Arc<Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let mut base = String::new();
    for round in 0..=kills {
        let (mut child, b) = serve(&config);
        base = b;
        if round == kills {
            child.kill().ok();
            child.wait().ok();
            break;
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (client, base, acked, next, stop) = (
                    client.clone(),
                    base.clone(),
                    acked.clone(),
                    next.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    'conversations: while !stop.load(Ordering::SeqCst) {
                        let c = format!("loop-{}", next.fetch_add(1, Ordering::SeqCst));
                        for body in full_conversation(&c) {
                            let ok = client
                                .post(format!("{base}/agentai/api/v1/hooks/{BOT}"))
                                .header("token", token())
                                .json(&body)
                                .send()
                                .await
                                .map(|r| r.status() == 200)
                                .unwrap_or(false);
                            if !ok {
                                continue 'conversations; // the server is gone: abandon, never resend
                            }
                            *acked.lock().await.entry(c.clone()).or_default() += 1;
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200 + fastrand_ms(round))).await;
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.await.unwrap();
        }
    }

    // Restart for good and let the workers finish every job.
    let (mut child, base2) = serve(&config);
    let _ = base;
    let acked = acked.lock().await.clone();
    let ended: Vec<&String> = acked
        .iter()
        .filter(|(_, n)| **n == 6)
        .map(|(c, _)| c)
        .collect();
    let mut events_checked = 0;
    // Summaries each conversation must end up with: one for its trigger (event 5) once
    // stored, one more for its end (event 6).
    let mut summaries_due: Vec<(String, usize)> = Vec::new();
    for (c, n) in &acked {
        let resp = client
            .get(format!("{base2}/api/v1/bots/{BOT}/conversations/{c}"))
            .header("auth", token())
            .send()
            .await
            .unwrap();
        let (status, r) = into_json(resp).await;
        assert_eq!(
            status, 200,
            "{label}: {c} had {n} acknowledged events but is missing"
        );
        let stored = r["eventCount"].as_u64().unwrap() as usize;
        // Acknowledged events are a prefix of the conversation; one more may have been
        // stored by a request the kill cut off before its answer.
        assert!(
            stored == *n || stored == n + 1,
            "{label}: {c} acknowledged {n} events, stored {stored}"
        );
        assert_eq!(r["duplicateEnds"], 0, "{label}: {c} ended twice");
        events_checked += n;
        summaries_due.push((
            c.clone(),
            usize::from(stored >= 5) + usize::from(stored == 6),
        ));
    }
    let summaries_of = |c: &String| {
        let req = client
            .get(format!(
                "{base2}/api/v1/bots/{BOT}/conversations/{c}/summaries"
            ))
            .header("auth", token());
        async move {
            let (_, body) = into_json(req.send().await.unwrap()).await;
            body["summaries"].as_array().cloned().unwrap_or_default()
        }
    };
    let what = format!("{label}: exactly one summary per stored trigger and end");
    let total: usize = summaries_due.iter().map(|(_, n)| n).sum();
    eventually_within(Duration::from_secs(60), &what, || async {
        for (c, due) in &summaries_due {
            let got = summaries_of(c).await.len();
            assert!(
                got <= *due,
                "{label}: {c} has {got} summaries for {due} requests"
            );
            if got < *due {
                return None;
            }
        }
        Some(())
    })
    .await;
    let what = format!("{label}: every acknowledged end is delivered");
    let of_type = |kind: &str| -> Vec<(String, serde_json::Value)> {
        receiver
            .deliveries()
            .iter()
            .map(|d| {
                (
                    d.id(),
                    serde_json::from_slice::<serde_json::Value>(&d.body).unwrap(),
                )
            })
            .filter(|(_, body)| body["type"] == kind)
            .collect()
    };
    eventually_within(Duration::from_secs(60), &what, || async {
        let delivered: std::collections::HashSet<String> = of_type("conversation.ended")
            .iter()
            .map(|(_, body)| body["data"]["conversationId"].as_str().unwrap().to_owned())
            .collect();
        ended.iter().all(|c| delivered.contains(*c)).then_some(())
    })
    .await;
    // Every summary is announced, each under one delivery id (a resend keeps its id).
    let mut summary_ids = std::collections::HashSet::new();
    for (c, _) in &summaries_due {
        for s in summaries_of(c).await {
            assert_eq!(s["status"], "COMPLETED", "{label}: {s}");
            summary_ids.insert(s["summaryId"].as_str().unwrap().to_owned());
        }
    }
    let what = format!("{label}: every summary is announced once");
    eventually_within(Duration::from_secs(60), &what, || async {
        let mut ids: std::collections::HashMap<String, std::collections::HashSet<String>> =
            std::collections::HashMap::new();
        for (id, body) in of_type("conversation.summarized") {
            let summary = body["data"]["summary"]["summaryId"]
                .as_str()
                .unwrap()
                .to_owned();
            ids.entry(summary).or_default().insert(id);
        }
        for (summary, deliveries) in &ids {
            assert_eq!(
                deliveries.len(),
                1,
                "{label}: {summary} announced under {deliveries:?}"
            );
            assert!(
                summary_ids.contains(summary),
                "{label}: {summary} announced but not stored"
            );
        }
        (ids.len() == summary_ids.len()).then_some(())
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!(
        "{label}: {kills} kills survived; {} conversations, {events_checked} acknowledged events all stored, {} ends each delivered, {total} summaries each stored and announced once",
        acked.len(),
        ended.len()
    );
}

fn fastrand_ms(round: usize) -> u64 {
    ((round as u64).wrapping_mul(2_654_435_761) >> 7) % 600
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_loop_on_sqlite_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    crash_loop(
        format!(
            "url = \"sqlite://{}\"",
            dir.path().join("loop.db").display()
        ),
        "sqlite",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_loop_on_postgres_loses_and_doubles_nothing() {
    let (store, schema) = pg_store("wrapup_loop", 8);
    crash_loop(store, "postgres").await;
    let _ = std::process::Command::new("psql")
        .env("PGOPTIONS", "-c client_min_messages=warning")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
        .arg(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_load_holds_every_end_acknowledged_before_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_text(&dir.path().join("wrapup.db"), ""));
    let (_server, base) = serve(&config);
    let client = client();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let token = token();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (client, base, token, acknowledged, stop) = (
                client.clone(),
                base.clone(),
                token.clone(),
                acknowledged.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let c = format!("backup-{w}-{i}");
                    i += 1;
                    let resp = client
                        .post(format!("{base}/agentai/api/v1/hooks/{BOT}"))
                        .header("token", &token)
                        .json(&seed_with(&c))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                    acknowledged.lock().await.push(c);
                }
            })
        })
        .collect();
    eventually("200 ends are acknowledged", || async {
        (acknowledged.lock().await.len() >= 200).then_some(())
    })
    .await;
    let before = acknowledged.lock().await.clone();
    let copy = dir.path().join("copy.db");
    let backup = {
        let (config, copy) = (config.clone(), copy.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_wrapup"))
                .args(["backup", "--config"])
                .arg(&config)
                .env(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
                .arg("--to")
                .arg(&copy)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let after = acknowledged.lock().await.len();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&backup.stdout).unwrap();
    assert_eq!(report["integrity"], "ok");
    assert!(
        acknowledged.lock().await.len() > before.len(),
        "ingest went on during the backup"
    );

    // The copy opens on its own, holds every end acknowledged before the backup began,
    // and no more than were acknowledged by its end.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let db = rusqlite::Connection::open(&copy).unwrap();
    let ended: u64 = db
        .query_row(
            "SELECT count(*) FROM conversations WHERE status = 'ended'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(report["ended"], ended);
    assert!(
        ended as usize >= before.len() && ended as usize <= after,
        "{ended} {} {after}",
        before.len()
    );
    let mut find = db
        .prepare("SELECT status FROM conversations WHERE bot_id = ?1 AND conversation_id = ?2")
        .unwrap();
    for c in &before {
        let status: String = find.query_row([BOT, c.as_str()], |r| r.get(0)).unwrap();
        assert_eq!(status, "ended", "{c}");
    }

    // An existing file is never overwritten.
    let again = Command::new(env!("CARGO_BIN_EXE_wrapup"))
        .args(["backup", "--config"])
        .arg(&config)
        .env(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
        .arg("--to")
        .arg(&copy)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));
}

pub fn hangup(server: &Server) {
    let status = Command::new("kill")
        .args(["-HUP", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

pub async fn wait_for_log(logs: &Logs, message: &str, nth: usize) -> serde_json::Value {
    eventually(message, || async {
        let lines = logs.lock().unwrap().clone();
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"] == message)
            .nth(nth)
    })
    .await
}

/// The `nth` refused reload's log line says `why`.
async fn refused_with(logs: &Logs, nth: usize, why: &str) {
    let refused = wait_for_log(
        logs,
        "configuration not reloaded; the running one stays",
        nth,
    )
    .await;
    let error = refused["fields"]["error"].as_str().unwrap_or_default();
    assert!(error.contains(why), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_bots_and_actions_under_load_without_losing_a_request() {
    let receiver = crate::receiver::Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("wrapup.db");
    let new_bot = "st-00000000-0000-0000-0000-00000000hup1";
    let before = config_text(&db, "");
    let config = write_config(dir.path(), &before);
    let (mut server, started, logs) = serve_env(&config, &[]);
    let base = format!("http://{}", started["listen"].as_str().unwrap());
    let client = client();
    let end = move |bot: &'static str, c: String| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let mut body = seed_with(&c);
            body["botId"] = json!(bot);
            client
                .post(format!("{base}/agentai/api/v1/hooks/{bot}"))
                .header("token", token())
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };

    assert_eq!(
        end(new_bot, unique("hup")).await.unwrap(),
        400,
        "unknown before"
    );

    // Load on the old bot through the reload: every request is answered 200.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|w| {
            let (stop, answered, end) = (stop.clone(), answered.clone(), end.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let status = end(BOT, format!("hup-load-{w}-{i}")).await;
                    assert_eq!(status.ok(), Some(200), "request {w}-{i}");
                    answered.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
            })
        })
        .collect();
    eventually("load runs", || async {
        (answered.load(Ordering::SeqCst) > 100).then_some(())
    })
    .await;

    // A new bot, and a webhook on the old one.
    let after = format!(
        "{before}\n[[bots.on_end]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec_dGVzdC13ZWJob29rLWtleS0wMTIzNDU2Nzg5YWJjZGVm\"\n\n[[bots]]\nid = \"{new_bot}\"\napps = [\"{HS256_APP}\"]\n",
        receiver.url
    );
    std::fs::write(&config, &after).unwrap();
    hangup(&server);
    let reloaded = wait_for_log(&logs, "configuration reloaded", 0).await;
    // The log says what changed, by name.
    assert_eq!(
        reloaded["fields"]["added"],
        format!("action {BOT}/webhook, bot {new_bot}"),
        "{reloaded}"
    );
    assert_eq!(reloaded["fields"]["removed"], "", "{reloaded}");
    assert_eq!(reloaded["fields"]["changed"], "", "{reloaded}");
    let during = answered.load(Ordering::SeqCst);
    eventually("load goes on after the reload", || async {
        (answered.load(Ordering::SeqCst) > during + 100).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(
        end(new_bot, unique("hup")).await.unwrap(),
        200,
        "known after"
    );
    let c = unique("hup-action");
    assert_eq!(end(BOT, c.clone()).await.unwrap(), 200);
    eventually("the new action delivers", || async {
        receiver
            .deliveries()
            .iter()
            .any(|d| String::from_utf8_lossy(&d.body).contains(&c))
            .then_some(())
    })
    .await;

    // A broken file is not loaded: the server keeps the running configuration.
    std::fs::write(&config, "[server\nlisten = ").unwrap();
    hangup(&server);
    refused_with(&logs, 0, "line").await;
    // A listener change is refused, with the key.
    std::fs::write(
        &config,
        after.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\""),
    )
    .unwrap();
    hangup(&server);
    refused_with(&logs, 1, "server.listen").await;
    // A file caught half-written (cut before its apps and bots) is taken for a mistake.
    let cut = after.find("[[apps]]").unwrap();
    std::fs::write(&config, &after[..cut]).unwrap();
    hangup(&server);
    refused_with(&logs, 2, "no [[apps]]").await;
    assert_eq!(
        end(new_bot, unique("hup")).await.unwrap(),
        200,
        "still the reloaded one"
    );
    assert!(server.try_wait().unwrap().is_none(), "still running");
}
