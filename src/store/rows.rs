//! What both stores share below the trait: the columns jobs and attempts are read
//! with and their conversion, page budgets, retention steps, job ids, and the checks on
//! a state read or written. Not the rules of a write: those are the domain's plan.

use super::*;
use crate::domain::Timestamp;
use crate::domain::outbox::Operation;

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

impl JobStats {
    /// From `(kind, state, count)` rows, the count and earliest due time of due jobs, and
    /// the earliest due time of the dead and orphaned ones.
    pub(crate) fn from_rows(
        rows: Vec<(String, String, i64)>,
        due: i64,
        oldest_due: Option<i64>,
        oldest_waiting: Option<i64>,
        now: Timestamp,
    ) -> Result<Self, StoreError> {
        let age = |t: Option<i64>| {
            t.map(|t| std::time::Duration::from_millis((now.millis() - t).max(0) as u64))
        };
        Ok(JobStats {
            by_kind_and_state: rows
                .into_iter()
                .map(|(kind, state, n)| Ok((kind, JobState::from_column(&state)?, n.max(0) as u64)))
                .collect::<Result<_, StoreError>>()?,
            due: due.max(0) as u64,
            oldest_due_age: age(oldest_due),
            oldest_waiting_age: age(oldest_waiting),
        })
    }
}

/// The earliest due time of the jobs waiting for an operator: a dead job's is when it died,
/// an orphan's when it fell due. Two steps of the `(state, due_at)` index.
pub(crate) const OLDEST_WAITING: &str = "SELECT min(t) FROM (
        SELECT (SELECT min(due_at) FROM jobs WHERE state = 'dead') AS t
        UNION ALL SELECT (SELECT min(due_at) FROM jobs WHERE state = 'orphaned')) w";

/// A claimed job given back unattempted: pending, its claim's attempt taken back, its due
/// time kept (already past: it keeps its place, oldest first) (`$1` id, `$2` lease token,
/// `$3` now). Only while the lease is still this holder's.
pub(crate) const RELEASE: &str = "UPDATE jobs SET state = 'pending', updated_at = $3,
        attempts = attempts - 1, lease_until = NULL, lease_token = NULL
     WHERE id = $1 AND lease_token = $2 AND state = 'running'";

/// Every destination that has jobs (but `''`), walked through the index led by it.
pub(crate) const DESTINATIONS: &str = "WITH RECURSIVE d(x) AS (
        SELECT (SELECT min(destination) FROM jobs WHERE destination > '')
        UNION ALL
        SELECT (SELECT min(destination) FROM jobs WHERE destination > d.x) FROM d WHERE d.x IS NOT NULL)
    SELECT x FROM d WHERE x IS NOT NULL";

/// The columns a job is read with, in [`JobColumns`]' order; the same SQL on both stores.
pub(crate) const JOB_COLUMNS: &str = "seq, id, bot_id, conversation_id, action, kind, \
    CAST(attempts AS BIGINT), CAST(max_attempts AS BIGINT), created_at, updated_at, due_at, last_error, state, \
    destination, event, CAST(trigger_seq AS BIGINT)";

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
    String,
    String,
    Option<i64>,
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
            destination: c.13,
            event: c.14,
            trigger: c.15.and_then(|t| u64::try_from(t).ok()),
            overdue_ms: None,
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
/// An idle conversation the inactivity sweep cannot read: left active, logged and counted
/// (`wrapup_conversations_unreadable_total`), so the bot's other idle conversations still
/// end (it used to abort the whole batch, on every sweep).
pub(crate) fn skipped_unreadable(bot_id: &str, conversation_id: &str, e: &StoreError) {
    tracing::error!(bot_id, conversation_id, error = %e.chain(), "an idle conversation's stored state is unreadable: it was not ended; the others were");
    metrics::counter!("wrapup_conversations_unreadable_total", "bot" => bot_id.to_owned())
        .increment(1);
}

pub(crate) fn parse_state(json: &str) -> Result<Conversation, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::corrupt("a conversation's state", e))
}

/// A job id: a UUIDv7, so ids grow with time and each new job (and its attempts, keyed by
/// it) lands at the right edge of its index instead of a random leaf page.
pub(crate) fn new_job_id() -> String {
    format!("job_{}", uuid::Uuid::now_v7().simple())
}

/// The reason an orphaned job carries, as an SQL expression over its row (both stores).
pub(crate) const ORPHANED: &str = "'the destination it was scheduled for (' || kind || ' action \"' || action || '\") \
    is not in the configuration (removed, or its kind or target changed); re-point it to an action or discard it'";

/// A conversation's `status` column.
pub(crate) fn parse_status(s: &str) -> Result<crate::domain::Status, StoreError> {
    match s {
        "active" => Ok(crate::domain::Status::Active),
        "ended" => Ok(crate::domain::Status::Ended),
        other => Err(StoreError::Corrupt {
            what: format!("conversations.status has an unknown value {other:?}"),
            source: None,
        }),
    }
}

/// A stored conversation's tag rows for the backfill, or `None` (logged) when its state
/// cannot be read: it is then not found by filters, and everything else still works.
pub(crate) fn backfill_rows(
    bot_id: &str,
    conversation_id: &str,
    state: &str,
) -> Option<crate::domain::tags::TagRows> {
    match parse_state(state) {
        Ok(conversation) => Some(conversation.tag_rows()),
        Err(_) => {
            tracing::warn!(%bot_id, %conversation_id, "state unreadable; not indexed by tags");
            None
        }
    }
}

/// Logs the backfill's progress every 100,000 conversations.
pub(crate) fn backfill_progress(done: u64, batch: usize) {
    if done % 100_000 < batch as u64 {
        tracing::info!(conversations = done, "backfilling conversation tags");
    }
}

/// The most jobs one retry by filter puts back in the queue (the answer's `more` says to
/// call again): one call's transaction stays bounded whatever the backlog.
pub const RETRY_BATCH: u64 = 1000;

/// An action's name and the `[since, until)` of its jobs' creation, in milliseconds.
pub(crate) type ActionWindow<'a> = (&'a str, i64, i64);

impl RetryTarget {
    /// One job's retry, or a filter's (which takes only dead jobs).
    pub(crate) fn operation(&self) -> Operation {
        match self {
            RetryTarget::Job(_) => Operation::Retry,
            RetryTarget::DeadOfBot { .. } | RetryTarget::DeadOfAction { .. } => {
                Operation::RetryMany
            }
        }
    }

    /// What [`RetryTarget::sql`] binds: `$2`, `$3` (when the filter reads it) and
    /// `$4`..`$6` (when it has an action).
    pub(crate) fn binds(&self) -> (&str, Option<&Known>, Option<ActionWindow<'_>>) {
        match self {
            RetryTarget::Job(id) => (id, None, None),
            RetryTarget::DeadOfBot { bot, known } => (bot, Some(known), None),
            RetryTarget::DeadOfAction {
                bot,
                action,
                since,
                until,
                known,
            } => (
                bot,
                Some(known),
                Some((
                    action,
                    since.millis(),
                    until.map_or(i64::MAX, |u| u.millis()),
                )),
            ),
        }
    }

    /// The retry as one statement, from the states the domain allows: a dead job gets a
    /// fresh budget, a pending one keeps what it has left. `$1` is now, `$2` the job id or
    /// the bot, `$3` the known destinations (read by the store's `in_known`, e.g.
    /// `destination = ANY($3)`), `$4`..`$6` the action and its created-at window.
    pub(crate) fn sql(&self, in_known: &str) -> String {
        let filter = match self {
            RetryTarget::Job(_) => "id = $2".to_owned(),
            RetryTarget::DeadOfBot { .. } => format!("bot_id = $2 AND {in_known}"),
            RetryTarget::DeadOfAction { .. } => format!(
                "bot_id = $2 AND {in_known} AND action_name = $4 AND created_at >= $5 AND created_at < $6"
            ),
        };
        let states = self.operation().sql_states();
        // A filter takes at most RETRY_BATCH jobs a call (oldest first): the caller asks
        // again while it gets a full batch.
        let filter = match self {
            RetryTarget::Job(_) => format!("state IN ({states}) AND {filter}"),
            _ => format!(
                "seq IN (SELECT seq FROM jobs WHERE state IN ({states}) AND {filter} ORDER BY seq LIMIT {RETRY_BATCH})"
            ),
        };
        format!(
            "UPDATE jobs SET due_at = $1, updated_at = $1,
                 max_attempts = CASE WHEN state = 'dead' THEN attempts + budget ELSE max_attempts END,
                 state = 'pending', lost_in_row = 0, lease_until = NULL, lease_token = NULL
             WHERE {filter}"
        )
    }
}

impl Decision {
    /// The decision as one statement on job `$1` (`$2` is now; a re-point binds the
    /// action's name, kind, destination and attempts as `$3`..`$6`, and the destination
    /// the job had when the operator chose it as `$7`, so two re-points racing move a job
    /// once), from the states the domain allows. The same text on both stores (SQLite's through [`sqlite`]).
    pub(crate) fn sql(&self) -> String {
        match self {
            Decision::Discard => format!(
                "UPDATE jobs SET state = 'discarded', updated_at = $2
                 WHERE id = $1 AND state IN ({})",
                Operation::Discard.sql_states()
            ),
            Decision::Repoint { .. } => format!(
                "UPDATE jobs SET action = $3 || ' (re-pointed from ' || action || ')', repointed_from = action_name,
                     action_name = $3, kind = $4, destination = $5, budget = $6,
                     max_attempts = attempts + $6, state = 'pending', due_at = $2, updated_at = $2, lost_in_row = 0,
                     lease_until = NULL, lease_token = NULL
                 WHERE id = $1 AND destination = $7 AND state IN ({})",
                Operation::Repoint.sql_states()
            ),
        }
    }
}

/// A statement written with PostgreSQL's `$n` parameters, for SQLite (`?n`). Only for
/// statements whose text holds no `$` of its own.
pub(crate) fn sqlite(sql: &str) -> String {
    sql.replace('$', "?")
}
