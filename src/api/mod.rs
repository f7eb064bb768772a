//! HTTP only: routes, authentication, and the mapping of errors to responses.
//! Handlers translate between HTTP and the domain and store; they hold no rules.

pub mod admin;
pub mod auth;
pub mod conversations;
pub mod error;
pub mod hooks;
pub mod ops;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::Authenticator;
use crate::config::{BotSettings, ServerSettings};
use crate::domain::Limits;
use crate::store::{ActionRef, Store};
use error::ApiError;
use tokio::sync::Notify;

/// The three paths the vendor's documents use for the same endpoint.
pub const HOOK_PATHS: [&str; 3] = [
    "/agentai/api/v1/hooks/{botId}",
    "/agentassist/api/v1/hooks/{botId}",
    "/api/v1/hooks/{botId}",
];

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub auth: Authenticator,
    pub bots: HashMap<String, BotSettings>,
    /// Each bot's actions, as the store schedules them.
    pub on_end: HashMap<String, Arc<[ActionRef]>>,
    /// Wakes the action workers when a conversation ends.
    pub wake: Arc<Notify>,
    pub admin_token: Option<String>,
    pub limits: Limits,
    pub server: ServerSettings,
    pub metrics: PrometheusHandle,
}

pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    for path in HOOK_PATHS {
        router = router.route(path, post(hooks::hook));
    }
    router
        .route("/api/v1/bots/{botId}/conversations", get(conversations::list_conversations))
        .route(
            "/api/v1/bots/{botId}/conversations/{conversationId}",
            get(conversations::get_conversation),
        )
        .route(
            "/api/v1/bots/{botId}/conversations/{conversationId}/events",
            get(conversations::list_events),
        )
        .route(
            "/api/v1/bots/{botId}/conversations/{conversationId}/transcript",
            get(conversations::transcript),
        )
        .route("/admin/v1/jobs", get(admin::list_jobs))
        .route("/admin/v1/jobs/{id}", get(admin::show_job))
        .route("/admin/v1/jobs/{id}/retry", post(admin::retry_job))
        .route("/admin/v1/bots/{botId}/jobs/retry", post(admin::retry_bot))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(record_request))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|req: &Request| {
                        let id = req
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                    }),
                )
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
        .with_state(state)
}

/// Counts requests by route template and status, and times them.
async fn record_request(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let started = Instant::now();
    let response = next.run(req).await.into_response();
    let status = response.status().as_u16().to_string();
    metrics::counter!("wrapup_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("wrapup_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
