//! What the stores take and give: requests, jobs, pages, filters.

use std::sync::Arc;

use super::{ActionRef, Bot, JtiUse, Refusal};
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

pub use crate::domain::outbox::{JobState, NextStep};

/// A job a worker has claimed: the claim marked it running and leased it until the claim's
/// time plus the `lease` given to `Store::claim_jobs` or `Store::claim_each` (the end of the
/// lease is kept in the job's row in the store, not here); `lease_token` proves this
/// claim's lease.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: String,
    pub bot_id: String,
    pub conversation_id: String,
    pub action: String,
    pub kind: String,
    /// The destination's identity the job was scheduled for ('' for jobs from before).
    pub destination: String,
    /// What it delivers or makes.
    pub event: crate::domain::outbox::JobEvent,
    /// The event number of the summary trigger it came from; `None` for the end's.
    pub trigger: Option<u64>,
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

/// A job as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    pub bot_id: String,
    pub conversation_id: String,
    pub action: String,
    pub kind: String,
    /// The destination's identity (`webhook:crm@st-1`: its kind, name and bot); empty for
    /// jobs from before it.
    pub destination: String,
    /// `conversation.ended`, `conversation.summarized` or `summary`.
    pub event: String,
    /// The event number of the summary trigger it came from; absent for the end's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<u64>,
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
    /// For a pending job past its due time: how long it has waited for a worker (an
    /// instance that knows its destination, say, during a rolling deploy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overdue_ms: Option<u64>,
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
    /// The action's name.
    pub action: Option<String>,
    /// Only jobs created at or after this instant.
    pub since: Option<Timestamp>,
    /// Only jobs created before this instant.
    pub until: Option<Timestamp>,
    pub limit: usize,
    /// List jobs older than this cursor (newest first).
    pub before: Option<i64>,
}

/// The destinations an instance knows (its configuration's), as stored with the jobs;
/// always with `""`, the jobs from before destinations were recorded.
pub type Known = Arc<[String]>;

/// An operator's decision about one job.
#[derive(Debug, Clone)]
pub enum Decision {
    /// A dead or orphaned job is given up for good.
    Discard,
    /// A dead, orphaned or pending job is pointed at this action instead, due now with the
    /// action's attempts; its name becomes `<action> (re-pointed from <old name>)`, so it
    /// stays apart from the job the action has of its own for the conversation.
    Repoint {
        to: ActionRef,
        /// The job's destination when the operator chose: a job moved meanwhile (by
        /// another re-point) is left alone.
        from: String,
    },
}

/// Which dead jobs to put back in the queue.
#[derive(Debug, Clone)]
pub enum RetryTarget {
    /// One job: a dead one goes back in the queue with a fresh attempt budget, a pending
    /// one (waiting out its backoff) is made due now with the attempts it has left.
    Job(String),
    /// Every dead job of the bot whose destination is one of `known` (a job whose
    /// destination is gone would only die again).
    DeadOfBot { bot: String, known: Known },
    /// Every dead job of one action of a bot created at or after `since` (and before
    /// `until`, when given) — a destination that failed for a while, fixed now — if its
    /// destination is one of `known`.
    DeadOfAction {
        bot: String,
        action: String,
        since: Timestamp,
        until: Option<Timestamp>,
        known: Known,
    },
}

/// Where a conversation id is found, across bots.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundConversation {
    pub bot_id: String,
    pub conversation_id: String,
    pub status: Status,
    pub sort_at: Timestamp,
}

/// One destination's jobs: counts by state, and its attempts since a given instant
/// (newest first, at most a bounded number).
#[derive(Debug, Clone, Default)]
pub struct DestinationRows {
    /// `(bot, action, state, count)`.
    pub counts: Vec<(String, String, JobState, u64)>,
    /// Newest first, without their error text.
    pub attempts: Vec<RecentAttempt>,
    /// The newest failed attempts (at most 500), with their error text.
    pub failures: Vec<RecentAttempt>,
}

/// An attempt as the destination statistics read it.
#[derive(Debug, Clone)]
pub struct RecentAttempt {
    pub bot_id: String,
    pub action: String,
    pub started_at: Timestamp,
    pub duration_ms: u64,
    pub succeeded: bool,
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

/// Traffic of one 10-second bucket, as counted by the instances (summed across them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficBucket {
    /// Start of the bucket, in milliseconds since the epoch (a multiple of 10,000).
    pub at_ms: i64,
    pub events: u64,
    pub ends: u64,
    pub duplicate_ends: u64,
}

/// Which conversations of a bot to list, newest first by `endedAt` (or `lastEventAt`
/// while active).
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    pub status: Option<Status>,
    /// Only conversations carrying every one of these tags ([`crate::domain::tags`]);
    /// the first is read through its index, so the most selective should come first.
    pub tags: Vec<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub limit: usize,
    /// Keyset cursor: the `(sort time, conversation id)` of the last one already seen.
    pub after: Option<(Timestamp, String)>,
    /// Stop after the conversation whose stored state takes the page to this many bytes
    /// (a page holds at least one); `None`: only `limit` counts.
    pub max_bytes: Option<usize>,
    /// With a tag or status filter, examine at most this many conversations of the index
    /// the list is read through (0: no bound); the list then says where it stopped.
    pub scan: usize,
}

/// A page of conversations, and where examining stopped when the scan bound was reached
/// before the page filled (more may match after it: continue from there).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationList {
    pub listed: Vec<ListedConversation>,
    /// The `(sort time, conversation id)` of the last conversation examined, when
    /// `scan` conversations were examined.
    pub examined_to: Option<(Timestamp, String)>,
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
///
/// A transcript's retention reaches every copy of its text: the messages, the summaries
/// (which quote them), and the summaries in the conversation's jobs' payloads. An end's
/// payload carries the summaries COMPLETED by then (`summaries`) and a
/// `conversation.summarized` payload one (`summary.text`, `summary.sections`): when the
/// transcript (or the whole log) is purged they become `[]`, and `""` and `null`, in
/// every job of the conversation whatever its state — a dead job retried later delivers
/// the record without the text. The rest of a payload (counts, agents, times) stays.
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
    /// How long the oldest job waiting for an operator (dead, or orphaned) has waited: since
    /// it died, or since it fell due for an orphan.
    pub oldest_waiting_age: Option<std::time::Duration>,
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

/// A summary to store (see [`super::Store::put_summary`]).
#[derive(Debug, Clone)]
pub struct NewSummary {
    pub bot_id: String,
    pub conversation_id: String,
    /// Its job's id.
    pub summary_id: String,
    pub at: Timestamp,
    /// The summary's JSON.
    pub body: String,
    /// The `conversation.summarized` deliveries: scheduled in the same transaction, and
    /// only when this summary is stored (a job that runs again schedules none).
    pub deliveries: Option<crate::domain::ingest::Jobs>,
}
