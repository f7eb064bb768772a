//! The embedded store: SQLite in WAL mode with `synchronous=FULL`, so a commit is on
//! disk (fsync'd) before it returns.
//!
//! All writes go through one writer thread that drains every request waiting for it
//! and commits them in one transaction (group commit): under load one fsync serves
//! many requests, and when idle a lone request commits at once. Each request runs in
//! its own savepoint, so a request refused inside the batch (409, replay) rolls back
//! alone. Replies are sent only after the batch's COMMIT returned; if it failed, every
//! request of the batch gets an error and nothing of it was acknowledged.
//!
//! Reads use a separate connection (WAL lets them run beside the writer).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::{
    ActionRef, AttemptOutcome, AttemptRecord, ClaimedJob, ConversationFilter, EventPage, Ingest,
    IngestOutcome, JobFilter, JobState, JobStats, JobView, LOST_ATTEMPT, ListedConversation,
    NextStep, Purge, RetryTarget, Store, StoreError, StoredConversation, StoredEvent,
    apply_request, inactivity_event, job_payload, new_job_id,
};
use crate::auth::JtiUse;
use crate::config::StoreSettings;
use crate::domain::{Conversation, EndedAfter, Timestamp};

/// Schema versions, applied in order and recorded in `PRAGMA user_version`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE conversations (
    bot_id          TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    last_event_at   INTEGER NOT NULL,
    ended_at        INTEGER,
    state           TEXT    NOT NULL,
    PRIMARY KEY (bot_id, conversation_id)
) WITHOUT ROWID;
CREATE INDEX conversations_by_last_event ON conversations (bot_id, status, last_event_at);
CREATE TABLE events (
    bot_id          TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    name            TEXT    NOT NULL,
    received_at     INTEGER NOT NULL,
    body            TEXT    NOT NULL,
    PRIMARY KEY (bot_id, conversation_id, seq)
) WITHOUT ROWID;
CREATE TABLE used_jti (
    client_id  TEXT    NOT NULL,
    jti        TEXT    NOT NULL,
    used_at    INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (client_id, jti)
) WITHOUT ROWID;
CREATE TABLE heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
CREATE TABLE jobs (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    bot_id          TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    budget          INTEGER NOT NULL,
    due_at          INTEGER NOT NULL,
    lease_until     INTEGER,
    lease_token     TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    last_error      TEXT,
    payload         TEXT    NOT NULL
);
CREATE UNIQUE INDEX jobs_once ON jobs (bot_id, conversation_id, action);
CREATE INDEX jobs_due ON jobs (state, due_at);
CREATE INDEX jobs_lease ON jobs (state, lease_until);
CREATE TABLE attempts (
    job_id      TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,
    status_code INTEGER,
    error       TEXT,
    response    TEXT,
    PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;
"#,
    r#"
ALTER TABLE conversations ADD COLUMN sort_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN events_purged_at INTEGER;
ALTER TABLE conversations ADD COLUMN transcript_purged_at INTEGER;
UPDATE conversations SET sort_at = COALESCE(ended_at, last_event_at);
CREATE INDEX conversations_by_sort ON conversations (bot_id, sort_at, conversation_id);
CREATE INDEX conversations_by_end ON conversations (bot_id, status, ended_at);
"#,
    // Only active conversations are swept for inactivity: ended ones leave this index.
    r#"
DROP INDEX conversations_by_last_event;
CREATE INDEX conversations_idle ON conversations (bot_id, last_event_at) WHERE status = 'active';
"#,
    // Rows of conversations (their state) and events (their JSON) are large: SQLite keeps
    // such rows cheaper in rowid tables, with the key in a small index beside them. The
    // purge finds its conversations through the sort index (sort_at is ended_at once ended).
    r#"
CREATE TABLE conversations_v4 (
    bot_id               TEXT    NOT NULL,
    conversation_id      TEXT    NOT NULL,
    status               TEXT    NOT NULL,
    created_at           INTEGER NOT NULL,
    last_event_at        INTEGER NOT NULL,
    ended_at             INTEGER,
    state                TEXT    NOT NULL,
    sort_at              INTEGER NOT NULL DEFAULT 0,
    events_purged_at     INTEGER,
    transcript_purged_at INTEGER,
    PRIMARY KEY (bot_id, conversation_id)
);
INSERT INTO conversations_v4 SELECT bot_id, conversation_id, status, created_at, last_event_at, ended_at, state,
    sort_at, events_purged_at, transcript_purged_at FROM conversations;
DROP TABLE conversations;
ALTER TABLE conversations_v4 RENAME TO conversations;
CREATE INDEX conversations_by_sort ON conversations (bot_id, sort_at, conversation_id);
CREATE INDEX conversations_idle ON conversations (bot_id, last_event_at) WHERE status = 'active';
CREATE TABLE events_v4 (
    bot_id          TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    name            TEXT    NOT NULL,
    received_at     INTEGER NOT NULL,
    body            TEXT    NOT NULL,
    PRIMARY KEY (bot_id, conversation_id, seq)
);
INSERT INTO events_v4 SELECT * FROM events;
DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;
"#,
    // Expired jti rows are forgotten by the sweeper (see Store::purge_jti).
    r#"
CREATE INDEX used_jti_expiry ON used_jti (expires_at) WHERE expires_at IS NOT NULL;
"#,
    // Events are keyed by their conversation's integer id instead of the (bot id,
    // conversation id) text pair: a new conversation's events go to the right edge of a
    // small-keyed index instead of a random leaf of a wide one (one random page write per
    // request instead of two). The id is an explicit INTEGER PRIMARY KEY, so it survives
    // VACUUM.
    r#"
CREATE TABLE conversations_v6 (
    id                   INTEGER PRIMARY KEY,
    bot_id               TEXT    NOT NULL,
    conversation_id      TEXT    NOT NULL,
    status               TEXT    NOT NULL,
    created_at           INTEGER NOT NULL,
    last_event_at        INTEGER NOT NULL,
    ended_at             INTEGER,
    state                TEXT    NOT NULL,
    sort_at              INTEGER NOT NULL DEFAULT 0,
    events_purged_at     INTEGER,
    transcript_purged_at INTEGER,
    UNIQUE (bot_id, conversation_id)
);
INSERT INTO conversations_v6 (id, bot_id, conversation_id, status, created_at, last_event_at, ended_at,
    state, sort_at, events_purged_at, transcript_purged_at)
    SELECT rowid, bot_id, conversation_id, status, created_at, last_event_at, ended_at, state,
    sort_at, events_purged_at, transcript_purged_at FROM conversations ORDER BY rowid;
CREATE TABLE events_v6 (
    conversation INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    name         TEXT    NOT NULL,
    received_at  INTEGER NOT NULL,
    body         TEXT    NOT NULL
);
INSERT INTO events_v6 SELECT c.id, e.seq, e.name, e.received_at, e.body
    FROM events e JOIN conversations_v6 c ON c.bot_id = e.bot_id AND c.conversation_id = e.conversation_id
    ORDER BY c.id, e.seq;
DROP TABLE events;
DROP TABLE conversations;
ALTER TABLE conversations_v6 RENAME TO conversations;
ALTER TABLE events_v6 RENAME TO events;
CREATE UNIQUE INDEX events_by_conversation ON events (conversation, seq);
CREATE INDEX conversations_by_sort ON conversations (bot_id, sort_at, conversation_id);
CREATE INDEX conversations_idle ON conversations (bot_id, last_event_at) WHERE status = 'active';
"#,
    // A job's payload (the record at the end, ~0.8 KiB) moves out of its row into a table
    // written once and shared by the end's jobs: claims and finishes update small rows,
    // ~20 to a page instead of ~3.
    r#"
CREATE TABLE job_payloads (
    id      INTEGER PRIMARY KEY,
    payload TEXT    NOT NULL
);
ALTER TABLE jobs ADD COLUMN payload_id INTEGER NOT NULL DEFAULT 0;
INSERT INTO job_payloads (id, payload) SELECT seq, payload FROM jobs ORDER BY seq;
UPDATE jobs SET payload_id = seq;
ALTER TABLE jobs DROP COLUMN payload;
"#,
];

enum Command {
    Ingest(Ingest, oneshot::Sender<Result<IngestOutcome, StoreError>>),
    Claim(
        usize,
        std::time::Duration,
        oneshot::Sender<Result<Vec<ClaimedJob>, StoreError>>,
    ),
    Finish(
        Box<(ClaimedJob, AttemptRecord, NextStep)>,
        oneshot::Sender<Result<bool, StoreError>>,
    ),
    Retry(RetryTarget, oneshot::Sender<Result<u64, StoreError>>),
    PurgeJti(Timestamp, usize, oneshot::Sender<Result<u64, StoreError>>),
    Expire(
        Box<Expire>,
        oneshot::Sender<Result<Vec<String>, StoreError>>,
    ),
    Purge(
        String,
        Purge,
        usize,
        oneshot::Sender<Result<u64, StoreError>>,
    ),
    ConsumeJti(JtiUse, oneshot::Sender<Result<bool, StoreError>>),
    Ping(oneshot::Sender<Result<(), StoreError>>),
    Shutdown,
}

pub struct SqliteStore {
    tx: mpsc::Sender<Command>,
    reader: Arc<Mutex<Connection>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn open_connection(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(unavailable)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(unavailable)?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Unavailable(format!(
            "the database is at schema version {version}, newer than this wrapup knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction().map_err(unavailable)?;
        tx.execute_batch(sql).map_err(unavailable)?;
        tx.pragma_update(None, "user_version", i + 1)
            .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
    }
    Ok(())
}

impl SqliteStore {
    pub async fn open(path: &Path, settings: &StoreSettings) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let max_batch = settings.max_batch;
        let (writer_conn, reader) =
            tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
                let mut conn = open_connection(&path, OpenFlags::default())?;
                let mode: String = conn
                    .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                    .map_err(unavailable)?;
                if !mode.eq_ignore_ascii_case("wal") {
                    return Err(StoreError::Unavailable(format!(
                        "cannot switch {} to WAL (got {mode})",
                        path.display()
                    )));
                }
                conn.pragma_update(None, "synchronous", "FULL")
                    .map_err(unavailable)?;
                // 64 MiB of page cache for the writer: the B-tree pages inserts touch stay in memory.
                conn.pragma_update(None, "cache_size", -65536)
                    .map_err(unavailable)?;
                // Every statement the writer runs stays prepared (the default keeps 16).
                conn.set_prepared_statement_cache_capacity(64);
                migrate(&mut conn)?;
                let reader = open_connection(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                Ok((conn, reader))
            })
            .await
            .map_err(unavailable)??;

        let (tx, rx) = mpsc::channel(settings.queue_capacity);
        let writer = std::thread::Builder::new()
            .name("wrapup-sqlite-writer".into())
            .spawn(move || {
                Writer {
                    conn: writer_conn,
                    max_batch,
                }
                .run(rx)
            })
            .map_err(unavailable)?;
        Ok(Self {
            tx,
            reader: Arc::new(Mutex::new(reader)),
            writer: Mutex::new(Some(writer)),
        })
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => {
                StoreError::Unavailable("the store is shut down".into())
            }
        })?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the store writer stopped".into()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader
                .lock()
                .map_err(|_| StoreError::Unavailable("reader poisoned".into()))?;
            f(&conn)
        })
        .await
        .map_err(unavailable)?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ingest(&self, ingest: Ingest) -> Result<IngestOutcome, StoreError> {
        self.call(|reply| Command::Ingest(ingest, reply)).await
    }

    async fn consume_jti(&self, jti: JtiUse) -> Result<bool, StoreError> {
        self.call(|reply| Command::ConsumeJti(jti, reply)).await
    }

    async fn conversation(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<Option<StoredConversation>, StoreError> {
        let (bot_id, conversation_id) = (bot_id.to_owned(), conversation_id.to_owned());
        self.read(move |conn| {
            let state: Option<String> = conn
                .prepare_cached(
                    "SELECT state FROM conversations WHERE bot_id = ?1 AND conversation_id = ?2",
                )
                .and_then(|mut s| {
                    s.query_row(params![bot_id, conversation_id], |r| r.get(0))
                        .optional()
                })
                .map_err(unavailable)?;
            state
                .map(|json| {
                    let state = serde_json::from_str(&json)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    Ok(StoredConversation {
                        bot_id,
                        conversation_id,
                        state,
                    })
                })
                .transpose()
        })
        .await
    }

    async fn claim_jobs(
        &self,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        self.call(|reply| Command::Claim(limit, lease, reply)).await
    }

    async fn finish_attempt(
        &self,
        job: &ClaimedJob,
        attempt: AttemptRecord,
        next: NextStep,
    ) -> Result<bool, StoreError> {
        let args = Box::new((job.clone(), attempt, next));
        self.call(|reply| Command::Finish(args, reply)).await
    }

    async fn list_conversations(
        &self,
        bot_id: &str,
        filter: ConversationFilter,
    ) -> Result<Vec<ListedConversation>, StoreError> {
        let bot_id = bot_id.to_owned();
        self.read(move |conn| list_conversations(conn, &bot_id, &filter))
            .await
    }

    async fn events(
        &self,
        bot_id: &str,
        conversation_id: &str,
        only: Option<&'static str>,
        after: u64,
        limit: usize,
    ) -> Result<Option<EventPage>, StoreError> {
        let (bot_id, conversation_id) = (bot_id.to_owned(), conversation_id.to_owned());
        self.read(move |conn| {
            event_page(conn, &bot_id, &conversation_id, only, after, limit).map_err(unavailable)
        })
        .await
    }

    async fn expire_inactive(
        &self,
        bot_id: &str,
        idle_since: Timestamp,
        timeout_ms: i64,
        on_end: Arc<[ActionRef]>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let args = Box::new(Expire {
            bot_id: bot_id.to_owned(),
            idle_since,
            timeout_ms,
            on_end,
            limit,
        });
        self.call(|reply| Command::Expire(args, reply)).await
    }

    async fn purge_jti(&self, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
        self.call(|reply| Command::PurgeJti(before, limit, reply))
            .await
    }

    async fn purge(&self, bot_id: &str, purge: Purge, limit: usize) -> Result<u64, StoreError> {
        let bot_id = bot_id.to_owned();
        self.call(|reply| Command::Purge(bot_id, purge, limit, reply))
            .await
    }

    async fn list_jobs(&self, filter: JobFilter) -> Result<Vec<JobView>, StoreError> {
        self.read(move |conn| list_jobs(conn, &filter).map_err(unavailable))
            .await
    }

    async fn job(&self, id: &str) -> Result<Option<JobView>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| job_with_attempts(conn, &id).map_err(unavailable))
            .await
    }

    async fn retry_dead(&self, target: RetryTarget) -> Result<u64, StoreError> {
        self.call(|reply| Command::Retry(target, reply)).await
    }

    async fn job_stats(&self) -> Result<JobStats, StoreError> {
        self.read(|conn| job_stats(conn, Timestamp::now()).map_err(unavailable))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(Command::Ping).await?;
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(unavailable)
        })
        .await
    }

    async fn close(&self) {
        // Waits for room in the queue: everything queued before is committed first.
        let _ = self.tx.send(Command::Shutdown).await;
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

struct Expire {
    bot_id: String,
    idle_since: Timestamp,
    timeout_ms: i64,
    on_end: Arc<[ActionRef]>,
    limit: usize,
}

struct Writer {
    conn: Connection,
    max_batch: usize,
}

/// The reply owed for one command, sent once the batch's fate is known.
type Pending = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;

fn pending<T: Send + 'static>(
    reply: oneshot::Sender<Result<T, StoreError>>,
    result: Result<T, StoreError>,
) -> Pending {
    Box::new(move |commit| {
        let _ = reply.send(settle(commit, result));
    })
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut stop = false;
        while !stop {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            batch.push(first);
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            stop = self.commit_batch(&mut batch);
        }
        rx.close();
        // Anything that raced in after shutdown is answered, not silently dropped.
        while let Ok(cmd) = rx.try_recv() {
            batch.push(cmd);
        }
        if !batch.is_empty() {
            self.commit_batch(&mut batch);
        }
    }

    /// Commits `batch` in one transaction and answers it; returns true on shutdown.
    fn commit_batch(&mut self, batch: &mut Vec<Command>) -> bool {
        let started = Instant::now();
        let size = batch.len();
        let now = Timestamp::now();
        let mut shutdown = false;
        let mut pending = Vec::with_capacity(size);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable);
        let commit = match tx {
            Ok(mut tx) => {
                for cmd in batch.drain(..) {
                    match execute(&mut tx, cmd, now) {
                        Some(p) => pending.push(p),
                        None => shutdown = true,
                    }
                }
                if tx.is_autocommit() {
                    // SQLite rolled the whole transaction back (e.g. SQLITE_FULL): nothing of the batch stands.
                    Err(StoreError::Unavailable(
                        "the transaction was rolled back by SQLite".into(),
                    ))
                } else {
                    tx.commit().map_err(unavailable)
                }
            }
            Err(e) => {
                for cmd in batch.drain(..) {
                    match refuse(cmd, &e) {
                        Some(p) => pending.push(p),
                        None => shutdown = true,
                    }
                }
                Err(e)
            }
        };
        if let Err(e) = &commit {
            tracing::error!(error = %e, batch = size, "sqlite commit failed; the batch is refused");
        }
        metrics::histogram!("wrapup_commit_batch_size").record(size as f64);
        metrics::histogram!("wrapup_commit_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        for reply in pending {
            reply(&commit);
        }
        shutdown
    }
}

/// Runs one command inside the batch's transaction; `None` for shutdown.
fn execute(tx: &mut rusqlite::Transaction<'_>, cmd: Command, now: Timestamp) -> Option<Pending> {
    Some(match cmd {
        Command::Ingest(ingest, reply) => pending(reply, ingest_one(tx, &ingest, now)),
        Command::ConsumeJti(jti, reply) => {
            pending(reply, record_jti(tx, &jti, now).map_err(unavailable))
        }
        Command::Claim(limit, lease, reply) => {
            pending(reply, claim(tx, limit, lease, now).map_err(unavailable))
        }
        Command::Finish(args, reply) => {
            let (job, attempt, next) = *args;
            pending(
                reply,
                finish(tx, &job, &attempt, next, now).map_err(unavailable),
            )
        }
        Command::Retry(target, reply) => {
            pending(reply, retry_dead(tx, &target, now).map_err(unavailable))
        }
        Command::Ping(reply) => {
            // Readiness writes a page, so a full or read-only disk shows.
            let probe = tx
                .prepare_cached(
                    "INSERT INTO heartbeat (id, at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                )
                .and_then(|mut s| s.execute(params![now.millis()]))
                .map(|_| ())
                .map_err(unavailable);
            pending(reply, probe)
        }
        Command::Expire(args, reply) => pending(reply, expire_inactive(tx, &args, now)),
        Command::Purge(bot_id, purge, limit, reply) => pending(
            reply,
            purge_ended(tx, &bot_id, purge, limit, now).map_err(unavailable),
        ),
        Command::PurgeJti(before, limit, reply) => {
            let purged = tx
                .prepare_cached(
                    "DELETE FROM used_jti WHERE (client_id, jti) IN (
                         SELECT client_id, jti FROM used_jti WHERE expires_at < ?1 LIMIT ?2)",
                )
                .and_then(|mut s| s.execute(params![before.millis(), limit as i64]))
                .map(|n| n as u64)
                .map_err(unavailable);
            pending(reply, purged)
        }
        Command::Shutdown => return None,
    })
}

/// Answers a command when no transaction could be started; `None` for shutdown.
fn refuse(cmd: Command, e: &StoreError) -> Option<Pending> {
    Some(match cmd {
        Command::Ingest(_, reply) => pending(reply, Err(again(e))),
        Command::ConsumeJti(_, reply) | Command::Finish(_, reply) => pending(reply, Err(again(e))),
        Command::Claim(_, _, reply) => pending(reply, Err(again(e))),
        Command::Retry(_, reply)
        | Command::Purge(_, _, _, reply)
        | Command::PurgeJti(_, _, reply) => pending(reply, Err(again(e))),
        Command::Expire(_, reply) => pending(reply, Err(again(e))),
        Command::Ping(reply) => pending(reply, Err(again(e))),
        Command::Shutdown => return None,
    })
}

/// A result computed inside a batch stands only if the batch committed.
fn settle<T>(
    commit: &Result<(), StoreError>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match commit {
        Ok(()) => result,
        Err(e) => Err(again(e)),
    }
}

/// The batch's error, once more for each of its commands.
fn again(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Records `jti`; false if this app used it before.
fn record_jti(conn: &Connection, jti: &JtiUse, now: Timestamp) -> rusqlite::Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO used_jti (client_id, jti, used_at, expires_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        )?
        .execute(params![jti.client_id, jti.jti, now.millis(), jti.expires_at.map(|t| t.millis())])?;
    Ok(inserted == 1)
}

fn ingest_one(
    conn: &Connection,
    ingest: &Ingest,
    now: Timestamp,
) -> Result<IngestOutcome, StoreError> {
    // A savepoint per request: rolling back to it undoes only this request. The statements
    // are prepared once (a `Savepoint` guard would parse its SQL text for every request).
    conn.prepare_cached("SAVEPOINT request")
        .and_then(|mut s| s.execute([]))
        .map_err(unavailable)?;
    let result = ingest_in_savepoint(conn, ingest, now);
    let keep = matches!(result, Ok(IngestOutcome::Accepted { .. }));
    let end = if keep {
        conn.prepare_cached("RELEASE request")
            .and_then(|mut s| s.execute([]))
    } else {
        conn.prepare_cached("ROLLBACK TO request")
            .and_then(|mut s| s.execute([]))
            .and_then(|_| conn.prepare_cached("RELEASE request"))
            .and_then(|mut s| s.execute([]))
    };
    end.map_err(unavailable)?;
    result
}

fn ingest_in_savepoint(
    conn: &Connection,
    ingest: &Ingest,
    now: Timestamp,
) -> Result<IngestOutcome, StoreError> {
    if let Some(jti) = &ingest.jti
        && !record_jti(conn, jti, now).map_err(unavailable)?
    {
        return Ok(IngestOutcome::Replay);
    }
    let (id, mut conv) = match load_conversation(conn, &ingest.bot_id, &ingest.conversation_id)? {
        Some((id, conv)) => (Some(id), conv),
        None => (None, Conversation::new(now)),
    };
    let applied = match apply_request(&mut conv, &ingest.events, now) {
        Ok(applied) => applied,
        Err(EndedAfter { ended_at }) => return Ok(IngestOutcome::EndedAlready { ended_at }),
    };
    let id = save_conversation(conn, id, &ingest.bot_id, &ingest.conversation_id, &conv)?;
    for (seq, event) in &applied.stored {
        append_event(conn, id, *seq, event.kind.name(), now, &event.raw).map_err(unavailable)?;
    }
    if applied.ended {
        schedule_jobs(
            conn,
            &ingest.bot_id,
            &ingest.conversation_id,
            &ingest.on_end,
            &conv,
            now,
        )
        .map_err(unavailable)?;
    }
    Ok(applied.outcome())
}

/// The conversation's integer id and state, if it exists.
fn load_conversation(
    conn: &Connection,
    bot_id: &str,
    conversation_id: &str,
) -> Result<Option<(i64, Conversation)>, StoreError> {
    let row: Option<(i64, String)> = conn
        .prepare_cached(
            "SELECT id, state FROM conversations WHERE bot_id = ?1 AND conversation_id = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![bot_id, conversation_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(unavailable)?;
    row.map(|(id, json)| {
        serde_json::from_str(&json)
            .map(|conv| (id, conv))
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    })
    .transpose()
}

/// Updates the conversation `id`, or inserts it when it is new; returns its id.
fn save_conversation(
    conn: &Connection,
    id: Option<i64>,
    bot_id: &str,
    conversation_id: &str,
    conv: &Conversation,
) -> Result<i64, StoreError> {
    let state = serde_json::to_string(conv).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let ended_at = conv.ended_at.map(|t| t.millis());
    let sort_at = conv.ended_at.unwrap_or(conv.last_event_at).millis();
    match id {
        Some(id) => conn
            .prepare_cached(
                "UPDATE conversations SET status = ?2, last_event_at = ?3, ended_at = ?4, sort_at = ?5, state = ?6
                 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id,
                    conv.status.as_str(),
                    conv.last_event_at.millis(),
                    ended_at,
                    sort_at,
                    state
                ])
            })
            .map(|_| id),
        None => conn
            .prepare_cached(
                "INSERT INTO conversations (bot_id, conversation_id, status, created_at, last_event_at, ended_at, sort_at, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut s| {
                s.insert(params![
                    bot_id,
                    conversation_id,
                    conv.status.as_str(),
                    conv.created_at.millis(),
                    conv.last_event_at.millis(),
                    ended_at,
                    sort_at,
                    state
                ])
            }),
    }
    .map_err(unavailable)
}

fn append_event(
    conn: &Connection,
    conversation: i64,
    seq: u64,
    name: &str,
    at: Timestamp,
    body: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO events (conversation, seq, name, received_at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![conversation, seq as i64, name, at.millis(), body])?;
    Ok(())
}

/// The built-in end step, run in the transaction that ends the conversation: the record
/// as it stands at the end becomes the payload of one job per configured action.
fn schedule_jobs(
    conn: &Connection,
    bot_id: &str,
    conversation_id: &str,
    on_end: &[ActionRef],
    conv: &Conversation,
    now: Timestamp,
) -> rusqlite::Result<()> {
    if on_end.is_empty() {
        return Ok(());
    }
    let payload = job_payload(bot_id, conversation_id, conv);
    let payload_id = conn
        .prepare_cached("INSERT INTO job_payloads (payload) VALUES (?1)")?
        .insert(params![payload])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO jobs (id, bot_id, conversation_id, action, kind, state, max_attempts, budget, due_at, created_at, updated_at, payload_id)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6, ?7, ?7, ?7, ?8)",
    )?;
    for action in on_end {
        let id = new_job_id();
        insert.execute(params![
            id,
            bot_id,
            conversation_id,
            action.name,
            action.kind,
            action.max_attempts,
            now.millis(),
            payload_id
        ])?;
    }
    Ok(())
}

const JOB_COLUMNS: &str = "seq, id, bot_id, conversation_id, action, kind, state, attempts, max_attempts, created_at, updated_at, due_at, last_error";

fn job_view(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobView> {
    let state: String = r.get(6)?;
    Ok(JobView {
        cursor: r.get(0)?,
        id: r.get(1)?,
        bot_id: r.get(2)?,
        conversation_id: r.get(3)?,
        action: r.get(4)?,
        kind: r.get(5)?,
        state: JobState::parse(&state).unwrap_or(JobState::Pending),
        attempts: r.get(7)?,
        max_attempts: r.get(8)?,
        created_at: Timestamp::from_millis(r.get(9)?),
        updated_at: Timestamp::from_millis(r.get(10)?),
        due_at: Timestamp::from_millis(r.get(11)?),
        last_error: r.get(12)?,
        attempt_log: None,
    })
}

fn claim(
    tx: &rusqlite::Transaction<'_>,
    limit: usize,
    lease: std::time::Duration,
    now: Timestamp,
) -> rusqlite::Result<Vec<ClaimedJob>> {
    let lease_until = now.millis() + lease.as_millis() as i64;
    let mut claimed = Vec::new();
    // Due jobs first, then jobs whose worker vanished (lease expired). No `LIMIT ?`: SQLite
    // plans with a bound LIMIT's value and so re-prepares such a statement at every call
    // (~45k instructions each, see BENCHMARKS.md); stepping stops after `remaining` rows.
    for (query, lost) in [
        (
            "SELECT seq FROM jobs WHERE state = 'pending' AND due_at <= ?1 ORDER BY due_at",
            false,
        ),
        (
            "SELECT seq FROM jobs WHERE state = 'running' AND lease_until <= ?1 ORDER BY lease_until",
            true,
        ),
    ] {
        let remaining = limit.saturating_sub(claimed.len());
        if remaining == 0 {
            break;
        }
        let seqs: Vec<i64> = tx
            .prepare_cached(query)?
            .query_map(params![now.millis()], |r| r.get(0))?
            .take(remaining)
            .collect::<rusqlite::Result<_>>()?;
        for seq in seqs {
            if lost {
                // The lost attempt is recorded, and does not count against the budget.
                tx.prepare_cached(
                    "INSERT INTO attempts (job_id, attempt, started_at, duration_ms, outcome, error)
                     SELECT id, attempts, updated_at, ?2 - updated_at, 'lost', ?3
                     FROM jobs WHERE seq = ?1
                     ON CONFLICT (job_id, attempt) DO NOTHING",
                )?
                .execute(params![seq, now.millis(), LOST_ATTEMPT])?;
                tx.prepare_cached(
                    "UPDATE jobs SET max_attempts = max_attempts + 1 WHERE seq = ?1",
                )?
                .execute(params![seq])?;
            }
            let token = uuid::Uuid::new_v4().simple().to_string();
            let (mut job, payload_id): (ClaimedJob, i64) = tx
                .prepare_cached(
                    "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = ?2, lease_token = ?3, updated_at = ?4
                     WHERE seq = ?1
                     RETURNING id, bot_id, conversation_id, action, kind, attempts, max_attempts, payload_id, created_at",
                )?
                .query_row(params![seq, lease_until, token, now.millis()], |r| {
                    let job = ClaimedJob {
                        id: r.get(0)?,
                        bot_id: r.get(1)?,
                        conversation_id: r.get(2)?,
                        action: r.get(3)?,
                        kind: r.get(4)?,
                        attempt: r.get(5)?,
                        max_attempts: r.get(6)?,
                        // Filled in just below from `job_payloads`.
                        payload: String::new(),
                        created_at: Timestamp::from_millis(r.get(8)?),
                        lease_token: token.clone(),
                    };
                    Ok((job, r.get(7)?))
                })?;
            job.payload = tx
                .prepare_cached("SELECT payload FROM job_payloads WHERE id = ?1")?
                .query_row(params![payload_id], |r| r.get(0))?;
            claimed.push(job);
        }
    }
    Ok(claimed)
}

fn finish(
    tx: &rusqlite::Transaction<'_>,
    job: &ClaimedJob,
    a: &AttemptRecord,
    next: NextStep,
    now: Timestamp,
) -> rusqlite::Result<bool> {
    tx.prepare_cached(
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
    let (state, due_at) = match next {
        NextStep::Succeeded => (JobState::Succeeded, now),
        NextStep::RetryAt(at) => (JobState::Pending, at),
        NextStep::Dead => (JobState::Dead, now),
    };
    let changed = tx
        .prepare_cached(
            "UPDATE jobs SET state = ?3, due_at = ?4, lease_until = NULL, lease_token = NULL, updated_at = ?5, last_error = ?6
             WHERE id = ?1 AND lease_token = ?2 AND state = 'running'",
        )?
        .execute(params![job.id, job.lease_token, state.as_str(), due_at.millis(), now.millis(), a.error])?;
    Ok(changed == 1)
}

fn retry_dead(
    tx: &rusqlite::Transaction<'_>,
    target: &RetryTarget,
    now: Timestamp,
) -> rusqlite::Result<u64> {
    let (filter, value) = match target {
        RetryTarget::Job(id) => ("id = ?2", id),
        RetryTarget::DeadOfBot(bot) => ("bot_id = ?2", bot),
    };
    let sql = format!(
        "UPDATE jobs SET state = 'pending', due_at = ?1, updated_at = ?1, max_attempts = attempts + budget
         WHERE state = 'dead' AND {filter}"
    );
    Ok(tx
        .prepare_cached(&sql)?
        .execute(params![now.millis(), value])? as u64)
}

fn list_jobs(conn: &Connection, f: &JobFilter) -> rusqlite::Result<Vec<JobView>> {
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
    if let Some(before) = f.before {
        args.push(before.into());
        sql.push_str(&format!(" AND seq < ?{}", args.len()));
    }
    args.push((f.limit as i64).into());
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ?{}", args.len()));
    conn.prepare_cached(&sql)?
        .query_map(rusqlite::params_from_iter(args), job_view)?
        .collect()
}

fn job_with_attempts(conn: &Connection, id: &str) -> rusqlite::Result<Option<JobView>> {
    let job = conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row(params![id], job_view)
        .optional()?;
    let Some(mut job) = job else { return Ok(None) };
    let attempts = conn
        .prepare_cached(
            "SELECT attempt, started_at, duration_ms, outcome, status_code, error, response
             FROM attempts WHERE job_id = ?1 ORDER BY attempt",
        )?
        .query_map(params![id], |r| {
            let outcome: String = r.get(3)?;
            Ok(AttemptRecord {
                attempt: r.get(0)?,
                started_at: Timestamp::from_millis(r.get(1)?),
                duration_ms: r.get::<_, i64>(2)?.max(0) as u64,
                outcome: match outcome.as_str() {
                    "succeeded" => AttemptOutcome::Succeeded,
                    "lost" => AttemptOutcome::Lost,
                    _ => AttemptOutcome::Failed,
                },
                status_code: r.get(4)?,
                error: r.get(5)?,
                response: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    job.attempt_log = Some(attempts);
    Ok(Some(job))
}

fn job_stats(conn: &Connection, now: Timestamp) -> rusqlite::Result<JobStats> {
    let by_kind_and_state = conn
        .prepare_cached("SELECT kind, state, count(*) FROM jobs GROUP BY kind, state")?
        .query_map([], |r| {
            let state: String = r.get(1)?;
            Ok((
                r.get(0)?,
                JobState::parse(&state).unwrap_or(JobState::Pending),
                r.get::<_, i64>(2)? as u64,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let (due, oldest): (i64, Option<i64>) = conn
        .prepare_cached(
            "SELECT count(*), min(due_at) FROM jobs WHERE state = 'pending' AND due_at <= ?1",
        )?
        .query_row(params![now.millis()], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(JobStats {
        by_kind_and_state,
        due: due as u64,
        oldest_due_age: oldest
            .map(|t| std::time::Duration::from_millis((now.millis() - t).max(0) as u64)),
    })
}

/// The server's own end for conversations gone silent, through the same steps as a
/// client's end: the log gets an `INACTIVITY_TIMEOUT` entry, the jobs are scheduled.
fn expire_inactive(
    tx: &rusqlite::Transaction<'_>,
    a: &Expire,
    now: Timestamp,
) -> Result<Vec<String>, StoreError> {
    let ids: Vec<String> = tx
        .prepare_cached(
            "SELECT conversation_id FROM conversations INDEXED BY conversations_idle
             WHERE bot_id = ?1 AND status = 'active' AND last_event_at <= ?2
             ORDER BY last_event_at LIMIT ?3",
        )
        .and_then(|mut s| {
            s.query_map(
                params![a.bot_id, a.idle_since.millis(), a.limit as i64],
                |r| r.get(0),
            )?
            .collect::<rusqlite::Result<_>>()
        })
        .map_err(unavailable)?;
    let mut ended = Vec::with_capacity(ids.len());
    for id in ids {
        let Some((conversation, mut conv)) = load_conversation(tx, &a.bot_id, &id)? else {
            continue;
        };
        let idle_since = conv.last_event_at;
        let Some(seq) = conv.expire(now, a.timeout_ms) else {
            continue;
        };
        let body = inactivity_event(idle_since, a.timeout_ms);
        append_event(tx, conversation, seq, "INACTIVITY_TIMEOUT", now, &body)
            .map_err(unavailable)?;
        save_conversation(tx, Some(conversation), &a.bot_id, &id, &conv)?;
        schedule_jobs(tx, &a.bot_id, &id, &a.on_end, &conv, now).map_err(unavailable)?;
        ended.push(id);
    }
    Ok(ended)
}

fn purge_ended(
    tx: &rusqlite::Transaction<'_>,
    bot_id: &str,
    p: Purge,
    limit: usize,
    now: Timestamp,
) -> rusqlite::Result<u64> {
    let mut purged = 0u64;
    for (before, column, only_messages) in [
        (p.events_before, "events_purged_at", false),
        (p.transcript_before, "transcript_purged_at", true),
    ] {
        let Some(before) = before else { continue };
        let ids: Vec<i64> = tx
            .prepare_cached(&format!(
                "SELECT id FROM conversations
                 WHERE bot_id = ?1 AND sort_at <= ?2 AND status = 'ended' AND {column} IS NULL
                 LIMIT ?3"
            ))?
            .query_map(params![bot_id, before.millis(), limit as i64], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in ids {
            let delete = if only_messages {
                "DELETE FROM events WHERE conversation = ?1 AND name = 'MESSAGE'"
            } else {
                "DELETE FROM events WHERE conversation = ?1"
            };
            tx.prepare_cached(delete)?.execute(params![id])?;
            tx.prepare_cached(&format!(
                "UPDATE conversations SET {column} = ?2 WHERE id = ?1"
            ))?
            .execute(params![id, now.millis()])?;
            purged += 1;
        }
    }
    Ok(purged)
}

fn list_conversations(
    conn: &Connection,
    bot_id: &str,
    f: &ConversationFilter,
) -> Result<Vec<ListedConversation>, StoreError> {
    let mut sql =
        String::from("SELECT conversation_id, sort_at, state FROM conversations WHERE bot_id = ?1");
    let mut args: Vec<rusqlite::types::Value> = vec![bot_id.to_owned().into()];
    if let Some(status) = f.status {
        args.push(status.as_str().to_owned().into());
        sql.push_str(&format!(" AND status = ?{}", args.len()));
    }
    if let Some(from) = f.from {
        args.push(from.millis().into());
        sql.push_str(&format!(" AND sort_at >= ?{}", args.len()));
    }
    if let Some(to) = f.to {
        args.push(to.millis().into());
        sql.push_str(&format!(" AND sort_at <= ?{}", args.len()));
    }
    if let Some((at, id)) = &f.after {
        args.push(at.millis().into());
        args.push(id.clone().into());
        let (a, b) = (args.len() - 1, args.len());
        sql.push_str(&format!(
            " AND (sort_at < ?{a} OR (sort_at = ?{a} AND conversation_id < ?{b}))"
        ));
    }
    args.push((f.limit as i64).into());
    sql.push_str(&format!(
        " ORDER BY sort_at DESC, conversation_id DESC LIMIT ?{}",
        args.len()
    ));
    let rows: Vec<(String, i64, String)> = conn
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(rusqlite::params_from_iter(args), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<_>>()
        })
        .map_err(unavailable)?;
    rows.into_iter()
        .map(|(conversation_id, sort_at, state)| {
            Ok(ListedConversation {
                conversation: StoredConversation {
                    bot_id: bot_id.to_owned(),
                    conversation_id,
                    state: serde_json::from_str(&state)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                },
                sort_at: Timestamp::from_millis(sort_at),
            })
        })
        .collect()
}

fn event_page(
    conn: &Connection,
    bot_id: &str,
    conversation_id: &str,
    only: Option<&str>,
    after: u64,
    limit: usize,
) -> rusqlite::Result<Option<EventPage>> {
    let purged: Option<(i64, Option<i64>, Option<i64>)> = conn
        .prepare_cached(
            "SELECT id, events_purged_at, transcript_purged_at FROM conversations WHERE bot_id = ?1 AND conversation_id = ?2",
        )?
        .query_row(params![bot_id, conversation_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((id, events_purged_at, transcript_purged_at)) = purged else {
        return Ok(None);
    };
    let map = |r: &rusqlite::Row<'_>| {
        Ok(StoredEvent {
            seq: r.get::<_, i64>(0)? as u64,
            name: r.get(1)?,
            received_at: Timestamp::from_millis(r.get(2)?),
            body: r.get(3)?,
        })
    };
    let events = match only {
        Some(name) => conn
            .prepare_cached(
                "SELECT seq, name, received_at, body FROM events
                 WHERE conversation = ?1 AND seq > ?2 AND name = ?4 ORDER BY seq LIMIT ?3",
            )?
            .query_map(params![id, after as i64, limit as i64, name], map)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
        None => conn
            .prepare_cached(
                "SELECT seq, name, received_at, body FROM events
                 WHERE conversation = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?
            .query_map(params![id, after as i64, limit as i64], map)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    };
    Ok(Some(EventPage {
        events,
        events_purged_at: events_purged_at.map(Timestamp::from_millis),
        transcript_purged_at: transcript_purged_at.map(Timestamp::from_millis),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written by an earlier wrapup (schema 5: events keyed by the text pair)
    /// keeps every event under its conversation after the upgrade.
    #[test]
    fn an_upgraded_database_keeps_each_event_with_its_conversation() {
        let mut conn = Connection::open_in_memory().expect("in-memory database");
        for sql in &MIGRATIONS[..5] {
            conn.execute_batch(sql).expect("old schema");
        }
        conn.pragma_update(None, "user_version", 5)
            .expect("version");
        conn.execute_batch(
            r#"INSERT INTO conversations (bot_id, conversation_id, status, created_at, last_event_at, state, sort_at)
                   VALUES ('b', 'c1', 'active', 1, 2, '{}', 2), ('b', 'c2', 'ended', 1, 3, '{}', 3),
                          ('other', 'c1', 'active', 1, 4, '{}', 4);
               INSERT INTO events VALUES ('b', 'c2', 1, 'MESSAGE', 1, 'c2-1'), ('b', 'c1', 1, 'MESSAGE', 1, 'c1-1'),
                                         ('other', 'c1', 1, 'MESSAGE', 4, 'other-1'), ('b', 'c1', 2, 'END', 2, 'c1-2');
               INSERT INTO jobs (id, bot_id, conversation_id, action, kind, state, max_attempts, budget, due_at,
                                 created_at, updated_at, payload)
                   VALUES ('job_1', 'b', 'c2', 'notify', 'webhook', 'pending', 5, 5, 3, 3, 3, '{"record":"c2"}');"#,
        )
        .expect("old rows");
        migrate(&mut conn).expect("upgrade");

        let bodies = |bot: &str, conversation: &str| -> Vec<(u64, String)> {
            event_page(&conn, bot, conversation, None, 0, 10)
                .expect("read")
                .expect("conversation exists")
                .events
                .into_iter()
                .map(|e| (e.seq, e.body))
                .collect()
        };
        assert_eq!(bodies("b", "c1"), [(1, "c1-1".into()), (2, "c1-2".into())]);
        assert_eq!(bodies("b", "c2"), [(1, "c2-1".into())]);
        assert_eq!(bodies("other", "c1"), [(1, "other-1".into())]);
        // A job queued before the upgrade is claimed after it with its payload.
        let tx = conn.transaction().expect("transaction");
        let claimed = claim(
            &tx,
            10,
            std::time::Duration::from_secs(60),
            Timestamp::from_millis(10),
        )
        .expect("claim");
        tx.commit().expect("commit");
        let claimed: Vec<_> = claimed.into_iter().map(|j| (j.id, j.payload)).collect();
        assert_eq!(
            claimed,
            [("job_1".to_owned(), r#"{"record":"c2"}"#.to_owned())]
        );
        let version: usize = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, MIGRATIONS.len());
    }
}
