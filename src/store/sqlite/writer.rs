//! The one writer thread: it drains every command waiting for it and commits them in
//! one transaction (group commit). Under load one fsync serves many requests; when idle
//! a lone request commits at once.
//!
//! Each request runs in its own savepoint, so a request refused inside the batch (409,
//! replay) rolls back alone. Replies are sent only after the batch's COMMIT returned; if
//! it failed, every command of the batch gets the error and nothing of it was
//! acknowledged.

use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::{conversations, jobs, stats};
use crate::clock::SharedClock;
use crate::domain::ingest::Target;
use crate::domain::{JtiUse, Timestamp, summary};
use crate::store::{
    AttemptRecord, ClaimedJob, Decision, Expiry, Ingest, IngestOutcome, Known, NewSummary,
    NextStep, Purge, RetryTarget, StoreError, TrafficBucket,
};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum Command {
    Ingest(Ingest, Reply<IngestOutcome>),
    Claim(usize, std::time::Duration, Known, Reply<Vec<ClaimedJob>>),
    ClaimEach(
        Vec<(String, usize)>,
        std::time::Duration,
        Reply<Vec<ClaimedJob>>,
    ),
    Orphan(Known, Timestamp, Reply<u64>),
    Decide(String, Decision, Reply<Option<bool>>),
    Finish(Box<(ClaimedJob, AttemptRecord, NextStep)>, Reply<bool>),
    Release(String, String, Reply<bool>),
    Retry(RetryTarget, Reply<u64>),
    PurgeJti(Timestamp, usize, Reply<u64>),
    Expire(Box<Expiry>, Reply<Vec<String>>),
    Purge(String, Purge, usize, Reply<u64>),
    ConsumeJti(JtiUse, Reply<bool>),
    Ping(Reply<()>),
    Traffic(Vec<TrafficBucket>, Reply<()>),
    PurgeTraffic(Timestamp, Reply<u64>),
    PurgeJobs(Timestamp, usize, Reply<u64>),
    PutSummary(Box<NewSummary>, Reply<bool>),
    Shutdown,
}

pub(super) struct Writer {
    pub conn: Connection,
    pub max_batch: usize,
    pub clock: SharedClock,
}

/// The reply owed for one command, sent once the batch's fate is known.
type Pending = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;

fn pending<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Pending {
    Box::new(move |commit| {
        let _ = reply.send(match commit {
            // A result computed inside a batch stands only if the batch committed.
            Ok(()) => result,
            Err(e) => Err(e.clone()),
        });
    })
}

impl Writer {
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>) {
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
        let now = self.clock.now();
        let mut shutdown = false;
        let mut pending = Vec::with_capacity(size);
        let commit = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(mut tx) => {
                for cmd in batch.drain(..) {
                    match execute(&mut tx, cmd, now) {
                        Some(p) => pending.push(p),
                        None => shutdown = true,
                    }
                }
                if tx.is_autocommit() {
                    // SQLite rolled the whole transaction back (e.g. SQLITE_FULL): nothing of the batch stands.
                    Err(StoreError::down(
                        "the transaction was rolled back by SQLite",
                    ))
                } else {
                    tx.commit().map_err(StoreError::from)
                }
            }
            Err(e) => {
                let e = StoreError::from(e);
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
            tracing::error!(error = %e.chain(), batch = size, "sqlite commit failed; the batch is refused");
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

/// Runs one command inside the batch's transaction; `None` for shutdown. Every command
/// but an ingest (which keeps a savepoint per request itself) runs in a savepoint of its
/// own: one that fails halfway leaves none of its writes in the batch, and the others
/// stand.
fn execute(tx: &mut rusqlite::Transaction<'_>, cmd: Command, now: Timestamp) -> Option<Pending> {
    Some(match cmd {
        Command::Ingest(ingest, reply) => {
            pending(reply, conversations::ingest_one(tx, &ingest, now))
        }
        Command::ConsumeJti(jti, reply) => pending(
            reply,
            guarded(tx, |tx| conversations::record_jti(tx, &jti, now)),
        ),
        Command::Claim(limit, lease, known, reply) => pending(
            reply,
            guarded(tx, |tx| jobs::claim(tx, limit, lease, &known, now)),
        ),
        Command::ClaimEach(rooms, lease, reply) => {
            let claimed = guarded(tx, |tx| {
                rooms
                    .into_iter()
                    .try_fold(Vec::new(), |mut all, (d, room)| {
                        all.extend(jobs::claim(tx, room, lease, &Known::from([d]), now)?);
                        Ok(all)
                    })
            });
            pending(reply, claimed)
        }
        Command::Orphan(known, due_before, reply) => pending(
            reply,
            guarded(tx, |tx| jobs::orphan_unknown(tx, &known, due_before, now)),
        ),
        Command::Decide(id, decision, reply) => pending(
            reply,
            guarded(tx, |tx| jobs::decide(tx, &id, &decision, now)),
        ),
        Command::Finish(args, reply) => {
            let (job, attempt, next) = *args;
            pending(
                reply,
                guarded(tx, |tx| jobs::finish(tx, &job, &attempt, next, now)),
            )
        }
        Command::Release(id, token, reply) => {
            pending(reply, guarded(tx, |tx| jobs::release(tx, &id, &token, now)))
        }
        Command::Retry(target, reply) => {
            pending(reply, guarded(tx, |tx| jobs::retry_dead(tx, &target, now)))
        }
        Command::Ping(reply) => {
            // Readiness writes a page, so a full or read-only disk shows. One statement:
            // it needs no savepoint.
            let probe = tx
                .prepare_cached(
                    "INSERT INTO heartbeat (id, at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                )
                .and_then(|mut s| s.execute(params![now.millis()]))
                .map(|_| ())
                .map_err(StoreError::from);
            pending(reply, probe)
        }
        Command::Expire(args, reply) => pending(
            reply,
            guarded(tx, |tx| conversations::expire_inactive(tx, &args, now)),
        ),
        Command::Purge(bot_id, purge, limit, reply) => pending(
            reply,
            guarded(tx, |tx| {
                conversations::purge_ended(tx, &bot_id, purge, limit, now)
            }),
        ),
        Command::PurgeJti(before, limit, reply) => pending(
            reply,
            guarded(tx, |tx| conversations::purge_jti(tx, before, limit)),
        ),
        Command::Traffic(buckets, reply) => {
            pending(reply, guarded(tx, |tx| stats::add_traffic(tx, &buckets)))
        }
        Command::PurgeTraffic(before, reply) => {
            pending(reply, guarded(tx, |tx| stats::purge_traffic(tx, before)))
        }
        Command::PurgeJobs(before, limit, reply) => pending(
            reply,
            guarded(tx, |tx| jobs::purge_finished(tx, before, limit)),
        ),
        Command::PutSummary(s, reply) => pending(reply, guarded(tx, |tx| put_summary(tx, &s, now))),
        Command::Shutdown => return None,
    })
}

/// Runs `f` in a savepoint: on an error its writes are rolled back, the batch's others
/// stand.
fn guarded<T>(
    tx: &mut rusqlite::Transaction<'_>,
    f: impl FnOnce(&mut rusqlite::Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    tx.prepare_cached("SAVEPOINT command")?.execute([])?;
    let result = f(tx);
    if result.is_err() {
        tx.prepare_cached("ROLLBACK TO command")?.execute([])?;
    }
    tx.prepare_cached("RELEASE command")?.execute([])?;
    result
}

/// Answers a command when no transaction could be started; `None` for shutdown.
fn refuse(cmd: Command, e: &StoreError) -> Option<Pending> {
    let e = e.clone();
    Some(match cmd {
        Command::Ingest(_, reply) => pending(reply, Err(e)),
        Command::ConsumeJti(_, reply)
        | Command::Finish(_, reply)
        | Command::Release(_, _, reply) => pending(reply, Err(e)),
        Command::Claim(_, _, _, reply) => pending(reply, Err(e)),
        Command::ClaimEach(_, _, reply) => pending(reply, Err(e)),
        Command::Orphan(_, _, reply) => pending(reply, Err(e)),
        Command::Decide(_, _, reply) => pending(reply, Err(e)),
        Command::Retry(_, reply)
        | Command::Purge(_, _, _, reply)
        | Command::PurgeJti(_, _, reply) => pending(reply, Err(e)),
        Command::Expire(_, reply) => pending(reply, Err(e)),
        Command::Ping(reply) | Command::Traffic(_, reply) => pending(reply, Err(e)),
        Command::PurgeTraffic(_, reply) | Command::PurgeJobs(_, _, reply) => pending(reply, Err(e)),
        Command::PutSummary(_, reply) => pending(reply, Err(e)),
        Command::Shutdown => return None,
    })
}

/// Stores a summary unless a COMPLETED one has its id, and schedules its deliveries when
/// it is stored (see `Store::put_summary`).
fn put_summary(tx: &Connection, s: &NewSummary, now: Timestamp) -> Result<bool, StoreError> {
    let existing: Option<String> = tx
        .prepare_cached(
            "SELECT body FROM summaries WHERE bot_id = ?1 AND conversation_id = ?2 AND summary_id = ?3",
        )?
        .query_row(params![s.bot_id, s.conversation_id, s.summary_id], |r| {
            r.get(0)
        })
        .optional()?;
    if existing
        .as_deref()
        .is_some_and(|e| !summary::replaceable(e))
    {
        return Ok(false);
    }
    tx.prepare_cached(
        "INSERT INTO summaries (bot_id, conversation_id, summary_id, created_at, body)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT DO UPDATE SET created_at = excluded.created_at, body = excluded.body",
    )?
    .execute(params![
        s.bot_id,
        s.conversation_id,
        s.summary_id,
        s.at.millis(),
        s.body
    ])?;
    if let Some(deliveries) = &s.deliveries {
        let target = Target {
            bot_id: &s.bot_id,
            conversation_id: &s.conversation_id,
        };
        jobs::schedule(tx, target, &deliveries.payload, &deliveries.actions, now)?;
    }
    Ok(true)
}
