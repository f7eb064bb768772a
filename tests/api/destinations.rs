//! Misbehaving destinations next to healthy ones: each destination has its own
//! connections, so a closed port or a server that never speaks fails only its own jobs.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

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
         [[bots.on_end]]\nname = \"silent-bus\"\nkind = \"nats\"\nurl = \"nats://{silent_addr}\"\nsubject = \"wrapupdest.{run}.silent\"\n{ONE_ATTEMPT}"
    );
    let app = TestApp::spawn_with_actions(&tail).await;
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
    js.delete_stream(&stream_name).await.expect("cleanup");
}
