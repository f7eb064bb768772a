//! The PostgreSQL store, for several `wrapup serve` instances sharing one database.
//!
//! Nothing here relies on a process's memory for correctness:
//! - a request runs in one transaction that locks its conversation row
//!   (`INSERT … ON CONFLICT DO NOTHING`, then `SELECT … FOR UPDATE`), so concurrent ends
//!   of one conversation on any instances serialize and exactly one of them ends it;
//! - a used `jti` is a row with a primary key, inserted in the same transaction;
//! - workers claim jobs and the sweeper picks conversations with `FOR UPDATE SKIP LOCKED`;
//! - migrations run under an advisory lock, so instances starting together apply them once.
//!
//! PostgreSQL batches concurrent commits' WAL flushes itself, so each request commits
//! on its own: a 200 is sent only after `COMMIT` returned (with the server's default
//! `synchronous_commit = on`, after the WAL reached disk).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};

use super::{
    AttemptOutcome, AttemptRecord, ClaimedJob, ConversationFilter, EventPage, Ingest,
    IngestOutcome, JobFilter, JobState, JobStats, JobView, LOST_ATTEMPT, ListedConversation,
    NextStep, Purge, RetryTarget, Store, StoreError, StoredConversation, StoredEvent,
    apply_request, inactivity_event, job_payload, new_job_id,
};
use crate::auth::JtiUse;
use crate::config::StoreSettings;
use crate::domain::{Conversation, EndedAfter, Timestamp};
use crate::store::ActionRef;

/// Schema versions, applied in order under an advisory lock; recorded in `wrapup_schema`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE conversations (
    bot_id               TEXT   NOT NULL,
    conversation_id      TEXT   NOT NULL,
    status               TEXT   NOT NULL,
    created_at           BIGINT NOT NULL,
    last_event_at        BIGINT NOT NULL,
    ended_at             BIGINT,
    sort_at              BIGINT NOT NULL,
    events_purged_at     BIGINT,
    transcript_purged_at BIGINT,
    state                TEXT   NOT NULL,
    PRIMARY KEY (bot_id, conversation_id)
);
CREATE INDEX conversations_idle ON conversations (bot_id, last_event_at) WHERE status = 'active';
CREATE INDEX conversations_by_sort ON conversations (bot_id, sort_at, conversation_id);
CREATE INDEX conversations_by_end ON conversations (bot_id, status, ended_at);
CREATE TABLE events (
    bot_id          TEXT   NOT NULL,
    conversation_id TEXT   NOT NULL,
    seq             BIGINT NOT NULL,
    name            TEXT   NOT NULL,
    received_at     BIGINT NOT NULL,
    body            TEXT   NOT NULL,
    PRIMARY KEY (bot_id, conversation_id, seq)
);
CREATE TABLE used_jti (
    client_id  TEXT   NOT NULL,
    jti        TEXT   NOT NULL,
    used_at    BIGINT NOT NULL,
    expires_at BIGINT,
    PRIMARY KEY (client_id, jti)
);
CREATE TABLE heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at BIGINT  NOT NULL
);
CREATE TABLE jobs (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    bot_id          TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    budget          INTEGER NOT NULL,
    due_at          BIGINT  NOT NULL,
    lease_until     BIGINT,
    lease_token     TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    last_error      TEXT,
    payload         TEXT    NOT NULL
);
CREATE UNIQUE INDEX jobs_once ON jobs (bot_id, conversation_id, action);
CREATE INDEX jobs_due ON jobs (state, due_at);
CREATE INDEX jobs_lease ON jobs (state, lease_until);
CREATE TABLE attempts (
    job_id      TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    started_at  BIGINT  NOT NULL,
    duration_ms BIGINT  NOT NULL,
    outcome     TEXT    NOT NULL,
    status_code INTEGER,
    error       TEXT,
    response    TEXT,
    PRIMARY KEY (job_id, attempt)
);
"#,
    r#"
CREATE INDEX used_jti_expiry ON used_jti (expires_at) WHERE expires_at IS NOT NULL;
"#,
];

pub struct PostgresStore {
    pool: PgPool,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl PostgresStore {
    pub async fn open(url: &str, settings: &StoreSettings) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("invalid PostgreSQL URL: {e}")))?;
        let options = options.options([
            (
                "statement_timeout",
                settings.statement_timeout.as_millis().to_string(),
            ),
            ("search_path", settings.schema.clone()),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_size)
            .acquire_timeout(settings.connect_timeout)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        migrate(&pool, &settings.schema).await?;
        Ok(Self { pool })
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(unavailable)
    }
}

async fn migrate(pool: &PgPool, schema: &str) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await.map_err(unavailable)?;
    // One instance migrates at a time; the others wait here and then find nothing to do.
    sqlx::query("SELECT pg_advisory_lock(hashtext('wrapup-migrate'))")
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    let result = async {
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&mut *conn)
            .await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS wrapup_schema (version INTEGER NOT NULL)")
            .execute(&mut *conn)
            .await?;
        let version: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM wrapup_schema")
            .fetch_one(&mut *conn)
            .await?;
        let version = version.unwrap_or(0) as usize;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO wrapup_schema (version) VALUES ($1)")
                .bind((i + 1) as i32)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok::<usize, sqlx::Error>(version)
    }
    .await;
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext('wrapup-migrate'))")
        .execute(&mut *conn)
        .await;
    let version =
        result.map_err(|e| StoreError::Unavailable(format!("migrating the schema failed: {e}")))?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Unavailable(format!(
            "the database is at schema version {version}, newer than this wrapup knows ({})",
            MIGRATIONS.len()
        )));
    }
    Ok(())
}

async fn record_jti(
    tx: &mut Transaction<'_, Postgres>,
    jti: &JtiUse,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO used_jti (client_id, jti, used_at, expires_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(&jti.client_id)
    .bind(&jti.jti)
    .bind(now.millis())
    .bind(jti.expires_at.map(|t| t.millis()))
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(done.rows_affected() == 1)
}

async fn save_conversation(
    tx: &mut Transaction<'_, Postgres>,
    bot_id: &str,
    conversation_id: &str,
    conv: &Conversation,
) -> Result<(), StoreError> {
    let state = serde_json::to_string(conv).map_err(corrupt)?;
    sqlx::query(
        "INSERT INTO conversations (bot_id, conversation_id, status, created_at, last_event_at, ended_at, sort_at, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (bot_id, conversation_id) DO UPDATE SET
           status = excluded.status, last_event_at = excluded.last_event_at,
           ended_at = excluded.ended_at, sort_at = excluded.sort_at, state = excluded.state",
    )
    .bind(bot_id)
    .bind(conversation_id)
    .bind(conv.status.as_str())
    .bind(conv.created_at.millis())
    .bind(conv.last_event_at.millis())
    .bind(conv.ended_at.map(|t| t.millis()))
    .bind(conv.ended_at.unwrap_or(conv.last_event_at).millis())
    .bind(state)
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn append_event(
    tx: &mut Transaction<'_, Postgres>,
    bot_id: &str,
    conversation_id: &str,
    seq: u64,
    name: &str,
    at: Timestamp,
    body: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (bot_id, conversation_id, seq, name, received_at, body) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(bot_id)
    .bind(conversation_id)
    .bind(seq as i64)
    .bind(name)
    .bind(at.millis())
    .bind(body)
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}

/// The built-in end step's jobs, in the transaction that ends the conversation.
async fn schedule_jobs(
    tx: &mut Transaction<'_, Postgres>,
    bot_id: &str,
    conversation_id: &str,
    on_end: &[ActionRef],
    conv: &Conversation,
    now: Timestamp,
) -> Result<(), StoreError> {
    if on_end.is_empty() {
        return Ok(());
    }
    let payload = job_payload(bot_id, conversation_id, conv);
    for action in on_end {
        sqlx::query(
            "INSERT INTO jobs (id, bot_id, conversation_id, action, kind, state, max_attempts, budget, due_at, created_at, updated_at, payload)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6, $7, $7, $7, $8)",
        )
        .bind(new_job_id())
        .bind(bot_id)
        .bind(conversation_id)
        .bind(&action.name)
        .bind(action.kind)
        .bind(action.max_attempts as i32)
        .bind(now.millis())
        .bind(&payload)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    }
    Ok(())
}

fn parse_state(json: &str) -> Result<Conversation, StoreError> {
    serde_json::from_str(json).map_err(corrupt)
}

const JOB_COLUMNS: &str = "seq, id, bot_id, conversation_id, action, kind, state, attempts, max_attempts, created_at, updated_at, due_at, last_error";

fn job_view(r: &PgRow) -> Result<JobView, sqlx::Error> {
    let state: String = r.try_get(6)?;
    Ok(JobView {
        cursor: r.try_get(0)?,
        id: r.try_get(1)?,
        bot_id: r.try_get(2)?,
        conversation_id: r.try_get(3)?,
        action: r.try_get(4)?,
        kind: r.try_get(5)?,
        state: JobState::parse(&state).unwrap_or(JobState::Pending),
        attempts: r.try_get::<i32, _>(7)? as u32,
        max_attempts: r.try_get::<i32, _>(8)? as u32,
        created_at: Timestamp::from_millis(r.try_get(9)?),
        updated_at: Timestamp::from_millis(r.try_get(10)?),
        due_at: Timestamp::from_millis(r.try_get(11)?),
        last_error: r.try_get(12)?,
        attempt_log: None,
    })
}

fn claimed(r: &PgRow) -> Result<ClaimedJob, sqlx::Error> {
    Ok(ClaimedJob {
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
    })
}

const CLAIMED_COLUMNS: &str = "j.id, j.bot_id, j.conversation_id, j.action, j.kind, j.attempts, j.max_attempts, j.payload, j.created_at, j.lease_token";

#[async_trait]
impl Store for PostgresStore {
    async fn ingest(&self, ingest: Ingest) -> Result<IngestOutcome, StoreError> {
        let now = Timestamp::now();
        let mut tx = self.begin().await?;
        if let Some(jti) = &ingest.jti
            && !record_jti(&mut tx, jti, now).await?
        {
            return Ok(IngestOutcome::Replay);
        }
        // Make sure the row exists, then lock it: every request for this conversation,
        // on any instance, waits here for the one before it to commit.
        let fresh = serde_json::to_string(&Conversation::new(now)).map_err(corrupt)?;
        sqlx::query(
            "INSERT INTO conversations (bot_id, conversation_id, status, created_at, last_event_at, sort_at, state)
             VALUES ($1, $2, 'active', $3, $3, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&ingest.bot_id)
        .bind(&ingest.conversation_id)
        .bind(now.millis())
        .bind(fresh)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let state: String = sqlx::query_scalar(
            "SELECT state FROM conversations WHERE bot_id = $1 AND conversation_id = $2 FOR UPDATE",
        )
        .bind(&ingest.bot_id)
        .bind(&ingest.conversation_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut conv = parse_state(&state)?;
        let applied = match apply_request(&mut conv, &ingest.events, now) {
            Ok(applied) => applied,
            Err(EndedAfter { ended_at }) => return Ok(IngestOutcome::EndedAlready { ended_at }),
        };
        for (seq, event) in &applied.stored {
            let body = &event.raw;
            append_event(
                &mut tx,
                &ingest.bot_id,
                &ingest.conversation_id,
                *seq,
                event.kind.name(),
                now,
                body,
            )
            .await?;
        }
        save_conversation(&mut tx, &ingest.bot_id, &ingest.conversation_id, &conv).await?;
        if applied.ended {
            schedule_jobs(
                &mut tx,
                &ingest.bot_id,
                &ingest.conversation_id,
                &ingest.on_end,
                &conv,
                now,
            )
            .await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(applied.outcome())
    }

    async fn consume_jti(&self, jti: JtiUse) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let fresh = record_jti(&mut tx, &jti, Timestamp::now()).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(fresh)
    }

    async fn conversation(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<Option<StoredConversation>, StoreError> {
        let state: Option<String> = sqlx::query_scalar(
            "SELECT state FROM conversations WHERE bot_id = $1 AND conversation_id = $2",
        )
        .bind(bot_id)
        .bind(conversation_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        state
            .map(|s| {
                Ok(StoredConversation {
                    bot_id: bot_id.to_owned(),
                    conversation_id: conversation_id.to_owned(),
                    state: parse_state(&s)?,
                })
            })
            .transpose()
    }

    async fn list_conversations(
        &self,
        bot_id: &str,
        f: ConversationFilter,
    ) -> Result<Vec<ListedConversation>, StoreError> {
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT conversation_id, sort_at, state FROM conversations WHERE bot_id = ",
        );
        q.push_bind(bot_id);
        if let Some(status) = f.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(from) = f.from {
            q.push(" AND sort_at >= ").push_bind(from.millis());
        }
        if let Some(to) = f.to {
            q.push(" AND sort_at <= ").push_bind(to.millis());
        }
        if let Some((at, id)) = &f.after {
            q.push(" AND (sort_at, conversation_id) < (")
                .push_bind(at.millis())
                .push(", ")
                .push_bind(id.clone())
                .push(")");
        }
        q.push(" ORDER BY sort_at DESC, conversation_id DESC LIMIT ")
            .push_bind(f.limit as i64);
        let rows = q.build().fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(0).map_err(corrupt)?;
                let sort_at: i64 = r.try_get(1).map_err(corrupt)?;
                let state: String = r.try_get(2).map_err(corrupt)?;
                Ok(ListedConversation {
                    conversation: StoredConversation {
                        bot_id: bot_id.to_owned(),
                        conversation_id: id,
                        state: parse_state(&state)?,
                    },
                    sort_at: Timestamp::from_millis(sort_at),
                })
            })
            .collect()
    }

    async fn events(
        &self,
        bot_id: &str,
        conversation_id: &str,
        only: Option<&'static str>,
        after: u64,
        limit: usize,
    ) -> Result<Option<EventPage>, StoreError> {
        let purged: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT events_purged_at, transcript_purged_at FROM conversations WHERE bot_id = $1 AND conversation_id = $2",
        )
        .bind(bot_id)
        .bind(conversation_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        let Some((events_purged_at, transcript_purged_at)) = purged else {
            return Ok(None);
        };
        let rows: Vec<(i64, String, i64, String)> = sqlx::query_as(
            "SELECT seq, name, received_at, body FROM events
             WHERE bot_id = $1 AND conversation_id = $2 AND seq > $3 AND ($5::text IS NULL OR name = $5)
             ORDER BY seq LIMIT $4",
        )
        .bind(bot_id)
        .bind(conversation_id)
        .bind(after as i64)
        .bind(limit as i64)
        .bind(only)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(Some(EventPage {
            events: rows
                .into_iter()
                .map(|(seq, name, at, body)| StoredEvent {
                    seq: seq as u64,
                    name,
                    received_at: Timestamp::from_millis(at),
                    body,
                })
                .collect(),
            events_purged_at: events_purged_at.map(Timestamp::from_millis),
            transcript_purged_at: transcript_purged_at.map(Timestamp::from_millis),
        }))
    }

    async fn expire_inactive(
        &self,
        bot_id: &str,
        idle_since: Timestamp,
        timeout_ms: i64,
        on_end: Arc<[ActionRef]>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let now = Timestamp::now();
        let mut tx = self.begin().await?;
        // SKIP LOCKED: a conversation a request (or another sweeper) holds is left to it.
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT conversation_id, state FROM conversations
             WHERE bot_id = $1 AND status = 'active' AND last_event_at <= $2
             ORDER BY last_event_at LIMIT $3 FOR UPDATE SKIP LOCKED",
        )
        .bind(bot_id)
        .bind(idle_since.millis())
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut ended = Vec::with_capacity(rows.len());
        for (id, state) in rows {
            let mut conv = parse_state(&state)?;
            let last = conv.last_event_at;
            let Some(seq) = conv.expire(now, timeout_ms) else {
                continue;
            };
            let body = inactivity_event(last, timeout_ms);
            append_event(&mut tx, bot_id, &id, seq, "INACTIVITY_TIMEOUT", now, &body).await?;
            save_conversation(&mut tx, bot_id, &id, &conv).await?;
            schedule_jobs(&mut tx, bot_id, &id, &on_end, &conv, now).await?;
            ended.push(id);
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(ended)
    }

    async fn purge_jti(&self, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM used_jti WHERE (client_id, jti) IN (
                 SELECT client_id, jti FROM used_jti WHERE expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(before.millis())
        .bind(limit as i64)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected())
    }

    async fn purge(&self, bot_id: &str, purge: Purge, limit: usize) -> Result<u64, StoreError> {
        let now = Timestamp::now();
        let mut tx = self.begin().await?;
        let mut purged = 0u64;
        for (before, column, only_messages) in [
            (purge.events_before, "events_purged_at", false),
            (purge.transcript_before, "transcript_purged_at", true),
        ] {
            let Some(before) = before else { continue };
            let ids: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT conversation_id FROM conversations
                 WHERE bot_id = $1 AND {column} IS NULL AND status = 'ended' AND ended_at <= $2
                 LIMIT $3 FOR UPDATE SKIP LOCKED"
            ))
            .bind(bot_id)
            .bind(before.millis())
            .bind(limit as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
            for id in ids {
                sqlx::query(
                    "DELETE FROM events WHERE bot_id = $1 AND conversation_id = $2 AND (NOT $3 OR name = 'MESSAGE')",
                )
                .bind(bot_id)
                .bind(&id)
                .bind(only_messages)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                sqlx::query(&format!(
                    "UPDATE conversations SET {column} = $3 WHERE bot_id = $1 AND conversation_id = $2"
                ))
                .bind(bot_id)
                .bind(&id)
                .bind(now.millis())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                purged += 1;
            }
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(purged)
    }

    async fn claim_jobs(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let now = Timestamp::now().millis();
        let lease_until = now + lease.as_millis() as i64;
        let mut tx = self.begin().await?;
        let due = sqlx::query(&format!(
            "WITH due AS (
                 SELECT seq FROM jobs WHERE state = 'pending' AND due_at <= $1
                 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED)
             UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, lease_until = $3,
                    lease_token = gen_random_uuid()::text, updated_at = $1
             FROM due WHERE j.seq = due.seq
             RETURNING {CLAIMED_COLUMNS}"
        ))
        .bind(now)
        .bind(limit as i64)
        .bind(lease_until)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut jobs = due
            .iter()
            .map(claimed)
            .collect::<Result<Vec<_>, _>>()
            .map_err(corrupt)?;
        if jobs.len() < limit {
            // Jobs whose worker vanished: record the lost attempt (not counted against
            // the budget) and run them again with the same id.
            let lost = sqlx::query(&format!(
                "WITH lost AS (
                     SELECT seq FROM jobs WHERE state = 'running' AND lease_until <= $1
                     ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED),
                 recorded AS (
                     INSERT INTO attempts (job_id, attempt, started_at, duration_ms, outcome, error)
                     SELECT j.id, j.attempts, j.updated_at, $1 - j.updated_at, 'lost', $4
                     FROM jobs j JOIN lost ON j.seq = lost.seq
                     ON CONFLICT DO NOTHING)
                 UPDATE jobs j SET attempts = j.attempts + 1, max_attempts = j.max_attempts + 1, lease_until = $3,
                        lease_token = gen_random_uuid()::text, updated_at = $1
                 FROM lost WHERE j.seq = lost.seq
                 RETURNING {CLAIMED_COLUMNS}"
            ))
            .bind(now)
            .bind((limit - jobs.len()) as i64)
            .bind(lease_until)
            .bind(LOST_ATTEMPT)
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
            jobs.extend(
                lost.iter()
                    .map(claimed)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(corrupt)?,
            );
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(jobs)
    }

    async fn finish_attempt(
        &self,
        job: &ClaimedJob,
        a: AttemptRecord,
        next: NextStep,
    ) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO attempts (job_id, attempt, started_at, duration_ms, outcome, status_code, error, response)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (job_id, attempt) DO UPDATE SET started_at = excluded.started_at,
               duration_ms = excluded.duration_ms, outcome = excluded.outcome, status_code = excluded.status_code,
               error = excluded.error, response = excluded.response",
        )
        .bind(&job.id)
        .bind(a.attempt as i32)
        .bind(a.started_at.millis())
        .bind(a.duration_ms as i64)
        .bind(a.outcome.as_str())
        .bind(a.status_code.map(i32::from))
        .bind(&a.error)
        .bind(&a.response)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let (state, due_at) = match next {
            NextStep::Succeeded => (JobState::Succeeded, now),
            NextStep::RetryAt(at) => (JobState::Pending, at),
            NextStep::Dead => (JobState::Dead, now),
        };
        let changed = sqlx::query(
            "UPDATE jobs SET state = $3, due_at = $4, lease_until = NULL, lease_token = NULL, updated_at = $5, last_error = $6
             WHERE id = $1 AND lease_token = $2 AND state = 'running'",
        )
        .bind(&job.id)
        .bind(&job.lease_token)
        .bind(state.as_str())
        .bind(due_at.millis())
        .bind(now.millis())
        .bind(&a.error)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(changed.rows_affected() == 1)
    }

    async fn list_jobs(&self, f: JobFilter) -> Result<Vec<JobView>, StoreError> {
        let mut q =
            QueryBuilder::<Postgres>::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE TRUE"));
        if let Some(state) = f.state {
            q.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(bot) = &f.bot_id {
            q.push(" AND bot_id = ").push_bind(bot.clone());
        }
        if let Some(c) = &f.conversation_id {
            q.push(" AND conversation_id = ").push_bind(c.clone());
        }
        if let Some(before) = f.before {
            q.push(" AND seq < ").push_bind(before);
        }
        q.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(f.limit as i64);
        let rows = q.build().fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter()
            .map(job_view)
            .collect::<Result<_, _>>()
            .map_err(corrupt)
    }

    async fn job(&self, id: &str) -> Result<Option<JobView>, StoreError> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        let Some(row) = row else { return Ok(None) };
        let mut job = job_view(&row).map_err(corrupt)?;
        let attempts: Vec<(
            i32,
            i64,
            i64,
            String,
            Option<i32>,
            Option<String>,
            Option<String>,
        )> = sqlx::query_as(
            "SELECT attempt, started_at, duration_ms, outcome, status_code, error, response
             FROM attempts WHERE job_id = $1 ORDER BY attempt",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        job.attempt_log = Some(
            attempts
                .into_iter()
                .map(
                    |(attempt, started, duration, outcome, status, error, response)| {
                        AttemptRecord {
                            attempt: attempt as u32,
                            started_at: Timestamp::from_millis(started),
                            duration_ms: duration.max(0) as u64,
                            outcome: match outcome.as_str() {
                                "succeeded" => AttemptOutcome::Succeeded,
                                "lost" => AttemptOutcome::Lost,
                                _ => AttemptOutcome::Failed,
                            },
                            status_code: status.map(|s| s as u16),
                            error,
                            response,
                        }
                    },
                )
                .collect(),
        );
        Ok(Some(job))
    }

    async fn retry_dead(&self, target: RetryTarget) -> Result<u64, StoreError> {
        let now = Timestamp::now().millis();
        let (filter, value) = match &target {
            RetryTarget::Job(id) => ("id = $2", id),
            RetryTarget::DeadOfBot(bot) => ("bot_id = $2", bot),
        };
        let done = sqlx::query(&format!(
            "UPDATE jobs SET state = 'pending', due_at = $1, updated_at = $1, max_attempts = attempts + budget
             WHERE state = 'dead' AND {filter}"
        ))
        .bind(now)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected())
    }

    async fn job_stats(&self) -> Result<JobStats, StoreError> {
        let now = Timestamp::now().millis();
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT kind, state, count(*) FROM jobs GROUP BY kind, state")
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        let (due, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*), min(due_at) FROM jobs WHERE state = 'pending' AND due_at <= $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(JobStats {
            by_kind_and_state: rows
                .into_iter()
                .map(|(kind, state, n)| {
                    (
                        kind,
                        JobState::parse(&state).unwrap_or(JobState::Pending),
                        n as u64,
                    )
                })
                .collect(),
            due: due as u64,
            oldest_due_age: oldest.map(|t| Duration::from_millis((now - t).max(0) as u64)),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO heartbeat (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = excluded.at")
            .bind(Timestamp::now().millis())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
