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

/// Starts `wrapup serve` as a process on a free port and returns it with its base URL.
pub fn serve(config: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wrapup"))
        .args(["serve", "--config"])
        .arg(config)
        .env("WRAPUP_LOG", "info")
        .env(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("wrapup starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("wrapup logs its address")
            .expect("log line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["fields"]["message"] == "wrapup listening" {
            break v["fields"]["addr"].as_str().unwrap().to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, format!("http://{addr}"))
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
    while acknowledged.lock().await.len() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
    for c in &acknowledged {
        let resp = client
            .get(format!("{base}/api/v1/bots/{BOT}/conversations/{c}"))
            .header("auth", &token)
            .send()
            .await
            .unwrap();
        let (status, conv) = into_json(resp).await;
        assert_eq!(
            (status.as_u16(), conv["status"].clone()),
            (200, json!("ended")),
            "{c} was acknowledged but lost"
        );
    }
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
    while receiver.started() < 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let (mut child, base) = serve(&config);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let jobs = loop {
        let resp = client
            .get(format!("{base}/admin/v1/jobs?limit=1000"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let (_, body) = into_json(resp).await;
        let jobs = body["jobs"].as_array().cloned().unwrap_or_default();
        if jobs.len() == 40 && jobs.iter().all(|j| j["state"] == "succeeded") {
            break jobs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "jobs did not all succeed: {jobs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
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
