//! `/admin/v1/`: what happened to each post-conversation action, and replaying the dead.
//! Protected by the bearer token named by `[admin] token_env`; off when that is unset.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use crate::store::{JobFilter, JobState, JobView, RetryTarget};

fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.admin_token else {
        return Err(ApiError::NotFound(
            "the admin API is off; set [admin] token_env".into(),
        ));
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .unwrap_or("");
    // Compare digests so the comparison's time says nothing about the token.
    if Sha256::digest(given.trim().as_bytes()) == Sha256::digest(expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(
            "an admin token is required in Authorization: Bearer".into(),
        ))
    }
}

#[utoipa::path(
    get,
    path = "/admin/v1/jobs",
    tag = "admin",
    params(
        ("state" = Option<String>, Query, description = "pending, running, succeeded or dead"),
        ("bot" = Option<String>, Query),
        ("conversation" = Option<String>, Query),
        ("limit" = Option<usize>, Query, description = "1 to 1000, default 50"),
        ("cursor" = Option<String>, Query),
    ),
    responses(
        (status = 200, description = "Jobs, newest first", body = super::openapi::JobPage),
        (status = 400, description = "A bad query parameter", body = super::openapi::ErrorBody),
        (status = 401, description = "No admin token", body = super::openapi::ErrorBody),
        (status = 404, description = "Admin API off, or no such job", body = super::openapi::ErrorBody),
    ),
    security(("admin" = []))
)]
pub async fn list_jobs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &headers)?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("query: {e}")))?;
    let state_filter = match q.get("state") {
        None => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "state \"{s}\" is not one of pending, running, succeeded, dead"
            ))
        })?),
    };
    let limit = super::query_limit(&q, 50, 1000)?;
    let before = match q.get("cursor") {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::BadRequest("cursor is not one this server gave".into()))?,
        ),
    };
    let jobs = state
        .store
        .list_jobs(JobFilter {
            state: state_filter,
            bot_id: q.get("bot").cloned(),
            conversation_id: q.get("conversation").cloned(),
            limit,
            before,
        })
        .await?;
    let next = (jobs.len() == limit)
        .then(|| jobs.last().map(|j| j.cursor.to_string()))
        .flatten();
    Ok(Json(json!({ "jobs": jobs, "nextCursor": next })))
}

#[utoipa::path(
    get,
    path = "/admin/v1/jobs/{id}",
    tag = "admin",
    params(("id" = String, Path)),
    responses((status = 200, description = "The job and its attempts", body = JobView), (status = 401, description = "No admin token", body = super::openapi::ErrorBody),
        (status = 404, description = "Admin API off, or no such job", body = super::openapi::ErrorBody),),
    security(("admin" = []))
)]
pub async fn show_job(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &headers)?;
    let Path(id) = path.map_err(|e| ApiError::BadRequest(format!("path: {e}")))?;
    let job = state
        .store
        .job(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    Ok(Json(json!(job)))
}

#[utoipa::path(
    post,
    path = "/admin/v1/jobs/{id}/retry",
    tag = "admin",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "Back in the queue", body = super::openapi::Retried),
        (status = 409, description = "The job is not dead", body = super::openapi::ErrorBody),
        (status = 401, description = "No admin token", body = super::openapi::ErrorBody),
        (status = 404, description = "Admin API off, or no such job", body = super::openapi::ErrorBody),
    ),
    security(("admin" = []))
)]
pub async fn retry_job(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &headers)?;
    let Path(id) = path.map_err(|e| ApiError::BadRequest(format!("path: {e}")))?;
    let retried = state.store.retry_dead(RetryTarget::Job(id.clone())).await?;
    if retried == 0 {
        return match state.store.job(&id).await? {
            None => Err(ApiError::NotFound(format!("no job {id}"))),
            Some(job) => Err(ApiError::Conflict(format!(
                "job {id} is {}; only dead jobs can be retried",
                job.state.as_str()
            ))),
        };
    }
    state.wake.notify_one();
    Ok(Json(json!({ "retried": retried })))
}

#[utoipa::path(
    post,
    path = "/admin/v1/bots/{botId}/jobs/retry",
    tag = "admin",
    params(("botId" = String, Path)),
    responses((status = 200, description = "Every dead job of the bot back in the queue", body = super::openapi::Retried), (status = 401, description = "No admin token", body = super::openapi::ErrorBody),
        (status = 404, description = "Admin API off, or no such job", body = super::openapi::ErrorBody),),
    security(("admin" = []))
)]
pub async fn retry_bot(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &headers)?;
    let Path(bot) = path.map_err(|e| ApiError::BadRequest(format!("path: {e}")))?;
    let retried = state.store.retry_dead(RetryTarget::DeadOfBot(bot)).await?;
    state.wake.notify_one();
    Ok(Json(json!({ "retried": retried })))
}
