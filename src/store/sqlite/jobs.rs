//! The outbox: jobs scheduled by an end, claimed by workers with a lease, finished with
//! an attempt record, and the admin API's views of them.

use rusqlite::{Connection, OptionalExtension, params};

use crate::domain::Timestamp;
use crate::domain::ingest::{ActionRef, Target};
use crate::domain::outbox::{
    AfterLost, JobEvent, LOST_ATTEMPT, NextStep, TOO_MANY_LOST, after_attempt, after_lost,
};
use crate::store::{
    ATTEMPTS_OF_JOB, AttemptColumns, AttemptRecord, ClaimedJob, Decision, JOB_COLUMNS, JobColumns,
    JobFilter, JobStats, JobView, Known, ORPHANED, RetryTarget, StoreError, new_job_id, sqlite,
};

/// Writes jobs: the payload once, shared by one job row per action.
pub(super) fn schedule(
    conn: &Connection,
    target: Target<'_>,
    payload: &str,
    actions: &[ActionRef],
    now: Timestamp,
) -> Result<(), StoreError> {
    let payload_id = conn
        .prepare_cached("INSERT INTO job_payloads (payload) VALUES (?1)")?
        .insert(params![payload])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO jobs (id, bot_id, conversation_id, action, kind, state, max_attempts, budget, due_at, created_at, updated_at, payload_id, destination,
                           action_name, event, trigger_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6, ?7, ?7, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    for action in actions {
        insert.execute(params![
            new_job_id(),
            target.bot_id,
            target.conversation_id,
            action.name,
            action.kind,
            action.max_attempts,
            now.millis(),
            payload_id,
            action.destination,
            action.action,
            action.event.as_str(),
            action.trigger.map(|t| t as i64)
        ])?;
    }
    Ok(())
}

/// A conversation's summaries (their JSON), oldest first, at most 1,000.
pub(super) fn summaries(
    conn: &Connection,
    bot_id: &str,
    conversation_id: &str,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT body FROM summaries WHERE bot_id = ?1 AND conversation_id = ?2
         ORDER BY created_at, summary_id LIMIT 1000",
    )?;
    let rows = stmt.query_map(params![bot_id, conversation_id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A job row, read with [`JOB_COLUMNS`].
fn job_view(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobColumns> {
    JobColumns::try_from(r)
}

pub(super) fn claim(
    conn: &Connection,
    limit: usize,
    lease: std::time::Duration,
    known: &Known,
    now: Timestamp,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let lease_until = now.millis() + lease.as_millis() as i64;
    let mut claimed = Vec::new();
    // Per destination, due jobs first, then jobs whose worker vanished (lease expired),
    // each read through an index led by the destination (`jobs_claim`,
    // `jobs_claim_lease`): a claim steps over no job of another destination, so it costs
    // the same at any backlog elsewhere. No `LIMIT ?`: SQLite plans with a bound LIMIT's
    // value and so re-prepares such a statement at every call (~45k instructions each, see
    // BENCHMARKS.md); stepping stops after `remaining` rows.
    let passes = known.iter().flat_map(|d| {
        [
            (
                "SELECT seq FROM jobs INDEXED BY jobs_claim
                 WHERE destination = ?2 AND state = 'pending' AND due_at <= ?1 ORDER BY due_at",
                false,
                d,
            ),
            (
                "SELECT seq FROM jobs INDEXED BY jobs_claim_lease
                 WHERE destination = ?2 AND state = 'running' AND lease_until <= ?1 ORDER BY lease_until",
                true,
                d,
            ),
        ]
    });
    for (query, lost, destination) in passes {
        let remaining = limit.saturating_sub(claimed.len());
        if remaining == 0 {
            break;
        }
        let seqs: Vec<i64> = conn
            .prepare_cached(query)?
            .query_map(params![now.millis(), destination], |r| r.get(0))?
            .take(remaining)
            .collect::<rusqlite::Result<_>>()?;
        for seq in seqs {
            if lost {
                // The lost attempt is recorded, and does not count against the budget.
                conn.prepare_cached(
                    "INSERT INTO attempts (job_id, attempt, started_at, duration_ms, outcome, error)
                     SELECT id, attempts, updated_at, ?2 - updated_at, 'lost', ?3
                     FROM jobs WHERE seq = ?1
                     ON CONFLICT (job_id, attempt) DO NOTHING",
                )?
                .execute(params![seq, now.millis(), LOST_ATTEMPT])?;
                let in_row: i64 = conn
                    .prepare_cached(
                        "UPDATE jobs SET max_attempts = max_attempts + 1, lost_in_row = lost_in_row + 1
                         WHERE seq = ?1 RETURNING lost_in_row",
                    )?
                    .query_row(params![seq], |r| r.get(0))?;
                match after_lost(in_row, lease, fastrand::f64()) {
                    AfterLost::Now => {}
                    AfterLost::Later(wait) => {
                        conn.prepare_cached(
                            "UPDATE jobs SET state = 'pending', due_at = ?2, updated_at = ?3, lease_until = NULL,
                                 lease_token = NULL
                             WHERE seq = ?1",
                        )?
                        .execute(params![seq, now.millis() + wait.as_millis() as i64, now.millis()])?;
                        continue;
                    }
                    AfterLost::Dead => {
                        let id: String = conn
                            .prepare_cached(
                                "UPDATE jobs SET state = 'dead', due_at = ?2, updated_at = ?2, lease_until = NULL,
                                     lease_token = NULL, last_error = ?3
                                 WHERE seq = ?1 RETURNING id",
                            )?
                            .query_row(params![seq, now.millis(), TOO_MANY_LOST], |r| r.get(0))?;
                        tracing::warn!(job = %id, "{TOO_MANY_LOST}");
                        continue;
                    }
                }
            }
            let token = uuid::Uuid::new_v4().simple().to_string();
            let (mut job, payload_id): (ClaimedJob, i64) = conn
                .prepare_cached(
                    "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = ?2, lease_token = ?3, updated_at = ?4
                     WHERE seq = ?1
                     RETURNING id, bot_id, conversation_id, action, kind, attempts, max_attempts, payload_id, created_at, destination,
                               event, trigger_seq",
                )?
                .query_row(params![seq, lease_until, token, now.millis()], |r| {
                    let job = ClaimedJob {
                        id: r.get(0)?,
                        bot_id: r.get(1)?,
                        conversation_id: r.get(2)?,
                        action: r.get(3)?,
                        kind: r.get(4)?,
                        destination: r.get(9)?,
                        event: JobEvent::parse(&r.get::<_, String>(10)?).unwrap_or_default(),
                        trigger: r
                            .get::<_, Option<i64>>(11)?
                            .and_then(|t| u64::try_from(t).ok()),
                        attempt: r.get(5)?,
                        max_attempts: r.get(6)?,
                        // Filled in just below from `job_payloads`.
                        payload: String::new(),
                        created_at: Timestamp::from_millis(r.get(8)?),
                        lease_token: token.clone(),
                    };
                    Ok((job, r.get(7)?))
                })?;
            job.payload = conn
                .prepare_cached("SELECT payload FROM job_payloads WHERE id = ?1")?
                .query_row(params![payload_id], |r| r.get(0))?;
            claimed.push(job);
        }
    }
    Ok(claimed)
}

pub(super) fn finish(
    conn: &Connection,
    job: &ClaimedJob,
    a: &AttemptRecord,
    next: NextStep,
    now: Timestamp,
) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "INSERT INTO attempts (job_id, attempt, started_at, duration_ms, outcome, status_code, error, response)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (job_id, attempt) DO UPDATE SET started_at = excluded.started_at, duration_ms = excluded.duration_ms,
           outcome = excluded.outcome, status_code = excluded.status_code, error = excluded.error, response = excluded.response",
    )?
    .execute(params![
        job.id,
        a.attempt,
        a.started_at.millis(),
        a.duration_ms as i64,
        a.outcome.as_str(),
        a.status_code,
        a.error,
        a.response
    ])?;
    let (state, due_at) = after_attempt(next, now);
    let changed = conn
        .prepare_cached(
            "UPDATE jobs SET state = ?3, due_at = ?4, lease_until = NULL, lease_token = NULL, updated_at = ?5, lost_in_row = 0, last_error = ?6
             WHERE id = ?1 AND lease_token = ?2 AND state = 'running'",
        )?
        .execute(params![job.id, job.lease_token, state.as_str(), due_at.millis(), now.millis(), a.error])?;
    Ok(changed == 1)
}

/// Gives a claimed job back unattempted (see `Store::release`).
pub(super) fn release(
    conn: &Connection,
    id: &str,
    lease_token: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached(&sqlite(crate::store::rows::RELEASE))?
        .execute(params![id, lease_token, now.millis()])?;
    Ok(changed == 1)
}

/// The jobs of the action named by parameter `?n`: its own, its `conversation.summarized`
/// deliveries, the summary's jobs for `summary`, and those re-pointed to it (the
/// `action_name` column).
fn of_action(n: usize) -> String {
    format!("action_name = ?{n}")
}

pub(super) fn retry_dead(
    conn: &Connection,
    target: &RetryTarget,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let mut args: Vec<rusqlite::types::Value> = vec![now.millis().into()];
    let (value, known, action) = target.binds();
    args.push(value.to_owned().into());
    if let Some(known) = known {
        args.push(known_json(known).into());
    }
    if let Some((action, since, until)) = action {
        args.extend([action.to_owned().into(), since.into(), until.into()]);
    }
    let sql = target.sql("destination IN (SELECT value FROM json_each($3))");
    let changed = conn
        .prepare_cached(&sqlite(&sql))?
        .execute(rusqlite::params_from_iter(args))?;
    Ok(changed as u64)
}

pub(super) fn list(conn: &Connection, f: &JobFilter) -> Result<Vec<JobView>, StoreError> {
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(state) = f.state {
        args.push(state.as_str().to_owned().into());
        sql.push_str(&format!(" AND state = ?{}", args.len()));
    }
    if let Some(bot) = &f.bot_id {
        args.push(bot.clone().into());
        sql.push_str(&format!(" AND bot_id = ?{}", args.len()));
    }
    if let Some(c) = &f.conversation_id {
        args.push(c.clone().into());
        sql.push_str(&format!(" AND conversation_id = ?{}", args.len()));
    }
    if let Some(action) = &f.action {
        args.push(action.clone().into());
        sql.push_str(&format!(" AND {}", of_action(args.len())));
    }
    if let Some(since) = f.since {
        args.push(since.millis().into());
        sql.push_str(&format!(" AND created_at >= ?{}", args.len()));
    }
    if let Some(until) = f.until {
        args.push(until.millis().into());
        sql.push_str(&format!(" AND created_at < ?{}", args.len()));
    }
    if let Some(before) = f.before {
        args.push(before.into());
        sql.push_str(&format!(" AND seq < ?{}", args.len()));
    }
    args.push((f.limit as i64).into());
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ?{}", args.len()));
    conn.prepare_cached(&sql)?
        .query_map(rusqlite::params_from_iter(args), job_view)?
        .map(|row| JobView::from_columns(row?))
        .collect()
}

pub(super) fn with_attempts(conn: &Connection, id: &str) -> Result<Option<JobView>, StoreError> {
    let job = conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row(params![id], job_view)
        .optional()?;
    let Some(job) = job else { return Ok(None) };
    let mut job = JobView::from_columns(job)?;
    let rows = conn
        .prepare_cached(ATTEMPTS_OF_JOB)?
        .query_map(params![id], |r| AttemptColumns::try_from(r))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let attempts = rows
        .into_iter()
        .map(AttemptRecord::from_columns)
        .collect::<Result<_, StoreError>>()?;
    job.attempt_log = Some(attempts);
    Ok(Some(job))
}

pub(super) fn stats(conn: &Connection, now: Timestamp) -> Result<JobStats, StoreError> {
    let rows = conn
        .prepare_cached("SELECT kind, state, count(*) FROM jobs GROUP BY kind, state")?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let (due, oldest): (i64, Option<i64>) = conn
        .prepare_cached(
            "SELECT count(*), min(due_at) FROM jobs WHERE state = 'pending' AND due_at <= ?1",
        )?
        .query_row(params![now.millis()], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let waiting: Option<i64> = conn
        .prepare_cached(crate::store::rows::OLDEST_WAITING)?
        .query_row([], |r| r.get(0))?;
    JobStats::from_rows(rows, due, oldest, waiting, now)
}

/// The known destinations as SQL reads them (`json_each`).
fn known_json(known: &Known) -> String {
    serde_json::to_string(&known[..]).unwrap_or_else(|_| "[]".into())
}

pub(super) fn orphan_unknown(
    conn: &Connection,
    known: &Known,
    due_before: Timestamp,
    now: Timestamp,
) -> Result<u64, StoreError> {
    // The destinations with jobs, one index step each (`jobs_claim` leads with the
    // destination): the sweep reads no job of a destination this instance knows, so a
    // backlog elsewhere costs it nothing.
    let present: Vec<String> = conn
        .prepare_cached(crate::store::rows::DESTINATIONS)?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut orphaned = 0;
    for d in present.iter().filter(|d| !known.contains(*d)) {
        orphaned += conn
            .prepare_cached(&format!(
                "UPDATE jobs SET state = 'orphaned', updated_at = ?3, last_error = {ORPHANED}
                 WHERE destination = ?1 AND state = 'pending' AND due_at <= ?2"
            ))?
            .execute(params![d, due_before.millis(), now.millis()])? as u64;
    }
    Ok(orphaned)
}

pub(super) fn decide(
    conn: &Connection,
    id: &str,
    decision: &Decision,
    now: Timestamp,
) -> Result<Option<bool>, StoreError> {
    let exists: Option<i64> = conn
        .prepare_cached("SELECT seq FROM jobs WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))
        .optional()?;
    if exists.is_none() {
        return Ok(None);
    }
    let sql = sqlite(&decision.sql());
    let mut stmt = conn.prepare_cached(&sql)?;
    let changed = match decision {
        Decision::Discard => stmt.execute(params![id, now.millis()])?,
        Decision::Repoint { to, from } => stmt.execute(params![
            id,
            now.millis(),
            to.name,
            to.kind,
            to.destination,
            to.max_attempts,
            from
        ])?,
    };
    Ok(Some(changed == 1))
}

/// Deletes up to `limit` succeeded and discarded jobs finished before `before`, with
/// their attempts. (`due_at` is at most `updated_at` for both states, so the `jobs_due`
/// index bounds the scan.)
pub(super) fn purge_finished(
    conn: &Connection,
    before: Timestamp,
    limit: usize,
) -> Result<u64, StoreError> {
    let ids: Vec<String> = conn
        .prepare_cached(
            "SELECT id FROM jobs WHERE state IN ('succeeded', 'discarded')
             AND due_at < ?1 AND updated_at < ?1 LIMIT ?2",
        )?
        .query_map(params![before.millis(), limit as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut attempts = conn.prepare_cached("DELETE FROM attempts WHERE job_id = ?1")?;
    let mut jobs = conn.prepare_cached("DELETE FROM jobs WHERE id = ?1")?;
    for id in &ids {
        attempts.execute([id])?;
        jobs.execute([id])?;
    }
    Ok(ids.len() as u64)
}
