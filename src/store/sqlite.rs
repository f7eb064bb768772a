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

use super::{Ingest, IngestOutcome, Store, StoreError, StoredConversation};
use crate::auth::JtiUse;
use crate::config::StoreSettings;
use crate::domain::{Applied, Conversation, EndedAfter, Timestamp};

/// Schema versions, applied in order and recorded in `PRAGMA user_version`.
const MIGRATIONS: &[&str] = &[r#"
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
"#];

enum Command {
    Ingest(Ingest, oneshot::Sender<Result<IngestOutcome, StoreError>>),
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

struct Writer {
    conn: Connection,
    max_batch: usize,
}

/// The reply owed for one command once the batch's fate is known.
enum Pending {
    Ingest(
        oneshot::Sender<Result<IngestOutcome, StoreError>>,
        Result<IngestOutcome, StoreError>,
    ),
    Jti(
        oneshot::Sender<Result<bool, StoreError>>,
        Result<bool, StoreError>,
    ),
    Ping(
        oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
    ),
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
            .transaction_with_behavior(TransactionBehavior::Immediate);
        let commit = match tx {
            Ok(mut tx) => {
                for cmd in batch.drain(..) {
                    match cmd {
                        Command::Ingest(ingest, reply) => {
                            pending.push(Pending::Ingest(reply, ingest_one(&mut tx, &ingest, now)))
                        }
                        Command::ConsumeJti(jti, reply) => {
                            pending.push(Pending::Jti(reply, consume_jti(&tx, &jti, now)))
                        }
                        Command::Ping(reply) => {
                            // Readiness writes a page, so a full or read-only disk shows.
                            let probe = tx
                                .prepare_cached("INSERT INTO heartbeat (id, at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET at = excluded.at")
                                .and_then(|mut s| s.execute(params![now.millis()]))
                                .map(|_| ())
                                .map_err(unavailable);
                            pending.push(Pending::Ping(reply, probe))
                        }
                        Command::Shutdown => shutdown = true,
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
                    match cmd {
                        Command::Ingest(_, reply) => {
                            pending.push(Pending::Ingest(reply, Err(unavailable(&e))))
                        }
                        Command::ConsumeJti(_, reply) => {
                            pending.push(Pending::Jti(reply, Err(unavailable(&e))))
                        }
                        Command::Ping(reply) => {
                            pending.push(Pending::Ping(reply, Err(unavailable(&e))))
                        }
                        Command::Shutdown => shutdown = true,
                    }
                }
                Err(unavailable(e))
            }
        };
        if let Err(e) = &commit {
            tracing::error!(error = %e, batch = size, "sqlite commit failed; the batch is refused");
        }
        metrics::histogram!("wrapup_commit_batch_size").record(size as f64);
        metrics::histogram!("wrapup_commit_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        for p in pending {
            match p {
                Pending::Ingest(reply, result) => {
                    let _ = reply.send(settle(&commit, result));
                }
                Pending::Jti(reply, result) => {
                    let _ = reply.send(settle(&commit, result));
                }
                Pending::Ping(reply, result) => {
                    let _ = reply.send(settle(&commit, result));
                }
            }
        }
        shutdown
    }
}

/// A result computed inside a batch stands only if the batch committed.
fn settle<T>(
    commit: &Result<(), StoreError>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match commit {
        Ok(()) => result,
        Err(e) => Err(StoreError::Unavailable(e.to_string())),
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

fn consume_jti(
    tx: &rusqlite::Transaction<'_>,
    jti: &JtiUse,
    now: Timestamp,
) -> Result<bool, StoreError> {
    record_jti(tx, jti, now).map_err(unavailable)
}

fn ingest_one(
    tx: &mut rusqlite::Transaction<'_>,
    ingest: &Ingest,
    now: Timestamp,
) -> Result<IngestOutcome, StoreError> {
    // A savepoint per request: dropping it without commit undoes only this request.
    let sp = tx.savepoint().map_err(unavailable)?;
    if let Some(jti) = &ingest.jti
        && !record_jti(&sp, jti, now).map_err(unavailable)?
    {
        return Ok(IngestOutcome::Replay);
    }
    let existing: Option<String> = sp
        .prepare_cached(
            "SELECT state FROM conversations WHERE bot_id = ?1 AND conversation_id = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![ingest.bot_id, ingest.conversation_id], |r| r.get(0))
                .optional()
        })
        .map_err(unavailable)?;
    let mut conv = match existing {
        Some(json) => serde_json::from_str::<Conversation>(&json)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        None => Conversation::new(now),
    };
    let was_ended = conv.is_ended();
    let (mut stored, mut duplicate_ends) = (0u32, 0u32);
    {
        let mut insert = sp
            .prepare_cached(
                "INSERT INTO events (bot_id, conversation_id, seq, name, received_at, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(unavailable)?;
        for event in &ingest.events {
            match conv.apply(&event.kind, now) {
                Ok(Applied::Stored { seq }) => {
                    stored += 1;
                    insert
                        .execute(params![
                            ingest.bot_id,
                            ingest.conversation_id,
                            seq as i64,
                            event.kind.name(),
                            now.millis(),
                            event.raw.to_string()
                        ])
                        .map_err(unavailable)?;
                }
                Ok(Applied::DuplicateEnd) => duplicate_ends += 1,
                Err(EndedAfter { ended_at }) => {
                    return Ok(IngestOutcome::EndedAlready { ended_at });
                }
            }
        }
    }
    let state = serde_json::to_string(&conv).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sp.prepare_cached(
        "INSERT INTO conversations (bot_id, conversation_id, status, created_at, last_event_at, ended_at, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (bot_id, conversation_id) DO UPDATE SET
           status = excluded.status, last_event_at = excluded.last_event_at,
           ended_at = excluded.ended_at, state = excluded.state",
    )
    .and_then(|mut s| {
        s.execute(params![
            ingest.bot_id,
            ingest.conversation_id,
            conv.status.as_str(),
            conv.created_at.millis(),
            conv.last_event_at.millis(),
            conv.ended_at.map(|t| t.millis()),
            state
        ])
    })
    .map_err(unavailable)?;
    sp.commit().map_err(unavailable)?;
    Ok(IngestOutcome::Accepted {
        stored,
        duplicate_ends,
        ended: !was_ended && conv.is_ended(),
    })
}
