//! The PostgreSQL store, for several `wrapup serve` instances sharing one database.
//!
//! Nothing here relies on a process's memory for correctness:
//! - a request's transaction (its batch's) locks its conversation's row
//!   (`SELECT … FOR UPDATE`), or inserts it when there is none (the primary key makes a
//!   concurrent creator wait, and the batch that lost runs again), so concurrent ends of
//!   one conversation on any instances serialize and exactly one of them ends it;
//! - a used `jti` is a row with a primary key, inserted in the same transaction;
//! - workers claim jobs and the sweeper picks conversations with `FOR UPDATE SKIP LOCKED`;
//! - migrations run under an advisory lock, so instances starting together apply them once.
//!
//! The hooks' requests waiting together are written in one transaction (group commit,
//! see [`batch`]): a 200 is sent only after that `COMMIT` returned (with the server's
//! default `synchronous_commit = on`, after the WAL reached disk).

mod batch;
mod conversations;
mod jobs;
mod schema;
mod stats;

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgPool;

use super::{
    AttemptRecord, ClaimedJob, ConversationFilter, ConversationList, Decision, EventPage,
    EventQuery, Expiry, Ingest, IngestOutcome, JobFilter, JobStats, JobView, Known, NewSummary,
    NextStep, Purge, RetryTarget, Store, StoreError, StoredConversation,
};
use super::{DestinationRows, FoundConversation, TrafficBucket};
use crate::clock::SharedClock;
use crate::config::StoreSettings;
use crate::domain::{JtiUse, Timestamp};

pub struct PostgresStore {
    pool: PgPool,
    clock: SharedClock,
    /// Attempts to record, taken together by one task (see [`record_attempts`]).
    finished: tokio::sync::mpsc::Sender<(jobs::Finished, Reply)>,
    /// The hooks' requests, written in batches (see [`batch`]).
    ingests: tokio::sync::mpsc::Sender<(Ingest, batch::Reply)>,
    /// When each destination's lost leases were last looked for (by the store's clock).
    lost_checked: std::sync::Mutex<std::collections::HashMap<String, Timestamp>>,
}

/// How often a destination's claims also look for jobs whose worker vanished (their lease
/// ran out): a lost job waits at most this long past its lease, and claims that find nothing
/// due cost one statement, not two and a transaction.
const LOST_CHECK_EVERY_MS: i64 = 1000;

type Reply = tokio::sync::oneshot::Sender<Result<bool, StoreError>>;

/// The most attempts recorded in one transaction.
const FINISH_BATCH: usize = 128;

/// Transactions recording attempts at once (each holds a connection of the pool).
const FINISH_TRANSACTIONS: usize = 4;

/// Records the attempts the workers finish, those that wait together in one transaction:
/// when a stalled destination's attempts all time out at once, their records take one
/// commit and one connection instead of one each, and the hooks' requests keep theirs.
async fn record_attempts(
    pool: PgPool,
    clock: SharedClock,
    mut rx: tokio::sync::mpsc::Receiver<(jobs::Finished, Reply)>,
) {
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(FINISH_TRANSACTIONS));
    let mut carried = None;
    loop {
        let first = match carried.take() {
            Some(f) => f,
            None => match rx.recv().await {
                Some(f) => f,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < FINISH_BATCH {
            match rx.try_recv() {
                // One job twice (a stale worker's late record beside the new lease's): the
                // second waits for the next transaction, as each statement takes a row once.
                Ok(f) if batch.iter().any(|(b, _)| b.id == f.0.id) => {
                    carried = Some(f);
                    break;
                }
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        // In job-id order, so two batches that share a job (only a stale worker's record
        // can) take its rows in the same order and never deadlock.
        batch.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        let (rows, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        // A few batches at once: one slow commit never holds up every worker's record.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (pool, now) = (pool.clone(), clock.now());
        tokio::spawn(async move {
            let result = async {
                let mut tx = pool.begin().await?;
                let changed = jobs::finish_many(&mut tx, &rows, now).await?;
                tx.commit().await?;
                Ok::<_, StoreError>(changed)
            }
            .await;
            drop(permit);
            match result {
                Ok(changed) => {
                    for (reply, changed) in replies.into_iter().zip(changed) {
                        let _ = reply.send(Ok(changed));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

impl PostgresStore {
    pub async fn open(
        url: &str,
        settings: &StoreSettings,
        clock: SharedClock,
    ) -> Result<Self, StoreError> {
        let pool = schema::connect(url, settings).await?;
        let (finished, rx) = tokio::sync::mpsc::channel(4 * FINISH_BATCH);
        tokio::spawn(record_attempts(pool.clone(), clock.clone(), rx));
        let (ingests, rx) = tokio::sync::mpsc::channel(4 * batch::BATCH);
        let in_flight = batch::transactions(settings.pool_size);
        tokio::spawn(batch::run(pool.clone(), clock.clone(), in_flight, rx));
        Ok(Self {
            pool,
            clock,
            finished,
            ingests,
            lost_checked: Default::default(),
        })
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Whether `destination`'s lost leases are to be looked for now: at most once every
    /// `LOST_CHECK_EVERY_MS` (a lost lease is rare; the look is a statement of its own).
    fn lost_check_due(&self, destination: &str, now: Timestamp) -> bool {
        let Ok(mut checked) = self.lost_checked.lock() else {
            return true;
        };
        let last = checked.get(destination).copied();
        let due = last.is_none_or(|l| now.millis() - l.millis() >= LOST_CHECK_EVERY_MS);
        if due {
            checked.insert(destination.to_owned(), now);
        }
        due
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ingest(&self, ingest: Ingest) -> Result<IngestOutcome, StoreError> {
        let stopped = || StoreError::down("the store's ingest task has stopped");
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.ingests
            .send((ingest, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn consume_jti(&self, jti: JtiUse) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let fresh = conversations::record_jti(&mut tx, &jti, self.now()).await?;
        tx.commit().await?;
        Ok(fresh)
    }

    async fn conversation(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<Option<StoredConversation>, StoreError> {
        conversations::conversation(&self.pool, bot_id, conversation_id).await
    }

    async fn list_conversations(
        &self,
        bot_id: &str,
        f: ConversationFilter,
    ) -> Result<ConversationList, StoreError> {
        conversations::list(&self.pool, bot_id, f).await
    }

    async fn events(&self, q: EventQuery<'_>) -> Result<Option<EventPage>, StoreError> {
        conversations::event_page(&self.pool, q).await
    }

    async fn expire_inactive(&self, e: Expiry) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let ended = conversations::expire_inactive(&mut tx, &e, self.now()).await?;
        tx.commit().await?;
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
        .await?;
        Ok(done.rows_affected())
    }

    async fn purge(&self, bot_id: &str, purge: Purge, limit: usize) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let purged =
            conversations::purge_ended(&mut tx, (bot_id, purge, limit), self.now()).await?;
        tx.commit().await?;
        Ok(purged)
    }

    async fn claim_jobs(
        &self,
        limit: usize,
        lease: Duration,
        known: Known,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let now = self.now();
        jobs::claim(&mut conn, limit, lease, &known, now, |d| {
            self.lost_check_due(d, now)
        })
        .await
    }

    async fn claim_each(
        &self,
        rooms: Vec<(String, usize)>,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let now = self.now();
        jobs::claim_each(&mut conn, &rooms, lease, now, |d| {
            self.lost_check_due(d, now)
        })
        .await
    }

    async fn release(&self, job: &ClaimedJob) -> Result<bool, StoreError> {
        jobs::release(&self.pool, &job.id, &job.lease_token, self.now()).await
    }

    async fn finish_attempt(
        &self,
        job: &ClaimedJob,
        a: AttemptRecord,
        next: NextStep,
    ) -> Result<bool, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let row = jobs::Finished {
            id: job.id.clone(),
            lease_token: job.lease_token.clone(),
            attempt: a,
            next,
        };
        self.finished
            .send((row, reply))
            .await
            .map_err(|_| StoreError::down("the store is closed"))?;
        answer
            .await
            .map_err(|_| StoreError::down("the store is closed"))?
    }

    async fn orphan_unknown(&self, known: Known, due_before: Timestamp) -> Result<u64, StoreError> {
        jobs::orphan_unknown(&self.pool, &known, due_before, self.now()).await
    }

    async fn decide(&self, id: &str, decision: Decision) -> Result<Option<bool>, StoreError> {
        jobs::decide(&self.pool, id, &decision, self.now()).await
    }

    async fn list_jobs(&self, f: JobFilter) -> Result<Vec<JobView>, StoreError> {
        jobs::list(&self.pool, f).await
    }

    async fn job(&self, id: &str) -> Result<Option<JobView>, StoreError> {
        jobs::with_attempts(&self.pool, id).await
    }

    async fn retry_dead(&self, target: RetryTarget) -> Result<u64, StoreError> {
        jobs::retry_dead(&self.pool, target, self.now()).await
    }

    async fn job_stats(&self) -> Result<JobStats, StoreError> {
        jobs::stats(&self.pool, self.now()).await
    }

    async fn find_conversation(
        &self,
        bots: Vec<String>,
        conversation_id: &str,
    ) -> Result<Vec<FoundConversation>, StoreError> {
        stats::find_conversation(&self.pool, &bots, conversation_id).await
    }

    async fn destination_rows(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<DestinationRows, StoreError> {
        stats::destination_rows(&self.pool, since, limit).await
    }

    async fn add_traffic(&self, buckets: Vec<TrafficBucket>) -> Result<(), StoreError> {
        stats::add_traffic(&self.pool, &buckets).await
    }

    async fn traffic(&self, since: Timestamp) -> Result<Vec<TrafficBucket>, StoreError> {
        stats::traffic(&self.pool, since).await
    }

    async fn count_active(&self) -> Result<u64, StoreError> {
        stats::count_active(&self.pool).await
    }

    async fn purge_traffic(&self, before: Timestamp) -> Result<u64, StoreError> {
        stats::purge_traffic(&self.pool, before).await
    }

    async fn purge_finished_jobs(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError> {
        jobs::purge_finished(&self.pool, before, limit).await
    }

    async fn put_summary(&self, s: NewSummary) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // A row-level lock on an existing summary orders two attempts of one job.
        let inserted = sqlx::query(
            "INSERT INTO summaries (bot_id, conversation_id, summary_id, created_at, body)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&s.bot_id)
        .bind(&s.conversation_id)
        .bind(&s.summary_id)
        .bind(s.at.millis())
        .bind(&s.body)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            let existing: Option<String> = sqlx::query_scalar(
                "SELECT body FROM summaries
                 WHERE bot_id = $1 AND conversation_id = $2 AND summary_id = $3 FOR UPDATE",
            )
            .bind(&s.bot_id)
            .bind(&s.conversation_id)
            .bind(&s.summary_id)
            .fetch_optional(&mut *tx)
            .await?;
            if existing
                .as_deref()
                .is_some_and(|e| !crate::domain::summary::replaceable(e))
            {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE summaries SET created_at = $4, body = $5
                 WHERE bot_id = $1 AND conversation_id = $2 AND summary_id = $3",
            )
            .bind(&s.bot_id)
            .bind(&s.conversation_id)
            .bind(&s.summary_id)
            .bind(s.at.millis())
            .bind(&s.body)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(deliveries) = &s.deliveries {
            let target = crate::domain::ingest::Target {
                bot_id: &s.bot_id,
                conversation_id: &s.conversation_id,
            };
            jobs::schedule(
                &mut tx,
                target,
                &deliveries.payload,
                &deliveries.actions,
                self.clock.now(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn summaries(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        jobs::summaries(&mut conn, bot_id, conversation_id).await
    }

    async fn schema_version(&self) -> Result<super::SchemaVersion, StoreError> {
        let current: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM wrapup_schema")
            .fetch_one(&self.pool)
            .await?;
        Ok(super::SchemaVersion {
            current: current.unwrap_or(0) as u32,
            known: schema::MIGRATIONS.len() as u32,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO heartbeat (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = excluded.at")
            .bind(self.now().millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
