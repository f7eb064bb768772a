//! `/admin/v1/` views for people: where a conversation id is, what each destination did
//! lately, the traffic of the last 15 minutes, and retrying many dead jobs at once. The
//! console renders these same answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::admin::{known_of, retry_one};
use super::auth::Admin;
use super::error::ApiError;
use crate::domain::Timestamp;
use crate::domain::outbox::Operation;
use crate::store::{Decision, JobState, RecentAttempt, RetryTarget};
use crate::traffic::BUCKET_MS;

/// At most this many attempts of the last day are read for the statistics (the newest).
pub const ATTEMPT_SAMPLE: usize = 50_000;
/// Destination statistics are computed at most this often; pages and API calls in
/// between get the last ones.
const STATS_TTL: std::time::Duration = std::time::Duration::from_secs(2);
const HOUR_MS: i64 = 3_600_000;

/// `GET /admin/v1/conversations`'s query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindQuery {
    /// The conversation id, exactly (1 to 256 bytes of UTF-8, no NUL).
    #[param(min_length = 1, max_length = 64, pattern = "^[^\\u0000]+$")]
    pub id: String,
}

/// Where a conversation id was found.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Found {
    pub bot_id: String,
    pub conversation_id: String,
    #[schema(value_type = String)]
    pub status: &'static str,
    /// `endedAt`, or `lastEventAt` while active.
    pub at: String,
}

#[derive(Serialize, ToSchema)]
pub struct FoundList {
    /// Newest first; among the bots of the configuration.
    pub conversations: Vec<Found>,
}

#[utoipa::path(
    get,
    path = "/admin/v1/conversations",
    tag = "admin",
    params(FindQuery),
    responses(
        (status = 200, description = "The configured bots that have a conversation with this id", body = FoundList),
        (status = 400, description = "No id, or one over 256 bytes", body = super::openapi::ErrorBody),
        (status = 401, description = "No admin token", body = super::openapi::ErrorBody),
        (status = 404, description = "Admin API off", body = super::openapi::ErrorBody),
    ),
    security(("admin" = []))
)]
pub async fn find_conversation(
    State(state): State<Arc<AppState>>,
    _: Admin,
    query: Result<Query<FindQuery>, QueryRejection>,
) -> Result<Json<FoundList>, ApiError> {
    let Query(q) = query?;
    Ok(Json(find(&state, &q.id).await?))
}

pub(crate) async fn find(state: &AppState, id: &str) -> Result<FoundList, ApiError> {
    if id.is_empty() || id.len() > 256 || id.contains('\0') {
        return Err(ApiError::BadRequest(
            "id: must be 1 to 256 bytes, without NUL".into(),
        ));
    }
    let bots: Vec<String> = state.live().bots.keys().cloned().collect();
    let found = state.store.find_conversation(bots, id).await?;
    Ok(FoundList {
        conversations: found
            .into_iter()
            .map(|f| Found {
                bot_id: f.bot_id,
                conversation_id: f.conversation_id,
                status: f.status.as_str(),
                at: f.sort_at.to_rfc3339(),
            })
            .collect(),
    })
}

/// What to retry: the listed jobs, or every dead job of one action of a bot since an
/// instant.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BulkRetry {
    /// Job ids (at most 1000).
    pub ids: Option<Vec<String>>,
    pub bot: Option<String>,
    /// The action's name (with `bot` and `since`).
    pub action: Option<String>,
    /// RFC 3339: jobs created at or after this instant (with `bot` and `action`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<time::OffsetDateTime>,
    /// RFC 3339, optional with `since`: only jobs created before this instant.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<time::OffsetDateTime>,
}

/// A job of the list that was not retried, and why.
#[derive(Serialize, ToSchema)]
pub struct NotRetried {
    pub id: String,
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkRetried {
    /// How many dead jobs went back in the queue.
    pub retried: u64,
    /// Listed jobs that were not retried (not dead, unknown, or their destination gone).
    pub not_retried: Vec<NotRetried>,
    /// A retry by action takes at most 1,000 jobs a call: `true` when there may be more
    /// (call again). Always `false` for a list of ids.
    pub more: bool,
}

#[utoipa::path(
    post,
    path = "/admin/v1/jobs/retry",
    tag = "admin",
    request_body = BulkRetry,
    responses(
        (status = 200, description = "How many went back in the queue", body = BulkRetried),
        (status = 400, description = "Neither ids nor bot, action and since; or an unknown bot or action", body = super::openapi::ErrorBody),
        (status = 401, description = "No admin token", body = super::openapi::ErrorBody),
        (status = 404, description = "Admin API off", body = super::openapi::ErrorBody),
    ),
    security(("admin" = []))
)]
pub async fn bulk_retry(
    State(state): State<Arc<AppState>>,
    _: Admin,
    body: Result<Json<BulkRetry>, JsonRejection>,
) -> Result<Json<BulkRetried>, ApiError> {
    let Json(req) = body?;
    Ok(Json(retry_many(&state, req).await?))
}

pub(crate) async fn retry_many(state: &AppState, req: BulkRetry) -> Result<BulkRetried, ApiError> {
    match req {
        BulkRetry {
            ids: Some(ids),
            bot: None,
            action: None,
            since: None,
            until: None,
        } => {
            check_ids(&ids)?;
            let ids = distinct(ids);
            let mut out = BulkRetried {
                retried: 0,
                not_retried: Vec::new(),
                more: false,
            };
            for id in ids {
                match retry_one(state, id.clone()).await {
                    Ok(n) => out.retried += n,
                    Err(ApiError::Conflict(reason) | ApiError::NotFound(reason)) => {
                        out.not_retried.push(NotRetried { id, reason })
                    }
                    Err(e) => return Err(e),
                }
            }
            tracing::info!(
                retried = out.retried,
                not_retried = out.not_retried.len(),
                "an operator retried jobs by id"
            );
            Ok(out)
        }
        BulkRetry {
            ids: None,
            bot: Some(bot),
            action: Some(action),
            since: Some(since),
            until,
        } => {
            // `until` at or before `since` is an empty window: it matches no job (JSON
            // Schema cannot say one field must follow another, and the contract is
            // exactly what the server takes; the CLI refuses such a window itself).
            let live = state.live();
            let Some(plan) = live.plans.get(&bot) else {
                return Err(ApiError::BadRequest(format!(
                    "bot: {bot} is not configured"
                )));
            };
            // `summary` is the bot's summary jobs (`summary@…`) when it has `[bots.summary]`;
            // another action's jobs include its `conversation.summarized` deliveries.
            let summaries = action == "summary" && plan.summary.is_some();
            if !summaries && !plan.on_end.iter().any(|a| a.name == action) {
                return Err(ApiError::BadRequest(format!(
                    "action: bot {bot} has no action {action:?}"
                )));
            }
            let known = known_of(state, &bot);
            let retried = state
                .store
                .retry_dead(RetryTarget::DeadOfAction {
                    bot: bot.clone(),
                    action: action.clone(),
                    since: Timestamp::from_offset(since),
                    until: until.map(Timestamp::from_offset),
                    known,
                })
                .await?;
            state.wake.notify_one();
            state.forget_stats();
            tracing::info!(retried, bot, action, %since, "an operator retried the dead jobs of an action");
            Ok(BulkRetried {
                retried,
                not_retried: Vec::new(),
                more: retried >= crate::store::RETRY_BATCH,
            })
        }
        _ => Err(ApiError::BadRequest(
            "body: give either ids, or bot, action and since".into(),
        )),
    }
}

/// Which jobs to give up for good.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkDiscard {
    /// Job ids (1 to 1000), each dead or orphaned.
    #[schema(value_type = Vec<JobId>, min_items = 1, max_items = 1000)]
    pub ids: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkDiscarded {
    /// How many jobs were discarded.
    pub discarded: u64,
    /// Listed jobs that were not (unknown, or not dead or orphaned), and why.
    pub not_discarded: Vec<NotRetried>,
}

#[utoipa::path(
    post,
    path = "/admin/v1/jobs/discard",
    tag = "admin",
    request_body = BulkDiscard,
    responses(
        (status = 200, description = "How many were given up", body = BulkDiscarded),
        (status = 400, description = "No ids, or more than 1000", body = super::openapi::ErrorBody),
        (status = 401, description = "No admin token", body = super::openapi::ErrorBody),
        (status = 404, description = "Admin API off", body = super::openapi::ErrorBody),
    ),
    security(("admin" = []))
)]
pub async fn bulk_discard(
    State(state): State<Arc<AppState>>,
    _: Admin,
    body: Result<Json<BulkDiscard>, JsonRejection>,
) -> Result<Json<BulkDiscarded>, ApiError> {
    let Json(req) = body?;
    Ok(Json(discard_many(&state, req.ids).await?))
}

/// Gives up the listed jobs (admin API and console): those dead or orphaned are
/// discarded, the others listed with the reason.
pub(crate) async fn discard_many(
    state: &AppState,
    ids: Vec<String>,
) -> Result<BulkDiscarded, ApiError> {
    check_ids(&ids)?;
    let mut out = BulkDiscarded {
        discarded: 0,
        not_discarded: Vec::new(),
    };
    for id in distinct(ids) {
        let reason = match state.store.decide(&id, Decision::Discard).await? {
            Some(true) => {
                out.discarded += 1;
                continue;
            }
            None => format!("no job {id}"),
            Some(false) => match state.store.job(&id).await? {
                Some(job) => format!(
                    "job {id} is {}; {}",
                    job.state.as_str(),
                    Operation::Discard.refusal()
                ),
                None => format!("no job {id}"),
            },
        };
        out.not_discarded.push(NotRetried { id, reason });
    }
    state.forget_stats();
    tracing::info!(
        discarded = out.discarded,
        not_discarded = out.not_discarded.len(),
        "an operator discarded jobs"
    );
    Ok(out)
}

/// `ids` without repeats, in their order: a job named twice is retried (or discarded)
/// and counted once.
fn distinct(ids: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

/// Its two shapes, as the handler takes them: ids alone, or an action's window.
impl utoipa::PartialSchema for BulkRetry {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, OneOfBuilder};
        use utoipa::openapi::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        let text = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
        };
        let instant = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        };
        let ids = ObjectBuilder::new()
            .description(Some(
                "Dead jobs by id (each answered in notRetried when it cannot be retried)",
            ))
            .property(
                "ids",
                ArrayBuilder::new()
                    .items(JobId::schema())
                    .min_items(Some(1))
                    .max_items(Some(1000)),
            )
            .required("ids")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let window = ObjectBuilder::new()
            .description(Some("The dead jobs of one action of a bot created in [since, until) (until optional; at or before since: none)"))
            .property("bot", text())
            .property("action", text().description(Some("The action's name, or `summary` for the bot's summary jobs")))
            .property("since", instant())
            .property("until", instant())
            .required("bot")
            .required("action")
            .required("since")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        OneOfBuilder::new().item(ids).item(window).into()
    }
}

impl ToSchema for BulkRetry {}

/// A job id as the API takes one: 1 to 256 bytes of UTF-8 without NUL (said as at most 64
/// characters, which never pass 256 bytes).
pub struct JobId;

impl utoipa::PartialSchema for JobId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .min_length(Some(1))
            .max_length(Some(64))
            .pattern(Some("^[^\\u0000]+$"))
            .into()
    }
}

impl ToSchema for JobId {}

/// 1 to 1000 job ids, each 1 to 256 bytes without NUL.
fn check_ids(ids: &[String]) -> Result<(), ApiError> {
    if ids.is_empty() || ids.len() > 1000 {
        return Err(ApiError::BadRequest("ids: 1 to 1000 job ids".into()));
    }
    if ids
        .iter()
        .any(|id| id.is_empty() || id.len() > 256 || id.contains('\0'))
    {
        return Err(ApiError::BadRequest(
            "ids: each job id is 1 to 256 bytes without NUL".into(),
        ));
    }
    Ok(())
}

/// Jobs by state.
#[derive(Serialize, ToSchema, Default, Clone, Copy)]
pub struct StateCounts {
    pub pending: u64,
    pub running: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub orphaned: u64,
    pub discarded: u64,
}

impl StateCounts {
    fn add(&mut self, state: JobState, n: u64) {
        let slot = match state {
            JobState::Pending => &mut self.pending,
            JobState::Running => &mut self.running,
            JobState::Succeeded => &mut self.succeeded,
            JobState::Dead => &mut self.dead,
            JobState::Orphaned => &mut self.orphaned,
            JobState::Discarded => &mut self.discarded,
        };
        *slot += n;
    }
}

/// The newest failed attempt of a destination.
#[derive(Serialize, ToSchema, Clone)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    pub at: String,
    pub status_code: Option<u16>,
    pub error: String,
}

/// One bot's action: what its jobs are, and how its attempts of the last hour and day went.
#[derive(Serialize, ToSchema, Clone)]
#[serde(rename_all = "camelCase")]
pub struct DestinationStats {
    pub bot_id: String,
    pub action: String,
    /// The action's kind; empty for an action no longer in the configuration.
    pub kind: String,
    /// The action is in this instance's configuration.
    pub configured: bool,
    pub jobs: StateCounts,
    pub attempts_1h: u64,
    pub attempts_24h: u64,
    /// Succeeded attempts over all attempts, 0 to 1; null without attempts.
    pub success_rate_1h: Option<f64>,
    pub success_rate_24h: Option<f64>,
    /// Attempt durations over the last 24 hours.
    pub latency_p50_ms: Option<u64>,
    pub latency_p99_ms: Option<u64>,
    pub last_error: Option<LastError>,
    /// Paused by its circuit breaker after `workers.pause_after` failed attempts in a row
    /// (in this instance): its due jobs wait without spending attempts; one probe runs
    /// every `workers.pause_for`.
    pub paused: bool,
    /// When paused: seconds until the next probe may run.
    pub next_probe_in_s: Option<u64>,
    /// When paused: its failed attempts in a row.
    pub failures_in_row: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct Destinations {
    /// Every configured action of every bot, then actions with jobs that are no longer
    /// configured; by bot, then action.
    pub destinations: Vec<DestinationStats>,
}

#[utoipa::path(
    get,
    path = "/admin/v1/destinations",
    tag = "admin",
    responses(
        (status = 200, description = "Per bot and action: jobs by state, success rates, latency, last error", body = Destinations),
        (status = 401, description = "No admin token", body = super::openapi::ErrorBody),
        (status = 404, description = "Admin API off", body = super::openapi::ErrorBody),
    ),
    security(("admin" = []))
)]
pub async fn destinations(
    State(state): State<Arc<AppState>>,
    _: Admin,
) -> Result<Json<Destinations>, ApiError> {
    Ok(Json(destination_stats(&state).await?))
}

pub(crate) async fn destination_stats(state: &AppState) -> Result<Destinations, ApiError> {
    let cached = state.stats_cache.lock().ok().and_then(|c| {
        c.as_ref()
            .filter(|(at, _)| at.elapsed() < STATS_TTL)
            .map(|(_, d)| d.clone())
    });
    if let Some(destinations) = cached {
        return Ok(Destinations { destinations });
    }
    let fresh = compute_destination_stats(state).await?;
    if let Ok(mut c) = state.stats_cache.lock() {
        *c = Some((std::time::Instant::now(), fresh.destinations.clone()));
    }
    Ok(fresh)
}

async fn compute_destination_stats(state: &AppState) -> Result<Destinations, ApiError> {
    let now = state.clock.now();
    let rows = state
        .store
        .destination_rows(
            Timestamp::from_millis(now.millis() - 24 * HOUR_MS),
            ATTEMPT_SAMPLE,
        )
        .await?;
    let mut by: BTreeMap<(String, String), (StateCounts, Vec<&RecentAttempt>)> = BTreeMap::new();
    let live = state.live();
    for bot in live.bots.values() {
        for a in bot
            .on_end
            .iter()
            .chain(bot.summary.as_ref().map(|s| &s.action))
        {
            by.entry((bot.id.clone(), a.name.clone())).or_default();
        }
    }
    for (bot, action, st, n) in &rows.counts {
        by.entry((bot.clone(), action.clone()))
            .or_default()
            .0
            .add(*st, *n);
    }
    for a in &rows.attempts {
        by.entry((a.bot_id.clone(), a.action.clone()))
            .or_default()
            .1
            .push(a);
    }
    let hour_ago = now.millis() - HOUR_MS;
    let destinations = by
        .into_iter()
        .map(|((bot_id, action), (jobs, attempts))| {
            let kind = state
                .live()
                .bots
                .get(&bot_id)
                .and_then(|b| {
                    b.on_end
                        .iter()
                        .chain(b.summary.as_ref().map(|s| &s.action))
                        .find(|a| a.name == action)
                })
                .map(|a| a.kind.name().to_owned());
            let last_hour: Vec<_> = attempts
                .iter()
                .filter(|a| a.started_at.millis() >= hour_ago)
                .collect();
            let rate = |n: usize, ok: usize| (n > 0).then(|| ok as f64 / n as f64);
            let mut durations: Vec<u64> = attempts.iter().map(|a| a.duration_ms).collect();
            durations.sort_unstable();
            let pct = |p: f64| {
                (!durations.is_empty()).then(|| {
                    let i =
                        ((durations.len() as f64 * p).ceil() as usize).clamp(1, durations.len());
                    durations[i - 1]
                })
            };
            let last_error = rows
                .failures
                .iter()
                .find(|a| a.bot_id == bot_id && a.action == action)
                .map(|a| LastError {
                    at: a.started_at.to_rfc3339(),
                    status_code: a.status_code,
                    error: a.error.clone().unwrap_or_default(),
                });
            let paused = kind.as_deref().and_then(|k| {
                crate::actions::worker::paused(
                    &state.breakers,
                    &crate::config::destination(&bot_id, k, &action),
                )
            });
            DestinationStats {
                paused: paused.is_some(),
                next_probe_in_s: paused.map(|(wait, _)| wait.as_secs()),
                failures_in_row: paused.map(|(_, n)| n),
                configured: kind.is_some(),
                kind: kind.unwrap_or_default(),
                attempts_1h: last_hour.len() as u64,
                attempts_24h: attempts.len() as u64,
                success_rate_1h: rate(
                    last_hour.len(),
                    last_hour.iter().filter(|a| a.succeeded).count(),
                ),
                success_rate_24h: rate(
                    attempts.len(),
                    attempts.iter().filter(|a| a.succeeded).count(),
                ),
                latency_p50_ms: pct(0.50),
                latency_p99_ms: pct(0.99),
                last_error,
                bot_id,
                action,
                jobs,
            }
        })
        .collect();
    Ok(Destinations { destinations })
}

/// Counts of one 10-second bucket.
#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPoint {
    /// The bucket's start, in milliseconds since the epoch.
    pub at_ms: i64,
    pub events: u64,
    pub ends: u64,
    pub duplicate_ends: u64,
}

/// The whole deployment at a glance (every instance shows the same figures).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub at: String,
    pub active_conversations: u64,
    pub jobs: StateCounts,
    /// Pending jobs whose due time has come.
    pub due_jobs: u64,
    pub oldest_due_age_ms: Option<u64>,
    /// The last 15 minutes in 10-second buckets, oldest first (90, zeros included; the
    /// newest is still filling).
    pub traffic: Vec<TrafficPoint>,
    pub destinations: Vec<DestinationStats>,
}

#[utoipa::path(
    get,
    path = "/admin/v1/overview",
    tag = "admin",
    responses(
        (status = 200, description = "Traffic of the last 15 minutes, active conversations, jobs, destinations", body = Overview),
        (status = 401, description = "No admin token", body = super::openapi::ErrorBody),
        (status = 404, description = "Admin API off", body = super::openapi::ErrorBody),
    ),
    security(("admin" = []))
)]
pub async fn overview(
    State(state): State<Arc<AppState>>,
    _: Admin,
) -> Result<Json<Overview>, ApiError> {
    Ok(Json(overview_of(&state).await?))
}

pub(crate) async fn overview_of(state: &AppState) -> Result<Overview, ApiError> {
    let now = state.clock.now();
    let newest = now.millis() - now.millis().rem_euclid(BUCKET_MS);
    let first = newest - 89 * BUCKET_MS;
    let stored = state.store.traffic(Timestamp::from_millis(first)).await?;
    let traffic = (0..90)
        .map(|i| {
            let at_ms = first + i * BUCKET_MS;
            let b = stored.iter().find(|b| b.at_ms == at_ms);
            TrafficPoint {
                at_ms,
                events: b.map_or(0, |b| b.events),
                ends: b.map_or(0, |b| b.ends),
                duplicate_ends: b.map_or(0, |b| b.duplicate_ends),
            }
        })
        .collect();
    let stats = state.store.job_stats().await?;
    let mut jobs = StateCounts::default();
    for (_, st, n) in &stats.by_kind_and_state {
        jobs.add(*st, *n);
    }
    Ok(Overview {
        at: now.to_rfc3339(),
        active_conversations: state.store.count_active().await?,
        jobs,
        due_jobs: stats.due,
        oldest_due_age_ms: stats.oldest_due_age.map(|d| d.as_millis() as u64),
        traffic,
        destinations: destination_stats(state).await?.destinations,
    })
}
