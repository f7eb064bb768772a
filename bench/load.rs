//! `wrapup-load`: drives a hooks endpoint with real JWTs and measures it.
//!
//! Closed loop (`--connections N`: each connection sends its next request when the last
//! one answered) or open loop (`--rate R`: requests are due at fixed times and latency
//! counts from the time a request was due, so a stalled server cannot hide its stall —
//! no coordinated omission). Latencies go into HDR histograms. With `--verify` it then
//! reads every conversation back through the records API and checks that each
//! acknowledged end is stored exactly once.

// mimalloc: glibc malloc/free were ~20 % of all instructions per request (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(Parser, Clone)]
#[command(
    name = "wrapup-load",
    about = "Load generator for the Agent AI hooks endpoint"
)]
struct Args {
    /// Base URL of the server (http only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, default_value = "st-56fbfece-0293-55a3-9154-7e3e19xxxxxx")]
    bot: String,
    #[arg(
        long,
        env = "WRAPUP_CLIENT_ID",
        default_value = "cs-6363fcbb-310e-5b07-91a9-c614cd3cbf6e"
    )]
    client_id: String,
    /// The app's HS256 secret (the example's demo value by default; never printed).
    #[arg(
        long,
        env = "WRAPUP_CLIENT_SECRET",
        hide_env_values = true,
        hide_default_value = true,
        default_value = "demo-secret-DO-NOT-USE-IN-PRODUCTION-0001"
    )]
    secret: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Open loop: requests per second in all (default: closed loop).
    #[arg(long)]
    rate: Option<u64>,
    #[arg(long, default_value = "10s")]
    duration: humantime::Duration,
    /// Requests before this are not measured.
    #[arg(long, default_value = "1s")]
    warmup: humantime::Duration,
    #[arg(long, value_enum, default_value_t = Workload::EndOnly)]
    workload: Workload,
    /// Read every conversation back and check each acknowledged end is stored once.
    #[arg(long)]
    verify: bool,
    /// Send every request to this one conversation instead of a new one each time (a
    /// noisy tenant hammering one conversation, e.g. one grown to its caps).
    #[arg(long)]
    conversation: Option<String>,
    /// Exit 0 even when requests failed (for runs that expect 503s or 429s).
    #[arg(long)]
    allow_errors: bool,
    /// A label for the JSON result line.
    #[arg(long, default_value = "wrapup")]
    label: String,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Also receive the server's `on_end` webhooks on this address (e.g. 127.0.0.1:9000)
    /// and report acknowledgement-to-delivery latency and delivery throughput. Point a
    /// `webhook` action of the bot at it.
    #[arg(long)]
    receiver: Option<String>,
    /// With --receiver: answer 500 to every Nth delivery (a destination that fails now
    /// and then; wrapup retries it).
    #[arg(long)]
    fail_every: Option<u64>,
    /// With --receiver: after the load, wait at most this long for the deliveries.
    #[arg(long, default_value = "120s")]
    drain: humantime::Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// One END_OF_CONVERSATION per new conversation (the seed's sample).
    EndOnly,
    /// The vendor's prescribed order: NA entry, four messages, NA exit, summary, end.
    Lifecycle,
    /// One propagated message per request (with --conversation, all to one conversation).
    Message,
    /// Traffic to look at in the console: six kinds of conversation in turn (a billing
    /// call, a cold transfer, a warm consult, a redial after a drop, and two sent out of
    /// the vendor's order), eight agents in three queues, three end reasons.
    Demo,
}

/// The demo workload's kinds of conversation, each as its request bodies.
fn demo_variants(bot: &str, c: &str) -> Vec<Vec<Vec<u8>>> {
    let queue = |agent: &str| match agent {
        "ana" | "ben" | "cy" => ("1001", "Billing"),
        "dee" | "eli" => ("1002", "Moves"),
        _ => ("1003", "Technical"),
    };
    let t = |kind: &str, transition: &str, agent: &str| {
        let (id, name) = queue(agent);
        json!({"name": "INTERNAL_TRANSFER_EVENT", "transfertype": kind, "transition": transition, "isExtAD": "false",
               "language": "en", "experience": "voice",
               "participant": {"identity": agent, "name": agent.to_uppercase(), "type": "agent",
                               "customFields": {"agentEmail": format!("{agent}@example.com"), "queueId": id, "queueName": name}}})
    };
    let events = |e: Vec<Value>| {
        json!({"botId": bot, "conversationId": c, "events": e})
            .to_string()
            .into_bytes()
    };
    let say = |author: &str, agent: &str, text: &str| {
        json!({"botId": bot, "conversationId": c, "query": text, "agentId": agent, "author": {"type": author},
               "source": "genesys", "experience": "voice", "language": "en"})
        .to_string()
        .into_bytes()
    };
    let end = |reason: &str, agent: &str| {
        json!({"name": "END_OF_CONVERSATION", "reason": reason, "language": "en", "experience": "voice",
               "participant": {"identity": agent, "name": agent.to_uppercase(), "type": "agent"}})
    };
    let summary = json!({"name": "TRIGGER_SUMMARY_EVENT", "data": {"language": "English", "locale": "en", "type": "post"}});
    vec![
        vec![
            events(vec![t("NA", "entry", "ana")]),
            say(
                "USER",
                "ana",
                "Hi, I was charged twice for order 55120 this month.",
            ),
            say(
                "AGENT",
                "ana",
                "I'm sorry about that. I can see both charges; I'm refunding the second one now.",
            ),
            say("USER", "ana", "Thanks, how long will it take?"),
            say(
                "AGENT",
                "ana",
                "Three to five business days. Anything else?",
            ),
            events(vec![t("NA", "exit", "ana"), summary.clone()]),
            events(vec![end("agent_initiated", "ana")]),
        ],
        vec![
            events(vec![t("NA", "entry", "ben")]),
            say(
                "USER",
                "ben",
                "My router keeps dropping the connection since yesterday.",
            ),
            say(
                "AGENT",
                "ben",
                "Let me put you through to technical support.",
            ),
            events(vec![t("COLD", "exit", "ben"), t("COLD", "entry", "fay")]),
            say(
                "AGENT",
                "fay",
                "Hello, I'm resetting the line from our side now.",
            ),
            say("USER", "fay", "It's back, thank you!"),
            events(vec![t("NA", "exit", "fay")]),
            events(vec![end("agent_initiated", "fay")]),
        ],
        vec![
            events(vec![t("NA", "entry", "dee")]),
            say("USER", "dee", "I'm moving to 12 Harbour Street next week."),
            events(vec![t("WARM", "entry", "eli")]),
            say(
                "AGENT",
                "eli",
                "I've scheduled the transfer of your service for the 4th.",
            ),
            events(vec![t("WARM", "exit", "eli"), t("NA", "exit", "dee")]),
            events(vec![end("customer_hangup", "dee")]),
        ],
        vec![
            events(vec![t("NA", "entry", "cy")]),
            say("USER", "cy", "I want to cancel my subscr"),
            events(vec![t("NA", "exit", "cy")]),
            events(vec![t("redial", "entry", "cy")]),
            say(
                "AGENT",
                "cy",
                "Sorry, we were cut off. You wanted to cancel?",
            ),
            events(vec![t("NA", "exit", "cy")]),
            events(vec![end("agent_initiated", "cy")]),
        ],
        // Out of order: a COLD entry before the first NA entry, then the end while the
        // agent is still active.
        vec![
            events(vec![t("COLD", "entry", "gus")]),
            say("USER", "gus", "Is there an outage in my area?"),
            events(vec![end("timeout", "gus")]),
        ],
        // A second NA entry, and an exit for an agent who never entered.
        vec![
            events(vec![t("NA", "entry", "hal")]),
            events(vec![t("NA", "entry", "ana"), t("NA", "exit", "ben")]),
            say("USER", "hal", "Can I upgrade my plan?"),
            events(vec![t("NA", "exit", "hal"), t("NA", "exit", "ana")]),
            events(vec![end("agent_initiated", "hal")]),
        ],
    ]
}

/// One step of a conversation: the body, given the conversation id.
fn steps(workload: Workload, bot: &str, c: &str) -> Vec<Vec<u8>> {
    let end = json!({"name": "END_OF_CONVERSATION", "reason": "agent_initiated", "language": "en", "experience": "voice",
        "participant": {"identity": "agent1", "name": "Agent AI", "type": "agent",
                        "customFields": {"agentEmail": "qqqqqq", "queueId": "1694", "queueName": "queue11"}}});
    let events = |e: Value| {
        json!({"botId": bot, "conversationId": c, "events": [e]})
            .to_string()
            .into_bytes()
    };
    match workload {
        Workload::Demo => demo_variants(bot, c).remove(0),
        Workload::EndOnly => vec![events(end)],
        Workload::Message => vec![
            json!({"botId": bot, "conversationId": c, "query": "Is my order on its way?", "agentId": "agent1",
                   "author": {"type": "USER"}, "source": "genesys", "experience": "voice", "language": "en"})
            .to_string()
            .into_bytes(),
        ],
        Workload::Lifecycle => {
            let transfer = |transition: &str| {
                json!({"name": "INTERNAL_TRANSFER_EVENT", "transfertype": "NA", "transition": transition, "isExtAD": "false",
                       "language": "en", "experience": "voice",
                       "participant": {"identity": "agent1", "name": "Agent AI", "type": "agent", "customFields": {"queueId": "1694"}}})
            };
            let message = |author: &str, text: &str| {
                json!({"botId": bot, "conversationId": c, "query": text, "agentId": "agent1", "author": {"type": author},
                       "source": "genesys", "experience": "voice", "language": "en",
                       "sendUserMessage": false, "sendAgentMessage": false})
                .to_string()
                .into_bytes()
            };
            vec![
                events(transfer("entry")),
                message(
                    "USER",
                    "Hello, I would like to change the address on my account.",
                ),
                message("AGENT", "Of course. Can you confirm your postcode?"),
                message("USER", "It is 10115."),
                message("AGENT", "Thank you, the address is updated."),
                events(transfer("exit")),
                events(
                    json!({"name": "TRIGGER_SUMMARY_EVENT", "data": {"language": "English", "locale": "en", "type": "post"}}),
                ),
                events(end),
            ]
        }
    }
}

/// A conversation's request bodies with the id left out: built once, spliced per conversation.
struct Templates {
    /// Per kind of conversation (one but for the demo workload), per step, the body's
    /// parts around the conversation id.
    variants: Vec<Vec<Vec<Vec<u8>>>>,
}

const PLACEHOLDER: &str = "@@CONVERSATION@@";

impl Templates {
    fn new(workload: Workload, bot: &str) -> Self {
        let all = match workload {
            Workload::Demo => demo_variants(bot, PLACEHOLDER),
            _ => vec![steps(workload, bot, PLACEHOLDER)],
        };
        let variants = all
            .into_iter()
            .map(|bodies| {
                bodies
                    .into_iter()
                    .map(|b| {
                        let text = String::from_utf8(b).unwrap_or_default();
                        text.split(PLACEHOLDER)
                            .map(|part| part.as_bytes().to_vec())
                            .collect()
                    })
                    .collect()
            })
            .collect();
        Self { variants }
    }

    fn render(&self, conversation: &str, n: u64) -> Vec<Vec<u8>> {
        self.variants[(n % self.variants.len() as u64) as usize]
            .iter()
            .map(|parts| {
                let mut out = Vec::with_capacity(
                    parts.iter().map(Vec::len).sum::<usize>() + conversation.len() * 2,
                );
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(conversation.as_bytes());
                    }
                    out.extend_from_slice(part);
                }
                out
            })
            .collect()
    }
}

struct Shared {
    templates: Templates,
    args: Args,
    token: String,
    authority: String,
    run: String,
    start: Instant,
    stop: AtomicBool,
    sent: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    /// Answers by status code ("connection" for a request that got none).
    by_status: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Of the errors: answered 503 (load shed by the server).
    shed: AtomicU64,
    /// Of the errors: answered 429 (the app is over its rate_limit; not backed off).
    limited: AtomicU64,
    next_conversation: AtomicU64,
    deliveries: Deliveries,
}

impl Shared {
    fn count_status(&self, status: &str) {
        let mut by = self.by_status.lock().unwrap_or_else(|e| e.into_inner());
        match by.get_mut(status) {
            Some(n) => *n += 1,
            None => {
                by.insert(status.to_owned(), 1);
            }
        }
    }
}

/// Webhook deliveries seen by `--receiver`, matched with the acknowledgements of the ends.
#[derive(Default)]
struct Deliveries {
    inner: std::sync::Mutex<DeliveryState>,
}

#[derive(Default)]
struct DeliveryState {
    /// Ends acknowledged and not yet delivered, with when the 200 arrived.
    acked: std::collections::HashMap<String, Instant>,
    /// Deliveries that arrived before the generator had read the end's 200.
    early: std::collections::HashSet<String>,
    delivered: std::collections::HashSet<String>,
    hist: Option<Histogram<u64>>,
    duplicates: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Deliveries {
    fn acked(&self, conversation: &str, at: Instant) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if s.early.remove(conversation) {
            s.record(0);
        } else {
            s.acked.insert(conversation.to_owned(), at);
        }
    }

    fn delivered(&self, conversation: &str) {
        let now = Instant::now();
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.first.get_or_insert(now);
        s.last = Some(now);
        if !s.delivered.insert(conversation.to_owned()) {
            s.duplicates += 1;
            return;
        }
        match s.acked.remove(conversation) {
            Some(acked) => {
                let micros = now.duration_since(acked).as_micros().max(1) as u64;
                s.record(micros);
            }
            None => {
                s.early.insert(conversation.to_owned());
            }
        }
    }
}

impl DeliveryState {
    fn record(&mut self, micros: u64) {
        if let Some(h) = self.hist.as_mut() {
            let _ = h.record(micros.clamp(1, 600_000_000));
        }
    }
}

/// Serves the webhook receiver: every POST counts as one delivery of `data.conversationId`.
async fn receive(addr: &str, shared: Arc<Shared>) -> anyhow::Result<()> {
    use axum::routing::post;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--receiver {addr}"))?;
    let posts = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().fallback(post(move |body: axum::body::Bytes| {
        let shared = shared.clone();
        let n = posts.fetch_add(1, Ordering::Relaxed) + 1;
        async move {
            if shared
                .args
                .fail_every
                .is_some_and(|every| every > 0 && n.is_multiple_of(every))
            {
                return (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "failing on purpose",
                );
            }
            if let Ok(v) = serde_json::from_slice::<Value>(&body)
                && let Some(c) = v["data"]["conversationId"].as_str()
            {
                shared.deliveries.delivered(c);
            }
            (axum::http::StatusCode::OK, "ok")
        }
    }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}

/// What one connection measured; merged at the end (no shared lock on the hot path).
struct Tally {
    hist: Histogram<u64>,
    /// Conversations whose end was acknowledged.
    ended: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One thread, like `wrk -t1`: the load generator shares the machine with the server.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let authority = args
        .url
        .strip_prefix("http://")
        .context("--url must be http://HOST:PORT")?
        .trim_end_matches('/')
        .to_owned();
    let token = wrapup::auth::mint(&wrapup::auth::MintRequest {
        client_id: &args.client_id,
        sub: "wrapup-load",
        algorithm: jsonwebtoken::Algorithm::HS256,
        key: args.secret.as_bytes(),
        ttl: None,
        jti: None,
        extra: Default::default(),
    })?;
    let shared = Arc::new(Shared {
        token,
        authority,
        run: format!(
            "{:x}",
            std::process::id() as u64
                ^ wrapup::clock::Clock::now(&wrapup::clock::SystemClock).millis() as u64
        ),
        start: Instant::now(),
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        by_status: Default::default(),
        shed: AtomicU64::new(0),
        limited: AtomicU64::new(0),
        next_conversation: AtomicU64::new(0),
        deliveries: Deliveries::default(),
        templates: Templates::new(args.workload, &args.bot),
        args: args.clone(),
    });
    if let Some(addr) = &args.receiver {
        shared
            .deliveries
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hist = Some(Histogram::new_with_bounds(1, 600_000_000, 3)?);
        receive(addr, shared.clone()).await?;
    }
    let total: Duration = args.warmup.into();
    let total = total + Duration::from(args.duration);
    let workers: Vec<_> = (0..args.connections)
        .map(|w| tokio::spawn(worker(shared.clone(), w)))
        .collect();
    let progress = {
        let s = shared.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
                let ok = s.ok.load(Ordering::Relaxed);
                if !s.args.quiet {
                    eprintln!(
                        "t={:>3}s  ok={ok:>9}  {:>7}/s  errors={}",
                        s.start.elapsed().as_secs(),
                        ok - last,
                        s.errors.load(Ordering::Relaxed),
                    );
                }
                last = ok;
            }
        })
    };
    tokio::time::sleep(total).await;
    shared.stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut ended = Vec::new();
    for w in workers {
        let tally = w.await??;
        hist.add(&tally.hist)?;
        ended.extend(tally.ended);
    }
    progress.abort();

    let measured = Duration::from(args.duration).as_secs_f64();
    let q = |x: f64| hist.value_at_quantile(x) as f64 / 1000.0;
    let requests = hist.len();
    let mut result = json!({
        "label": args.label,
        "workload": match args.workload { Workload::EndOnly => "end-only", Workload::Lifecycle => "lifecycle", Workload::Message => "message", Workload::Demo => "demo" },
        "mode": if args.rate.is_some() { "open" } else { "closed" },
        "connections": args.connections,
        "rate": args.rate,
        "seconds": measured,
        "requests": requests,
        "rps": (requests as f64 / measured).round(),
        "errors": shared.errors.load(Ordering::Relaxed),
        "shed_503": shared.shed.load(Ordering::Relaxed),
        "limited_429": shared.limited.load(Ordering::Relaxed),
        "by_status": *shared.by_status.lock().unwrap_or_else(|e| e.into_inner()),
        "p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99), "p999_ms": q(0.999),
        "max_ms": hist.max() as f64 / 1000.0,
    });
    if args.receiver.is_some() {
        // Wait for the deliveries of every acknowledged end (or the drain time).
        let deadline = Instant::now() + Duration::from(args.drain);
        loop {
            let pending = {
                let s = shared
                    .deliveries
                    .inner
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                s.acked.len()
            };
            if pending == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let s = shared
            .deliveries
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let span = match (s.first, s.last) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let delivered = s.delivered.len() as u64;
        if let Some(h) = &s.hist {
            let dq = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
            result["deliveries"] = json!({
                "delivered": delivered,
                "acked_not_delivered": s.acked.len(),
                "duplicates": s.duplicates,
                "per_second": if span > 0.0 { (delivered as f64 / span).round() } else { 0.0 },
                "ack_to_delivery_p50_ms": dq(0.50),
                "ack_to_delivery_p99_ms": dq(0.99),
                "ack_to_delivery_max_ms": h.max() as f64 / 1000.0,
            });
        }
    }
    if args.verify {
        let checked = verify(&shared, &ended).await?;
        result["verified_ends"] = json!(checked);
    }
    println!("{result}");
    let errors = shared.errors.load(Ordering::Relaxed);
    if errors > 0 && !args.allow_errors {
        bail!(
            "{errors} requests failed (answers by status: {})",
            result["by_status"]
        );
    }
    Ok(())
}

async fn connect(s: &Shared) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(&s.authority).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn worker(s: Arc<Shared>, w: usize) -> anyhow::Result<Tally> {
    let mut tally = Tally {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        ended: Vec::new(),
    };
    let mut sender = connect(&s).await?;
    let path = format!("/agentai/api/v1/hooks/{}", s.args.bot);
    // Open loop: this connection's share of the rate, on a fixed schedule.
    let interval = s
        .args
        .rate
        .map(|r| Duration::from_secs_f64(s.args.connections as f64 / r.max(1) as f64));
    let mut due = s.start
        + interval
            .map(|i| i.mul_f64(w as f64 / s.args.connections as f64))
            .unwrap_or_default();
    let warmup_end = s.start + Duration::from(s.args.warmup);
    'conversations: while !s.stop.load(Ordering::Relaxed) {
        let n = s.next_conversation.fetch_add(1, Ordering::Relaxed);
        let c = match &s.args.conversation {
            Some(one) => one.clone(),
            None => format!("load-{}-{n}", s.run),
        };
        let bodies = s.templates.render(&c, n);
        let last = bodies.len() - 1;
        for (i, body) in bodies.into_iter().enumerate() {
            if s.stop.load(Ordering::Relaxed) {
                break 'conversations;
            }
            let started = match interval {
                Some(every) => {
                    tokio::time::sleep_until(due.into()).await;
                    let intended = due;
                    due += every;
                    intended
                }
                None => Instant::now(),
            };
            let req = hyper::Request::post(&path)
                .header("host", &s.authority)
                .header("content-type", "application/json")
                .header("token", &s.token)
                .body(Full::new(Bytes::from(body)))?;
            s.sent.fetch_add(1, Ordering::Relaxed);
            let mut backoff = None;
            if sender.ready().await.is_err() {
                sender = connect(&s).await?;
            }
            let outcome = match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(hyper::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                    let _ = resp.into_body().collect().await;
                    s.count_status(status.as_str());
                    if status == hyper::StatusCode::TOO_MANY_REQUESTS {
                        s.limited.fetch_add(1, Ordering::Relaxed);
                    }
                    if status == hyper::StatusCode::SERVICE_UNAVAILABLE {
                        s.shed.fetch_add(1, Ordering::Relaxed);
                        // Like a well-behaved client: wait as told (at most 10 s) before the next request.
                        backoff = retry_after.map(|secs| Duration::from_secs(secs.min(10)));
                    }
                    status.is_success()
                }
                Err(_) => {
                    s.count_status("connection");
                    sender = connect(&s).await?;
                    false
                }
            };
            let finished = Instant::now();
            if let Some(wait) = backoff.take() {
                tokio::time::sleep(wait).await;
            }
            if outcome {
                s.ok.fetch_add(1, Ordering::Relaxed);
                if i == last {
                    if s.args.receiver.is_some() {
                        s.deliveries.acked(&c, finished);
                    }
                    tally.ended.push(c.clone());
                }
            } else {
                s.errors.fetch_add(1, Ordering::Relaxed);
            }
            if started >= warmup_end {
                let micros = finished.duration_since(started).as_micros().max(1) as u64;
                let _ = tally.hist.record(micros.min(60_000_000));
            }
        }
    }
    Ok(tally)
}

/// Pages through the bot's conversations and checks each acknowledged end: present,
/// ended, no duplicate counted, every event of it stored.
async fn verify(s: &Shared, ended: &[String]) -> anyhow::Result<usize> {
    let mut sender = connect(s).await?;
    let mut found = std::collections::HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!(
            "/api/v1/bots/{}/conversations?limit=500&status=ended",
            s.args.bot
        );
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        sender.ready().await?;
        let req = hyper::Request::get(&path)
            .header("host", &s.authority)
            .header("token", &s.token)
            .body(Full::new(Bytes::new()))?;
        let resp = sender.send_request(req).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        let page: Value = serde_json::from_slice(&body)?;
        for r in page["conversations"].as_array().context("list answer")? {
            let id = r["conversationId"].as_str().unwrap_or_default();
            if id.starts_with(&format!("load-{}-", s.run)) {
                found.insert(id.to_owned(), r.clone());
            }
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected_events = steps(s.args.workload, &s.args.bot, "x").len() as u64;
    for c in ended {
        let Some(r) = found.get(c) else {
            bail!("acknowledged end of {c} is not stored")
        };
        // The demo's kinds of conversation differ in length: only their ends are checked.
        let events_ok = s.args.workload == Workload::Demo || r["eventCount"] == expected_events;
        if r["duplicateEnds"] != 0 || r["status"] != "ended" || !events_ok {
            bail!("{c} is stored wrong: {r}");
        }
    }
    if !s.args.quiet {
        eprintln!(
            "verified: {} acknowledged ends, each stored exactly once",
            ended.len()
        );
    }
    Ok(ended.len())
}
