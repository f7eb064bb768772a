//! Post-conversation actions: the outbox worker and one file per action kind.
//!
//! Jobs are created by the store in the transaction that ends a conversation. Workers
//! claim due jobs with a lease, run each attempt under its action's timeout, record
//! every attempt, and schedule a retry or declare the job dead. The lease is the
//! attempt timeout plus `workers.lease_margin`, so it always outlasts the attempt and a
//! slow receiver never gets the same delivery twice at once (a job claimed ahead that
//! waited for its turn starts only if the lease left covers its timeout, and is given
//! back otherwise); a worker that dies leaves a lease that expires, and the job runs
//! again with the same id (at least once).

pub mod nats;
pub mod redis_cleanup;
pub mod summary;
pub use crate::domain::retry;
pub mod webhook;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::{ActionKind, ActionSettings, BotSettings};
use crate::domain::outbox::JobEvent;
use crate::store::{ActionRef, ClaimedJob};

/// How an attempt went, as far as the action can tell.
#[derive(Debug)]
pub struct AttemptResult {
    pub ok: bool,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response: Option<String>,
    /// What the destination said of trying again, when it said anything.
    pub next: Advice,
}

pub use crate::domain::outbox::Advice;

impl AttemptResult {
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            status_code: None,
            error: Some(truncate(&error.into(), 1024)),
            response: None,
            next: Advice::Schedule,
        }
    }
}

/// The configured actions of every bot, and the clients they share.
pub struct Runner {
    /// By bot and name: for the jobs from before destinations were recorded.
    actions: HashMap<(String, String), ActionSettings>,
    /// By bot and destination identity: what a job runs against.
    destinations: HashMap<(String, String), ActionSettings>,
    /// The destinations this instance knows, and `""` (jobs from before).
    known: crate::store::Known,
    http: reqwest::Client,
    /// Clients of webhooks with a `tls` table, by its identity.
    https: HashMap<String, reqwest::Client>,
    nats: nats::Connections,
    redis: redis_cleanup::Connections,
    /// By bot: its webhook and NATS actions, which each get a `conversation.summarized`.
    summarized: HashMap<String, Arc<[ActionRef]>>,
    /// By bot: its redaction, applied again to what a summary sends and makes.
    redactors: HashMap<String, crate::domain::pii::Redactor>,
}

impl Runner {
    pub fn new(bots: &[BotSettings]) -> anyhow::Result<Self> {
        let actions = bots
            .iter()
            .flat_map(|b| {
                b.on_end
                    .iter()
                    .map(move |a| ((b.id.clone(), a.name.clone()), a.clone()))
            })
            .collect();
        let destinations: HashMap<_, _> = bots
            .iter()
            .flat_map(|b| {
                b.on_end
                    .iter()
                    .chain(b.summary.as_ref().map(|s| &s.action))
                    .flat_map(move |a| {
                        std::iter::once(a.destination(&b.id))
                            .chain(a.previous_destinations(&b.id))
                            .map(move |d| ((b.id.clone(), d), a.clone()))
                    })
            })
            .collect();
        let known = std::iter::once(String::new())
            .chain(destinations.keys().map(|(_, d)| d.clone()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let builder = || {
            reqwest::Client::builder()
                .user_agent(concat!("wrapup/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::none())
        };
        let http = builder().build()?;
        let mut https = HashMap::new();
        for action in bots.iter().flat_map(|b| &b.on_end) {
            if let ActionKind::Webhook { tls: Some(tls), .. } = &action.kind {
                let mut b = builder();
                if let Some(ca) = &tls.ca_pem {
                    b = b.tls_certs_only(reqwest::Certificate::from_pem_bundle(ca)?);
                }
                if let Some(c) = &tls.client {
                    let pem = [c.cert_pem.as_slice(), b"\n", c.key_pem.as_slice()].concat();
                    b = b.identity(reqwest::Identity::from_pem(&pem)?);
                }
                https.insert(tls.identity(), b.build()?);
            }
        }
        let summarized = bots
            .iter()
            .map(|b| {
                let refs = action_refs(b)
                    .iter()
                    .filter(|a| matches!(a.kind, "webhook" | "nats"))
                    .cloned()
                    .collect();
                (b.id.clone(), refs)
            })
            .collect();
        let redactors = bots
            .iter()
            .map(|b| (b.id.clone(), b.redact.clone()))
            .collect();
        Ok(Self {
            redactors,
            summarized,
            actions,
            destinations,
            known,
            http,
            https,
            nats: nats::Connections::default(),
            redis: redis_cleanup::Connections::default(),
        })
    }

    /// The longest attempt timeout of any action (leases are sized from it).
    pub fn max_timeout(&self) -> std::time::Duration {
        self.destinations
            .values()
            .map(|a| a.timeout)
            .max()
            .unwrap_or(std::time::Duration::from_secs(10))
    }

    /// A destination's attempt timeout (`None` for one not configured).
    pub fn timeout_of(&self, destination: &str) -> Option<std::time::Duration> {
        self.destinations
            .iter()
            .find(|((_, d), _)| d == destination)
            .map(|(_, a)| a.timeout)
    }

    /// The destinations this instance knows (it claims only their jobs).
    pub fn known(&self) -> crate::store::Known {
        self.known.clone()
    }

    /// Every configured action (summaries included) as `(bot, name)`.
    pub fn configured(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self
            .destinations
            .iter()
            .map(|((bot, _), a)| (bot.clone(), a.name.clone()))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The action a job runs against: the one with the destination it was scheduled for
    /// (by name only for a job from before destinations were recorded).
    pub fn action_for(&self, job: &ClaimedJob) -> Option<&ActionSettings> {
        if job.destination.is_empty() {
            self.actions.get(&(job.bot_id.clone(), job.action.clone()))
        } else {
            self.destinations
                .get(&(job.bot_id.clone(), job.destination.clone()))
        }
    }

    /// Runs one attempt of `job`, begun at `now` (without the timeout; the worker applies it).
    pub async fn run(
        &self,
        action: &ActionSettings,
        job: &ClaimedJob,
        now: crate::domain::Timestamp,
        store: &dyn crate::store::Store,
    ) -> AttemptResult {
        match &action.kind {
            ActionKind::Webhook {
                url,
                secret,
                headers,
                give_up_on,
                tls,
            } => {
                let target = webhook::Target {
                    url,
                    key: secret,
                    headers,
                    give_up_on,
                };
                let client = tls
                    .as_ref()
                    .and_then(|t| self.https.get(&t.identity()))
                    .unwrap_or(&self.http);
                webhook::deliver(client, &target, job, now).await
            }
            ActionKind::Nats { url, subject, tls } => {
                self.nats.publish(url, tls.as_ref(), subject, job).await
            }
            ActionKind::RedisCleanup { url, keys, tls } => {
                self.redis.cleanup(url, tls.as_ref(), keys, job).await
            }
            ActionKind::Summary { provider } => {
                let s = summary::Summarize {
                    store,
                    provider,
                    http: &self.http,
                    deliveries: self.summarized.get(&job.bot_id).map_or(&[][..], |d| &d[..]),
                    redact: self.redactors.get(&job.bot_id),
                };
                summary::run(s, job, now).await
            }
        }
    }
}

/// The references the store needs to schedule a bot's jobs at the end: its actions, and
/// `summary@end` when `[bots.summary] at_end`.
pub fn action_refs(bot: &BotSettings) -> Arc<[ActionRef]> {
    let id = &bot.id;
    let at_end = bot
        .summary
        .as_ref()
        .filter(|s| s.at_end)
        .map(|s| summary_ref(id, s, "end"));
    bot.on_end
        .iter()
        .map(|a| {
            ActionRef::on_end(
                &a.name,
                a.kind.name(),
                a.destination(id),
                a.retry.max_attempts,
            )
        })
        .chain(at_end)
        .collect()
}

/// The job of one summary: `summary@<event number of its trigger>` or `summary@end`, so a
/// trigger has exactly one (jobs are unique per conversation and name).
pub fn summary_ref(bot_id: &str, s: &crate::config::SummarySettings, at: &str) -> ActionRef {
    ActionRef {
        name: format!("summary@{at}"),
        action: s.action.name.clone(),
        kind: s.action.kind.name(),
        destination: s.action.destination(bot_id),
        max_attempts: s.action.retry.max_attempts,
        event: JobEvent::Summary,
        // The end's; a trigger's job sets its own (`domain::ingest`).
        trigger: None,
    }
}

/// What webhook and NATS actions send: `{"type","timestamp","data"}`. The same bytes on
/// every attempt. `conversation.ended`: the record as it stood at the end;
/// `conversation.summarized` (a job named `<action>@summary@…`):
/// `{botId, conversationId, summary}`.
pub fn envelope(job: &ClaimedJob) -> Value {
    let data: Value = serde_json::from_str(&job.payload).unwrap_or(Value::Null);
    json!({
        "type": event_type(job),
        "timestamp": job.created_at.to_rfc3339(),
        "data": data,
    })
}

/// The event a webhook or NATS job delivers, from its `event` column.
pub fn event_type(job: &ClaimedJob) -> &'static str {
    job.event.as_str()
}

/// Fills `{botId}` and `{conversationId}` in a template, passing each value through `escape`.
pub fn render(template: &str, job: &ClaimedJob, escape: impl Fn(&str) -> String) -> String {
    template
        .replace("{botId}", &escape(&job.bot_id))
        .replace("{conversationId}", &escape(&job.conversation_id))
}

/// An error with its sources, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// `Retry-After` in seconds, as advice (an HTTP date is ignored: the schedule applies).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Advice> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Advice::After(std::time::Duration::from_secs(secs)))
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

pub use crate::redact::masked;

/// One client per destination URL, made on first use and shared afterwards (the clients
/// reconnect by themselves). The map's lock is held only to find or add a destination's
/// cell, never while connecting: connecting to one destination — a closed port, a server
/// that accepts and never speaks — never blocks using another. Callers for the same
/// destination wait for the one connecting; a failed connect leaves the cell empty, so
/// the next attempt tries again.
pub struct PerDestination<T> {
    cells: std::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<T>>>>,
}

impl<T> Default for PerDestination<T> {
    fn default() -> Self {
        Self {
            cells: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> PerDestination<T> {
    pub async fn get<F, Fut>(&self, url: &str, connect: F) -> Result<T, String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let cell = {
            let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
            cells.entry(url.to_owned()).or_default().clone()
        };
        cell.get_or_try_init(connect).await.cloned()
    }
}
