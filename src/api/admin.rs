//! `/admin/v1/`: what happened to each post-conversation action, and replaying the dead.
//! Protected by the bearer token named by `[admin] token_env`; off when that is unset.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Admin;
use super::error::ApiError;
use crate::domain::Timestamp;
use crate::domain::outbox::Operation;
use crate::store::{Decision, JobFilter, JobState, JobView, RetryTarget};

/// `GET /admin/v1/jobs`'s query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    pub state: Option<JobState>,
    pub bot: Option<String>,
    pub conversation: Option<String>,
    /// The action's name.
    pub action: Option<String>,
    /// RFC 3339: only jobs created at or after this instant.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<time::OffsetDateTime>,
    /// RFC 3339: only jobs created before this instant.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<time::OffsetDateTime>,
    /// 1 to 1000, default 50.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<i64>,
}

/// A page of jobs, newest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// How many dead jobs went back in the queue.
#[derive(Serialize, ToSchema)]
pub struct Retried {
    pub retried: u64,
    /// At most 1,000 jobs are taken per call: `true` when there may be more (call again).
    pub more: bool,
}

#[utoipa::path(
    get,
    path = "/admin/v1/jobs",
    tag = "admin",
    params(JobsQuery),
    responses(
        (status = 200, description = "Jobs, newest first", body = JobPage),
        (status = 400, description = "A bad query parameter", body = super::openapi::ErrorBody),
        (status = 401, description = "No admin token", body = super::openapi::ErrorBody),
        (status = 404, description = "Admin API off, or no such job", body = super::openapi::ErrorBody),
    ),
    security(("admin" = []))
)]
pub async fn list_jobs(
    State(state): State<Arc<AppState>>,
    _: Admin,
    query: Result<Query<JobsQuery>, QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(q) = query?;
    let limit = super::limit(q.limit, 50, 1000)?;
    let jobs = state
        .store
        .list_jobs(JobFilter {
            state: q.state,
            bot_id: q.bot,
            conversation_id: q.conversation,
            action: q.action,
            since: q.since.map(crate::domain::Timestamp::from_offset),
            until: q.until.map(crate::domain::Timestamp::from_offset),
            limit,
            before: q.cursor,
        })
        .await?;
    let next_cursor = (jobs.len() == limit)
        .then(|| jobs.last().map(|j| j.cursor.to_string()))
        .flatten();
    let now = state.clock.now();
    let jobs = jobs.into_iter().map(|j| overdue(j, now)).collect();
    Ok(Json(JobPage { jobs, next_cursor }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/jobs/{id}",
    tag = "admin",
    params(("id" = String, Path, pattern = "^[^\\u0000]+$")),
    responses((status = 200, description = "The job and its attempts", body = JobView), (status = 401, description = "No admin token", body = super::openapi::ErrorBody),
        (status = 404, description = "Admin API off, or no such job", body = super::openapi::ErrorBody),),
    security(("admin" = []))
)]
pub async fn show_job(
    State(state): State<Arc<AppState>>,
    _: Admin,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<JobView>, ApiError> {
    let Path(id) = path?;
    let job = state
        .store
        .job(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    Ok(Json(overdue(job, state.clock.now())))
}

/// A pending job past its due time says how long it has waited.
fn overdue(mut job: JobView, now: crate::domain::Timestamp) -> JobView {
    if job.state == JobState::Pending && job.due_at < now {
        job.overdue_ms = Some((now.millis() - job.due_at.millis()) as u64);
    }
    job
}

#[utoipa::path(
    post,
    path = "/admin/v1/jobs/{id}/retry",
    tag = "admin",
    params(("id" = String, Path, pattern = "^[^\\u0000]+$")),
    responses(
        (status = 200, description = "Back in the queue", body = Retried),
        (status = 409, description = "The job is not dead", body = super::openapi::ErrorBody),
        (status = 401, description = "No admin token", body = super::openapi::ErrorBody),
        (status = 404, description = "Admin API off, or no such job", body = super::openapi::ErrorBody),
    ),
    security(("admin" = []))
)]
pub async fn retry_job(
    State(state): State<Arc<AppState>>,
    _: Admin,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Retried>, ApiError> {
    let Path(id) = path?;
    let retried = retry_one(&state, id).await?;
    Ok(Json(Retried {
        retried,
        more: false,
    }))
}

/// Retries one dead job (the admin API's and the console's button): a conflict names
/// why a job cannot be retried.
pub(crate) async fn retry_one(state: &AppState, id: String) -> Result<u64, ApiError> {
    // A dead job whose destination is gone would only die again (or wait, orphaned).
    if let Some(job) = state.store.job(&id).await?
        && job.state == JobState::Dead
        && !job.destination.is_empty()
        // Every action's identity, its previous names' and the summary's.
        && !state.live().runner.known().contains(&job.destination)
    {
        return Err(ApiError::Conflict(format!(
            "job {id}'s destination ({} action \"{}\") is not in the configuration; re-point it (POST /admin/v1/jobs/{id}/repoint) or discard it (POST /admin/v1/jobs/{id}/discard)",
            job.kind, job.action
        )));
    }
    let retried = state.store.retry_dead(RetryTarget::Job(id.clone())).await?;
    if retried == 0 {
        return match state.store.job(&id).await? {
            None => Err(ApiError::NotFound(format!("no job {id}"))),
            Some(job) if job.state == JobState::Orphaned => Err(ApiError::Conflict(format!(
                "job {id} is orphaned: the destination it was scheduled for is not in the configuration; re-point it (POST /admin/v1/jobs/{id}/repoint) or discard it (POST /admin/v1/jobs/{id}/discard)"
            ))),
            Some(job) => Err(ApiError::Conflict(format!(
                "job {id} is {}; {}",
                job.state.as_str(),
                Operation::Retry.refusal()
            ))),
        };
    }
    state.wake.notify_one();
    state.forget_stats();
    Ok(retried)
}

#[utoipa::path(
    post,
    path = "/admin/v1/bots/{botId}/jobs/retry",
    tag = "admin",
    params(("botId" = String, Path)),
    responses((status = 200, description = "The bot's dead jobs back in the queue, 1,000 at most per call", body = Retried), (status = 400, description = "The bot is not configured", body = super::openapi::ErrorBody), (status = 401, description = "No admin token", body = super::openapi::ErrorBody),
        (status = 404, description = "Admin API off, or no such job", body = super::openapi::ErrorBody),),
    security(("admin" = []))
)]
pub async fn retry_bot(
    State(state): State<Arc<AppState>>,
    _: Admin,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Retried>, ApiError> {
    let Path(bot) = path?;
    if !state.live().plans.contains_key(&bot) {
        return Err(ApiError::BadRequest(format!(
            "bot: {bot} is not configured"
        )));
    }
    let known = known_of(&state, &bot);
    let retried = state
        .store
        .retry_dead(RetryTarget::DeadOfBot { bot, known })
        .await?;
    state.wake.notify_one();
    state.forget_stats();
    Ok(Json(Retried {
        retried,
        more: retried >= crate::store::RETRY_BATCH,
    }))
}

#[utoipa::path(
    post,
    path = "/admin/v1/jobs/{id}/discard",
    tag = "admin",
    params(("id" = String, Path, pattern = "^[^\\u0000]+$")),
    responses(
        (status = 200, description = "Given up for good; the job as it is now", body = JobView),
        (status = 409, description = "The job is not dead or orphaned", body = super::openapi::ErrorBody),
        (status = 401, description = "No admin token", body = super::openapi::ErrorBody),
        (status = 404, description = "Admin API off, or no such job", body = super::openapi::ErrorBody),
    ),
    security(("admin" = []))
)]
pub async fn discard_job(
    State(state): State<Arc<AppState>>,
    _: Admin,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<JobView>, ApiError> {
    let Path(id) = path?;
    let applied = state.store.decide(&id, Decision::Discard).await?;
    settle(&state, &id, applied, &Operation::Discard.refusal()).await
}

/// The states a bulk re-point takes (its `state`).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum RepointState {
    Orphaned,
    Dead,
    Pending,
}

/// `POST …/repoint`'s body.
#[derive(Deserialize, ToSchema)]
pub struct Repoint {
    /// The name of one of the job's bot's `on_end` actions, as configured now.
    pub action: String,
}

#[utoipa::path(
    post,
    path = "/admin/v1/jobs/{id}/repoint",
    tag = "admin",
    params(("id" = String, Path, pattern = "^[^\\u0000]+$")),
    request_body = Repoint,
    responses(
        (status = 200, description = "Pointed at the action, due now with its attempts; the job as it is now", body = JobView),
        (status = 400, description = "The bot has no action of that name", body = super::openapi::ErrorBody),
        (status = 409, description = "The job is running, succeeded or discarded, or the action cannot take a job of its kind (a summary job goes only to `summary`, a delivery only to a webhook or NATS action, a `redis_cleanup` job only to a `redis_cleanup` action)", body = super::openapi::ErrorBody),
        (status = 401, description = "No admin token", body = super::openapi::ErrorBody),
        (status = 404, description = "Admin API off, or no such job", body = super::openapi::ErrorBody),
    ),
    security(("admin" = []))
)]
pub async fn repoint_job(
    State(state): State<Arc<AppState>>,
    _: Admin,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<Repoint>, JsonRejection>,
) -> Result<Json<JobView>, ApiError> {
    let Path(id) = path?;
    let Json(to) = body?;
    let job = state
        .store
        .job(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    let live = state.live();
    // No action of that name at all is a typo (400); one that cannot take this job's kind
    // is a conflict with this job (409), as in a bulk re-point's notRepointed.
    let exists = live.plans.get(&job.bot_id).is_some_and(|b| {
        b.on_end.iter().any(|a| a.name == to.action)
            || (to.action == "summary" && b.summary.is_some())
    });
    let action = repoint_target(&live, &job.bot_id, &job.kind, &to.action).map_err(|why| {
        if exists {
            ApiError::Conflict(why)
        } else {
            ApiError::BadRequest(why)
        }
    })?;
    let decision = Decision::Repoint {
        to: action,
        from: job.destination.clone(),
    };
    let applied = state.store.decide(&id, decision).await?;
    let answer = settle(&state, &id, applied, &Operation::Repoint.refusal()).await?;
    state.wake.notify_one();
    state.forget_stats();
    Ok(answer)
}

/// The action a job of `kind` may be re-pointed to, or why not. A job carries what its kind
/// needs: a summary job a trigger, a delivery a record or a summary. So a summary job goes
/// only to the bot's summary (`"summary"`: a provider that replaced the one it was made
/// for), any other only to an `on_end` action.
pub(crate) fn repoint_target(
    live: &crate::live::Live,
    bot_id: &str,
    kind: &str,
    to: &str,
) -> Result<crate::store::ActionRef, String> {
    let bot = live.plans.get(bot_id);
    let action = if kind == "summary" {
        bot.and_then(|b| b.summary.as_ref())
            .filter(|_| to == "summary")
            .map(|s| crate::store::ActionRef {
                name: "summary".into(),
                ..s.clone()
            })
    } else {
        // A delivery (webhook, NATS) goes to a delivery, a cache cleanup to a cache
        // cleanup: a job never becomes something of another nature (an announcement
        // turned into a key deletion).
        let family = |k: &str| if k == "redis_cleanup" { 1 } else { 0 };
        bot.and_then(|b| {
            b.on_end
                .iter()
                .find(|a| a.name == to && a.kind != "summary" && family(a.kind) == family(kind))
                .cloned()
        })
    };
    action.ok_or_else(|| {
        format!(
            "action: bot {bot_id} has no action named \"{to}\" that can take a {kind} job{}",
            match kind {
                "summary" => " (a summary job goes to \"summary\", the bot's [bots.summary])",
                "redis_cleanup" => " (a redis_cleanup job goes only to a redis_cleanup action)",
                _ => " (a delivery goes only to a webhook or nats action)",
            }
        )
    })
}

/// `POST /admin/v1/jobs/repoint`'s body: the jobs of one action of a bot (configured or
/// not any more), in one state, and the action to point them at.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRepoint {
    pub bot: String,
    /// The action the jobs belong to (`GET /admin/v1/jobs?action=` lists them).
    pub from: String,
    /// The action to run them with, as configured now.
    pub to: String,
    /// `orphaned` (the default), `dead` or `pending`.
    #[schema(value_type = Option<RepointState>)]
    pub state: Option<String>,
    /// Only jobs created at or after this instant (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub since: Option<time::OffsetDateTime>,
    /// Only jobs created before this instant (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub until: Option<time::OffsetDateTime>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkRepointed {
    /// How many jobs now point at `to`, due now.
    pub repointed: u64,
    /// Matching jobs that were not re-pointed, and why.
    pub not_repointed: Vec<super::insight::NotRetried>,
    /// At most 1,000 jobs are taken per call: `true` when there may be more (call again);
    /// `false` when the 1,000 taken were all refused (their reasons say why).
    pub more: bool,
}

/// The most jobs one bulk re-point takes (it answers `more` when there may be others).
const REPOINT_BATCH: usize = 1000;

#[utoipa::path(
    post,
    path = "/admin/v1/jobs/repoint",
    tag = "admin",
    request_body = BulkRepoint,
    responses(
        (status = 200, description = "What was re-pointed, what was not and why", body = BulkRepointed),
        (status = 400, description = "An unknown bot, state or target action", body = super::openapi::ErrorBody),
        (status = 401, description = "No admin token", body = super::openapi::ErrorBody),
        (status = 404, description = "Admin API off", body = super::openapi::ErrorBody),
    ),
    security(("admin" = []))
)]
pub async fn repoint_jobs(
    State(state): State<Arc<AppState>>,
    _: Admin,
    body: Result<Json<BulkRepoint>, JsonRejection>,
) -> Result<Json<BulkRepointed>, ApiError> {
    let Json(req) = body?;
    Ok(Json(repoint_many(&state, req).await?))
}

/// Re-points up to [`REPOINT_BATCH`] jobs of one action of a bot in one state (and created
/// in `[since, until)`) to another action: the admin API's and the console's bulk re-point.
pub(crate) async fn repoint_many(
    state: &AppState,
    req: BulkRepoint,
) -> Result<BulkRepointed, ApiError> {
    let live = state.live();
    let Some(plan) = live.plans.get(&req.bot) else {
        return Err(ApiError::BadRequest(format!(
            "bot: {} is not configured",
            req.bot
        )));
    };
    // A target that is no action at all is a typo: refused whether or not jobs match.
    let summary = req.to == "summary" && plan.summary.is_some();
    if !summary && !plan.on_end.iter().any(|a| a.name == req.to) {
        return Err(ApiError::BadRequest(format!(
            "to: bot {} has no action {:?}",
            req.bot, req.to
        )));
    }
    // `until` at or before `since` is an empty window that matches no job (see
    // `insight::retry_many`).
    let job_state = match req.state.as_deref().unwrap_or("orphaned") {
        s @ ("orphaned" | "dead" | "pending") => JobState::parse(s),
        other => {
            return Err(ApiError::BadRequest(format!(
                "state: {other:?} is not orphaned, dead or pending"
            )));
        }
    };
    let jobs = state
        .store
        .list_jobs(crate::store::JobFilter {
            state: job_state,
            bot_id: Some(req.bot.clone()),
            action: Some(req.from.clone()),
            since: req.since.map(Timestamp::from_offset),
            until: req.until.map(Timestamp::from_offset),
            limit: REPOINT_BATCH,
            ..Default::default()
        })
        .await?;
    let mut out = BulkRepointed {
        repointed: 0,
        not_repointed: Vec::new(),
        more: false,
    };
    let full = jobs.len() == REPOINT_BATCH;
    for job in jobs {
        let target = match repoint_target(&live, &job.bot_id, &job.kind, &req.to) {
            Ok(t) => t,
            Err(reason) => {
                out.not_repointed
                    .push(super::insight::NotRetried { id: job.id, reason });
                continue;
            }
        };
        match state
            .store
            .decide(
                &job.id,
                Decision::Repoint {
                    to: target,
                    from: job.destination.clone(),
                },
            )
            .await?
        {
            Some(true) => out.repointed += 1,
            Some(false) => out.not_repointed.push(super::insight::NotRetried {
                reason: format!(
                    "job {} changed meanwhile: no longer {} or no longer of {}",
                    job.id,
                    job.state.as_str(),
                    req.from
                ),
                id: job.id,
            }),
            None => out.not_repointed.push(super::insight::NotRetried {
                reason: format!("job {} is gone", job.id),
                id: job.id,
            }),
        }
    }
    // More may match only if this batch moved some: a batch refused whole (jobs `to`
    // cannot take) would be the same batch again.
    out.more = full && out.repointed > 0;
    state.wake.notify_one();
    state.forget_stats();
    tracing::info!(
        repointed = out.repointed,
        not_repointed = out.not_repointed.len(),
        bot = req.bot,
        from = req.from,
        to = req.to,
        "an operator re-pointed jobs"
    );
    Ok(out)
}

/// The answer to an operator's decision: the job as it is now, 404 or 409.
async fn settle(
    state: &AppState,
    id: &str,
    applied: Option<bool>,
    refused: &str,
) -> Result<Json<JobView>, ApiError> {
    let job = match applied {
        None => None,
        Some(_) => state.store.job(id).await?,
    }
    .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    if applied == Some(false) {
        return Err(ApiError::Conflict(format!(
            "job {id} is {}; {refused}",
            job.state.as_str()
        )));
    }
    Ok(Json(job))
}

/// The destinations of a bot's actions (and `""`, the jobs from before destinations): only
/// jobs for these are retried, the others would die again.
pub(crate) fn known_of(state: &AppState, bot: &str) -> crate::store::Known {
    std::iter::once(String::new())
        .chain(state.live().plans.get(bot).into_iter().flat_map(|b| {
            b.on_end
                .iter()
                .chain(b.summary.iter())
                .map(|a| a.destination.clone())
        }))
        .collect()
}
