//! The outbox on PostgreSQL: workers of every instance claim with `FOR UPDATE SKIP
//! LOCKED`, so a job is leased to one of them at a time.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use crate::domain::Timestamp;
use crate::domain::ingest::{ActionRef, Target};
use crate::domain::outbox::{
    AfterLost, JobEvent, LOST_ATTEMPT, NextStep, TOO_MANY_LOST, after_attempt, after_lost,
};
use crate::store::{
    ATTEMPTS_OF_JOB, AttemptColumns, AttemptRecord, ClaimedJob, Decision, JOB_COLUMNS, JobColumns,
    JobFilter, JobStats, JobView, Known, ORPHANED, RetryTarget, StoreError, new_job_id,
};

/// Jobs to write: one row per action of each conversation, with its conversation's
/// payload, in one statement whatever their number.
#[derive(Default)]
pub(super) struct NewJobs {
    ids: Vec<String>,
    bots: Vec<String>,
    conversations: Vec<String>,
    payloads: Vec<String>,
    names: Vec<String>,
    kinds: Vec<&'static str>,
    max_attempts: Vec<i32>,
    destinations: Vec<String>,
    actions: Vec<String>,
    events: Vec<&'static str>,
    triggers: Vec<Option<i64>>,
}

impl NewJobs {
    pub fn add(
        &mut self,
        bot_id: &str,
        conversation_id: &str,
        payload: &str,
        actions: &[ActionRef],
    ) {
        for a in actions {
            self.ids.push(new_job_id());
            self.bots.push(bot_id.to_owned());
            self.conversations.push(conversation_id.to_owned());
            self.payloads.push(payload.to_owned());
            self.names.push(a.name.clone());
            self.kinds.push(a.kind);
            self.max_attempts.push(a.max_attempts as i32);
            self.destinations.push(a.destination.clone());
            self.actions.push(a.action.clone());
            self.events.push(a.event.as_str());
            self.triggers.push(a.trigger.map(|t| t as i64));
        }
    }

    pub async fn insert(self, conn: &mut PgConnection, now: Timestamp) -> Result<(), StoreError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO jobs (id, bot_id, conversation_id, action, kind, state, max_attempts, budget, due_at, created_at, updated_at, payload, destination,
                               action_name, event, trigger_seq)
             SELECT a.id, a.bot, a.conv, a.name, a.kind, 'pending', a.max_attempts, a.max_attempts, $1, $1, $1, a.payload, a.destination,
                    a.action, a.event, a.trigger_seq
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[], $9::text[],
                         $10::text[], $11::text[], $12::bigint[])
                  AS a(id, bot, conv, payload, name, kind, max_attempts, destination, action, event, trigger_seq)",
        )
        .bind(now.millis())
        .bind(self.ids)
        .bind(self.bots)
        .bind(self.conversations)
        .bind(self.payloads)
        .bind(self.names)
        .bind(self.kinds)
        .bind(self.max_attempts)
        .bind(self.destinations)
        .bind(self.actions)
        .bind(self.events)
        .bind(self.triggers)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Writes one conversation's jobs (see [`NewJobs`]).
pub(super) async fn schedule(
    conn: &mut PgConnection,
    target: Target<'_>,
    payload: &str,
    actions: &[ActionRef],
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut jobs = NewJobs::default();
    jobs.add(target.bot_id, target.conversation_id, payload, actions);
    jobs.insert(conn, now).await
}

/// A conversation's summaries (their JSON), oldest first, at most 1,000.
pub(super) async fn summaries(
    conn: &mut PgConnection,
    bot_id: &str,
    conversation_id: &str,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT body FROM summaries WHERE bot_id = $1 AND conversation_id = $2
         ORDER BY created_at, summary_id LIMIT 1000",
    )
    .bind(bot_id)
    .bind(conversation_id)
    .fetch_all(&mut *conn)
    .await?)
}

fn claimed(r: &PgRow) -> Result<ClaimedJob, StoreError> {
    let job = (|| {
        Ok::<_, sqlx::Error>(ClaimedJob {
            id: r.try_get(0)?,
            bot_id: r.try_get(1)?,
            conversation_id: r.try_get(2)?,
            action: r.try_get(3)?,
            kind: r.try_get(4)?,
            attempt: r.try_get::<i32, _>(5)? as u32,
            max_attempts: r.try_get::<i32, _>(6)? as u32,
            payload: r.try_get(7)?,
            created_at: Timestamp::from_millis(r.try_get(8)?),
            lease_token: r.try_get(9)?,
            destination: r.try_get(10)?,
            event: JobEvent::parse(r.try_get::<&str, _>(11)?).unwrap_or_default(),
            trigger: r
                .try_get::<Option<i64>, _>(12)?
                .and_then(|t| u64::try_from(t).ok()),
        })
    })();
    job.map_err(|e| StoreError::corrupt("a claimed job row", e))
}

const CLAIMED_COLUMNS: &str = "j.id, j.bot_id, j.conversation_id, j.action, j.kind, j.attempts, j.max_attempts, j.payload, j.created_at, j.lease_token, j.destination, j.event, j.trigger_seq";

/// Claims up to `limit` due jobs of each of `known`'s destinations in turn (`limit` in all),
/// and, when `check_lost` says a destination's turn has come, the jobs of that destination
/// whose worker vanished. A due claim is one statement (atomic on its own, no transaction
/// around it: one round trip, and a claim that finds nothing costs one index probe).
pub(super) async fn claim(
    conn: &mut PgConnection,
    limit: usize,
    lease: Duration,
    known: &Known,
    now: Timestamp,
    mut check_lost: impl FnMut(&str) -> bool,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let mut jobs = Vec::new();
    // One destination at a time, through an index led by it (`jobs_claim`): a claim reads
    // no row of another destination, so it costs the same at any backlog elsewhere.
    for destination in known.iter() {
        let left = limit - jobs.len();
        if left == 0 {
            break;
        }
        jobs.extend(claim_due(&mut *conn, left, lease, destination, now).await?);
        let left = limit - jobs.len();
        if left > 0 && check_lost(destination) {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            jobs.extend(claim_lost(&mut tx, left, lease, destination, now).await?);
            tx.commit().await?;
        }
    }
    Ok(jobs)
}

/// Each destination's due jobs, up to its room, in one statement (one round trip and one
/// commit for every destination with room); then lost leases, per destination with room
/// left, as [`claim`] looks for them.
pub(super) async fn claim_each(
    conn: &mut PgConnection,
    rooms: &[(String, usize)],
    lease: Duration,
    now: Timestamp,
    mut check_lost: impl FnMut(&str) -> bool,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let at = now.millis();
    let (destinations, limits): (Vec<&str>, Vec<i64>) = rooms
        .iter()
        .map(|(d, room)| (d.as_str(), *room as i64))
        .unzip();
    // The rows claimed are found by their key (`= ANY(ARRAY(…))`): joined to the CTE, the
    // planner, which cannot know the rooms, expected thousands of rows and hashed the
    // whole jobs table for every claim (32 ms beside an 86,000-job backlog).
    let due = sqlx::query(&format!(
        "WITH due AS (
             SELECT d.seq FROM unnest($4::text[], $2::bigint[]) AS w(destination, room)
             CROSS JOIN LATERAL (
                 SELECT seq FROM jobs WHERE destination = w.destination AND state = 'pending' AND due_at <= $1
                 ORDER BY due_at LIMIT w.room FOR UPDATE SKIP LOCKED) d)
         UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, lease_until = $3,
                lease_token = gen_random_uuid()::text, updated_at = $1
         WHERE j.seq = ANY(ARRAY(SELECT seq FROM due))
         RETURNING {CLAIMED_COLUMNS}"
    ))
    .bind(at)
    .bind(&limits)
    .bind(at + lease.as_millis() as i64)
    .bind(&destinations)
    .fetch_all(&mut *conn)
    .await?;
    let mut jobs = due.iter().map(claimed).collect::<Result<Vec<_>, _>>()?;
    for (destination, room) in rooms {
        let got = jobs
            .iter()
            .filter(|j| &j.destination == destination)
            .count();
        if got < *room && check_lost(destination) {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            jobs.extend(claim_lost(&mut tx, room - got, lease, destination, now).await?);
            tx.commit().await?;
        }
    }
    Ok(jobs)
}

async fn claim_due(
    conn: &mut PgConnection,
    limit: usize,
    lease: Duration,
    destination: &str,
    now: Timestamp,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let now = now.millis();
    let lease_until = now + lease.as_millis() as i64;
    let due = sqlx::query(&format!(
        "WITH due AS (
             SELECT seq FROM jobs WHERE destination = $4 AND state = 'pending' AND due_at <= $1
             ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED)
         UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, lease_until = $3,
                lease_token = gen_random_uuid()::text, updated_at = $1
         WHERE j.seq = ANY(ARRAY(SELECT seq FROM due))
         RETURNING {CLAIMED_COLUMNS}"
    ))
    .bind(now)
    .bind(limit as i64)
    .bind(lease_until)
    .bind(destination)
    .fetch_all(&mut *conn)
    .await?;
    due.iter().map(claimed).collect()
}

/// Jobs of `destination` whose worker vanished (their lease ran out): each lost attempt is
/// recorded (not counted against the budget) and the job claimed again with the same id;
/// then `after_lost` decides whether each runs now, later, or is dead.
async fn claim_lost(
    conn: &mut PgConnection,
    limit: usize,
    lease: Duration,
    destination: &str,
    now: Timestamp,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let now = now.millis();
    let lease_until = now + lease.as_millis() as i64;
    let mut jobs = Vec::new();
    {
        let lost = sqlx::query(&format!(
            "WITH lost AS (
                 SELECT seq FROM jobs WHERE destination = $5 AND state = 'running' AND lease_until <= $1
                 ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED),
             recorded AS (
                 INSERT INTO attempts (job_id, attempt, started_at, duration_ms, outcome, error)
                 SELECT j.id, j.attempts, j.updated_at, $1 - j.updated_at, 'lost', $4
                 FROM jobs j WHERE j.seq = ANY(ARRAY(SELECT seq FROM lost))
                 ON CONFLICT DO NOTHING)
             UPDATE jobs j SET attempts = j.attempts + 1, max_attempts = j.max_attempts + 1,
                    lost_in_row = j.lost_in_row + 1, lease_until = $3,
                    lease_token = gen_random_uuid()::text, updated_at = $1
             WHERE j.seq = ANY(ARRAY(SELECT seq FROM lost))
             RETURNING {CLAIMED_COLUMNS}, j.lost_in_row"
        ))
        .bind(now)
        .bind(limit as i64)
        .bind(lease_until)
        .bind(LOST_ATTEMPT)
        .bind(destination)
        .fetch_all(&mut *conn)
        .await?;
        for row in &lost {
            let job = claimed(row)?;
            let in_row: i32 = row
                .try_get(13)
                .map_err(|e| StoreError::corrupt("a claimed job row", e))?;
            // Not run after all: the claim's attempt number is given back.
            let (sql, due_at, error) = match after_lost(in_row.into(), lease, fastrand::f64()) {
                AfterLost::Now => {
                    jobs.push(job);
                    continue;
                }
                AfterLost::Later(wait) => (
                    "UPDATE jobs SET state = 'pending', attempts = attempts - 1, due_at = $2,
                         lease_until = NULL, lease_token = NULL, last_error = coalesce($3, last_error)
                     WHERE id = $1",
                    now + wait.as_millis() as i64,
                    None,
                ),
                AfterLost::Dead => {
                    tracing::warn!(job = %job.id, "{TOO_MANY_LOST}");
                    (
                        "UPDATE jobs SET state = 'dead', attempts = attempts - 1, due_at = $2,
                             lease_until = NULL, lease_token = NULL, last_error = $3
                         WHERE id = $1",
                        now,
                        Some(TOO_MANY_LOST),
                    )
                }
            };
            sqlx::query(sql)
                .bind(&job.id)
                .bind(due_at)
                .bind(error)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(jobs)
}

/// One attempt to record: the job's id and lease, what happened, and what comes next.
pub(super) struct Finished {
    pub id: String,
    pub lease_token: String,
    pub attempt: AttemptRecord,
    pub next: NextStep,
}

/// Records several attempts in one transaction (two statements, whatever their number):
/// what [`finish`] does for each, so a burst of attempts ending together (a stalled
/// destination's timeouts) costs one commit, not one per attempt holding a connection each.
/// Job ids must be distinct. Says, per attempt, whether its job took the step (its lease
/// still held).
pub(super) async fn finish_many(
    conn: &mut PgConnection,
    batch: &[Finished],
    now: Timestamp,
) -> Result<Vec<bool>, StoreError> {
    let col = |f: fn(&Finished) -> String| batch.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO attempts (job_id, attempt, started_at, duration_ms, outcome, status_code, error, response)
         SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::text[], $6::int[], $7::text[], $8::text[])
         ON CONFLICT (job_id, attempt) DO UPDATE SET started_at = excluded.started_at,
           duration_ms = excluded.duration_ms, outcome = excluded.outcome, status_code = excluded.status_code,
           error = excluded.error, response = excluded.response",
    )
    .bind(col(|f| f.id.clone()))
    .bind(batch.iter().map(|f| f.attempt.attempt as i32).collect::<Vec<_>>())
    .bind(batch.iter().map(|f| f.attempt.started_at.millis()).collect::<Vec<_>>())
    .bind(batch.iter().map(|f| f.attempt.duration_ms as i64).collect::<Vec<_>>())
    .bind(col(|f| f.attempt.outcome.as_str().to_owned()))
    .bind(batch.iter().map(|f| f.attempt.status_code.map(i32::from)).collect::<Vec<_>>())
    .bind(batch.iter().map(|f| f.attempt.error.clone()).collect::<Vec<_>>())
    .bind(batch.iter().map(|f| f.attempt.response.clone()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    let steps: Vec<_> = batch.iter().map(|f| after_attempt(f.next, now)).collect();
    let changed: Vec<String> = sqlx::query_scalar(
        "UPDATE jobs j SET state = u.state, due_at = u.due_at, lease_until = NULL, lease_token = NULL,
                updated_at = $6, lost_in_row = 0, last_error = u.error
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[]) AS u(id, token, state, due_at, error)
         WHERE j.id = u.id AND j.lease_token = u.token AND j.state = 'running'
         RETURNING j.id",
    )
    .bind(col(|f| f.id.clone()))
    .bind(col(|f| f.lease_token.clone()))
    .bind(steps.iter().map(|(s, _)| s.as_str().to_owned()).collect::<Vec<_>>())
    .bind(steps.iter().map(|(_, d)| d.millis()).collect::<Vec<_>>())
    .bind(batch.iter().map(|f| f.attempt.error.clone()).collect::<Vec<_>>())
    .bind(now.millis())
    .fetch_all(&mut *conn)
    .await?;
    Ok(batch.iter().map(|f| changed.contains(&f.id)).collect())
}

pub(super) async fn list(pool: &PgPool, f: JobFilter) -> Result<Vec<JobView>, StoreError> {
    let mut q = QueryBuilder::<Postgres>::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE TRUE"));
    if let Some(state) = f.state {
        q.push(" AND state = ").push_bind(state.as_str());
    }
    if let Some(bot) = &f.bot_id {
        q.push(" AND bot_id = ").push_bind(bot.clone());
    }
    if let Some(c) = &f.conversation_id {
        q.push(" AND conversation_id = ").push_bind(c.clone());
    }
    if let Some(action) = &f.action {
        // Its deliveries of summaries, and jobs re-pointed to it, count as its own.
        q.push(" AND action_name = ").push_bind(action.clone());
    }
    if let Some(since) = f.since {
        q.push(" AND created_at >= ").push_bind(since.millis());
    }
    if let Some(until) = f.until {
        q.push(" AND created_at < ").push_bind(until.millis());
    }
    if let Some(before) = f.before {
        q.push(" AND seq < ").push_bind(before);
    }
    q.push(" ORDER BY seq DESC LIMIT ")
        .push_bind(f.limit as i64);
    let rows: Vec<JobColumns> = q.build_query_as().fetch_all(pool).await?;
    rows.into_iter().map(JobView::from_columns).collect()
}

pub(super) async fn with_attempts(pool: &PgPool, id: &str) -> Result<Option<JobView>, StoreError> {
    let row: Option<JobColumns> =
        sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let mut job = JobView::from_columns(row)?;
    let attempts: Vec<AttemptColumns> = sqlx::query_as(ATTEMPTS_OF_JOB)
        .bind(id)
        .fetch_all(pool)
        .await?;
    job.attempt_log = Some(
        attempts
            .into_iter()
            .map(AttemptRecord::from_columns)
            .collect::<Result<_, StoreError>>()?,
    );
    Ok(Some(job))
}

pub(super) async fn retry_dead(
    pool: &PgPool,
    target: RetryTarget,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let (value, known, action) = target.binds();
    let sql = target.sql("destination = ANY($3)");
    let query = sqlx::query(&sql).bind(now.millis()).bind(value);
    let query = match known {
        Some(known) => query.bind(&known[..]),
        None => query,
    };
    let query = match action {
        Some((action, since, until)) => query.bind(action).bind(since).bind(until),
        None => query,
    };
    Ok(query.execute(pool).await?.rows_affected())
}

pub(super) async fn stats(pool: &PgPool, now: Timestamp) -> Result<JobStats, StoreError> {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT kind, state, count(*) FROM jobs GROUP BY kind, state")
            .fetch_all(pool)
            .await?;
    let (due, oldest): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), min(due_at) FROM jobs WHERE state = 'pending' AND due_at <= $1",
    )
    .bind(now.millis())
    .fetch_one(pool)
    .await?;
    let waiting: Option<i64> = sqlx::query_scalar(crate::store::rows::OLDEST_WAITING)
        .fetch_one(pool)
        .await?;
    JobStats::from_rows(rows, due, oldest, waiting, now)
}

/// Gives a claimed job back unattempted (see `Store::release`).
pub(super) async fn release(
    pool: &PgPool,
    id: &str,
    lease_token: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(crate::store::rows::RELEASE)
        .bind(id)
        .bind(lease_token)
        .bind(now.millis())
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn orphan_unknown(
    pool: &PgPool,
    known: &Known,
    due_before: Timestamp,
    now: Timestamp,
) -> Result<u64, StoreError> {
    // The destinations with jobs, one index step each (`jobs_claim` leads with the
    // destination): the sweep reads no job of a destination this instance knows.
    let present: Vec<String> = sqlx::query_scalar(crate::store::rows::DESTINATIONS)
        .fetch_all(pool)
        .await?;
    let mut orphaned = 0;
    for d in present.iter().filter(|d| !known.contains(*d)) {
        orphaned += sqlx::query(&format!(
            "UPDATE jobs SET state = 'orphaned', updated_at = $3, last_error = {ORPHANED}
             WHERE destination = $1 AND state = 'pending' AND due_at <= $2"
        ))
        .bind(d)
        .bind(due_before.millis())
        .bind(now.millis())
        .execute(pool)
        .await?
        .rows_affected();
    }
    Ok(orphaned)
}

pub(super) async fn decide(
    pool: &PgPool,
    id: &str,
    decision: &Decision,
    now: Timestamp,
) -> Result<Option<bool>, StoreError> {
    let exists: Option<i64> = sqlx::query_scalar("SELECT seq FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let sql = decision.sql();
    let query = sqlx::query(&sql).bind(id).bind(now.millis());
    let query = match decision {
        Decision::Discard => query,
        Decision::Repoint { to, from } => query
            .bind(&to.name)
            .bind(to.kind)
            .bind(&to.destination)
            .bind(to.max_attempts as i32)
            .bind(from),
    };
    let changed = query.execute(pool).await?.rows_affected();
    Ok(Some(changed == 1))
}

/// Deletes up to `limit` succeeded and discarded jobs finished before `before`, with
/// their attempts, in one statement (rows another instance is deleting are skipped).
pub(super) async fn purge_finished(
    pool: &PgPool,
    before: Timestamp,
    limit: usize,
) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "WITH gone AS (
             DELETE FROM jobs WHERE seq IN (
                 SELECT seq FROM jobs WHERE state IN ('succeeded', 'discarded')
                 AND due_at < $1 AND updated_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING id),
         attempts_gone AS (DELETE FROM attempts WHERE job_id IN (SELECT id FROM gone))
         SELECT count(*) FROM gone",
    )
    .bind(before.millis())
    .bind(limit as i64)
    .fetch_one(pool)
    .await?;
    Ok(n as u64)
}
