//! The job state machine as pure decisions: what follows an attempt, a lost lease, and
//! which states an operator's retry, discard and re-point take a job from. Both stores
//! only apply these decisions (their SQL names no state of its own).

use std::time::Duration;

use crate::domain::Timestamp;
use crate::domain::retry::RetryPolicy;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its due time.
    Pending,
    /// Claimed by a worker whose lease has not expired.
    Running,
    Succeeded,
    /// Failed its last attempt; an operator may retry it.
    Dead,
    /// Its action is not in the configuration (removed, or its kind changed); it waits
    /// for an operator to re-point or discard it, and never runs against another action.
    Orphaned,
    /// Given up by an operator (a dead or orphaned job).
    Discarded,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Pending,
        JobState::Running,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Orphaned,
        JobState::Discarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Orphaned => "orphaned",
            JobState::Discarded => "discarded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// A destination's word on a failed attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Advice {
    /// Nothing: the action's retry schedule applies.
    #[default]
    Schedule,
    /// Try again after this long (`Retry-After` on a 429 or 503), within `max_delay`.
    After(Duration),
    /// Do not try again (`410 Gone`): the job is dead at once.
    Never,
}

/// What happens to a job after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Succeeded,
    RetryAt(Timestamp),
    Dead,
}

/// How an attempt went, as the step after it needs it.
#[derive(Debug, Clone, Copy)]
pub struct Attempted {
    pub ok: bool,
    pub advice: Advice,
    /// This attempt's number, 1-based, and the job's budget.
    pub attempt: u32,
    pub max_attempts: u32,
}

impl Attempted {
    /// Whether the destination failed: an error or a retryable answer (what its circuit
    /// breaker counts). A `410 Gone` is an answer, not a failure of the destination.
    pub fn destination_failed(&self) -> bool {
        !self.ok && self.advice != Advice::Never
    }
}

/// The step after an attempt. `retry` is the action's schedule (`None`: the action is
/// gone from the configuration, so there is nothing to retry against); `jitter` in
/// [0, 1) spreads the retries. A receiver's `Retry-After` is obeyed within the action's
/// first and longest delays (never sooner than the first: `Retry-After: 0` for ever would
/// be a tight loop).
pub fn step_after(
    a: Attempted,
    retry: Option<&RetryPolicy>,
    now: Timestamp,
    jitter: f64,
) -> NextStep {
    if a.ok {
        return NextStep::Succeeded;
    }
    let Some(retry) = retry else {
        return NextStep::Dead;
    };
    if a.advice == Advice::Never || a.attempt >= a.max_attempts {
        return NextStep::Dead;
    }
    let delay = match a.advice {
        Advice::After(wait) => wait.clamp(retry.initial_delay, retry.max_delay),
        _ => retry.delay(a.attempt, jitter),
    };
    NextStep::RetryAt(now.plus(delay))
}

/// Where a job goes after an attempt: its new state, and when it is next due.
pub fn after_attempt(next: NextStep, now: Timestamp) -> (JobState, Timestamp) {
    match next {
        NextStep::Succeeded => (JobState::Succeeded, now),
        NextStep::RetryAt(at) => (JobState::Pending, at),
        NextStep::Dead => (JobState::Dead, now),
    }
}

pub const LOST_ATTEMPT: &str =
    "the worker stopped before recording this attempt; its lease expired";

/// How many lost attempts in a row a job may have. A lost attempt (a crash, a deploy, a
/// graceful stop that outlasted its grace) does not count against the job's budget, so
/// without a bound a job that itself stops its worker, or whose attempt the store cannot
/// record, would run at every lease, for ever. A recorded attempt or an operator's retry
/// starts the count again.
pub const MAX_LOST_ATTEMPTS: i64 = 10;

pub const TOO_MANY_LOST: &str = "the worker stopped before recording 10 of this job's attempts in a row \
    (a crash during its attempt each time: the job itself, or the jobs it ran beside); see the server's log, then retry or discard it";

/// What becomes of a job whose lease expired, by its lost attempts in a row (this one
/// included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AfterLost {
    /// The first: run again now (a crash or a deploy; the job is likely innocent).
    Now,
    /// Again: wait a random time, up to the lease doubled per further loss (at most an
    /// hour), so jobs lost together because one of them crashes the instance run apart
    /// from then on and only the culprit keeps being lost.
    Later(Duration),
    /// The tenth in a row: dead, with [`TOO_MANY_LOST`].
    Dead,
}

/// The step after a lost lease; `jitter` in [0, 1) picks the wait within its spread.
pub fn after_lost(lost_in_row: i64, lease: Duration, jitter: f64) -> AfterLost {
    const CAP: Duration = Duration::from_secs(3600);
    match lost_in_row {
        n if n >= MAX_LOST_ATTEMPTS => AfterLost::Dead,
        ..=1 => AfterLost::Now,
        n => {
            let spread = lease.saturating_mul(1 << (n - 2).min(20)).min(CAP);
            AfterLost::Later(spread.mul_f64(jitter.clamp(0.0, 1.0)))
        }
    }
}

/// What an operator can do to a job, and the states each takes a job from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// One job: a dead one gets a fresh budget, a pending one (waiting out its backoff)
    /// is made due now with the attempts it has left.
    Retry,
    /// By filter (a bot, an action): only dead jobs. A pending job is on its way already.
    RetryMany,
    /// Given up for good.
    Discard,
    /// Pointed at another action of the bot, due now with that action's attempts.
    Repoint,
}

impl Operation {
    pub fn from_states(self) -> &'static [JobState] {
        match self {
            Operation::Retry => &[JobState::Dead, JobState::Pending],
            Operation::RetryMany => &[JobState::Dead],
            Operation::Discard => &[JobState::Dead, JobState::Orphaned],
            Operation::Repoint => &[JobState::Dead, JobState::Orphaned, JobState::Pending],
        }
    }

    pub fn allowed(self, state: JobState) -> bool {
        self.from_states().contains(&state)
    }

    /// Why an operation was refused, in the words the API answers with:
    /// `only dead or orphaned jobs can be discarded`.
    pub fn refusal(self) -> String {
        let names: Vec<&str> = self.from_states().iter().map(|s| s.as_str()).collect();
        let states = match names.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        let verb = match self {
            Operation::Retry | Operation::RetryMany => "retried",
            Operation::Discard => "discarded",
            Operation::Repoint => "re-pointed",
        };
        format!("only {states} jobs can be {verb}")
    }

    /// The states as an SQL list, `'dead', 'pending'` (the same text on both stores).
    pub fn sql_states(self) -> String {
        let quoted: Vec<String> = self
            .from_states()
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        quoted.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy() -> impl Strategy<Value = RetryPolicy> {
        (1u32..20, 10u64..120_000, 1u64..10_000_000).prop_map(|(max_attempts, initial, extra)| {
            RetryPolicy {
                max_attempts,
                initial_delay: Duration::from_millis(initial),
                max_delay: Duration::from_millis(initial + extra),
            }
        })
    }

    fn advice() -> impl Strategy<Value = Advice> {
        prop_oneof![
            Just(Advice::Schedule),
            Just(Advice::Never),
            (0u64..100_000_000).prop_map(|ms| Advice::After(Duration::from_millis(ms))),
        ]
    }

    #[test]
    fn a_lost_job_runs_now_then_later_and_further_apart_then_is_dead() {
        let lease = Duration::from_secs(15);
        assert_eq!(after_lost(1, lease, 0.5), AfterLost::Now);
        assert_eq!(after_lost(10, lease, 0.5), AfterLost::Dead);
        assert_eq!(after_lost(11, lease, 0.5), AfterLost::Dead);
        assert_eq!(
            after_lost(3, lease, 1.0),
            AfterLost::Later(Duration::from_secs(30))
        );
    }

    #[test]
    fn operators_never_touch_a_running_succeeded_or_discarded_job() {
        for op in [
            Operation::Retry,
            Operation::RetryMany,
            Operation::Discard,
            Operation::Repoint,
        ] {
            for s in [JobState::Running, JobState::Succeeded, JobState::Discarded] {
                assert!(!op.allowed(s), "{op:?} from {s:?}");
            }
        }
        // An orphaned job is never retried against the action it lost: re-point or discard.
        assert!(!Operation::Retry.allowed(JobState::Orphaned));
        assert_eq!(Operation::Discard.sql_states(), "'dead', 'orphaned'");
        assert_eq!(
            Operation::Repoint.refusal(),
            "only dead, orphaned or pending jobs can be re-pointed"
        );
    }

    proptest! {
        #[test]
        fn the_step_after_an_attempt_follows_the_answer_and_the_budget(
            ok in any::<bool>(),
            advice in advice(),
            attempt in 1u32..30,
            max_attempts in 1u32..30,
            retry in proptest::option::of(policy()),
            now in 0i64..4_000_000_000_000,
            jitter in 0.0f64..1.0,
        ) {
            let a = Attempted { ok, advice, attempt, max_attempts };
            let now = Timestamp::from_millis(now);
            let step = step_after(a, retry.as_ref(), now, jitter);
            match step {
                NextStep::Succeeded => prop_assert!(ok),
                NextStep::Dead => prop_assert!(
                    !ok && (retry.is_none() || advice == Advice::Never || attempt >= max_attempts)
                ),
                NextStep::RetryAt(at) => {
                    let r = retry.expect("a retry needs a schedule");
                    prop_assert!(!ok && advice != Advice::Never && attempt < max_attempts);
                    let wait = Duration::from_millis((at.millis() - now.millis()) as u64);
                    prop_assert!(wait <= r.max_delay, "{wait:?} past the longest delay");
                    if let Advice::After(asked) = advice {
                        // Never sooner than the first delay, never later than asked unless
                        // that was sooner than the first delay.
                        prop_assert!(wait >= r.initial_delay);
                        prop_assert!(wait == asked.clamp(r.initial_delay, r.max_delay));
                    } else {
                        prop_assert!(wait >= r.initial_delay.mul_f64(0.8).min(r.max_delay)
                            .saturating_sub(Duration::from_millis(1)));
                    }
                }
            }
            // The stored state agrees with the step, and a retry is due after now.
            let (state, due) = after_attempt(step, now);
            match step {
                NextStep::Succeeded => prop_assert_eq!(state, JobState::Succeeded),
                NextStep::Dead => prop_assert_eq!(state, JobState::Dead),
                NextStep::RetryAt(_) => {
                    prop_assert_eq!(state, JobState::Pending);
                    prop_assert!(due > now);
                }
            }
            prop_assert_eq!(a.destination_failed(), !ok && advice != Advice::Never);
        }

        #[test]
        fn a_lost_lease_waits_within_its_doubling_spread_and_kills_at_the_tenth(
            n in -5i64..40,
            lease_s in 1u64..600,
            jitter in 0.0f64..1.0,
        ) {
            let lease = Duration::from_secs(lease_s);
            match after_lost(n, lease, jitter) {
                AfterLost::Now => prop_assert!(n <= 1),
                AfterLost::Dead => prop_assert!(n >= MAX_LOST_ATTEMPTS),
                AfterLost::Later(wait) => {
                    prop_assert!((2..MAX_LOST_ATTEMPTS).contains(&n));
                    let spread = (lease * (1 << (n - 2))).min(Duration::from_secs(3600));
                    prop_assert!(wait <= spread, "{n}: {wait:?} over {spread:?}");
                }
            }
        }
    }
}
