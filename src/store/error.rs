//! The store's errors: each keeps its cause, so a log line shows the whole chain.

use std::sync::Arc;

use thiserror::Error;

use super::{AttemptOutcome, JobState};

/// The cause of a store error, shared so that every request of a failed batch can carry it.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// Too many requests are waiting for the writer; try again shortly.
    #[error("the store is overloaded")]
    Overloaded,
    /// The store could not commit or answer (disk full, read-only, database down, shut down).
    #[error("the store is unavailable: {what}")]
    Unavailable {
        what: String,
        #[source]
        source: Option<Cause>,
    },
    /// The store refused the operation for a reason retrying will not change: a
    /// constraint, a type, a statement wrong for the schema (a bug). Answered 500 with
    /// the cause logged, never 503: a client must not retry it forever.
    #[error("the store refused the operation: {what}")]
    Failed {
        what: String,
        #[source]
        source: Option<Cause>,
    },
    /// Stored data could not be read back.
    #[error("stored data is unreadable: {what}")]
    Corrupt {
        what: String,
        #[source]
        source: Option<Cause>,
    },
}

impl StoreError {
    /// Unavailable, with a cause of the store's driver.
    pub fn unavailable(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Unavailable {
            what: what.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// Unavailable, for a reason of the store's own (shut down, writer stopped).
    pub fn down(what: impl Into<String>) -> Self {
        StoreError::Unavailable {
            what: what.into(),
            source: None,
        }
    }

    /// Failed: not an outage (see [`StoreError::Failed`]).
    pub fn failed(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Failed {
            what: what.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// Whether retrying later can succeed (an outage, an overload), as opposed to a
    /// refusal or unreadable data.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Overloaded | StoreError::Unavailable { .. }
        )
    }

    pub fn corrupt(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// This error and its causes, `: `-separated, for a log line.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            out.push_str(": ");
            out.push_str(&e.to_string());
            next = e.source();
        }
        out
    }
}

/// A value kept in a text column that must be one of a fixed set; anything else is
/// corruption, never a default.
#[derive(Debug, Error)]
#[error("{column} holds {value:?}, which is not one of its values")]
pub struct BadValue {
    column: &'static str,
    value: String,
}

impl JobState {
    pub fn from_column(s: &str) -> Result<Self, StoreError> {
        Self::parse(s).ok_or_else(|| {
            StoreError::corrupt(
                "a job row",
                BadValue {
                    column: "jobs.state",
                    value: s.to_owned(),
                },
            )
        })
    }
}

impl AttemptOutcome {
    pub fn from_column(s: &str) -> Result<Self, StoreError> {
        [
            AttemptOutcome::Succeeded,
            AttemptOutcome::Failed,
            AttemptOutcome::Lost,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or_else(|| {
            StoreError::corrupt(
                "an attempt row",
                BadValue {
                    column: "attempts.outcome",
                    value: s.to_owned(),
                },
            )
        })
    }
}
