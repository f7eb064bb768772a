//! When to try a failed action again: exponential backoff with jitter. Pure.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; after the last failure the job is dead.
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 13 attempts, 30 s doubling up to 8 h: the gaps add up to about 24.5 hours, close to
    /// what webhook platforms use (Svix and Stripe retry over one to three days).
    fn default() -> Self {
        Self {
            max_attempts: 13,
            initial_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(8 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based), or `None` when that was
    /// the last one. `jitter` in [0, 1) spreads retries ±20 % around the nominal delay
    /// so receivers that failed together are not hit together again.
    pub fn delay_after(&self, attempt: u32, jitter: f64) -> Option<Duration> {
        (attempt < self.max_attempts).then(|| self.delay(attempt, jitter))
    }

    /// The wait after failed attempt number `attempt`, whatever the budget.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(40);
        let nominal = self
            .initial_delay
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max_delay);
        let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        nominal.mul_f64(factor).min(self.max_delay)
    }

    /// The nominal total of all waits (no jitter): how long a job can take to die.
    pub fn nominal_span(&self) -> Duration {
        (1..self.max_attempts)
            .filter_map(|a| self.delay_after(a, 0.5))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_default_schedule_spans_about_a_day() {
        let span = RetryPolicy::default().nominal_span();
        assert!(
            span > Duration::from_secs(20 * 3600) && span < Duration::from_secs(30 * 3600),
            "{span:?}"
        );
    }

    #[test]
    fn delays_double_then_cap_and_stop_after_the_last_attempt() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3),
        };
        let d: Vec<_> = (1..=5).map(|a| p.delay_after(a, 0.5)).collect();
        assert_eq!(
            d,
            vec![
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(2)),
                Some(Duration::from_secs(3)),
                Some(Duration::from_secs(3)),
                None
            ]
        );
    }

    proptest! {
        #[test]
        fn a_delay_stays_within_its_jitter_band_and_the_cap(attempt in 1u32..100, jitter in 0.0f64..1.0, init_ms in 1u64..100_000, max_ms in 1u64..10_000_000) {
            let p = RetryPolicy { max_attempts: 100, initial_delay: Duration::from_millis(init_ms), max_delay: Duration::from_millis(max_ms) };
            if let Some(d) = p.delay_after(attempt, jitter) {
                prop_assert!(d <= p.max_delay);
                let nominal = p.initial_delay.saturating_mul(2u32.saturating_pow(attempt - 1)).min(p.max_delay);
                prop_assert!(d >= nominal.mul_f64(0.8) - Duration::from_micros(1));
            }
        }
    }
}
