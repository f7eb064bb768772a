//! The one source of time. Everything that stamps, schedules or expires — the API's token
//! checks, the store's writes, the workers' retries and leases, the sweeper's inactivity
//! and retention — asks a [`Clock`], so tests can move time instead of waiting for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::domain::Timestamp;

pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now(&self) -> Timestamp;

    /// Changes whenever the clock jumps (only a test's clock does), so that loops waiting
    /// for a due time look again at once instead of at their next tick.
    fn jumps(&self) -> Option<watch::Receiver<i64>> {
        None
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        system_now()
    }
}

fn system_now() -> Timestamp {
    Timestamp::from_millis((OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The system clock plus an offset a test moves forward: time still passes by itself, and
/// [`ManualClock::advance`] jumps it (a lease, a retry delay, an inactivity timeout or a
/// retention period passes at once), waking every loop that waits on the clock.
#[derive(Debug)]
pub struct ManualClock {
    offset_ms: AtomicI64,
    jumped: watch::Sender<i64>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            offset_ms: AtomicI64::new(0),
            jumped: watch::channel(0).0,
        }
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let offset = self
            .offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst)
            + by.as_millis() as i64;
        self.jumped.send_replace(offset);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(system_now().millis() + self.offset_ms.load(Ordering::SeqCst))
    }

    fn jumps(&self) -> Option<watch::Receiver<i64>> {
        Some(self.jumped.subscribe())
    }
}

/// Sleeps for `d`, or less if the clock jumps meanwhile (`jumps` from [`Clock::jumps`]).
pub async fn sleep(jumps: &mut Option<watch::Receiver<i64>>, d: Duration) {
    match jumps {
        Some(rx) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = rx.changed() => {}
            }
        }
        None => tokio::time::sleep(d).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_runs_with_the_system_and_jumps_when_advanced() {
        let clock = ManualClock::default();
        let before = SystemClock.now();
        let jumps = clock.jumps().expect("a manual clock reports its jumps");
        clock.advance(Duration::from_secs(3600));
        assert!(jumps.has_changed().expect("open"));
        let after = clock.now();
        assert!(after.millis() - before.millis() >= 3_600_000);
        assert!(after.millis() - before.millis() < 3_660_000);
    }
}
