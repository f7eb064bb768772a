//! Liveness, readiness and metrics for operators; no authentication (bind them to a
//! private network or filter them at the proxy).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is alive")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The store takes a write and answers a read"),
        (status = 503, description = "Not ready", body = super::openapi::ErrorBody)
    )
)]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    match check_store(&state).await {
        Ok(()) => Ok(Json(json!({"status": "ready"}))),
        Err(why) => Err(ApiError::Unavailable {
            message: format!("not ready: {why}"),
            retry_after_secs: 5,
        }),
    }
}

/// How long a readiness check waits for the store: under Kubernetes' default probe
/// timeout (1 s), so a store that hangs is told as not ready, not as a probe timeout.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_millis(800);

/// How long a store check and the job counts are reused.
const REUSED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// The last store check and job counts, with when they were made.
#[derive(Default)]
pub struct ScrapeCache {
    check: Option<(std::time::Instant, Result<(), String>)>,
    stats: Option<(std::time::Instant, crate::store::JobStats)>,
}

/// Whether the store takes a write now (within [`READY_WITHIN`]); sets the `wrapup_ready`
/// and `wrapup_store_up` gauges to what it found. Run by `/readyz` and by each scrape,
/// one at a time, the answer reused for [`REUSED_FOR`].
async fn check_store(state: &AppState) -> Result<(), String> {
    let mut cache = state.scrape_cache.lock().await;
    if let Some((at, outcome)) = &cache.check
        && at.elapsed() < REUSED_FOR
    {
        return outcome.clone();
    }
    let outcome = ping(state).await;
    cache.check = Some((std::time::Instant::now(), outcome.clone()));
    outcome
}

async fn ping(state: &AppState) -> Result<(), String> {
    let outcome = match tokio::time::timeout(READY_WITHIN, state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e.chain(), "not ready");
            Err(e.to_string())
        }
        Err(_) => Err(format!(
            "the store did not answer within {} ms",
            READY_WITHIN.as_millis()
        )),
    };
    let up = if outcome.is_ok() { 1.0 } else { 0.0 };
    // Ready is the store taking writes: an instance without its store cannot
    // acknowledge an end. Two gauges, so a later condition of readiness (a drain) does
    // not change what the store's own alert means.
    metrics::gauge!("wrapup_store_up").set(up);
    metrics::gauge!("wrapup_ready").set(up);
    outcome
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    // Job gauges are read from the store at scrape time, so they are right across
    // instances; a store that is down keeps their last figures and says so in
    // `wrapup_store_up`, and the scrape answers within about a second.
    let store_up = check_store(&state).await.is_ok();
    let stats = match store_up {
        true => {
            let mut cache = state.scrape_cache.lock().await;
            match &cache.stats {
                Some((at, stats)) if at.elapsed() < REUSED_FOR => Some(stats.clone()),
                _ => {
                    let fresh = tokio::time::timeout(READY_WITHIN, state.store.job_stats())
                        .await
                        .ok()
                        .and_then(Result::ok);
                    if let Some(s) = &fresh {
                        cache.stats = Some((std::time::Instant::now(), s.clone()));
                    }
                    fresh
                }
            }
        }
        false => None,
    };
    if let Some(stats) = stats {
        // Every state of every kind is set, 0 included: a state whose jobs all moved on
        // must not keep its last count.
        let kinds: std::collections::BTreeSet<&str> = stats
            .by_kind_and_state
            .iter()
            .map(|(k, _, _)| k.as_str())
            .collect();
        for kind in kinds {
            for job_state in crate::store::JobState::ALL {
                let count = stats
                    .by_kind_and_state
                    .iter()
                    .find(|(k, s, _)| k == kind && *s == job_state)
                    .map_or(0, |(_, _, n)| *n);
                metrics::gauge!("wrapup_jobs", "kind" => kind.to_owned(), "state" => job_state.as_str())
                    .set(count as f64);
            }
        }
        metrics::gauge!("wrapup_jobs_due").set(stats.due as f64);
        metrics::gauge!("wrapup_jobs_oldest_due_age_seconds")
            .set(stats.oldest_due_age.map(|d| d.as_secs_f64()).unwrap_or(0.0));
        metrics::gauge!("wrapup_jobs_oldest_waiting_age_seconds").set(
            stats
                .oldest_waiting_age
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        );
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "This document (OpenAPI 3.1)")))]
pub async fn openapi_json(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi_json(&state.live().limits),
    )
}
