//! The outbox's rules, none of them SQL: the job state machine (`rules`), when a
//! destination that keeps failing is paused (`breaker`), and how many attempts each
//! destination may run at once.

pub mod breaker;
mod rules;

pub use rules::*;

/// What a job does, stored in its `event` column (never read out of its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobEvent {
    /// Delivers `conversation.ended` (an `on_end` action's job).
    #[default]
    Ended,
    /// Delivers `conversation.summarized` (scheduled when a summary is stored).
    Summarized,
    /// Makes a summary (`[bots.summary]`).
    Summary,
}

impl JobEvent {
    pub const ALL: [JobEvent; 3] = [JobEvent::Ended, JobEvent::Summarized, JobEvent::Summary];

    pub fn as_str(self) -> &'static str {
        match self {
            JobEvent::Ended => "conversation.ended",
            JobEvent::Summarized => "conversation.summarized",
            JobEvent::Summary => "summary",
        }
    }

    pub fn parse(s: &str) -> Option<JobEvent> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// The jobs one destination may hold at once (claimed and not yet answered): at most
/// `per_destination` (the worker passes twice that for a destination that claims ahead),
/// and at most its even share of `concurrency` among the `destinations` this instance
/// serves, so the shares of every destination fit in the workers together. Stalled destinations can then
/// hold only their own shares: a healthy destination always has its own (at least one).
pub fn share(concurrency: usize, per_destination: usize, destinations: usize) -> usize {
    (concurrency / destinations.max(1)).clamp(1, per_destination.max(1))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::share;

    #[test]
    fn the_defaults_give_eight_destinations_their_eight_and_more_destinations_less() {
        assert_eq!(share(64, 8, 1), 8);
        assert_eq!(share(64, 8, 8), 8);
        assert_eq!(share(64, 8, 9), 7);
        assert_eq!(share(64, 8, 100), 1);
    }

    proptest! {
        #[test]
        fn shares_fit_in_the_workers_whenever_each_can_have_one(
            concurrency in 1usize..500,
            per in 1usize..64,
            n in 1usize..500,
        ) {
            let s = share(concurrency, per, n);
            prop_assert!(s >= 1 && s <= per);
            if n <= concurrency {
                prop_assert!(s * n <= concurrency);
            }
        }
    }
}
