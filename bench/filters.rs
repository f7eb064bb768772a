//! The records list's filters at scale: the newest page (50) of a bot's conversations,
//! unfiltered and filtered by agent, queue, anomaly and end reason, with 1,000,000 stored
//! conversations, on the store the server uses (SQLite file, or a fresh schema in the
//! PostgreSQL at DATABASE_URL). Filled through `Store::ingest` like requests (one request
//! per conversation, 256 in flight); each query is timed as the API runs it (the store's
//! read and the page's JSON), without the HTTP round trip.
//!
//! cargo run --release -p wrapup-bench --bin bench-filters -- sqlite|postgres [conversations] [queries]
//!
//! On PostgreSQL, `BENCH_SCHEMA=<schema>` queries a schema filled by an earlier run
//! instead of filling a new one (run `ANALYZE` on it first: right after a bulk fill the
//! planner's statistics are those of an empty table until autovacuum analyzes it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wrapup::config::{StoreSettings, StoreUrl};
use wrapup::domain::ConversationRecord;
use wrapup::domain::caps::Caps;
use wrapup::domain::ingest::Bot;
use wrapup::domain::payload::{Limits, parse_request};
use wrapup::domain::tags::{ANY_ANOMALY, TagKind, tag};
use wrapup::store::{ConversationFilter, Ingest, Store};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BOT: &str = "st-bench";
const AGENTS: usize = 200;
const QUEUES: usize = 20;
const REASONS: [&str; 4] = [
    "agent_initiated",
    "customer_hangup",
    "transfer_failed",
    "timeout",
];

fn transfer(kind: &str, transition: &str, agent: &str, queue: usize) -> Value {
    json!({"name": "INTERNAL_TRANSFER_EVENT", "transfertype": kind, "transition": transition,
           "experience": "voice", "language": "en",
           "participant": {"identity": agent, "name": agent, "type": "agent",
                           "customFields": {"agentEmail": format!("{agent}@example.com"),
                                            "queueId": format!("{}", 1000 + queue), "queueName": format!("queue{queue}")}}})
}

/// Conversation `i`: one agent (every 20th: a second NA entry, the anomaly
/// repeated_na_entry), 9 in 10 ended with one of four reasons.
fn body(i: usize) -> Value {
    let agent = format!("agent-{:03}", i % AGENTS);
    let queue = (i / 7) % QUEUES;
    let mut events = vec![transfer("NA", "entry", &agent, queue)];
    if i.is_multiple_of(20) {
        events.push(transfer(
            "NA",
            "entry",
            &format!("agent-{:03}", (i + 1) % AGENTS),
            queue,
        ));
        events.push(transfer(
            "NA",
            "exit",
            &format!("agent-{:03}", (i + 1) % AGENTS),
            queue,
        ));
    }
    events.push(transfer("NA", "exit", &agent, queue));
    if !i.is_multiple_of(10) {
        events.push(json!({"name": "END_OF_CONVERSATION", "reason": REASONS[(i / 3) % 4], "language": "en",
                           "experience": "voice", "participant": {"identity": agent, "name": agent, "type": "agent"}}));
    }
    json!({"botId": BOT, "conversationId": format!("conv-{i:08}"), "events": events})
}

fn ingest(i: usize) -> Ingest {
    let request = parse_request(&body(i), BOT, &Limits::default()).expect("valid body");
    Ingest {
        bot_id: BOT.into(),
        conversation_id: format!("conv-{i:08}"),
        events: request.events,
        jti: None,
        bot: Bot {
            on_end: Arc::from([]),
            caps: Caps::default(),
            summary: None,
        },
    }
}

/// A filter, given the query's number (to vary its values).
type Case = Box<dyn Fn(usize) -> ConversationFilter>;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[i - 1].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kind = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("sqlite")
        .to_owned();
    let total: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let queries: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(300);
    let dir = tempfile::tempdir().expect("tempdir");
    let reuse = std::env::var("BENCH_SCHEMA").ok();
    let schema = reuse
        .clone()
        .unwrap_or_else(|| format!("bench_filters_{}", std::process::id()));
    let url = match kind.as_str() {
        "postgres" => StoreUrl::Postgres(
            std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        ),
        _ => StoreUrl::Sqlite(dir.path().join("filters.db")),
    };
    let settings = StoreSettings {
        url,
        queue_capacity: 16_384,
        max_batch: 1024,
        pool_size: 16,
        read_connections: 4,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(30),
        schema: schema.clone(),
    };
    let store: Arc<dyn Store> =
        wrapup::store::open(&settings, Arc::new(wrapup::clock::SystemClock))
            .await
            .expect("store");

    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..if reuse.is_some() { 0 } else { 256 } {
        let (store, next) = (store.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return;
                }
                store.ingest(ingest(i)).await.expect("ingest");
                if i % 100_000 == 0 && i > 0 {
                    eprintln!("{i} conversations stored");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("filler");
    }
    let fill = started.elapsed();
    eprintln!(
        "stored {total} conversations in {:.0} s",
        fill.as_secs_f64()
    );

    let cases: Vec<(&str, Case)> = vec![
        ("unfiltered", Box::new(|_| ConversationFilter::default())),
        (
            "agent",
            Box::new(|i| ConversationFilter {
                tags: vec![tag(TagKind::Agent, &format!("agent-{:03}", i % AGENTS))],
                ..Default::default()
            }),
        ),
        (
            "queue",
            Box::new(|i| ConversationFilter {
                tags: vec![tag(TagKind::Queue, &format!("queue{}", i % QUEUES))],
                ..Default::default()
            }),
        ),
        (
            "any anomaly",
            Box::new(|_| ConversationFilter {
                tags: vec![ANY_ANOMALY.into()],
                ..Default::default()
            }),
        ),
        (
            "anomaly code",
            Box::new(|_| ConversationFilter {
                tags: vec![tag(TagKind::Anomaly, "repeated_na_entry")],
                ..Default::default()
            }),
        ),
        (
            "reason + ended",
            Box::new(|i| ConversationFilter {
                tags: vec![tag(TagKind::Reason, REASONS[i % 4])],
                status: Some(wrapup::domain::Status::Ended),
                ..Default::default()
            }),
        ),
        (
            "agent + any anomaly",
            Box::new(|i| ConversationFilter {
                tags: vec![
                    tag(TagKind::Agent, &format!("agent-{:03}", i % AGENTS)),
                    ANY_ANOMALY.into(),
                ],
                ..Default::default()
            }),
        ),
        (
            "agent + queue + active",
            Box::new(|i| ConversationFilter {
                tags: vec![
                    tag(TagKind::Agent, &format!("agent-{:03}", i % AGENTS)),
                    tag(TagKind::Queue, &format!("queue{}", i % QUEUES)),
                ],
                status: Some(wrapup::domain::Status::Active),
                ..Default::default()
            }),
        ),
    ];
    println!("| filter ({kind}, {total} conversations) | rows | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, make) in &cases {
        let mut times = Vec::with_capacity(queries);
        let mut rows = 0;
        for q in 0..queries {
            let mut filter = make(q * 7919);
            filter.limit = 50;
            filter.max_bytes = Some(4 << 20);
            let t = Instant::now();
            filter.scan = wrapup::api::conversations::LIST_SCAN_ROWS;
            let page = store
                .list_conversations(BOT, filter)
                .await
                .expect("list")
                .listed;
            let records: Vec<ConversationRecord> = page
                .iter()
                .map(|l| {
                    ConversationRecord::new(
                        BOT,
                        &l.conversation.conversation_id,
                        &l.conversation.state,
                    )
                })
                .collect();
            let json = serde_json::to_vec(&records).expect("json");
            times.push(t.elapsed());
            rows += page.len();
            std::hint::black_box(json);
        }
        times.sort();
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} |",
            rows as f64 / queries as f64,
            pct(&times, 0.5),
            pct(&times, 0.99),
            times.last().map_or(0.0, |t| t.as_secs_f64() * 1000.0)
        );
    }
    store.close().await;
    if kind == "postgres" {
        eprintln!("(schema {schema} left in place; drop it with DROP SCHEMA {schema} CASCADE)");
    }
}
