//! Background upkeep, five tasks each round (see [`run`]): forgets the used `jti`s of
//! expired tokens, moves jobs due for longer than `workers.orphan_after` whose destination
//! is not in this instance's configuration to `orphaned`, deletes finished jobs after
//! `workers.keep_finished_jobs`, ends conversations whose platform went silent for the
//! bot's `inactivity_timeout`, and applies each bot's `retention`.
//!
//! Each is a store call, written as any request's write is: on SQLite a command of the
//! store's writer thread; on PostgreSQL (no writer thread) statements of its own on the
//! pool, which take conversations, jobs and `jti`s with `FOR UPDATE SKIP LOCKED` where
//! another instance may be sweeping the same rows, while a request locks its
//! conversation's row. So a client's end racing the sweeper yields one end: whichever
//! commits first ends the conversation, the other sees it ended (a duplicate for the
//! client, a skip for the sweeper). Several instances may sweep at once for the same
//! reason. The ends, the retention and the finished-job and `jti` purges go in batches of
//! `BATCH`, repeated while one comes back full.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::actions::action_refs;
use crate::clock::{Clock, SharedClock};
use crate::config::BotSettings;
use crate::domain::Timestamp;
use crate::store::{Expiry, Known, Purge, Store};

/// Conversations ended or purged per store call; the sweep repeats while it hits this.
const BATCH: usize = 500;

/// How often to sweep: a quarter of the shortest timeout or retention, between 100 ms and 30 s.
pub fn interval<'b>(bots: impl IntoIterator<Item = &'b BotSettings>) -> Duration {
    bots.into_iter()
        .flat_map(|b| {
            [
                b.inactivity_timeout,
                b.retention.events,
                b.retention.transcript,
            ]
        })
        .flatten()
        .map(|d| d / 4)
        .min()
        .unwrap_or(Duration::from_secs(30))
        .clamp(Duration::from_millis(100), Duration::from_secs(30))
}

/// Jobs whose destination this instance does not know: after how long they are orphaned.
pub struct Orphans {
    pub known: Known,
    pub after: Duration,
}

/// Sweeps until `cancel`: each round reads the configuration as it is now, runs the five
/// tasks (expired `jti`s, orphaned jobs, finished jobs, then per bot inactivity ends and
/// retention), and sleeps for [`interval`] (or until a test's clock jumps).
pub async fn run(
    store: Arc<dyn Store>,
    live: crate::live::Shared,
    wake_workers: Arc<Notify>,
    traffic: Arc<crate::traffic::Traffic>,
    cancel: CancellationToken,
    clock: SharedClock,
) {
    // A test's clock jumping (a timeout or a retention period passing at once) wakes it.
    let mut jumps = clock.jumps();
    loop {
        // The configuration as it is now (a reload applies from the next sweep).
        let now_live = live.load_full();
        let bots: Vec<&BotSettings> = now_live
            .bot_list
            .iter()
            .filter(|b| b.inactivity_timeout.is_some() || b.retention != Default::default())
            .collect();
        let every = interval(bots.iter().copied());
        let on_end: Vec<_> = bots.iter().map(|b| action_refs(b)).collect();
        let orphans = Orphans {
            known: now_live.runner.known(),
            after: now_live.orphan_after,
        };
        purge_jti(&*store, clock.now()).await;
        orphan(&*store, clock.now(), &orphans).await;
        purge_jobs(&*store, clock.now(), now_live.keep_finished_jobs).await;
        for (bot, on_end) in bots.iter().zip(&on_end) {
            if let Some(timeout) = bot.inactivity_timeout {
                expire(
                    &*store,
                    &*clock,
                    bot,
                    timeout,
                    on_end,
                    (&wake_workers, &traffic),
                )
                .await;
            }
            if bot.retention != Default::default() {
                purge(&*store, clock.now(), bot).await;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = crate::clock::sleep(&mut jumps, every) => {}
        }
    }
}

async fn expire(
    store: &dyn Store,
    clock: &dyn Clock,
    bot: &BotSettings,
    timeout: Duration,
    on_end: &Arc<[crate::store::ActionRef]>,
    (wake_workers, traffic): (&Notify, &crate::traffic::Traffic),
) {
    loop {
        let idle_since = Timestamp::from_millis(clock.now().millis() - timeout.as_millis() as i64);
        match store
            .expire_inactive(Expiry {
                bot_id: bot.id.clone(),
                idle_since,
                timeout_ms: timeout.as_millis() as i64,
                on_end: on_end.clone(),
                limit: BATCH,
            })
            .await
        {
            Ok(ended) => {
                if !ended.is_empty() {
                    metrics::counter!("wrapup_conversations_expired_total", "bot" => bot.id.clone())
                        .increment(ended.len() as u64);
                    metrics::counter!("wrapup_conversations_ended_total", "bot" => bot.id.clone())
                        .increment(ended.len() as u64);
                    tracing::info!(bot_id = %bot.id, count = ended.len(), "ended conversations for inactivity");
                    let n = ended.len() as u64;
                    traffic.record(clock.now(), n, n, 0);
                    if !on_end.is_empty() {
                        wake_workers.notify_one();
                    }
                }
                if ended.len() < BATCH {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(bot_id = %bot.id, error = %e.chain(), "inactivity sweep failed; will try again");
                return;
            }
        }
    }
}

async fn purge(store: &dyn Store, now: Timestamp, bot: &BotSettings) {
    let now = now.millis();
    let before =
        |d: Option<Duration>| d.map(|d| Timestamp::from_millis(now - d.as_millis() as i64));
    let rule = Purge {
        events_before: before(bot.retention.events),
        transcript_before: before(bot.retention.transcript),
    };
    loop {
        match store.purge(&bot.id, rule, BATCH).await {
            Ok(n) => {
                metrics::counter!("wrapup_retention_purged_total").increment(n);
                if n < BATCH as u64 {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(bot_id = %bot.id, error = %e.chain(), "retention purge failed; will try again");
                return;
            }
        }
    }
}

/// Moves jobs due for longer than `orphans.after` whose destination is not in this
/// configuration to `orphaned`: they never run elsewhere, and an operator re-points or
/// discards them. (Another instance that knows the destination claims such a job first.)
async fn orphan(store: &dyn Store, now: Timestamp, orphans: &Orphans) {
    let due_before = Timestamp::from_millis(now.millis() - orphans.after.as_millis() as i64);
    match store
        .orphan_unknown(orphans.known.clone(), due_before)
        .await
    {
        Ok(0) => {}
        Ok(n) => {
            metrics::counter!("wrapup_jobs_orphaned_total").increment(n);
            tracing::warn!(
                jobs = n,
                "jobs orphaned: their destination is not in the configuration; re-point or discard them"
            );
        }
        Err(e) => tracing::warn!(error = %e.chain(), "orphaning jobs failed; will try again"),
    }
}

/// Deletes succeeded and discarded jobs finished longer than `keep` ago.
async fn purge_jobs(store: &dyn Store, now: Timestamp, keep: Duration) {
    let before = Timestamp::from_millis(now.millis() - keep.as_millis() as i64);
    loop {
        match store.purge_finished_jobs(before, BATCH).await {
            Ok(n) => {
                metrics::counter!("wrapup_jobs_purged_total").increment(n);
                if n < BATCH as u64 {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e.chain(), "purging finished jobs failed; will try again");
                return;
            }
        }
    }
}

/// Forgets used `jti`s of tokens that have expired (they are refused as expired anyway).
async fn purge_jti(store: &dyn Store, now: Timestamp) {
    loop {
        match store.purge_jti(now, BATCH).await {
            Ok(n) => {
                metrics::counter!("wrapup_jti_purged_total").increment(n);
                if n < BATCH as u64 {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e.chain(), "purging expired jti failed; will try again");
                return;
            }
        }
    }
}
