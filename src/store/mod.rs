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

use crate::config::{StoreSettings, StoreUrl};
pub use crate::domain::JtiUse;
pub use crate::domain::ingest::{ActionRef, Bot, Refusal};
use crate::domain::{Conversation, Timestamp};

mod error;
mod model;
mod rows;

pub use error::*;
pub use model::*;
pub use rows::RETRY_BATCH;
pub(crate) use rows::*;

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
    /// whose destination is one of `known`, and leases them until now + `lease`. A job for
    /// a destination this instance does not know is left to one that does.
    async fn claim_jobs(
        &self,
        limit: usize,
        lease: std::time::Duration,
        known: Known,
    ) -> Result<Vec<ClaimedJob>, StoreError>;

    /// Claims, for each `(destination, room)`, up to `room` of that destination's due jobs
    /// (as [`Store::claim_jobs`] does for one), in one go: one statement on PostgreSQL, one
    /// writer command on SQLite, however many destinations have room.
    async fn claim_each(
        &self,
        rooms: Vec<(String, usize)>,
        lease: std::time::Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError>;

    /// Moves pending jobs due since `due_before` whose destination is not `known` to
    /// `orphaned`, with the reason; returns how many.
    async fn orphan_unknown(&self, known: Known, due_before: Timestamp) -> Result<u64, StoreError>;

    /// Applies an operator's decision to one job; `None` for an unknown job, else whether
    /// it applied (false: the job's state does not allow it).
    async fn decide(&self, id: &str, decision: Decision) -> Result<Option<bool>, StoreError>;

    /// Gives a claimed job back without attempting it: pending (due as before, so at once),
    /// the attempt its claim counted taken back. False if the lease was lost meanwhile (the job is its new
    /// holder's). For a job claimed ahead that may no longer run when its turn comes (the
    /// instance stops, the destination paused or changed, its lease too short for it).
    async fn release(&self, job: &ClaimedJob) -> Result<bool, StoreError>;

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
    ) -> Result<ConversationList, StoreError>;

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

    /// The conversations with this id among `bots`' (one key lookup per bot: no index
    /// by conversation id alone, which would cost every new conversation a random page
    /// write), newest first.
    async fn find_conversation(
        &self,
        bots: Vec<String>,
        conversation_id: &str,
    ) -> Result<Vec<FoundConversation>, StoreError>;

    /// Job counts per bot, action and state, and up to `limit` attempts started since
    /// `since`, newest first.
    async fn destination_rows(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<DestinationRows, StoreError>;

    /// Adds an instance's counts to the traffic buckets (summed with other instances').
    async fn add_traffic(&self, buckets: Vec<TrafficBucket>) -> Result<(), StoreError>;

    /// The traffic buckets since `since`, oldest first.
    async fn traffic(&self, since: Timestamp) -> Result<Vec<TrafficBucket>, StoreError>;

    /// How many conversations are active, across bots.
    async fn count_active(&self) -> Result<u64, StoreError>;

    /// Removes traffic buckets older than `before`; returns how many.
    async fn purge_traffic(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// Deletes up to `limit` succeeded and discarded jobs (with their attempts) last
    /// changed before `before`; dead, orphaned, pending and running jobs are kept.
    async fn purge_finished_jobs(&self, before: Timestamp, limit: usize)
    -> Result<u64, StoreError>;

    /// Stores a summary under its id (its job's) unless a COMPLETED one is stored there
    /// already (a job that ran again); a FAILED one is replaced (an operator's retry).
    /// When stored, its deliveries are scheduled in the same transaction. True if stored.
    async fn put_summary(&self, summary: NewSummary) -> Result<bool, StoreError>;

    /// A conversation's summaries (their JSON), oldest first, at most 1,000.
    async fn summaries(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<Vec<String>, StoreError>;

    /// The schema version the database is at, and the newest this build knows (a newer
    /// database is one a newer instance migrated: see docs/upgrades.md).
    async fn schema_version(&self) -> Result<SchemaVersion, StoreError>;

    /// Succeeds when the store can take writes and answer reads.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Commits what is queued and stops; later calls fail with `Unavailable`.
    async fn close(&self);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion {
    pub current: u32,
    pub known: u32,
}

/// Opens the store named by the configuration's URL.
pub async fn open(
    settings: &StoreSettings,
    clock: crate::clock::SharedClock,
) -> Result<Arc<dyn Store>, StoreError> {
    match &settings.url {
        StoreUrl::Postgres(url) => Ok(Arc::new(
            postgres::PostgresStore::open(url, settings, clock).await?,
        )),
        StoreUrl::Sqlite(path) => Ok(Arc::new(
            sqlite::SqliteStore::open(path, settings, clock).await?,
        )),
    }
}
