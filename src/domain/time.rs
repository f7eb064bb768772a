//! Wall-clock instants as milliseconds since the Unix epoch: what the stores keep,
//! and what the API renders as RFC 3339.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// This instant plus `d`, to the millisecond (saturating).
    pub fn plus(self, d: std::time::Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// The instant, to the millisecond.
    pub fn from_offset(t: OffsetDateTime) -> Self {
        Self((t.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    /// RFC 3339 in UTC with exactly three fractional digits, e.g.
    /// `2026-11-26T14:08:06.120Z`, the same from both stores.
    pub fn to_rfc3339(self) -> String {
        const MILLIS: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .ok()
            .and_then(|t| t.format(MILLIS).ok())
            .unwrap_or_else(|| self.0.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc3339_in_utc() {
        assert_eq!(
            Timestamp::from_millis(1_764_165_686_123).to_rfc3339(),
            "2025-11-26T14:01:26.123Z"
        );
    }

    #[test]
    fn always_has_three_fractional_digits() {
        assert_eq!(
            Timestamp::from_millis(1_764_165_686_120).to_rfc3339(),
            "2025-11-26T14:01:26.120Z"
        );
        assert_eq!(
            Timestamp::from_millis(1_764_165_686_000).to_rfc3339(),
            "2025-11-26T14:01:26.000Z"
        );
    }
}
