//! Wall-clock instants as milliseconds since the Unix epoch: what the stores keep,
//! and what the API renders as RFC 3339.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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

    /// The instant, to the millisecond.
    pub fn from_offset(t: OffsetDateTime) -> Self {
        Self((t.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-26T14:08:06.123Z`.
    pub fn to_rfc3339(self) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
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
}
