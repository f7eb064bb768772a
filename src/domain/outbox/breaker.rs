//! A circuit breaker per destination. After `pause_after` failed attempts in a row the
//! destination is paused: its due jobs wait without spending attempts (an hour-long CRM
//! outage turns no job dead and builds no churn of retries), and one probe attempt runs
//! per `pause_for`; the probe's success resumes it, its failure pauses it again. An answer
//! that gives up at once (a 410) is the destination speaking, not failing: it counts as
//! success here.
//!
//! Pure: the caller passes the time (milliseconds of any monotonic clock).

/// What a destination may claim now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum May {
    /// As many as its share.
    Claim,
    /// One attempt, the probe.
    Probe,
    /// Nothing: paused, or its probe is still running.
    Wait,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Breaker {
    failures_in_row: u32,
    /// Paused until then (ms); `None`: running.
    paused_until: Option<u64>,
    probing: bool,
}

impl Breaker {
    pub fn may(&self, now_ms: u64) -> May {
        match self.paused_until {
            None => May::Claim,
            Some(_) if self.probing => May::Wait,
            Some(until) if now_ms >= until => May::Probe,
            Some(_) => May::Wait,
        }
    }

    /// The probe was claimed (when [`Breaker::may`] said [`May::Probe`]).
    pub fn probe_started(&mut self) {
        self.probing = true;
    }

    /// The probe found nothing to run: the next one may start at once.
    pub fn probe_unused(&mut self) {
        self.probing = false;
    }

    /// An attempt's outcome; returns whether the destination is paused now.
    pub fn record(
        &mut self,
        failed: bool,
        now_ms: u64,
        pause_after: u32,
        pause_for_ms: u64,
    ) -> bool {
        if !failed {
            *self = Breaker::default();
            return false;
        }
        self.failures_in_row = self.failures_in_row.saturating_add(1);
        let paused = self.paused_until.is_some();
        if pause_after > 0 && (paused || self.failures_in_row >= pause_after) {
            // A failed probe (or the failure that reaches the limit) pauses it (again).
            if self.probing || !paused {
                self.paused_until = Some(now_ms + pause_for_ms);
                self.probing = false;
            }
        }
        self.paused_until.is_some()
    }

    pub fn paused_until(&self) -> Option<u64> {
        self.paused_until
    }

    pub fn failures_in_row(&self) -> u32 {
        self.failures_in_row
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn five_failures_pause_one_probe_per_interval_and_a_success_resumes() {
        let mut b = Breaker::default();
        for i in 0..4 {
            assert!(!b.record(true, i, 5, 30_000));
            assert_eq!(b.may(i), May::Claim);
        }
        assert!(b.record(true, 10, 5, 30_000));
        assert_eq!(b.may(11), May::Wait);
        assert_eq!(b.may(30_010), May::Probe);
        b.probe_started();
        assert_eq!(b.may(30_011), May::Wait, "one probe at a time");
        // The probe fails: paused again from now.
        assert!(b.record(true, 30_500, 5, 30_000));
        assert_eq!(b.may(30_600), May::Wait);
        assert_eq!(b.may(60_500), May::Probe);
        b.probe_started();
        assert!(!b.record(false, 60_600, 5, 30_000));
        assert_eq!(b.may(60_601), May::Claim);
        assert_eq!(b, Breaker::default());
    }

    #[test]
    fn attempts_already_running_when_it_paused_do_not_extend_the_pause() {
        let mut b = Breaker::default();
        for i in 0..5 {
            b.record(true, i, 5, 1_000);
        }
        assert_eq!(b.paused_until(), Some(1_004));
        // Four more attempts that were in flight fail after the pause began.
        for i in 0..4 {
            b.record(true, 500 + i, 5, 1_000);
        }
        assert_eq!(b.paused_until(), Some(1_004));
        assert_eq!(b.may(1_004), May::Probe);
    }

    #[test]
    fn pause_after_zero_never_pauses() {
        let mut b = Breaker::default();
        for i in 0..100 {
            assert!(!b.record(true, i, 0, 1_000));
        }
        assert_eq!(b.may(100), May::Claim);
    }

    proptest! {
        /// Whatever the outcomes, a paused destination runs at most one probe per pause,
        /// and a success always resumes it.
        #[test]
        fn a_paused_destination_runs_one_probe_per_interval(
            outcomes in proptest::collection::vec(any::<bool>(), 1..200),
        ) {
            let mut b = Breaker::default();
            let mut now = 0u64;
            let mut probes_in_pause = 0;
            let mut paused_at = None;
            for failed in outcomes {
                now += 700;
                match b.may(now) {
                    May::Claim => {}
                    May::Probe => {
                        b.probe_started();
                        probes_in_pause += 1;
                    }
                    May::Wait => continue,
                }
                let was = b.paused_until();
                let paused = b.record(failed, now, 3, 2_000);
                if !failed {
                    prop_assert!(!paused);
                    prop_assert_eq!(b.may(now), May::Claim);
                }
                if b.paused_until() != was {
                    paused_at = b.paused_until();
                    probes_in_pause = 0;
                }
                prop_assert!(probes_in_pause <= 1, "{:?}", paused_at);
            }
        }
    }
}
