//! Several `wrapup serve` processes on one PostgreSQL: exactly-once across instances.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use crate::crash::serve;
use crate::helpers::*;
use crate::receiver::Receiver;

struct Cluster {
    children: Vec<Option<crate::crash::Server>>,
    bases: Vec<String>,
    schema: String,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

impl Cluster {
    /// `n` instances sharing a fresh schema of the machine's PostgreSQL.
    fn start(n: usize, tail: &str) -> Cluster {
        Self::start_each(&vec![tail; n])
    }

    /// One instance per `tails` entry, each with its own configuration of the demo bot
    /// (as during a rolling deploy), all sharing a fresh schema.
    fn start_each(tails: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let (store, schema) = pg_store("wrapup_scale", 8);
        let mut children = Vec::new();
        let mut bases = Vec::new();
        let mut config = PathBuf::new();
        for (i, tail) in tails.iter().enumerate() {
            let own = dir.path().join(format!("instance-{i}"));
            std::fs::create_dir_all(&own).unwrap();
            config = write_config(&own, &config_for_store(&store, "", tail));
            let (child, base) = serve(&config);
            children.push(Some(child));
            bases.push(base);
        }
        Cluster {
            children,
            bases,
            schema,
            _dir: dir,
            config,
        }
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    async fn jobs(&self, base: &str) -> Vec<Value> {
        pages(base, "/admin/v1/jobs?limit=1000", Auth::Admin, "jobs")
            .await
            .0
    }

    async fn wait_all_succeeded(&self, base: &str, expected: usize) -> Vec<Value> {
        eventually_within(Duration::from_secs(90), "every job succeeds", || async {
            let jobs = self.jobs(base).await;
            (jobs.len() == expected && jobs.iter().all(|j| j["state"] == "succeeded"))
                .then_some(jobs)
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
        let _ = std::process::Command::new("psql")
            .env("PGOPTIONS", "-c client_min_messages=warning")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .status();
        let _ = &self.config;
    }
}

fn webhook_tail(url: &str) -> String {
    format!(
        "[[bots.on_end]]\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"whsec_dGVzdC13ZWJob29rLWtleS0wMTIzNDU2Nzg5YWJjZGVm\"\ntimeout = \"2s\"\n\n[workers]\npoll_interval = \"200ms\"\nlease_margin = \"1s\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_end_a_thousand_conversations_once_each() {
    let receiver = Receiver::start().await;
    let cluster = Cluster::start(3, &webhook_tail(&receiver.url));
    let client = client();
    let token = token();
    let requests: Vec<(String, String)> = (0..1000)
        .flat_map(|i| {
            cluster
                .bases
                .iter()
                .map(move |b| (b.clone(), format!("scale-{i:04}")))
        })
        .collect();
    let statuses: Vec<u16> = futures::stream::iter(requests)
        .map(|(base, c)| {
            let (client, token) = (client.clone(), token.clone());
            async move {
                client
                    .post(format!("{base}/agentai/api/v1/hooks/{BOT}"))
                    .header("token", token)
                    .json(&seed_with(&c))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(96)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );

    // Every conversation ended once; the other two ends were counted as duplicates.
    let (mut ended, mut duplicates) = (0, 0);
    let path = format!("/api/v1/bots/{BOT}/conversations?limit=500");
    let (all, _) = pages(
        &cluster.bases[1],
        &path,
        Auth::Token(&token),
        "conversations",
    )
    .await;
    for r in all {
        assert_eq!(r["eventCount"], 1);
        ended += (r["status"] == "ended") as u64;
        duplicates += r["duplicateEnds"].as_u64().unwrap();
    }
    assert_eq!((ended, duplicates), (1000, 2000));

    let jobs = cluster.wait_all_succeeded(&cluster.bases[2], 1000).await;
    let conversations: HashSet<_> = jobs
        .iter()
        .map(|j| j["conversationId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(conversations.len(), 1000, "one job per conversation");
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for d in receiver.deliveries() {
        *per_id.entry(d.id()).or_default() += 1;
    }
    assert_eq!(per_id.len(), 1000);
    assert!(
        per_id.values().all(|n| *n == 1),
        "a webhook was delivered twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_held_by_a_killed_instance_are_finished_by_the_others() {
    let receiver = Receiver::start().await;
    receiver.delay(Duration::from_millis(400));
    let mut cluster = Cluster::start(3, &webhook_tail(&receiver.url));
    let client = client();
    // Ends go to instance 0, which is woken at once and claims the jobs first.
    for i in 0..60 {
        let resp = client
            .post(format!("{}/agentai/api/v1/hooks/{BOT}", cluster.bases[0]))
            .header("token", token())
            .json(&seed_with(&format!("held-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    eventually("10 attempts start", || async {
        (receiver.started() >= 10).then_some(())
    })
    .await;
    cluster.kill(0);
    let jobs = cluster.wait_all_succeeded(&cluster.bases[1], 60).await;
    let delivered: HashSet<String> = receiver.deliveries().iter().map(|d| d.id()).collect();
    for j in &jobs {
        assert!(
            delivered.contains(j["id"].as_str().unwrap()),
            "{j} never delivered"
        );
    }
    let mut lost = 0;
    for j in &jobs {
        let url = format!(
            "{}/admin/v1/jobs/{}",
            cluster.bases[2],
            j["id"].as_str().unwrap()
        );
        let (_, detail) = into_json(
            client
                .get(url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap(),
        )
        .await;
        lost += detail["attemptLog"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["outcome"] == "lost")
            .count();
    }
    assert!(lost >= 1, "the killed instance held no job");
    eprintln!(
        "60 jobs finished by the surviving instances; {lost} attempts were lost with the killed one"
    );
}

/// A PostgreSQL server of the test's own (initdb in a temporary folder, run as the
/// `postgres` user), so the test can stop and start it without disturbing others.
struct PrivatePostgres {
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

fn pg_bin(name: &str) -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL is installed");
    let mut dirs: Vec<PathBuf> = versions.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    dirs.sort();
    dirs.last().unwrap().join("bin").join(name)
}

fn as_postgres(args: &[&std::ffi::OsStr]) -> std::process::ExitStatus {
    std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("runuser runs")
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::process::Command::new("chown")
            .arg("postgres")
            .arg(dir.path())
            .status()
            .unwrap();
        let initdb = pg_bin("initdb");
        let status = as_postgres(&[
            initdb.as_os_str(),
            "-D".as_ref(),
            data.as_os_str(),
            "-A".as_ref(),
            "trust".as_ref(),
            "-U".as_ref(),
            "postgres".as_ref(),
        ]);
        assert!(
            status.success(),
            "initdb (as the postgres user; needs root)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePostgres {
            data,
            port,
            _dir: dir,
        };
        pg.up();
        pg
    }

    fn ctl(&self, args: &[&str]) -> std::process::ExitStatus {
        let pg_ctl = pg_bin("pg_ctl");
        let mut all: Vec<&std::ffi::OsStr> =
            vec![pg_ctl.as_os_str(), "-D".as_ref(), self.data.as_os_str()];
        all.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
        as_postgres(&all)
    }

    fn up(&self) {
        let socket_dir = self.data.parent().unwrap().to_str().unwrap().to_owned();
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {socket_dir}",
            self.port
        );
        assert!(
            self.ctl(&["-w", "-o", &opts, "-l", "/dev/null", "start"])
                .success(),
            "pg_ctl start"
        );
    }

    /// Stops like a crash: no checkpoint, connections cut.
    fn crash(&self) {
        assert!(
            self.ctl(&["-w", "-m", "immediate", "stop"]).success(),
            "pg_ctl stop"
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.ctl(&["-m", "immediate", "stop"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_down_during_load_gets_503_and_the_server_recovers_by_itself() {
    let pg = PrivatePostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "url = \"{}\"\nconnect_timeout = \"1s\"\nstatement_timeout = \"2s\"\npool_size = 8",
        pg.url()
    );
    let config = write_config(
        dir.path(),
        &config_for_store(&store, "request_timeout = \"3s\"", ""),
    );
    let (mut child, base) = serve(&config);
    let client = client();
    let token = token();

    let send = |i: usize| {
        let (client, token, base) = (client.clone(), token.clone(), base.clone());
        async move {
            let c = format!("pgdown-{i}");
            let resp = client
                .post(format!("{base}/agentai/api/v1/hooks/{BOT}"))
                .header("token", token)
                .json(&seed_with(&c))
                .send()
                .await
                .unwrap();
            let retry_after = resp.headers().get("retry-after").is_some();
            (c, resp.status().as_u16(), retry_after)
        }
    };
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let mut next = 0;
    // Load before, during and after the outage.
    for phase in 0..3 {
        if phase == 1 {
            pg.crash();
        }
        if phase == 2 {
            pg.up();
        }
        let deadline = Instant::now() + Duration::from_secs(if phase == 2 { 20 } else { 2 });
        let mut recovered = false;
        while Instant::now() < deadline {
            let results: Vec<_> = futures::future::join_all((next..next + 16).map(send)).await;
            next += 16;
            for (c, status, retry_after) in results {
                match status {
                    200 => {
                        acknowledged.push(c);
                        recovered = true;
                    }
                    503 => {
                        assert!(retry_after, "503 without Retry-After");
                        refused += 1;
                    }
                    other => panic!("unexpected {other}"),
                }
            }
            if phase == 1 {
                let ready = client
                    .get(format!("{base}/readyz"))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(ready, 503, "readiness reports the database");
            }
            if phase == 2 && recovered {
                break;
            }
        }
        if phase == 2 {
            assert!(recovered, "never recovered after PostgreSQL came back");
        }
    }
    assert!(refused > 0, "the outage refused nothing");
    // (A readiness check is reused for a second.)
    eventually("ready again", || async {
        let ready = client.get(format!("{base}/readyz")).send().await.ok()?;
        (ready.status() == 200).then_some(())
    })
    .await;
    assert_ended(&base, &acknowledged).await;
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!(
        "{} acknowledged and all present; {refused} refused with 503 while PostgreSQL was down",
        acknowledged.len()
    );
}

/// Issue 16, medium 5: a rolling deploy. One instance still runs the old configuration
/// (webhook A), the other the new one (A and a new webhook B). The old instance never
/// claims B's jobs — it cannot deliver them — so none dies there: every job is delivered,
/// B's by the new instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_rolling_deploy_no_instance_takes_a_job_it_cannot_deliver() {
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    let hook = |name: &str, url: &str| {
        format!(
            "[[bots.on_end]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretry = {{ max_attempts = 1 }}\n"
        )
    };
    let old = hook("a", &a.url);
    // The new configuration also adds a bot whose webhook posts to A's receiver: the same
    // URL, another bot, so another destination the old instance does not know.
    let new = format!(
        "{old}{}[[bots]]\nid = \"st-rolling-new\"\napps = [\"{HS256_APP}\"]\n{}",
        hook("b", &b.url),
        hook("a", &a.url)
    );
    let cluster = Cluster::start_each(&[&old, &new]);
    let client = client();
    let token = token();
    let new_base = cluster.bases[1].clone();
    for i in 0..100 {
        let resp = client
            .post(format!("{new_base}/agentai/api/v1/hooks/{BOT}"))
            .header("token", &token)
            .json(&seed_with(&format!("deploy-{i:03}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    for i in 0..20 {
        let mut body = seed_with(&format!("deploy-new-bot-{i:02}"));
        body["botId"] = serde_json::json!("st-rolling-new");
        let resp = client
            .post(format!("{new_base}/agentai/api/v1/hooks/st-rolling-new"))
            .header("token", &token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let jobs = cluster.wait_all_succeeded(&cluster.bases[0], 220).await;
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"));
    let delivered = |r: &Receiver| {
        r.deliveries()
            .iter()
            .map(|d| d.id())
            .collect::<HashSet<_>>()
    };
    assert_eq!(delivered(&a).len(), 120, "the new bot's jobs too");
    assert_eq!(
        delivered(&b).len(),
        100,
        "every job of the new action was delivered"
    );
}

/// Issue 25, item 5: a store that hangs makes `/readyz` answer 503 within a probe's
/// default timeout (1 s), and the scrape says it in `wrapup_ready` and `wrapup_store_up`
/// (it used to answer 200 while the probe waited 2 s); both come back by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_store_is_told_not_ready_within_a_probe_timeout_and_in_the_metrics() {
    let relay = Relay::start("127.0.0.1:5432").await;
    let schema = format!("wrapup_hung_{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "url = \"postgres://postgres@127.0.0.1:{}/test\"\nschema = \"{schema}\"\npool_size = 4\nstatement_timeout = \"5s\"",
        relay.port
    );
    let config = write_config(dir.path(), &config_for_store(&store, "", ""));
    let (mut child, base) = serve(&config);
    // A probe as Kubernetes sends it: a 1 s timeout.
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let scrape = |base: String| async move {
        let text = metrics_text(&base).await;
        let gauge = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
        };
        (gauge("wrapup_ready"), gauge("wrapup_store_up"))
    };
    let ready = probe.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        scrape(base.clone()).await,
        (Some("1".into()), Some("1".into()))
    );

    relay.freeze(true);
    // A check is reused for a second: within a few, a probe answers 503 (each within the
    // probe's 1 s, or the request fails and this test with it).
    let body = eventually("a probe is told not ready", || async {
        let resp = probe
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("an answer within the probe's 1 s");
        (resp.status() == 503).then_some(resp)
    })
    .await;
    let (_, body) = into_json(body).await;
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not answer within 800 ms")),
        "{body}"
    );
    assert_eq!(
        scrape(base.clone()).await,
        (Some("0".into()), Some("0".into()))
    );

    relay.freeze(false);
    eventually("ready again once the store answers", || async {
        let ready = probe.get(format!("{base}/readyz")).send().await.ok()?;
        (ready.status() == 200).then_some(())
    })
    .await;
    assert_eq!(
        scrape(base.clone()).await,
        (Some("1".into()), Some("1".into()))
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}

/// Issue 26: one conversation's requests arriving together on PostgreSQL are planned one
/// after the other inside a batch and written as one. Forty requests at once to one
/// conversation (transfers and summary triggers), then its end: every one is answered
/// 200, the log holds each event once with sequence numbers 1..=41, and each trigger has
/// its own summary job (each with its own payload), as if they had come one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_conversations_requests_are_each_written_once_in_order() {
    let (store, schema) = pg_store("wrapup_hot", 16);
    let tail = "[bots.summary]\nprovider = \"extractive\"\n";
    let app = TestApp::build()
        .config(&config_for_store(&store, "", tail))
        .spawn()
        .await;
    let c = unique("hot");
    let bodies: Vec<Value> = (0..40)
        .map(|i| {
            let event = if i % 2 == 0 {
                transfer("NA", "entry", &format!("agent-{i}"))
            } else {
                summary()
            };
            event_body(&c, serde_json::json!([event]))
        })
        .collect();
    let answers = futures::future::join_all(bodies.iter().map(|b| app.hook(b))).await;
    for (status, body) in &answers {
        assert_eq!(status.as_u16(), 200, "{body}");
    }
    assert_eq!(app.end(&c).await.0, 200);

    let (events, _) = pages(
        &app.base,
        &format!("/api/v1/bots/{BOT}/conversations/{c}/events?limit=100"),
        Auth::Token(&token()),
        "events",
    )
    .await;
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=41).collect::<Vec<_>>());
    let triggers: HashSet<u64> = events
        .iter()
        .filter(|e| e["name"] == "TRIGGER_SUMMARY_EVENT")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(triggers.len(), 20);
    let jobs: HashSet<String> = app
        .jobs_of(&c)
        .await
        .iter()
        .map(|j| j["action"].as_str().unwrap().to_owned())
        .collect();
    for seq in &triggers {
        assert!(
            jobs.contains(&format!("summary@{seq}")),
            "summary@{seq} in {jobs:?}"
        );
    }
    app.stop().await;
    let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}
