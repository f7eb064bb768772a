//! What a message costs the writer in a conversation at its caps, against one in a fresh
//! conversation (the bounded-work issue's measure). Both through the SQLite store as the
//! server uses it (group-commit writer, WAL, synchronous=FULL); requests one at a time,
//! so each is its own batch and its time is the writer's time for it, fsync included.
//! Fresh and capped messages alternate, so the disk's drift touches both alike.
//!
//! cargo run --release -p wrapup-bench --bin bench-caps -- [rounds] [state_bytes cap] [fields|names]
//!
//! `fields` grows the conversation with agents carrying customFields (the bulk a real
//! conversation has); `names` with agents carrying 1,000-character names, no
//! customFields, re-entering until the segment cap, then bare messages until the
//! anomaly cap (the most text to escape per byte the caps allow).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wrapup::config::{StoreSettings, StoreUrl};
use wrapup::domain::caps::Caps;
use wrapup::domain::ingest::Bot;
use wrapup::domain::payload::{Limits, parse_request};
use wrapup::store::{Ingest, IngestOutcome, Refusal};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BOT: &str = "st-bench";

fn ingest(conversation: &str, body: Value, caps: Caps) -> Ingest {
    let request = parse_request(&body, BOT, &Limits::default()).expect("valid body");
    Ingest {
        bot_id: BOT.into(),
        conversation_id: conversation.into(),
        events: request.events,
        jti: None,
        bot: Bot {
            on_end: Arc::from([]),
            caps,
            summary: None,
        },
    }
}

fn transfer(kind: &str, agent: &str, fields: usize) -> Value {
    let custom: serde_json::Map<String, Value> = (0..fields)
        .map(|i| (format!("field{i:02}"), json!("v".repeat(100))))
        .collect();
    json!({"name": "INTERNAL_TRANSFER_EVENT", "transfertype": kind, "transition": "entry",
           "experience": "voice", "language": "en",
           "participant": {"identity": agent, "name": format!("Agent {agent}"), "type": "agent",
                           "customFields": custom}})
}

fn message(conversation: &str, i: usize) -> Value {
    json!({"botId": BOT, "conversationId": conversation, "query": format!("message {i}"),
           "author": {"type": "USER"}, "agentId": "a", "source": "voice",
           "experience": "voice", "language": "en"})
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(300);
    let caps = Caps {
        state_bytes: std::env::args()
            .nth(2)
            .and_then(|r| r.parse().ok())
            .unwrap_or(Caps::default().state_bytes),
        ..Caps::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = StoreSettings {
        url: StoreUrl::Sqlite(dir.path().join("caps.db")),
        queue_capacity: 1024,
        max_batch: 256,
        pool_size: 4,
        read_connections: 4,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
        schema: "public".into(),
    };
    let store = wrapup::store::open(&settings, Arc::new(wrapup::clock::SystemClock))
        .await
        .expect("store");

    // A conversation grown with valid requests until the state cap refuses the next one.
    let capped = "at-caps";
    let body = |events: Value| json!({"botId": BOT, "conversationId": capped, "events": events});
    let names = std::env::args().nth(3).as_deref() == Some("names");
    let mut agents = 0;
    while names && agents < 10_000 {
        let agent = format!("agent-{:03}", agents % 64);
        let mut entry = transfer(if agents == 0 { "NA" } else { "WARM" }, &agent, 0);
        entry["participant"]["name"] = json!("n".repeat(1000));
        let mut exit = entry.clone();
        exit["transition"] = json!("exit");
        match store
            .ingest(ingest(capped, body(json!([entry, exit])), caps))
            .await
            .expect("ingest")
        {
            IngestOutcome::Accepted { .. } => agents += 1,
            IngestOutcome::Refused(Refusal::OverCap(over)) => {
                eprintln!("grown with {agents} entries; the next was refused: {over}");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    for i in 0..if names { 100 } else { 0 } {
        // Bare messages: each records a message_fields_missing anomaly.
        let bare = json!({"botId": BOT, "conversationId": capped, "query": format!("bare {i}")});
        store
            .ingest(ingest(capped, bare, caps))
            .await
            .expect("ingest");
    }
    loop {
        if names {
            break;
        }
        let kind = if agents == 0 { "NA" } else { "WARM" };
        let agent = format!("agent-{agents:03}-{}", "x".repeat(200));
        match store
            .ingest(ingest(
                capped,
                body(json!([transfer(kind, &agent, 60)])),
                caps,
            ))
            .await
            .expect("ingest")
        {
            IngestOutcome::Accepted { .. } => agents += 1,
            IngestOutcome::Refused(Refusal::OverCap(over)) => {
                eprintln!("grown to {agents} agents; the next was refused: {over}");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let state = store
        .conversation(BOT, capped)
        .await
        .expect("read")
        .expect("exists");
    let state_bytes = serde_json::to_string(&state.state).expect("json").len();

    let (mut fresh, mut at_caps) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let c = format!("fresh-{i}");
        let t = Instant::now();
        store
            .ingest(ingest(&c, message(&c, i), caps))
            .await
            .expect("fresh");
        fresh.push(t.elapsed());
        let t = Instant::now();
        let outcome = store
            .ingest(ingest(capped, message(capped, i), caps))
            .await
            .expect("capped");
        at_caps.push(t.elapsed());
        assert!(
            matches!(outcome, IngestOutcome::Accepted { .. }),
            "{outcome:?}"
        );
    }
    store.close().await;
    let (f, c) = (median(fresh), median(at_caps));
    println!(
        "state at caps: {state_bytes} bytes ({agents} agents); median writer time per message: fresh {:.3} ms, at caps {:.3} ms; ratio {:.2}x ({rounds} of each)",
        f.as_secs_f64() * 1e3,
        c.as_secs_f64() * 1e3,
        c.as_secs_f64() / f.as_secs_f64()
    );
}
