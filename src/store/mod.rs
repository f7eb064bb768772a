//! Persistence behind one trait, so the HTTP layer never sees SQL.
//!
//! A store applies a whole request atomically: the request's events, the
//! conversation's new state and (for apps that enforce JTI) the used `jti` commit in
//! one transaction or not at all, and `ingest` returns only after that commit is
//! durable. What a write does is decided by [`crate::domain::ingest`]: a store loads
//! the state, asks the domain for a plan, and writes the plan; it decides nothing.

pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

use crate::config::{StoreSettings, StoreUrl};
pub use crate::domain::JtiUse;
pub use crate::domain::ingest::{ActionRef, Bot, Refusal};
use crate::domain::{Conversation, Event, Status, Timestamp};

/// One request's worth of events for one conversation.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub bot_id: String,
    pub conversation_id: String,
    pub events: Vec<Event>,
    /// Recorded in the same transaction; a `jti` already recorded makes the request a replay.
    pub jti: Option<JtiUse>,
    /// The bot's actions (one job each when this request ends the conversation, in the
    /// same transaction) and caps.
    pub bot: Bot,
}

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
}

impl JobState {
    pub const ALL: [JobState; 4] = [
        JobState::Pending,
        JobState::Running,
        JobState::Succeeded,
        JobState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// A job a worker has claimed: it holds the lease until `lease_until`.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: String,
    pub bot_id: String,
    pub conversation_id: String,
    pub action: String,
    pub kind: String,
    /// This attempt's number, 1-based.
    pub attempt: u32,
    pub max_attempts: u32,
    /// The conversation record at the end, JSON.
    pub payload: String,
    pub created_at: Timestamp,
    /// Proves the lease when the attempt is recorded; a stale worker's record is refused.
    pub lease_token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
    /// The worker stopped (crash, kill) before recording the attempt; its lease expired.
    Lost,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Lost => "lost",
        }
    }
}

/// One attempt at a job, as recorded.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    pub attempt: u32,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String)]
    pub started_at: Timestamp,
    pub duration_ms: u64,
    pub outcome: AttemptOutcome,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    /// The receiver's answer, truncated.
    pub response: Option<String>,
}

/// What happens to a job after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Succeeded,
    RetryAt(Timestamp),
    Dead,
}

/// A job as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    pub bot_id: String,
    pub conversation_id: String,
    pub action: String,
    pub kind: String,
    pub state: JobState,
    pub attempts: u32,
    pub max_attempts: u32,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String)]
    pub updated_at: Timestamp,
    /// When a pending job is next due.
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String)]
    pub due_at: Timestamp,
    pub last_error: Option<String>,
    /// The job's attempts, oldest first (only when one job is shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_log: Option<Vec<AttemptRecord>>,
    /// Opaque; pass as `cursor` to list what comes after this job.
    #[serde(skip)]
    #[schema(ignore)]
    pub cursor: i64,
}

fn rfc3339<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339())
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub bot_id: Option<String>,
    pub conversation_id: Option<String>,
    pub limit: usize,
    /// List jobs older than this cursor (newest first).
    pub before: Option<i64>,
}

/// Which dead jobs to put back in the queue.
#[derive(Debug, Clone)]
pub enum RetryTarget {
    Job(String),
    DeadOfBot(String),
}

/// Which conversations of a bot to list, newest first by `endedAt` (or `lastEventAt`
/// while active).
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    pub status: Option<Status>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub limit: usize,
    /// Keyset cursor: the `(sort time, conversation id)` of the last one already seen.
    pub after: Option<(Timestamp, String)>,
    /// Stop after the conversation whose stored state takes the page to this many bytes
    /// (a page holds at least one); `None`: only `limit` counts.
    pub max_bytes: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListedConversation {
    pub conversation: StoredConversation,
    pub sort_at: Timestamp,
    /// The size of its stored state, counted against the page's `max_bytes`.
    pub bytes: usize,
}

/// One entry of a conversation's event log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub name: String,
    pub received_at: Timestamp,
    /// The event's JSON as received.
    pub body: String,
}

/// Which entries of a conversation's log to read: from event `after + 1` on, at most
/// `limit`, only the events named `only` when given.
#[derive(Debug, Clone, Copy)]
pub struct EventQuery<'a> {
    pub bot_id: &'a str,
    pub conversation_id: &'a str,
    pub only: Option<&'static str>,
    pub after: u64,
    pub limit: usize,
    /// Stop after the entry whose body takes the page to this many bytes (a page holds
    /// at least one); `None`: only `limit` counts.
    pub max_bytes: Option<usize>,
}

/// Keeps items while the bytes before each stay under `max_bytes`: the item that reaches
/// the budget is the page's last, and a page holds at least one.
pub(crate) fn within_budget<T>(
    items: impl Iterator<Item = Result<T, StoreError>>,
    max_bytes: Option<usize>,
    size: impl Fn(&T) -> usize,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    let mut total = 0usize;
    for item in items {
        if max_bytes.is_some_and(|max| total >= max) {
            break;
        }
        let item = item?;
        total += size(&item);
        out.push(item);
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    /// Set once retention removed the log (or the messages of it).
    pub events_purged_at: Option<Timestamp>,
    pub transcript_purged_at: Option<Timestamp>,
}

/// An inactivity sweep of one bot.
#[derive(Debug, Clone)]
pub struct Expiry {
    pub bot_id: String,
    /// Conversations with no event since this instant are ended.
    pub idle_since: Timestamp,
    /// The bot's `inactivity_timeout`, recorded in the log entry.
    pub timeout_ms: i64,
    pub on_end: Arc<[ActionRef]>,
    /// At most this many per call.
    pub limit: usize,
}

/// Retention: what of ended conversations to remove, by end time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purge {
    /// Whole event logs of conversations that ended before this.
    pub events_before: Option<Timestamp>,
    /// Messages (the transcript) of conversations that ended before this.
    pub transcript_before: Option<Timestamp>,
}

/// Counts for metrics.
#[derive(Debug, Clone, Default)]
pub struct JobStats {
    /// (kind, state, count)
    pub by_kind_and_state: Vec<(String, JobState, u64)>,
    /// Pending jobs whose due time has come.
    pub due: u64,
    /// Age of the oldest due job.
    pub oldest_due_age: Option<std::time::Duration>,
}

impl JobStats {
    /// From `(kind, state, count)` rows and the count and earliest due time of due jobs.
    pub(crate) fn from_rows(
        rows: Vec<(String, String, i64)>,
        due: i64,
        oldest_due: Option<i64>,
        now: Timestamp,
    ) -> Result<Self, StoreError> {
        Ok(JobStats {
            by_kind_and_state: rows
                .into_iter()
                .map(|(kind, state, n)| Ok((kind, JobState::from_column(&state)?, n.max(0) as u64)))
                .collect::<Result<_, StoreError>>()?,
            due: due.max(0) as u64,
            oldest_due_age: oldest_due
                .map(|t| std::time::Duration::from_millis((now.millis() - t).max(0) as u64)),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Committed durably.
    Accepted {
        stored: u32,
        duplicate_ends: u32,
        /// This request ended the conversation.
        ended: bool,
    },
    /// The domain refused the request as a whole; nothing was stored.
    Refused(Refusal),
    /// The token's `jti` was used before; nothing was stored.
    Replay,
}

impl From<crate::domain::ingest::Accepted> for IngestOutcome {
    fn from(a: crate::domain::ingest::Accepted) -> Self {
        IngestOutcome::Accepted {
            stored: a.stored,
            duplicate_ends: a.duplicate_ends,
            ended: a.ended,
        }
    }
}

/// A conversation as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredConversation {
    pub bot_id: String,
    pub conversation_id: String,
    pub state: Conversation,
}

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

/// The columns a job is read with, in [`JobColumns`]' order; the same SQL on both stores.
pub(crate) const JOB_COLUMNS: &str = "seq, id, bot_id, conversation_id, action, kind, \
    CAST(attempts AS BIGINT), CAST(max_attempts AS BIGINT), created_at, updated_at, due_at, last_error, state";

/// A job row as read with [`JOB_COLUMNS`].
pub(crate) type JobColumns = (
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    String,
);

impl JobView {
    pub(crate) fn from_columns(c: JobColumns) -> Result<Self, StoreError> {
        let (cursor, id, bot_id, conversation_id, action, kind, attempts, max_attempts) =
            (c.0, c.1, c.2, c.3, c.4, c.5, c.6, c.7);
        Ok(JobView {
            cursor,
            id,
            bot_id,
            conversation_id,
            action,
            kind,
            attempts: attempts.clamp(0, u32::MAX as i64) as u32,
            max_attempts: max_attempts.clamp(0, u32::MAX as i64) as u32,
            created_at: Timestamp::from_millis(c.8),
            updated_at: Timestamp::from_millis(c.9),
            due_at: Timestamp::from_millis(c.10),
            last_error: c.11,
            state: JobState::from_column(&c.12)?,
            attempt_log: None,
        })
    }
}

/// The attempts of one job, oldest first, in [`AttemptColumns`]' order.
pub(crate) const ATTEMPTS_OF_JOB: &str = "SELECT CAST(attempt AS BIGINT), started_at, duration_ms, outcome, \
    CAST(status_code AS BIGINT), error, response FROM attempts WHERE job_id = $1 ORDER BY attempt";

pub(crate) type AttemptColumns = (
    i64,
    i64,
    i64,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
);

impl AttemptRecord {
    pub(crate) fn from_columns(c: AttemptColumns) -> Result<Self, StoreError> {
        Ok(AttemptRecord {
            attempt: c.0.clamp(0, u32::MAX as i64) as u32,
            started_at: Timestamp::from_millis(c.1),
            duration_ms: c.2.max(0) as u64,
            outcome: AttemptOutcome::from_column(&c.3)?,
            status_code: c.4.and_then(|s| u16::try_from(s).ok()),
            error: c.5,
            response: c.6,
        })
    }
}

impl Purge {
    /// Each rule that is set: its cut-off, the column that marks it done, and whether it
    /// removes only the messages (the transcript) rather than the whole log.
    pub(crate) fn steps(self) -> impl Iterator<Item = (Timestamp, &'static str, bool)> {
        [
            (self.events_before, "events_purged_at", false),
            (self.transcript_before, "transcript_purged_at", true),
        ]
        .into_iter()
        .filter_map(|(before, column, only_messages)| before.map(|b| (b, column, only_messages)))
    }
}

/// Where a job goes after an attempt: its new state, and when it is next due.
pub(crate) fn after_attempt(next: NextStep, now: Timestamp) -> (JobState, Timestamp) {
    match next {
        NextStep::Succeeded => (JobState::Succeeded, now),
        NextStep::RetryAt(at) => (JobState::Pending, at),
        NextStep::Dead => (JobState::Dead, now),
    }
}

/// The state a plan writes; never an empty text (a state that failed to serialize would
/// make the conversation unreadable for good).
pub(crate) fn plan_state<'p>(
    plan: &'p crate::domain::ingest::Plan<'_>,
) -> Result<&'p str, StoreError> {
    if plan.state_json.is_empty() {
        return Err(StoreError::Corrupt {
            what: "a conversation's new state could not be serialized; nothing was written".into(),
            source: None,
        });
    }
    Ok(&plan.state_json)
}

/// Parses a conversation's stored state.
pub(crate) fn parse_state(json: &str) -> Result<Conversation, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::corrupt("a conversation's state", e))
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies and durably commits one request.
    async fn ingest(&self, ingest: Ingest) -> Result<IngestOutcome, StoreError>;

    /// Records a `jti` for a request that stores nothing (reads); false if it was used before.
    async fn consume_jti(&self, jti: JtiUse) -> Result<bool, StoreError>;

    async fn conversation(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<Option<StoredConversation>, StoreError>;

    /// Claims up to `limit` due jobs (pending and due, or running with an expired lease)
    /// and leases them until now + `lease`.
    async fn claim_jobs(
        &self,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError>;

    /// Records an attempt and moves the job on; false if the lease was lost meanwhile
    /// (the attempt is recorded all the same, the job is left to its new holder).
    async fn finish_attempt(
        &self,
        job: &ClaimedJob,
        attempt: AttemptRecord,
        next: NextStep,
    ) -> Result<bool, StoreError>;

    async fn list_conversations(
        &self,
        bot_id: &str,
        filter: ConversationFilter,
    ) -> Result<Vec<ListedConversation>, StoreError>;

    /// A page of a conversation's log; `None` for an unknown conversation.
    async fn events(&self, q: EventQuery<'_>) -> Result<Option<EventPage>, StoreError>;

    /// Ends (through the same path as a client's end, jobs included) up to `limit` active
    /// conversations of the bot with no event since `idle_since`. Returns their ids.
    async fn expire_inactive(&self, e: Expiry) -> Result<Vec<String>, StoreError>;

    /// Applies retention to up to `limit` conversations of the bot; returns how many.
    async fn purge(&self, bot_id: &str, purge: Purge, limit: usize) -> Result<u64, StoreError>;

    /// Forgets up to `limit` used `jti`s whose token expired before `before`: such a token
    /// is refused as expired before its `jti` is looked at, so a replay stays impossible.
    /// (A `jti` of a token without `exp` is kept for good.) Returns how many went.
    async fn purge_jti(&self, before: Timestamp, limit: usize) -> Result<u64, StoreError>;

    async fn list_jobs(&self, filter: JobFilter) -> Result<Vec<JobView>, StoreError>;

    /// One job with its attempts.
    async fn job(&self, id: &str) -> Result<Option<JobView>, StoreError>;

    /// Puts dead jobs back in the queue, due now, each with a fresh attempt budget.
    /// Returns how many were dead and are now pending.
    async fn retry_dead(&self, target: RetryTarget) -> Result<u64, StoreError>;

    async fn job_stats(&self) -> Result<JobStats, StoreError>;

    /// Succeeds when the store can take writes and answer reads.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Commits what is queued and stops; later calls fail with `Unavailable`.
    async fn close(&self);
}

/// Opens the store named by the configuration's URL.
pub async fn open(settings: &StoreSettings) -> Result<Arc<dyn Store>, StoreError> {
    match &settings.url {
        StoreUrl::Postgres(url) => Ok(Arc::new(
            postgres::PostgresStore::open(url, settings).await?,
        )),
        StoreUrl::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(path, settings).await?)),
    }
}

/// A job id: a UUIDv7, so ids grow with time and each new job (and its attempts, keyed by
/// it) lands at the right edge of its index instead of a random leaf page.
pub(crate) fn new_job_id() -> String {
    format!("job_{}", uuid::Uuid::now_v7().simple())
}

pub(crate) const LOST_ATTEMPT: &str =
    "the worker stopped before recording this attempt; its lease expired";
