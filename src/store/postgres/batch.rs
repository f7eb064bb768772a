//! Group commit on PostgreSQL: the hooks' requests waiting for the store are written
//! together, in one transaction with one statement per table, instead of one transaction
//! of six or more statements (and one WAL flush) each.
//!
//! What each request gets is exactly what it would get alone:
//! - a conversation's requests in one batch are planned one after the other, in the order
//!   they came, each against the state the one before left, and written as one (a hot
//!   conversation never holds a batch to one request); a batch holds one request per
//!   `jti` (a second one waits for the next batch, a third is a replay at once), so a
//!   `jti` is fresh or replayed as if the requests ran one by one;
//! - a request whose client stopped waiting (its `request_timeout` passed) before its
//!   batch began is not written;
//! - the batch locks the rows of its conversations that exist in one order (their keys'
//!   bytes: `COLLATE "C"`), so two batches, on any instances, wait for each other instead
//!   of deadlocking; a new conversation's row is inserted as planned (one row version, not
//!   a placeholder then an update: this halved the batch's time on `conversations`); when
//!   another transaction created it meanwhile, the insert waits for that commit and does
//!   nothing, and the whole batch rolls back and runs again (locking that row then, out of
//!   key order, could deadlock with a batch holding a later key: a review demonstrated
//!   it); jtis are inserted in key order too;
//! - a request the domain refuses writes nothing: its `jti` is taken back before the
//!   commit;
//! - when a statement of the batch fails (a constraint, an unreadable state, a deadlock
//!   with another kind of transaction), the batch rolls back and each of its requests runs
//!   again alone, so only the request at fault fails.
//!
//! Replies go out only after the batch's COMMIT returned.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Row};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::clock::SharedClock;
use crate::domain::Timestamp;
use crate::domain::ingest::{self, Plan, Target};
use crate::store::{Ingest, IngestOutcome, StoreError, parse_state, plan_state};

pub(super) type Reply = oneshot::Sender<Result<IngestOutcome, StoreError>>;

/// The most requests written in one transaction.
pub(super) const BATCH: usize = 256;

/// Batches in flight at once (each holds a connection of the pool): while one waits for
/// its commit's WAL flush, the next is being written. Few: on a busy database bigger
/// batches beat more of them (measured on 2 cores shared with PostgreSQL: one at a time
/// 3.6k req/s, two 3.4k, four 2.9k), so the default pool of 16 writes two at once.
pub(super) fn transactions(pool_size: u32) -> usize {
    (pool_size as usize / 8).clamp(1, 4)
}

/// Takes the requests as they wait and writes them in batches, `in_flight` at a time.
pub(super) async fn run(
    pool: PgPool,
    clock: SharedClock,
    in_flight: usize,
    mut rx: mpsc::Receiver<(Ingest, Reply)>,
) {
    let permits = Arc::new(Semaphore::new(in_flight));
    // Requests that met another of their conversation or jti in a batch: first in the next.
    let mut carried: VecDeque<(Ingest, Reply)> = VecDeque::new();
    loop {
        // A permit first, so that requests keep arriving in the channel (and join one
        // batch) while every transaction is busy.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        if carried.is_empty() {
            match rx.recv().await {
                Some(first) => carried.push_back(first),
                None => return,
            }
        }
        let mut batch = Batch::default();
        for request in std::mem::take(&mut carried) {
            batch.take(request, &mut carried);
        }
        // Bounded: past a batch's worth carried, the channel holds the rest.
        while batch.len() < BATCH && carried.len() < BATCH {
            match rx.try_recv() {
                Ok(request) => batch.take(request, &mut carried),
                Err(_) => break,
            }
        }
        let (pool, now) = (pool.clone(), clock.now());
        tokio::spawn(async move {
            batch.write(&pool, now).await;
            drop(permit);
        });
    }
}

#[derive(Default)]
struct Batch {
    requests: Vec<(Ingest, Reply)>,
    jtis: HashSet<(String, String)>,
}

impl Batch {
    fn len(&self) -> usize {
        self.requests.len()
    }

    /// Adds `request` when the batch has room and does not have its jti yet; otherwise
    /// it joins `carried`, for a later batch. A third copy of a jti (one in the batch, one
    /// carried) is a replay at once: one of the two before it uses the jti up, unless both
    /// are refused. So a flooded token never fills `carried` and holds the other tenants'
    /// requests in the channel behind it.
    fn take(&mut self, request: (Ingest, Reply), carried: &mut VecDeque<(Ingest, Reply)>) {
        let jti = request
            .0
            .jti
            .as_ref()
            .map(|j| (j.client_id.clone(), j.jti.clone()));
        if let Some(j) = &jti
            && self.jtis.contains(j)
        {
            let same = |r: &(Ingest, Reply)| {
                r.0.jti
                    .as_ref()
                    .is_some_and(|o| o.client_id == j.0 && o.jti == j.1)
            };
            if carried.iter().any(same) {
                let _ = request.1.send(Ok(IngestOutcome::Replay));
            } else {
                carried.push_back(request);
            }
            return;
        }
        if self.len() >= BATCH {
            carried.push_back(request);
            return;
        }
        self.jtis.extend(jti);
        self.requests.push(request);
    }

    async fn write(self, pool: &PgPool, now: Timestamp) {
        // A request whose client stopped waiting (its request_timeout passed: it was told
        // 503, retry) is not written after all.
        let (ingests, replies): (Vec<_>, Vec<_>) = self
            .requests
            .into_iter()
            .filter(|(_, reply)| !reply.is_closed())
            .unzip();
        if ingests.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let result = commit(pool, &ingests, now, |_| true).await;
        if result.is_ok() {
            metrics::histogram!("wrapup_commit_batch_size").record(ingests.len() as f64);
            metrics::histogram!("wrapup_commit_duration_seconds")
                .record(started.elapsed().as_secs_f64());
        }
        match result {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) if ingests.len() > 1 && retry_alone(&e) => {
                tracing::warn!(error = %e.chain(), requests = ingests.len(), "a batch failed; its requests run one by one");
                for (ingest, reply) in ingests.iter().zip(replies) {
                    let _ = reply.send(write_one(pool, ingest, now).await);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Whether a failed batch's requests are worth running alone: yes when the batch was
/// refused (one request's fault, or a deadlock with another kind of transaction), no
/// in an outage (each would only wait for it again).
fn retry_alone(e: &StoreError) -> bool {
    match e {
        StoreError::Failed { .. } | StoreError::Corrupt { .. } => true,
        StoreError::Overloaded => false,
        e if is_raced(e) => true,
        StoreError::Unavailable { source, .. } => source
            .as_deref()
            .and_then(|s| s.downcast_ref::<sqlx::Error>())
            .and_then(|s| match s {
                sqlx::Error::Database(db) => db.code().map(|c| c.starts_with("40")),
                _ => None,
            })
            .unwrap_or(false),
    }
}

/// One request, as a batch of one in a transaction of its own (a refusal or a replay
/// rolls back).
pub(super) async fn write_one(
    pool: &PgPool,
    ingest: &Ingest,
    now: Timestamp,
) -> Result<IngestOutcome, StoreError> {
    let accepted = |o: &[IngestOutcome]| matches!(o, [IngestOutcome::Accepted { .. }]);
    commit(pool, std::slice::from_ref(ingest), now, accepted)
        .await?
        .pop()
        .ok_or_else(|| StoreError::Failed {
            what: "a request was left without an outcome".into(),
            source: None,
        })
}

/// Writes `ingests` in a transaction of their own, committed when `keep` says so of their
/// outcomes (else rolled back). A conversation created by another transaction between the
/// lock and the insert (a race, see `write_batch`) rolls it back and runs it again, its
/// locks released so that it takes them again in key order: at most three times.
async fn commit(
    pool: &PgPool,
    ingests: &[Ingest],
    now: Timestamp,
    keep: impl Fn(&[IngestOutcome]) -> bool,
) -> Result<Vec<IngestOutcome>, StoreError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut tx = pool.begin().await?;
        match write_batch(&mut tx, ingests, now).await {
            Ok(outcomes) => {
                if keep(&outcomes) {
                    tx.commit().await?;
                }
                return Ok(outcomes);
            }
            Err(e) if is_raced(&e) && tries < 3 => continue,
            Err(e) => return Err(e),
        }
    }
}

type Key<'a> = (&'a str, &'a str);

/// Writes the batch's requests in the caller's transaction; each one's outcome, in order.
async fn write_batch(
    conn: &mut PgConnection,
    ingests: &[Ingest],
    now: Timestamp,
) -> Result<Vec<IngestOutcome>, StoreError> {
    let mut outcomes: Vec<Option<IngestOutcome>> = vec![None; ingests.len()];

    // 1. Each jti once: one that was used before makes its request a replay.
    let fresh_jtis = record_jtis(conn, ingests, now).await?;
    for (i, ingest) in ingests.iter().enumerate() {
        if let Some(j) = &ingest.jti
            && !fresh_jtis.contains(&(j.client_id.as_str(), j.jti.as_str()))
        {
            outcomes[i] = Some(IngestOutcome::Replay);
        }
    }

    // 2. Lock the conversations that exist, in the order of their keys' bytes. A
    //    conversation's requests, in the order they came, form one group.
    let mut groups: BTreeMap<Key<'_>, Vec<usize>> = BTreeMap::new();
    for i in (0..ingests.len()).filter(|&i| outcomes[i].is_none()) {
        groups.entry(key(&ingests[i])).or_default().push(i);
    }
    let firsts: Vec<usize> = groups.values().map(|g| g[0]).collect();
    let states = lock(conn, ingests, &firsts).await?;

    // 3. Plan each group's requests one after the other, each against the state the one
    //    before left (none: a new conversation), into one write.
    let mut plans: Vec<Planned<'_>> = Vec::with_capacity(groups.len());
    for (k, group) in &groups {
        let state = states.get(k).map(String::as_str);
        if let Some(planned) = plan_group(ingests, group, state, now, &mut outcomes)? {
            plans.push(planned);
        }
    }

    // 4. New conversations are inserted as planned. One that another transaction created
    //    meanwhile (the insert waited for its commit, then did nothing) makes the batch a
    //    race: locking it now would be out of key order and could deadlock with a batch
    //    holding a key after it, so the batch is run again from the start instead.
    if insert_new(conn, &plans).await? {
        return Err(raced());
    }
    let undo: Vec<usize> = (0..ingests.len())
        .filter(|&i| matches!(outcomes[i], Some(IngestOutcome::Refused(_))))
        .collect();

    // 5. A refused request leaves nothing: its jti is taken back.
    take_back_jtis(conn, ingests, &undo).await?;

    // 6. The rest of the plans.
    write_plans(conn, &plans, now).await?;

    outcomes
        .into_iter()
        .map(|o| {
            o.ok_or_else(|| StoreError::Failed {
                what: "a request of a batch was left without an outcome".into(),
                source: None,
            })
        })
        .collect()
}

fn key(ingest: &Ingest) -> Key<'_> {
    (&ingest.bot_id, &ingest.conversation_id)
}

fn target(ingest: &Ingest) -> Target<'_> {
    Target {
        bot_id: &ingest.bot_id,
        conversation_id: &ingest.conversation_id,
    }
}

/// Writes plans of conversations whose rows exist (updated) or were inserted by
/// [`insert_new`]: the states of the existing ones, every tag row, log entry and job, one
/// statement per table. The inactivity sweep writes its ends here too.
pub(super) async fn write_plans(
    conn: &mut PgConnection,
    plans: &[Planned<'_>],
    now: Timestamp,
) -> Result<(), StoreError> {
    update(conn, plans).await?;
    replace_tags(conn, plans).await?;
    append_events(conn, plans, now).await?;
    schedule_jobs(conn, plans, now).await
}

/// A plan to write, and whether its conversation is new (inserted, not updated).
pub(super) struct Planned<'a> {
    pub target: Target<'a>,
    pub new: bool,
    /// The write (its `jobs` taken out: they are below).
    pub plan: Plan<'a>,
    /// The jobs of each plan that went into it, each with its own payload.
    pub jobs: Vec<ingest::Jobs>,
}

impl<'a> Planned<'a> {
    /// One plan's write.
    pub fn new(target: Target<'a>, new: bool, mut plan: Plan<'a>) -> Self {
        let jobs = plan.jobs.take().into_iter().collect();
        Planned {
            target,
            new,
            plan,
            jobs,
        }
    }
}

/// Plans a conversation's requests (`group`, in the order they came) one after the other
/// against its stored state (`None`: new), setting each one's outcome; their plans as one
/// write, none when every one was refused.
fn plan_group<'a>(
    ingests: &'a [Ingest],
    group: &[usize],
    stored: Option<&str>,
    now: Timestamp,
    outcomes: &mut [Option<IngestOutcome>],
) -> Result<Option<Planned<'a>>, StoreError> {
    let new = stored.is_none();
    let mut state = stored.map(parse_state).transpose()?;
    let mut merged: Option<Planned<'a>> = None;
    for (n, &i) in group.iter().enumerate() {
        let ingest = &ingests[i];
        let last = n + 1 == group.len();
        // The state moves on to the next plan; only a request with a next one clones it.
        let input = if last { state.take() } else { state.clone() };
        match ingest::plan(target(ingest), input, &ingest.events, &ingest.bot, now) {
            Ok(mut plan) => {
                outcomes[i] = Some(plan.outcome.into());
                if !last {
                    state = Some(plan.state.clone());
                }
                merged = Some(match merged {
                    None => Planned::new(target(ingest), new, plan),
                    Some(mut m) => {
                        m.jobs.extend(plan.jobs.take());
                        m.plan = m.plan.then(plan);
                        m
                    }
                });
            }
            Err(refusal) => outcomes[i] = Some(IngestOutcome::Refused(refusal)),
        }
    }
    Ok(merged)
}

/// Inserts every jti of the batch; those that were not used before.
async fn record_jtis<'a>(
    conn: &mut PgConnection,
    ingests: &'a [Ingest],
    now: Timestamp,
) -> Result<HashSet<(&'a str, &'a str)>, StoreError> {
    // In key order, as the conversations: two batches inserting the same jtis wait for
    // each other instead of deadlocking.
    let mut jtis: Vec<_> = ingests.iter().filter_map(|i| i.jti.as_ref()).collect();
    if jtis.is_empty() {
        return Ok(HashSet::new());
    }
    jtis.sort_by(|a, b| (&a.client_id, &a.jti).cmp(&(&b.client_id, &b.jti)));
    let rows = sqlx::query(
        "INSERT INTO used_jti (client_id, jti, used_at, expires_at)
         SELECT c, j, $3, e FROM unnest($1::text[], $2::text[], $4::bigint[]) AS k(c, j, e)
         ON CONFLICT DO NOTHING RETURNING client_id, jti",
    )
    .bind(
        jtis.iter()
            .map(|j| j.client_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(jtis.iter().map(|j| j.jti.as_str()).collect::<Vec<_>>())
    .bind(now.millis())
    .bind(
        jtis.iter()
            .map(|j| j.expires_at.map(|t| t.millis()))
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut fresh = HashSet::with_capacity(rows.len());
    for row in rows {
        let (c, j): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        if let Some(jti) = jtis.iter().find(|x| x.client_id == c && x.jti == j) {
            fresh.insert((jti.client_id.as_str(), jti.jti.as_str()));
        }
    }
    Ok(fresh)
}

/// Locks the conversations of `order` (sorted by key) that exist, for the rest of the
/// transaction: their states. A conversation that does not exist is inserted by
/// [`insert_new`], whose unique key makes a concurrent creator wait.
async fn lock<'a>(
    conn: &mut PgConnection,
    ingests: &'a [Ingest],
    order: &[usize],
) -> Result<HashMap<Key<'a>, String>, StoreError> {
    if order.is_empty() {
        return Ok(HashMap::new());
    }
    let by_key: HashMap<Key<'_>, Key<'a>> = order
        .iter()
        .map(|&i| (key(&ingests[i]), key(&ingests[i])))
        .collect();
    let rows = sqlx::query(
        "SELECT t.bot_id, t.conversation_id, t.state
         FROM conversations t JOIN unnest($1::text[], $2::text[]) AS k(b, c)
              ON t.bot_id = k.b AND t.conversation_id = k.c
         ORDER BY t.bot_id COLLATE \"C\", t.conversation_id COLLATE \"C\"
         FOR UPDATE OF t",
    )
    .bind(
        order
            .iter()
            .map(|&i| ingests[i].bot_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        order
            .iter()
            .map(|&i| ingests[i].conversation_id.as_str())
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut states = HashMap::with_capacity(rows.len());
    for row in rows {
        let (b, c): (&str, &str) = (row.try_get(0)?, row.try_get(1)?);
        if let Some(&k) = by_key.get(&(b, c)) {
            states.insert(k, row.try_get::<String, _>(2)?);
        }
    }
    Ok(states)
}

/// Deletes the jtis of refused requests: a refusal uses nothing up.
async fn take_back_jtis(
    conn: &mut PgConnection,
    ingests: &[Ingest],
    undo: &[usize],
) -> Result<(), StoreError> {
    let jtis: Vec<_> = undo
        .iter()
        .filter_map(|&i| ingests[i].jti.as_ref())
        .collect();
    if jtis.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM used_jti t USING unnest($1::text[], $2::text[]) AS k(c, j)
         WHERE t.client_id = k.c AND t.jti = k.j",
    )
    .bind(
        jtis.iter()
            .map(|j| j.client_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(jtis.iter().map(|j| j.jti.as_str()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The conversations' rows as planned, column by column.
struct Rows<'a> {
    bots: Vec<&'a str>,
    ids: Vec<&'a str>,
    status: Vec<&'static str>,
    created_at: Vec<i64>,
    last_event_at: Vec<i64>,
    ended_at: Vec<Option<i64>>,
    sort_at: Vec<i64>,
    states: Vec<&'a str>,
}

impl<'a> Rows<'a> {
    fn of<'p: 'a>(plans: impl Iterator<Item = &'a Planned<'p>>) -> Result<Self, StoreError> {
        let mut rows = Rows {
            bots: vec![],
            ids: vec![],
            status: vec![],
            created_at: vec![],
            last_event_at: vec![],
            ended_at: vec![],
            sort_at: vec![],
            states: vec![],
        };
        for p in plans {
            let c = &p.plan.state;
            rows.bots.push(p.target.bot_id);
            rows.ids.push(p.target.conversation_id);
            rows.status.push(c.status.as_str());
            rows.created_at.push(c.created_at.millis());
            rows.last_event_at.push(c.last_event_at.millis());
            rows.ended_at.push(c.ended_at.map(|t| t.millis()));
            rows.sort_at
                .push(c.ended_at.unwrap_or(c.last_event_at).millis());
            rows.states.push(plan_state(&p.plan)?);
        }
        Ok(rows)
    }

    fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>
    where
        'a: 'q,
    {
        query
            .bind(self.bots)
            .bind(self.ids)
            .bind(self.status)
            .bind(self.created_at)
            .bind(self.last_event_at)
            .bind(self.ended_at)
            .bind(self.sort_at)
            .bind(self.states)
    }
}

const ROWS: &str =
    "unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[],
                            $7::bigint[], $8::text[])
                     AS u(b, c, status, created_at, last_event_at, ended_at, sort_at, state)";

/// Inserts the new conversations as planned, in key order; whether another transaction
/// created one of them first (a race: see `write_batch`).
async fn insert_new(conn: &mut PgConnection, plans: &[Planned<'_>]) -> Result<bool, StoreError> {
    let new: Vec<&Planned<'_>> = plans.iter().filter(|p| p.new).collect();
    if new.is_empty() {
        return Ok(false);
    }
    let rows = Rows::of(new.iter().copied())?;
    let sql = format!(
        "INSERT INTO conversations (bot_id, conversation_id, status, created_at, last_event_at, ended_at, sort_at, state)
         SELECT * FROM {ROWS}
         ON CONFLICT DO NOTHING"
    );
    let inserted = rows.bind(sqlx::query(&sql)).execute(&mut *conn).await?;
    Ok(inserted.rows_affected() < new.len() as u64)
}

/// The marker of a race (see `write_batch`): never answered, the batch runs again.
fn raced() -> StoreError {
    StoreError::down(RACED)
}

const RACED: &str = "a conversation of the batch was created by another transaction meanwhile";

fn is_raced(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable { what, source: None } if what == RACED)
}

/// The existing conversations' new states, in one statement.
async fn update(conn: &mut PgConnection, plans: &[Planned<'_>]) -> Result<(), StoreError> {
    if plans.iter().all(|p| p.new) {
        return Ok(());
    }
    let rows = Rows::of(plans.iter().filter(|p| !p.new))?;
    let sql = format!(
        "UPDATE conversations t
         SET status = u.status, created_at = u.created_at, last_event_at = u.last_event_at,
             ended_at = u.ended_at, sort_at = u.sort_at, state = u.state
         FROM {ROWS}
         WHERE t.bot_id = u.b AND t.conversation_id = u.c"
    );
    rows.bind(sqlx::query(&sql)).execute(&mut *conn).await?;
    Ok(())
}

/// The tag rows of every conversation whose tags changed, in two statements: the rows
/// of tags gone, then the new and changed rows (see `conversations::replace_tags`).
async fn replace_tags(conn: &mut PgConnection, plans: &[Planned<'_>]) -> Result<(), StoreError> {
    let changed: Vec<(Target<'_>, &Plan<'_>)> = plans
        .iter()
        .map(|p| (p.target, &p.plan))
        .filter(|(_, p)| p.tags_before.as_ref() != Some(&p.tags))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let (mut bots, mut ids, mut tags, mut sort_at, mut status) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (t, plan) in &changed {
        for tag in &plan.tags.tags {
            bots.push(t.bot_id);
            ids.push(t.conversation_id);
            tags.push(tag.as_str());
            sort_at.push(plan.tags.sort_at.millis());
            status.push(plan.tags.status.as_str());
        }
    }
    // The rows to delete, by key: the tags each conversation had and no longer has (its
    // plan knows both). One index probe a row; a statement that compared every row of
    // the batch's conversations with every tag kept was quadratic under a generic plan
    // (4 s for a sweep of 500 conversations of 13 tags).
    let (mut gone_bots, mut gone_ids, mut gone_tags) = (vec![], vec![], vec![]);
    for (t, plan) in &changed {
        let Some(before) = &plan.tags_before else {
            continue;
        };
        for tag in before.tags.iter().filter(|b| !plan.tags.tags.contains(b)) {
            gone_bots.push(t.bot_id);
            gone_ids.push(t.conversation_id);
            gone_tags.push(tag.as_str());
        }
    }
    if !gone_tags.is_empty() {
        sqlx::query(
            "DELETE FROM conversation_tags t USING unnest($1::text[], $2::text[], $3::text[]) AS k(b, c, tag)
             WHERE t.bot_id = k.b AND t.conversation_id = k.c AND t.tag = k.tag",
        )
        .bind(&gone_bots)
        .bind(&gone_ids)
        .bind(&gone_tags)
        .execute(&mut *conn)
        .await?;
    }
    if !tags.is_empty() {
        sqlx::query(
            "INSERT INTO conversation_tags (bot_id, conversation_id, tag, sort_at, status)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
             ON CONFLICT (bot_id, conversation_id, tag)
             DO UPDATE SET sort_at = EXCLUDED.sort_at, status = EXCLUDED.status
             WHERE conversation_tags.sort_at <> EXCLUDED.sort_at
                OR conversation_tags.status <> EXCLUDED.status",
        )
        .bind(&bots)
        .bind(&ids)
        .bind(&tags)
        .bind(&sort_at)
        .bind(&status)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Every plan's log entries, in one statement.
async fn append_events(
    conn: &mut PgConnection,
    plans: &[Planned<'_>],
    now: Timestamp,
) -> Result<(), StoreError> {
    let (mut bots, mut ids, mut seqs, mut names, mut bodies) =
        (vec![], vec![], vec![], vec![], vec![]);
    for Planned { target, plan, .. } in plans {
        for a in &plan.appends {
            bots.push(target.bot_id);
            ids.push(target.conversation_id);
            seqs.push(a.seq as i64);
            names.push(a.name);
            bodies.push(a.body.as_ref());
        }
    }
    if bots.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO events (bot_id, conversation_id, seq, name, received_at, body)
         SELECT b, c, s, n, $6, body FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[])
              AS k(b, c, s, n, body)",
    )
    .bind(&bots)
    .bind(&ids)
    .bind(&seqs)
    .bind(&names)
    .bind(&bodies)
    .bind(now.millis())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The jobs of every conversation the batch ended, with the summaries completed by then
/// in their payload: one read of the summaries, one insert.
async fn schedule_jobs(
    conn: &mut PgConnection,
    plans: &[Planned<'_>],
    now: Timestamp,
) -> Result<(), StoreError> {
    let ending: Vec<(Target<'_>, &ingest::Jobs)> = plans
        .iter()
        .flat_map(|p| p.jobs.iter().map(move |j| (p.target, j)))
        .filter(|(_, j)| !j.actions.is_empty())
        .collect();
    if ending.is_empty() {
        return Ok(());
    }
    // Each ending conversation's summaries, oldest first, at most 1,000 (as alone).
    let mut stored: Vec<Vec<String>> = vec![Vec::new(); ending.len()];
    let rows = sqlx::query(
        "SELECT k.n, s.body
         FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(b, c, n)
         CROSS JOIN LATERAL (
             SELECT body, created_at, summary_id FROM summaries
             WHERE bot_id = k.b AND conversation_id = k.c
             ORDER BY created_at, summary_id LIMIT 1000) s
         ORDER BY k.n, s.created_at, s.summary_id",
    )
    .bind(ending.iter().map(|(t, _)| t.bot_id).collect::<Vec<_>>())
    .bind(
        ending
            .iter()
            .map(|(t, _)| t.conversation_id)
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let n: i64 = row.try_get(0)?;
        if let Some(list) = usize::try_from(n - 1).ok().and_then(|n| stored.get_mut(n)) {
            list.push(row.try_get(1)?);
        }
    }
    let mut jobs = super::jobs::NewJobs::default();
    for ((t, j), stored) in ending.iter().zip(&stored) {
        jobs.add(
            t.bot_id,
            t.conversation_id,
            &j.payload_with(stored),
            &j.actions,
        );
    }
    jobs.insert(conn, now).await
}
