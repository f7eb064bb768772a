//! The worker loop: claim due jobs, run them with bounded concurrency, record attempts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{AttemptResult, Runner};
use crate::clock::{Clock, SharedClock};
use crate::config::WorkerSettings;
use crate::domain::outbox::breaker::{Breaker, May};
use crate::domain::outbox::{Attempted, step_after};
use crate::store::{AttemptOutcome, AttemptRecord, ClaimedJob, NextStep, Store};

/// Each destination's circuit breaker (by its identity), shared with the admin API.
pub type Breakers = Arc<std::sync::Mutex<HashMap<String, Breaker>>>;

/// Milliseconds of this process's monotonic clock, for the breakers.
fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A paused destination as the admin API shows it: until when, and its failures in a row.
pub fn paused(breakers: &Breakers, destination: &str) -> Option<(Duration, u32)> {
    let b = breakers.lock().ok()?;
    let b = b.get(destination)?;
    let until = b.paused_until()?;
    Some((
        Duration::from_millis(until.saturating_sub(monotonic_ms())),
        b.failures_in_row(),
    ))
}

pub struct Workers {
    breakers: Breakers,
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
        let breakers = Breakers::default();
        tracker.spawn(claim_loop(ClaimLoop {
            breakers: breakers.clone(),
            concurrency: settings.concurrency,
            pause_after: settings.pause_after,
            pause_for: settings.pause_for,
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
            breakers,
            wake,
            cancel,
            tracker,
            grace: settings.shutdown_grace,
        }
    }

    /// The destinations' circuit breakers (the admin API shows the paused ones).
    pub fn breakers(&self) -> Breakers {
        self.breakers.clone()
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
    breakers: Breakers,
    concurrency: usize,
    pause_after: u32,
    pause_for: Duration,
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

/// A destination's bulkhead: a slow destination fills its own share of the workers, never
/// the others'.
#[derive(Clone)]
struct Bulkhead {
    /// Attempts at the destination at once: `per_destination`.
    slots: Arc<Semaphore>,
    /// Jobs claimed and not yet answered: those running and those waiting for a slot, at
    /// most twice `per_destination`. Claiming ahead keeps the destination's slots busy
    /// while the next claim (a commit) is on its way: a claim is one round trip to the
    /// store, and claiming only for free slots capped a destination at `per_destination`
    /// jobs per claim (~1,900 deliveries/s with the default 8 on SQLite, whatever the
    /// receiver's speed). A job is held from its claim until the receiver has answered.
    held: Arc<Semaphore>,
    /// Whether the destination claims ahead: only when its lease covers a wait for a slot,
    /// an attempt and half the margin (`2 × timeout + lease_margin / 2 ≤ lease`). A job
    /// waits at most until one of the attempts before it ends (at most `per_destination`
    /// wait, behind as many running). Set anew at each reload.
    ahead: bool,
}

/// One bulkhead per destination. After a reload, a destination that stays keeps its
/// bulkhead's semaphores (and the attempts running in it); a new one gets its own.
fn bulkheads_for(
    runner: &Runner,
    old: &[(String, Bulkhead)],
    per_destination: usize,
    lease_margin: Duration,
) -> Vec<(String, Bulkhead)> {
    let lease = runner.max_timeout() + lease_margin;
    runner
        .known()
        .iter()
        .map(|d| {
            let kept = old.iter().find(|(o, _)| o == d).map(|(_, b)| b.clone());
            let ahead = runner
                .timeout_of(d)
                .is_some_and(|t| 2 * t + lease_margin / 2 <= lease);
            let b = kept.unwrap_or_else(|| Bulkhead {
                slots: Arc::new(Semaphore::new(per_destination)),
                held: Arc::new(Semaphore::new(2 * per_destination)),
                ahead,
            });
            (d.clone(), Bulkhead { ahead, ..b })
        })
        .collect()
}

async fn claim_loop(l: ClaimLoop) {
    // A test's clock jumping (a retry or a lease falling due at once) wakes the loop too.
    let mut jumps = l.clock.jumps();
    let mut runner = l.live.load().runner.clone();
    let mut bulkheads = bulkheads_for(&runner, &[], l.per_destination, l.lease_margin);
    let mut turn = 0usize;
    // Room freed by a finished attempt: wakes the loop without saying new jobs are due.
    let freed = Arc::new(Notify::new());
    // Destinations whose last claim found fewer due jobs than it asked for: not claimed
    // again until something may have become due (a wake from the hooks or an operator, the
    // poll interval, a clock jump, a reload). So a finished attempt costs a claim only for
    // a destination with more waiting, not one per destination with room: with several
    // busy destinations on PostgreSQL, the claims (a round trip each) no longer queue the
    // fast destination's behind theirs.
    let mut drained: HashSet<String> = HashSet::new();
    let mut poll_at = Instant::now() + l.poll;
    for (bot, action) in runner.configured() {
        metrics::gauge!("wrapup_destination_paused", "bot" => bot, "action" => action).set(0.0);
    }
    loop {
        if l.cancel.is_cancelled() {
            break;
        }
        let current = l.live.load().runner.clone();
        if !Arc::ptr_eq(&current, &runner) {
            bulkheads = bulkheads_for(&current, &bulkheads, l.per_destination, l.lease_margin);
            // Every breaker is cleared below: a removed action's gauge goes to 0 too, or
            // its last 1 would keep WrapupDestinationPaused firing for good.
            for (bot, action) in runner.configured() {
                metrics::gauge!("wrapup_destination_paused", "bot" => bot, "action" => action)
                    .set(0.0);
            }
            runner = current;
            drained.clear();
            // A reload is the operator saying something changed (a URL fixed, a key
            // rotated): every paused destination is tried again at once.
            if let Ok(mut b) = l.breakers.lock() {
                b.clear();
            }
            for (bot, action) in runner.configured() {
                metrics::gauge!("wrapup_destination_paused", "bot" => bot, "action" => action)
                    .set(0.0);
            }
        }
        let lease = runner.max_timeout() + l.lease_margin;
        let available = l.permits.available_permits();
        if available == 0 {
            tokio::select! {
                _ = l.cancel.cancelled() => break,
                permit = l.permits.clone().acquire_owned() => { drop(permit); continue; }
            }
        }
        // Each destination claims up to its share (`domain::outbox::share`: stalled
        // destinations hold only their own shares), starting one further each round so
        // no destination is always offered freed workers first; a paused one claims
        // nothing but its probe.
        let configured = bulkheads.iter().filter(|(d, _)| !d.is_empty()).count();
        let mut claimed_all = false;
        let first = turn % bulkheads.len().max(1);
        turn = turn.wrapping_add(1);
        let order = bulkheads[first..].iter().chain(&bulkheads[..first]);
        // Every destination's claim is decided first (its room taken from the workers
        // left), then all are made at once: one statement on PostgreSQL (each claim was a
        // round trip and a commit, and one after another the fast destination's claim
        // waited behind every other's: with eight misbehaving neighbours its p99 was 80 ms
        // against 8 ms alone), one writer command on SQLite.
        let mut left = l.permits.available_permits();
        let mut planned = Vec::new();
        for (destination, bulkhead) in order {
            if drained.contains(destination) || left == 0 {
                continue;
            }
            // Shares count the jobs held (waiting for a slot, running, or being
            // recorded); `slots` bounds those at the receiver.
            let depth = if bulkhead.ahead { 2 } else { 1 } * l.per_destination;
            let share = crate::domain::outbox::share(l.concurrency, depth, configured);
            let held = 2 * l.per_destination - bulkhead.held.available_permits();
            let mut room = share.saturating_sub(held).min(left);
            if room == 0 {
                continue;
            }
            let may = l
                .breakers
                .lock()
                .map(|b| {
                    b.get(destination)
                        .map_or(May::Claim, |b| b.may(monotonic_ms()))
                })
                .unwrap_or(May::Claim);
            match may {
                May::Wait => continue,
                May::Probe => room = 1,
                May::Claim => {}
            }
            left -= room;
            planned.push((destination, bulkhead, room, may));
        }
        let mut claimed_at = Instant::now();
        let rooms = planned
            .iter()
            .map(|(d, _, room, _)| ((*d).clone(), *room))
            .collect::<Vec<_>>();
        let mut all = if rooms.is_empty() {
            Ok(Vec::new())
        } else {
            claimed_at = Instant::now();
            l.store.claim_each(rooms, lease).await
        };
        if let Err(e) = &all {
            tracing::warn!(error = %e.chain(), "claiming jobs failed; will try again");
        }
        for (destination, bulkhead, room, may) in planned {
            let claimed: Option<Vec<ClaimedJob>> = match &mut all {
                Ok(all) => {
                    let (mine, rest) = std::mem::take(all)
                        .into_iter()
                        .partition(|j| &j.destination == destination);
                    *all = rest;
                    Some(mine)
                }
                Err(_) => None,
            };
            if may == May::Probe {
                let started = claimed.as_ref().is_some_and(|jobs| !jobs.is_empty());
                if let Ok(mut b) = l.breakers.lock() {
                    let b = b.entry(destination.clone()).or_default();
                    if started {
                        b.probe_started();
                    } else {
                        b.probe_unused();
                    }
                }
            }
            if let Some(jobs) = claimed {
                claimed_all |= jobs.len() == room && may == May::Claim;
                if jobs.len() < room {
                    drained.insert(destination.clone());
                }
                for job in jobs {
                    // Only this loop takes permits, so the room counted above is still free.
                    let (Ok(permit), Ok(ticket)) = (
                        l.permits.clone().try_acquire_owned(),
                        bulkhead.held.clone().try_acquire_owned(),
                    ) else {
                        break;
                    };
                    let turn = Turn {
                        slots: bulkhead.slots.clone(),
                        store: l.store.clone(),
                        live: l.live.clone(),
                        claimed_with: runner.clone(),
                        deadline: claimed_at + lease,
                        margin: l.lease_margin,
                        probe: may == May::Probe,
                        cancel: l.cancel.clone(),
                        breakers: l.breakers.clone(),
                        destination: destination.clone(),
                    };
                    let (clock, wake) = (l.clock.clone(), freed.clone());
                    let (pause_after, pause_for) = (l.pause_after, l.pause_for);
                    l.tracker.spawn(async move {
                        let Some((slot, runner)) = turn.wait(&job).await else {
                            drop((ticket, permit));
                            wake.notify_one();
                            return;
                        };
                        let (store, breakers) = (turn.store, turn.breakers);
                        let (failed, record, next) =
                            attempt(&*store, &runner, &*clock, &job).await;
                        let paused = breakers.lock().ok().map(|mut b| {
                            b.entry(turn.destination)
                                .or_default()
                                .record(failed, monotonic_ms(), pause_after, pause_for.as_millis() as u64)
                        });
                        if let (Some(paused), Some(a)) = (paused, runner.action_for(&job)) {
                            metrics::gauge!("wrapup_destination_paused", "bot" => job.bot_id.clone(), "action" => a.name.clone())
                                .set(if paused { 1.0 } else { 0.0 });
                        }
                        // The destination has answered: its slot and its place in the
                        // destination's share go to its next job while this one's outcome
                        // is written. A commit is the store's time, not the receiver's:
                        // counted in the share, it tied a destination's claims to the
                        // commits again (A/B: 2,466/2,682 deliveries/s against
                        // 3,072/3,339). The worker permit stays taken until the record is
                        // written, so jobs being recorded are bounded by `concurrency`;
                        // a fast destination may hold more than its share of permits for
                        // the length of a commit, a stalled one never (its attempts do
                        // not end).
                        drop((slot, ticket));
                        wake.notify_one();
                        record_attempt(&*store, &job, record, next).await;
                        drop(permit);
                        wake.notify_one();
                    });
                }
            }
        }
        if claimed_all {
            continue; // there may be more due right now
        }
        tokio::select! {
            _ = l.cancel.cancelled() => break,
            _ = freed.notified() => continue,
            _ = l.wake.notified() => {}
            // The poll runs on its own deadline, so finished attempts waking the loop all
            // the time never put off a retry falling due.
            _ = crate::clock::sleep(&mut jumps, poll_at.saturating_duration_since(Instant::now())) => {
                poll_at = Instant::now() + l.poll;
            }
        }
        drained.clear();
    }
}

/// A claimed job's wait for its turn at the destination.
struct Turn {
    slots: Arc<Semaphore>,
    store: Arc<dyn Store>,
    live: crate::live::Shared,
    /// The configuration the job was claimed under.
    claimed_with: Arc<Runner>,
    /// When the job's lease ends at the earliest (measured from before the claim).
    deadline: Instant,
    margin: Duration,
    /// The job was claimed as a paused destination's probe.
    probe: bool,
    cancel: CancellationToken,
    breakers: Breakers,
    destination: String,
}

impl Turn {
    /// Takes a slot; a job claimed ahead waits for an attempt before it to end, then is
    /// checked again, as things may have changed while it waited: the instance
    /// is not stopping, the destination is not paused (unless this is its probe), the
    /// action is still configured, and the lease left covers its timeout and half the
    /// margin. Returns the slot and the configuration of now, or gives the job back
    /// unattempted (pending in its place, its attempt not counted).
    async fn wait(&self, job: &ClaimedJob) -> Option<(OwnedSemaphorePermit, Arc<Runner>)> {
        // A slot free at once: the job runs now, as claimed (nothing changed meanwhile).
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Some((slot, self.claimed_with.clone()));
        }
        // Waiting is bounded too: once the lease left could no longer cover the attempt (a
        // reload may have left older, longer attempts in the slots), the job goes back.
        let timeout = self
            .claimed_with
            .action_for(job)
            .map_or(Duration::ZERO, |a| a.timeout);
        let give_up_at = self
            .deadline
            .checked_sub(timeout + self.margin / 2)
            .unwrap_or_else(Instant::now);
        let slot = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => None,
            slot = self.slots.clone().acquire_owned() => slot.ok(),
            _ = tokio::time::sleep_until(give_up_at.into()) => None,
        };
        let runner = self.live.load().runner.clone();
        let paused = !self.probe
            && self.breakers.lock().is_ok_and(|b| {
                b.get(&self.destination)
                    .is_some_and(|b| b.may(monotonic_ms()) != May::Claim)
            });
        // A job whose action is gone from an unchanged configuration is attempted (and
        // fails saying so) as before; given back, it would be claimed again at once.
        let fits = match runner.action_for(job) {
            Some(a) => Instant::now() + a.timeout + self.margin / 2 <= self.deadline,
            None => Arc::ptr_eq(&runner, &self.claimed_with),
        };
        match slot {
            Some(slot) if fits && !paused => Some((slot, runner)),
            slot => {
                // The receiver's slot is free again before the store is written.
                drop(slot);
                if self.probe
                    && let Ok(mut b) = self.breakers.lock()
                {
                    b.entry(self.destination.clone())
                        .or_default()
                        .probe_unused();
                }
                match self.store.release(job).await {
                    Ok(_) => {}
                    Err(e) => tracing::warn!(job = %job.id, error = %e.chain(),
                        "giving back a job not attempted failed; it runs again after its lease"),
                }
                None
            }
        }
    }
}

/// Runs one attempt; returns whether the destination failed (an error or a retryable
/// answer: what its circuit breaker counts), the attempt's record and the job's next step.
#[tracing::instrument(skip_all, fields(job = %job.id, action = %job.action, attempt = job.attempt))]
async fn attempt(
    store: &dyn Store,
    runner: &Runner,
    clock: &dyn Clock,
    job: &ClaimedJob,
) -> (bool, AttemptRecord, NextStep) {
    let started_at = clock.now();
    let timer = Instant::now();
    let action = runner.action_for(job);
    let result = match action {
        Some(action) => {
            match tokio::time::timeout(action.timeout, runner.run(action, job, started_at, store))
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
    let attempted = Attempted {
        ok: result.ok,
        advice: result.next,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
    };
    let failed = attempted.destination_failed();
    let next = step_after(
        attempted,
        action.map(|a| &a.retry),
        clock.now(),
        fastrand::f64(),
    );
    let outcome = if result.ok {
        AttemptOutcome::Succeeded
    } else {
        AttemptOutcome::Failed
    };
    // Labels bounded by the configuration: the configured action's name (every summary
    // delivery of `crm` is `crm`), never the job's own name, which grows per trigger.
    let label = action
        .map_or("(unconfigured)", |a| a.name.as_str())
        .to_owned();
    let bot = if action.is_some() {
        job.bot_id.clone()
    } else {
        String::new()
    };
    let event = job.event.as_str();
    metrics::counter!("wrapup_action_attempts_total", "kind" => job.kind.clone(), "bot" => bot.clone(), "action" => label.clone(), "event" => event, "outcome" => outcome.as_str())
        .increment(1);
    metrics::histogram!("wrapup_action_attempt_duration_seconds", "kind" => job.kind.clone(), "bot" => bot, "action" => label, "event" => event)
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
    (failed, record, next)
}

/// Writes an attempt's record and the job's next step.
#[tracing::instrument(skip_all, fields(job = %job.id, action = %job.action, attempt = job.attempt))]
async fn record_attempt(
    store: &dyn Store,
    job: &ClaimedJob,
    record: AttemptRecord,
    next: NextStep,
) {
    match store.finish_attempt(job, record, next).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!("the job's lease was lost before its attempt was recorded"),
        Err(e) => {
            tracing::error!(error = %e.chain(), "recording the attempt failed; the job will run again after its lease")
        }
    }
}
