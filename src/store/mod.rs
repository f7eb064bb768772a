//! Persistence behind one trait, so the HTTP layer never sees SQL.
//!
//! A store applies a whole request atomically: the request's events, the
//! conversation's new state and (for apps that enforce JTI) the used `jti` commit in
//! one transaction or not at all, and `ingest` returns only after that commit is
//! durable. The lifecycle rules come from [`crate::domain::Conversation::apply`].

pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

use crate::auth::JtiUse;
use crate::config::{StoreSettings, StoreUrl};
use crate::domain::{Conversation, Event, Status, Timestamp};

/// One request's worth of events for one conversation.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub bot_id: String,
    pub conversation_id: String,
    pub events: Vec<Event>,
    /// Recorded in the same transaction; a `jti` already recorded makes the request a replay.
    pub jti: Option<JtiUse>,
    /// The bot's post-conversation actions: if this request ends the conversation, one
    /// job per entry is scheduled in the same transaction.
    pub on_end: Arc<[ActionRef]>,
}

/// What the store needs to know of an action to schedule its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRef {
    pub name: String,
    pub kind: &'static str,
    pub max_attempts: u32,
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
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListedConversation {
    pub conversation: StoredConversation,
    pub sort_at: Timestamp,
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

#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    /// Set once retention removed the log (or the messages of it).
    pub events_purged_at: Option<Timestamp>,
    pub transcript_purged_at: Option<Timestamp>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Committed durably.
    Accepted {
        stored: u32,
        duplicate_ends: u32,
        /// This request ended the conversation.
        ended: bool,
    },
    /// A non-end event for a conversation that had ended; nothing was stored.
    EndedAlready { ended_at: Timestamp },
    /// The token's `jti` was used before; nothing was stored.
    Replay,
}

/// A conversation as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredConversation {
    pub bot_id: String,
    pub conversation_id: String,
    pub state: Conversation,
}

#[derive(Debug, Error)]
pub enum StoreError {
    /// Too many requests are waiting for the writer; try again shortly.
    #[error("the store is overloaded")]
    Overloaded,
    /// The store could not commit or answer (disk full, read-only, database down, shut down).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
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

    /// A conversation's log from event `after + 1` on, at most `limit` entries; only the
    /// events named `only` when given. `None` for an unknown conversation.
    async fn events(
        &self,
        bot_id: &str,
        conversation_id: &str,
        only: Option<&'static str>,
        after: u64,
        limit: usize,
    ) -> Result<Option<EventPage>, StoreError>;

    /// Ends (through the same path as a client's end, jobs included) up to `limit` active
    /// conversations of the bot with no event since `idle_since`. Returns their ids.
    async fn expire_inactive(
        &self,
        bot_id: &str,
        idle_since: Timestamp,
        timeout_ms: i64,
        on_end: Arc<[ActionRef]>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

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

/// What one request did to a conversation, computed by the domain for any store.
pub(crate) struct AppliedRequest<'a> {
    /// The events to append, with their sequence numbers.
    pub stored: Vec<(u64, &'a Event)>,
    pub duplicate_ends: u32,
    /// This request ended the conversation (jobs are due).
    pub ended: bool,
}

/// Applies a request's events in order; refuses the whole request if one comes after the end.
pub(crate) fn apply_request<'a>(
    conv: &mut Conversation,
    events: &'a [Event],
    now: Timestamp,
) -> Result<AppliedRequest<'a>, crate::domain::EndedAfter> {
    let was_ended = conv.is_ended();
    let mut applied = AppliedRequest {
        stored: Vec::with_capacity(events.len()),
        duplicate_ends: 0,
        ended: false,
    };
    for event in events {
        match conv.apply(&event.kind, now)? {
            crate::domain::Applied::Stored { seq } => applied.stored.push((seq, event)),
            crate::domain::Applied::DuplicateEnd => applied.duplicate_ends += 1,
        }
    }
    applied.ended = !was_ended && conv.is_ended();
    Ok(applied)
}

impl AppliedRequest<'_> {
    pub fn outcome(&self) -> IngestOutcome {
        IngestOutcome::Accepted {
            stored: self.stored.len() as u32,
            duplicate_ends: self.duplicate_ends,
            ended: self.ended,
        }
    }
}

/// The payload of an end's jobs: the record as it stands at the end.
pub(crate) fn job_payload(bot_id: &str, conversation_id: &str, conv: &Conversation) -> String {
    serde_json::to_string(&crate::domain::ConversationRecord::new(
        bot_id,
        conversation_id,
        conv,
    ))
    .unwrap_or_default()
}

/// A job id: a UUIDv7, so ids grow with time and each new job (and its attempts, keyed by
/// it) lands at the right edge of its index instead of a random leaf page.
pub(crate) fn new_job_id() -> String {
    format!("job_{}", uuid::Uuid::now_v7().simple())
}

/// The log entry of the server's own end for inactivity.
pub(crate) fn inactivity_event(idle_since: Timestamp, timeout_ms: i64) -> String {
    serde_json::json!({
        "name": "INACTIVITY_TIMEOUT",
        "reason": crate::domain::conversation::INACTIVITY_REASON,
        "lastEventAt": idle_since.to_rfc3339(),
        "inactivityTimeoutMs": timeout_ms,
    })
    .to_string()
}

pub(crate) const LOST_ATTEMPT: &str =
    "the worker stopped before recording this attempt; its lease expired";
