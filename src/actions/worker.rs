//! The worker loop: claim due jobs, run them with bounded concurrency, record attempts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{AttemptResult, Runner};
use crate::clock::{Clock, SharedClock};
use crate::config::WorkerSettings;
use crate::domain::Timestamp;
use crate::store::{AttemptOutcome, AttemptRecord, ClaimedJob, NextStep, Store};

pub struct Workers {
    wake: Arc<Notify>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
}

impl Workers {
    /// Starts the claim loop in the background; it runs the actions of the live
    /// configuration (a reload applies from the next claim).
    pub fn start(
        store: Arc<dyn Store>,
        live: crate::live::Shared,
        settings: &WorkerSettings,
        clock: SharedClock,
    ) -> Self {
        let wake = Arc::new(Notify::new());
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(claim_loop(ClaimLoop {
            store,
            clock,
            live,
            per_destination: settings.per_destination,
            lease_margin: settings.lease_margin,
            poll: settings.poll_interval,
            permits: Arc::new(Semaphore::new(settings.concurrency)),
            wake: wake.clone(),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
        }));
        Self {
            wake,
            cancel,
            tracker,
            grace: settings.shutdown_grace,
        }
    }

    /// Wakes the claim loop now (a conversation just ended) instead of at the next poll.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Stops claiming and lets running attempts finish and be recorded, for at most the grace period.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "workers' grace period over; unfinished attempts will run again after their lease"
            );
        }
    }
}

struct ClaimLoop {
    store: Arc<dyn Store>,
    clock: SharedClock,
    live: crate::live::Shared,
    /// Attempts each destination may have running at once (`[workers] per_destination`).
    per_destination: usize,
    lease_margin: Duration,
    poll: Duration,
    permits: Arc<Semaphore>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// One bulkhead per destination: a slow destination fills its own share of the workers,
/// never the others'. After a reload, a destination that stays keeps its bulkhead (and
/// the attempts running in it); a new one gets its own.
fn bulkheads_for(
    runner: &Runner,
    old: &[(String, Arc<Semaphore>)],
    per_destination: usize,
) -> Vec<(String, Arc<Semaphore>)> {
    runner
        .known()
        .iter()
        .map(|d| {
            let kept = old.iter().find(|(o, _)| o == d).map(|(_, s)| s.clone());
            (
                d.clone(),
                kept.unwrap_or_else(|| Arc::new(Semaphore::new(per_destination))),
            )
        })
        .collect()
}

async fn claim_loop(l: ClaimLoop) {
    // A test's clock jumping (a retry or a lease falling due at once) wakes the loop too.
    let mut jumps = l.clock.jumps();
    let mut runner = l.live.load().runner.clone();
    let mut bulkheads = bulkheads_for(&runner, &[], l.per_destination);
    loop {
        if l.cancel.is_cancelled() {
            break;
        }
        let current = l.live.load().runner.clone();
        if !Arc::ptr_eq(&current, &runner) {
            bulkheads = bulkheads_for(&current, &bulkheads, l.per_destination);
            runner = current;
        }
        let lease = runner.max_timeout() + l.lease_margin;
        let available = l.permits.available_permits();
        if available == 0 {
            tokio::select! {
                _ = l.cancel.cancelled() => break,
                permit = l.permits.clone().acquire_owned() => { drop(permit); continue; }
            }
        }
        // Each destination with room in its bulkhead claims up to that room (and what the
        // global limit leaves): a destination whose attempts are slow only fills its own.
        let mut claimed_all = false;
        for (destination, bulkhead) in &bulkheads {
            let room = bulkhead
                .available_permits()
                .min(l.permits.available_permits());
            if room == 0 {
                continue;
            }
            let only = Arc::from([destination.clone()]);
            match l.store.claim_jobs(room, lease, only).await {
                Ok(jobs) => {
                    claimed_all |= jobs.len() == room;
                    for job in jobs {
                        // Only this loop takes permits, so the room counted above is still free.
                        let (Ok(permit), Ok(slot)) = (
                            l.permits.clone().try_acquire_owned(),
                            bulkhead.clone().try_acquire_owned(),
                        ) else {
                            break;
                        };
                        let (store, runner, clock, wake) = (
                            l.store.clone(),
                            runner.clone(),
                            l.clock.clone(),
                            l.wake.clone(),
                        );
                        l.tracker.spawn(async move {
                            attempt(store, runner, &*clock, job).await;
                            drop((permit, slot));
                            // Room freed in a bulkhead: look for its waiting jobs now.
                            wake.notify_one();
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e.chain(), "claiming jobs failed; will try again")
                }
            }
        }
        if claimed_all {
            continue; // there may be more due right now
        }
        tokio::select! {
            _ = l.cancel.cancelled() => break,
            _ = l.wake.notified() => {}
            _ = crate::clock::sleep(&mut jumps, l.poll) => {}
        }
    }
}

#[tracing::instrument(skip_all, fields(job = %job.id, action = %job.action, attempt = job.attempt))]
async fn attempt(store: Arc<dyn Store>, runner: Arc<Runner>, clock: &dyn Clock, job: ClaimedJob) {
    let started_at = clock.now();
    let timer = Instant::now();
    let action = runner.action_for(&job);
    let result = match action {
        Some(action) => {
            match tokio::time::timeout(
                action.timeout,
                runner.run(action, &job, started_at, &*store),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => AttemptResult::failed(format!(
                    "no answer within {}",
                    humantime::format_duration(action.timeout)
                )),
            }
        }
        None => AttemptResult::failed(format!(
            "bot {} has no action named \"{}\" any more (configuration changed)",
            job.bot_id, job.action
        )),
    };
    let elapsed = timer.elapsed();
    let next = if result.ok {
        NextStep::Succeeded
    } else {
        match action {
            _ if result.next == super::Advice::Never => NextStep::Dead,
            Some(a) if job.attempt < job.max_attempts => {
                let delay = match result.next {
                    // The receiver said when; the action's longest wait still bounds it.
                    // (never sooner than the action's first delay: `Retry-After: 0` forever
                    // would be a tight loop).
                    super::Advice::After(wait) => {
                        wait.clamp(a.retry.initial_delay, a.retry.max_delay)
                    }
                    _ => a.retry.delay(job.attempt, fastrand::f64()),
                };
                NextStep::RetryAt(Timestamp::from_millis(
                    clock.now().millis() + delay.as_millis() as i64,
                ))
            }
            _ => NextStep::Dead,
        }
    };
    let outcome = if result.ok {
        AttemptOutcome::Succeeded
    } else {
        AttemptOutcome::Failed
    };
    // Bot and action are bounded by the configuration (and the jobs of earlier ones).
    metrics::counter!("wrapup_action_attempts_total", "kind" => job.kind.clone(), "bot" => job.bot_id.clone(), "action" => job.action.clone(), "outcome" => outcome.as_str())
        .increment(1);
    metrics::histogram!("wrapup_action_attempt_duration_seconds", "kind" => job.kind.clone(), "bot" => job.bot_id.clone(), "action" => job.action.clone())
        .record(elapsed.as_secs_f64());
    match next {
        NextStep::Succeeded => {
            let latency = (clock.now().millis() - job.created_at.millis()).max(0) as f64 / 1000.0;
            metrics::histogram!("wrapup_action_delivery_latency_seconds", "kind" => job.kind.clone()).record(latency);
        }
        NextStep::RetryAt(at) => {
            tracing::warn!(error = result.error.as_deref().unwrap_or(""), retry_at = %at.to_rfc3339(), "action attempt failed")
        }
        NextStep::Dead => tracing::error!(
            error = result.error.as_deref().unwrap_or(""),
            "action failed for good; job is dead"
        ),
    }
    // A destination's answer may hold NUL, which PostgreSQL's text cannot: the attempt
    // would never be recorded and the job would run again and again.
    let no_nul = |s: String| {
        if s.contains('\0') {
            s.replace('\0', "\u{FFFD}")
        } else {
            s
        }
    };
    let record = AttemptRecord {
        attempt: job.attempt,
        started_at,
        duration_ms: elapsed.as_millis() as u64,
        outcome,
        status_code: result.status_code,
        error: result.error.map(no_nul),
        response: result.response.map(no_nul),
    };
    match store.finish_attempt(&job, record, next).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!("the job's lease was lost before its attempt was recorded"),
        Err(e) => {
            tracing::error!(error = %e.chain(), "recording the attempt failed; the job will run again after its lease")
        }
    }
}
