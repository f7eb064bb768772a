//! Background upkeep: ends conversations whose platform went silent for the bot's
//! `inactivity_timeout`, applies each bot's `retention`, and forgets the used `jti`s of
//! expired tokens.
//!
//! Both go through the store's writer like any request, so a client's end racing the
//! sweeper yields one end: whichever commits first ends the conversation, the other
//! sees it ended (a duplicate for the client, a skip for the sweeper). Several
//! instances may sweep at once for the same reason.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::actions::action_refs;
use crate::clock::{Clock, SharedClock};
use crate::config::BotSettings;
use crate::domain::Timestamp;
use crate::store::{Expiry, Purge, Store};

/// Conversations ended or purged per store call; the sweep repeats while it hits this.
const BATCH: usize = 500;

/// How often to sweep: a quarter of the shortest timeout or retention, between 100 ms and 30 s.
pub fn interval(bots: &[BotSettings]) -> Duration {
    bots.iter()
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

pub async fn run(
    store: Arc<dyn Store>,
    bots: Vec<BotSettings>,
    wake_workers: Arc<Notify>,
    cancel: CancellationToken,
    clock: SharedClock,
) {
    // A test's clock jumping (a timeout or a retention period passing at once) wakes it.
    let mut jumps = clock.jumps();
    let bots: Vec<BotSettings> = bots
        .into_iter()
        .filter(|b| b.inactivity_timeout.is_some() || b.retention != Default::default())
        .collect();
    let every = interval(&bots);
    let on_end: Vec<_> = bots.iter().map(action_refs).collect();
    loop {
        purge_jti(&*store, clock.now()).await;
        for (bot, on_end) in bots.iter().zip(&on_end) {
            if let Some(timeout) = bot.inactivity_timeout {
                expire(&*store, &*clock, bot, timeout, on_end, &wake_workers).await;
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
    wake_workers: &Notify,
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
                    metrics::counter!("wrapup_conversations_expired_total")
                        .increment(ended.len() as u64);
                    metrics::counter!("wrapup_conversations_ended_total")
                        .increment(ended.len() as u64);
                    tracing::info!(bot_id = %bot.id, count = ended.len(), "ended conversations for inactivity");
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

/// Forgets used `jti`s of tokens that have expired (they are refused as expired anyway).
async fn purge_jti(store: &dyn Store, now: Timestamp) {
    loop {
        match store.purge_jti(now, BATCH).await {
            Ok(n) if n == BATCH as u64 => continue,
            Ok(n) => {
                metrics::counter!("wrapup_jti_purged_total").increment(n);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e.chain(), "purging expired jti failed; will try again");
                return;
            }
        }
    }
}
