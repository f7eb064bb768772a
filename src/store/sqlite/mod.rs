//! The embedded store: SQLite in WAL mode with `synchronous=FULL`, so a commit is on
//! disk (fsync'd) before it returns.
//!
//! - `schema`: opening the file and the migrations (`migrations/*.sql`);
//! - `writer`: the one writer thread and its group commit; every write goes through it;
//! - `conversations`: loading state, writing the domain's plan, sweeps and record reads;
//! - `jobs`: the outbox queue and its views.
//!
//! Reads use a separate connection (WAL lets them run beside the writer).

mod backup;
mod conversations;
mod jobs;
mod schema;
mod stats;
mod writer;

use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use self::writer::{Command, Writer};
use super::{
    AttemptRecord, ClaimedJob, ConversationFilter, ConversationList, Decision, EventPage,
    EventQuery, Expiry, Ingest, IngestOutcome, JobFilter, JobStats, JobView, Known, NextStep,
    Purge, RetryTarget, Store, StoreError, StoredConversation,
};
use super::{DestinationRows, FoundConversation, TrafficBucket};
use crate::clock::SharedClock;
use crate::config::StoreSettings;
use crate::domain::{JtiUse, Timestamp};

pub use backup::{BackupReport, backup};

/// Opens the read-only connections of the pool.
#[derive(Debug)]
struct Readers {
    path: std::path::PathBuf,
}

impl r2d2::ManageConnection for Readers {
    type Connection = Connection;
    type Error = StoreError;

    fn connect(&self) -> Result<Connection, StoreError> {
        schema::open_connection(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), StoreError> {
        Ok(conn.execute_batch("")?)
    }

    fn has_broken(&self, _: &mut Connection) -> bool {
        false
    }
}

pub struct SqliteStore {
    clock: SharedClock,
    tx: mpsc::Sender<Command>,
    /// Read-only connections (`[store] read_connections`): in WAL mode each reads its own
    /// snapshot beside the writer, so one caller's long read holds one connection, not every
    /// reader's turn.
    readers: r2d2::Pool<Readers>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SqliteStore {
    pub async fn open(
        path: &Path,
        settings: &StoreSettings,
        clock: SharedClock,
    ) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let max_batch = settings.max_batch;
        let (readers_n, wait) = (settings.read_connections, settings.connect_timeout);
        let (conn, readers) = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let conn = schema::open_writer(&path)?;
            let readers = r2d2::Pool::builder()
                .max_size(readers_n)
                .min_idle(Some(1))
                .connection_timeout(wait)
                .build(Readers { path })
                .map_err(|e| StoreError::unavailable("opening the read connections", e))?;
            Ok((conn, readers))
        })
        .await
        .map_err(|e| StoreError::unavailable("opening the database", e))??;

        let (tx, rx) = mpsc::channel(settings.queue_capacity);
        let writer = std::thread::Builder::new()
            .name("wrapup-sqlite-writer".into())
            .spawn({
                let clock = clock.clone();
                move || {
                    Writer {
                        conn,
                        max_batch,
                        clock,
                    }
                    .run(rx)
                }
            })
            .map_err(|e| StoreError::unavailable("starting the writer thread", e))?;
        Ok(Self {
            clock,
            tx,
            readers,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues a command for the writer and waits for its answer (after the batch's commit).
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => StoreError::down("the store is shut down"),
        })?;
        rx.await
            .map_err(|_| StoreError::down("the store writer stopped"))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            // Every connection busy for `connect_timeout`: the store is overloaded (503).
            let conn = readers.get().map_err(|_| StoreError::Overloaded)?;
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::unavailable("reading", e))?
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
        self.read(move |conn| conversations::conversation(conn, &bot_id, &conversation_id))
            .await
    }

    async fn claim_jobs(
        &self,
        limit: usize,
        lease: std::time::Duration,
        known: Known,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        self.call(|reply| Command::Claim(limit, lease, known, reply))
            .await
    }

    async fn claim_each(
        &self,
        rooms: Vec<(String, usize)>,
        lease: std::time::Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        self.call(|reply| Command::ClaimEach(rooms, lease, reply))
            .await
    }

    async fn orphan_unknown(&self, known: Known, due_before: Timestamp) -> Result<u64, StoreError> {
        self.call(|reply| Command::Orphan(known, due_before, reply))
            .await
    }

    async fn decide(&self, id: &str, decision: Decision) -> Result<Option<bool>, StoreError> {
        let id = id.to_owned();
        self.call(|reply| Command::Decide(id, decision, reply))
            .await
    }

    async fn release(&self, job: &ClaimedJob) -> Result<bool, StoreError> {
        let (id, token) = (job.id.clone(), job.lease_token.clone());
        self.call(|reply| Command::Release(id, token, reply)).await
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
    ) -> Result<ConversationList, StoreError> {
        let bot_id = bot_id.to_owned();
        self.read(move |conn| conversations::list(conn, &bot_id, &filter))
            .await
    }

    async fn events(&self, q: EventQuery<'_>) -> Result<Option<EventPage>, StoreError> {
        let (bot_id, conversation_id) = (q.bot_id.to_owned(), q.conversation_id.to_owned());
        let (only, after, limit, max_bytes) = (q.only, q.after, q.limit, q.max_bytes);
        self.read(move |conn| {
            let q = EventQuery {
                bot_id: &bot_id,
                conversation_id: &conversation_id,
                only,
                after,
                limit,
                max_bytes,
            };
            conversations::event_page(conn, &q)
        })
        .await
    }

    async fn expire_inactive(&self, e: Expiry) -> Result<Vec<String>, StoreError> {
        let e = Box::new(e);
        self.call(|reply| Command::Expire(e, reply)).await
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
        self.read(move |conn| jobs::list(conn, &filter)).await
    }

    async fn job(&self, id: &str) -> Result<Option<JobView>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| jobs::with_attempts(conn, &id)).await
    }

    async fn retry_dead(&self, target: RetryTarget) -> Result<u64, StoreError> {
        self.call(|reply| Command::Retry(target, reply)).await
    }

    async fn job_stats(&self) -> Result<JobStats, StoreError> {
        let now = self.clock.now();
        self.read(move |conn| jobs::stats(conn, now)).await
    }

    async fn find_conversation(
        &self,
        bots: Vec<String>,
        conversation_id: &str,
    ) -> Result<Vec<FoundConversation>, StoreError> {
        let id = conversation_id.to_owned();
        self.read(move |conn| stats::find_conversation(conn, &bots, &id))
            .await
    }

    async fn destination_rows(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<DestinationRows, StoreError> {
        self.read(move |conn| stats::destination_rows(conn, since, limit))
            .await
    }

    async fn add_traffic(&self, buckets: Vec<TrafficBucket>) -> Result<(), StoreError> {
        self.call(|reply| Command::Traffic(buckets, reply)).await
    }

    async fn traffic(&self, since: Timestamp) -> Result<Vec<TrafficBucket>, StoreError> {
        self.read(move |conn| stats::traffic(conn, since)).await
    }

    async fn count_active(&self) -> Result<u64, StoreError> {
        self.read(stats::count_active).await
    }

    async fn purge_traffic(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.call(|reply| Command::PurgeTraffic(before, reply))
            .await
    }

    async fn purge_finished_jobs(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError> {
        self.call(|reply| Command::PurgeJobs(before, limit, reply))
            .await
    }

    async fn put_summary(&self, summary: crate::store::NewSummary) -> Result<bool, StoreError> {
        let summary = Box::new(summary);
        self.call(|reply| Command::PutSummary(summary, reply)).await
    }

    async fn summaries(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let (bot, conversation) = (bot_id.to_owned(), conversation_id.to_owned());
        self.read(move |conn| jobs::summaries(conn, &bot, &conversation))
            .await
    }

    async fn schema_version(&self) -> Result<super::SchemaVersion, StoreError> {
        let current: u32 = self
            .read(|conn| Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?))
            .await?;
        Ok(super::SchemaVersion {
            current,
            known: schema::MIGRATIONS.len() as u32,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(Command::Ping).await?;
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
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

#[cfg(test)]
mod tests {
    use super::schema::{MIGRATIONS, migrate};
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
            conversations::event_page(
                &conn,
                &EventQuery {
                    bot_id: bot,
                    conversation_id: conversation,
                    only: None,
                    after: 0,
                    limit: 10,
                    max_bytes: None,
                },
            )
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
        let claimed = jobs::claim(
            &tx,
            10,
            std::time::Duration::from_secs(60),
            &std::sync::Arc::from([String::new()]),
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

    /// A job row whose state is not one of the states is corruption, not a pending job.
    #[test]
    fn a_corrupt_job_state_is_an_error_not_a_default() {
        let mut conn = Connection::open_in_memory().expect("in-memory database");
        migrate(&mut conn).expect("schema");
        conn.execute_batch(
            "INSERT INTO jobs (id, bot_id, conversation_id, action, kind, state, max_attempts, budget, due_at,
                               created_at, updated_at, payload_id)
                 VALUES ('job_1', 'b', 'c', 'notify', 'webhook', 'pendnig', 5, 5, 3, 3, 3, 0);",
        )
        .expect("row");
        let err = jobs::list(
            &conn,
            &crate::store::JobFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .expect_err("corrupt");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(err.chain().contains("pendnig"), "{}", err.chain());
    }
}
