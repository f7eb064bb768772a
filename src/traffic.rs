//! The console's traffic charts: each instance counts what it committed (events, ends,
//! duplicate ends) per 10-second bucket in memory and adds its counts to the store
//! every two seconds, so every instance reads the same cluster-wide figures.
//!
//! A crash loses at most the counts of the last two seconds: these are charts, not
//! records (the records and the jobs are exact).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::domain::Timestamp;
use crate::store::{Store, TrafficBucket};

/// The width of a bucket.
pub const BUCKET_MS: i64 = 10_000;
/// How long buckets are kept.
pub const KEEP: Duration = Duration::from_secs(24 * 3600);
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// Buckets held in memory when the store cannot take them (15 minutes' worth); older
/// ones are dropped.
const MAX_HELD: usize = 90;

#[derive(Default)]
pub struct Traffic {
    held: Mutex<BTreeMap<i64, TrafficBucket>>,
}

impl Traffic {
    /// Counts one committed request.
    pub fn record(&self, at: Timestamp, events: u64, ends: u64, duplicate_ends: u64) {
        let at_ms = at.millis() - at.millis().rem_euclid(BUCKET_MS);
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        let b = held.entry(at_ms).or_insert(TrafficBucket {
            at_ms,
            ..Default::default()
        });
        b.events += events;
        b.ends += ends;
        b.duplicate_ends += duplicate_ends;
        while held.len() > MAX_HELD {
            held.pop_first();
        }
    }

    fn take(&self) -> Vec<TrafficBucket> {
        match self.held.lock() {
            Ok(mut held) => std::mem::take(&mut *held).into_values().collect(),
            Err(_) => Vec::new(),
        }
    }

    fn put_back(&self, buckets: Vec<TrafficBucket>) {
        for b in buckets {
            self.record(
                Timestamp::from_millis(b.at_ms),
                b.events,
                b.ends,
                b.duplicate_ends,
            );
        }
    }

    /// Adds the held counts to the store (keeping them for the next try if it fails).
    pub async fn flush(&self, store: &dyn Store) {
        let buckets = self.take();
        if buckets.is_empty() {
            return;
        }
        if let Err(e) = store.add_traffic(buckets.clone()).await {
            tracing::debug!(error = %e, "traffic counts not written; kept for the next try");
            self.put_back(buckets);
        }
    }
}

/// Flushes every two seconds and once more at shutdown; forgets buckets past [`KEEP`].
pub async fn run(
    store: Arc<dyn Store>,
    traffic: Arc<Traffic>,
    cancel: CancellationToken,
    clock: SharedClock,
) {
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                traffic.flush(&*store).await;
                return;
            }
            _ = tokio::time::sleep(FLUSH_EVERY) => {}
        }
        traffic.flush(&*store).await;
        ticks += 1;
        if ticks % 300 == 1 {
            let before = Timestamp::from_millis(clock.now().millis() - KEEP.as_millis() as i64);
            if let Err(e) = store.purge_traffic(before).await {
                tracing::debug!(error = %e, "old traffic buckets not removed");
            }
        }
    }
}
