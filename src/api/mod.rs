//! The HTTP layer: routes, authentication, per-app rate limits, and the mapping of errors
//! to responses. Handlers translate between HTTP and the domain and store: the rules of a
//! conversation (its lifecycle, caps, redaction, the jobs an end schedules) and of a job
//! (its next step, which states an operator may move it from) are the domain's. The
//! handlers do hold the rules of the requests themselves: a hook's `Content-Type`, body
//! size and read time, and an end last in its request (`hooks`); `limit` ranges, cursors
//! and the byte and row budgets of a page (`conversations`: `PAGE_BYTES`,
//! `LIST_SCAN_ROWS`); a records answer charged to its app's rate by size (`auth`); a NUL
//! in a path refused here; and the admin API's checks (`admin`: no retry for a dead job
//! whose destination is gone, a re-point only to an action that can take the job's kind,
//! at most 1,000 jobs re-pointed a call).

pub mod admin;
pub mod auth;
pub mod conversations;
pub mod error;
pub mod hooks;
pub mod insight;
pub mod openapi;
pub mod ops;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::ServerSettings;
use crate::store::Store;
use error::ApiError;
use tokio::sync::Notify;

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub clock: crate::clock::SharedClock,
    /// The configuration's apps, bots, actions and limits, swapped whole on reload.
    pub live: crate::live::Shared,
    /// Wakes the action workers when a conversation ends.
    pub wake: Arc<Notify>,
    /// The destinations' circuit breakers (which are paused).
    pub breakers: crate::actions::worker::Breakers,
    pub server: ServerSettings,
    pub metrics: PrometheusHandle,
    /// This instance's traffic counts for the console's charts.
    pub traffic: Arc<crate::traffic::Traffic>,
    /// The console's sign-in attempts per client address.
    pub console_logins: crate::console::LoginLimiter,
    /// The last store check and job counts for `/readyz` and `/metrics`, and when: one
    /// check at a time, reused for a second, so a flood of probes or scrapes costs the
    /// store one write and one count a second (see `ops`).
    pub scrape_cache: tokio::sync::Mutex<ops::ScrapeCache>,
    /// The destination statistics last computed, and when (see `insight`).
    pub stats_cache: std::sync::Mutex<Option<(std::time::Instant, Vec<insight::DestinationStats>)>>,
}

impl AppState {
    /// The configuration as it is now; hold it for a whole request.
    pub fn live(&self) -> Arc<crate::live::Live> {
        self.live.load_full()
    }

    /// Drops the cached destination statistics (after an operator's retry, so the next
    /// page shows its effect).
    pub fn forget_stats(&self) {
        if let Ok(mut c) = self.stats_cache.lock() {
            *c = None;
        }
    }
}

/// Every documented route: the OpenAPI document is built from these same registrations.
fn api_router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(hooks::hook_agentai))
        .routes(routes!(hooks::hook_agentassist))
        .routes(routes!(hooks::hook_api))
        .routes(routes!(conversations::list_conversations))
        .routes(routes!(conversations::get_conversation))
        .routes(routes!(conversations::list_events))
        .routes(routes!(conversations::transcript))
        .routes(routes!(conversations::summaries))
        .routes(routes!(admin::list_jobs))
        .routes(routes!(admin::show_job))
        .routes(routes!(admin::retry_job))
        .routes(routes!(admin::retry_bot))
        .routes(routes!(admin::discard_job))
        .routes(routes!(admin::repoint_job))
        .routes(routes!(admin::repoint_jobs))
        .routes(routes!(insight::find_conversation))
        .routes(routes!(insight::bulk_retry))
        .routes(routes!(insight::bulk_discard))
        .routes(routes!(insight::destinations))
        .routes(routes!(insight::overview))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi_json))
}

/// The OpenAPI 3.1 document as JSON (built once).
/// The OpenAPI document, with the hooks body's schema as the parser takes it under
/// `limits` (the configured events per request).
pub fn openapi_json(limits: &crate::domain::payload::Limits) -> String {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    let mut doc = DOC
        .get_or_init(|| serde_json::to_value(api_router().into_openapi()).unwrap_or_default())
        .clone();
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(serde_json::Value::as_object_mut)
    {
        for (name, schema) in crate::domain::payload::schema::components(limits) {
            schemas.insert(name.to_owned(), schema);
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

pub fn router(state: Arc<AppState>) -> Router {
    let (router, _) = api_router().split_for_parts();
    router
        .merge(crate::console::router())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Inside the access log: a panicking handler is answered, counted and logged
        // like any other 500, and the connection stays open.
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn_with_state(state.clone(), record_request))
        .layer(
            ServiceBuilder::new()
                .layer(middleware::map_request(clean_request_id))
                .layer(SetRequestIdLayer::x_request_id(FastRequestId))
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
                .layer(PropagateRequestIdLayer::x_request_id())
                // Every answer is JSON or text that comes from callers: browsers must not
                // sniff it into anything else.
                .layer(SetResponseHeaderLayer::overriding(
                    axum::http::header::X_CONTENT_TYPE_OPTIONS,
                    axum::http::HeaderValue::from_static("nosniff"),
                )),
        )
        .with_state(state)
}

/// The `limit` query parameter: `default` when absent, 400 outside 1..=`max`.
pub(crate) fn limit(given: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match given {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::BadRequest(format!(
            "limit must be a number from 1 to {max}"
        ))),
    }
}

/// The app a request was made as, once its token is verified (the access log's `app`).
#[derive(Clone, Default)]
pub struct CallerNote(pub Arc<OnceLock<String>>);

/// Counts requests by route template, status and bot (a configured bot, else empty: the
/// label set stays bounded by the configuration), times them, and writes the access log
/// line: method, route, status, duration, app, bot and request id — never a header value.
async fn record_request(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let bot = bot_of(&route, req.uri().path())
        .filter(|b| state.live().bots.contains_key(*b))
        .unwrap_or_default()
        .to_owned();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let note = CallerNote::default();
    req.extensions_mut().insert(note.clone());
    let started = Instant::now();
    // A NUL byte (%00) in a path or query is never a valid id: 400 here, before a store
    // (PostgreSQL refuses it in text) could take it for an outage.
    let nul = req
        .uri()
        .path_and_query()
        .is_some_and(|pq| pq.as_str().to_ascii_lowercase().contains("%00"));
    let mut response = if nul {
        ApiError::BadRequest("the path or query holds a NUL byte (%00)".into()).into_response()
    } else {
        next.run(req).await.into_response()
    };
    if let Some(answer) = answer_panic(&mut response, &route, &request_id) {
        response = answer;
    }
    // Records and the admin API's answers hold callers' data and operators' views: no
    // shared cache (a proxy, a browser's) may keep them.
    if (path.starts_with("/api/v1/") || path.starts_with("/admin/v1/"))
        && !response
            .headers()
            .contains_key(axum::http::header::CACHE_CONTROL)
    {
        response.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
    }
    // A records answer is charged to its app's rate by its size (`auth::RateLimits`).
    if path.starts_with("/api/v1/")
        && let (Some(app), Some(bytes)) = (
            note.0.get(),
            axum::body::HttpBody::size_hint(response.body()).exact(),
        )
    {
        state.live().rates.charge(app, bytes);
    }
    let app = note.0.get().map(String::as_str).unwrap_or("");
    account(
        Answered {
            method: &method,
            route: &route,
            status: response.status().as_u16(),
            elapsed: started.elapsed(),
            app,
            bot: &bot,
            request_id: &request_id,
        },
        state.server.access_log,
    );
    response
}

/// One answered request, as it is counted and logged.
pub(crate) struct Answered<'a> {
    pub method: &'a axum::http::Method,
    /// The route template (`elsewhere` for a path another listener serves).
    pub route: &'a str,
    pub status: u16,
    pub elapsed: std::time::Duration,
    /// The verified app, empty when none.
    pub app: &'a str,
    /// A configured bot, else empty (the label set stays bounded).
    pub bot: &'a str,
    pub request_id: &'a str,
}

/// The one place an answer is counted (`wrapup_http_requests_total`, the duration
/// histogram) and logged (target `wrapup::access`, when `access_log`; 429s sampled):
/// the router's answers and the ones a listener gives on its own (a path it does not
/// serve).
pub(crate) fn account(a: Answered<'_>, access_log: bool) {
    metrics::counter!("wrapup_http_requests_total", "route" => a.route.to_owned(), "status" => a.status.to_string(), "bot" => a.bot.to_owned())
        .increment(1);
    metrics::histogram!("wrapup_http_request_duration_seconds", "route" => a.route.to_owned())
        .record(a.elapsed.as_secs_f64());
    let suppressed = if a.status == 429 {
        refusals_to_log(a.route)
    } else {
        Some(0)
    };
    if let (true, Some(suppressed)) = (access_log, suppressed) {
        tracing::info!(
            target: "wrapup::access",
            method = %a.method,
            route = a.route,
            status = a.status,
            duration_ms = a.elapsed.as_secs_f64() * 1000.0,
            app = a.app,
            bot = a.bot,
            request_id = a.request_id,
            suppressed,
            "request"
        );
    }
}

/// A 429 flood must not become a log flood (each refusal costs the caller nothing and
/// the disk ~450 bytes): at most one access line per route and second for 429 answers,
/// which says how many 429 lines of that route were left out since the one before
/// (`suppressed`; every other line says 0). `None`: leave this one out. Every request is
/// still counted in `wrapup_http_requests_total`. Bounded: one entry per route template.
fn refusals_to_log(route: &str) -> Option<u64> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static START: OnceLock<Instant> = OnceLock::new();
    static LAST: OnceLock<Mutex<HashMap<String, (u64, u64)>>> = OnceLock::new();
    let second = START.get_or_init(Instant::now).elapsed().as_secs();
    let mut last = LAST.get_or_init(Default::default).lock().ok()?;
    match last.get_mut(route) {
        Some((at, left_out)) if *at == second => {
            *left_out += 1;
            None
        }
        Some((at, left_out)) => {
            *at = second;
            Some(std::mem::take(left_out))
        }
        None => {
            last.insert(route.to_owned(), (second, 0));
            Some(0)
        }
    }
}

/// What a panicking handler said, carried from [`panicked`] to [`record_request`] (which
/// knows the request id).
#[derive(Clone)]
struct Panicked(String);

/// For a response made by [`panicked`]: the 500 in the vendor's shape, naming the
/// request id the log line has (and counted).
fn answer_panic(response: &mut Response, route: &str, request_id: &str) -> Option<Response> {
    let Panicked(what) = response.extensions_mut().remove::<Panicked>()?;
    tracing::error!(route, request_id, panic = %what, "a request handler panicked; answered 500");
    metrics::counter!("wrapup_http_panics_total").increment(1);
    Some(
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({
                "code": 500,
                "message": format!("internal error (request id {request_id})"),
            })),
        )
            .into_response(),
    )
}

/// The answer to a request whose handler panicked: a 500 (the body is written by
/// [`record_request`], with the request id), never a dropped connection.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".to_owned());
    let mut response = axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    response.extensions_mut().insert(Panicked(what));
    response
}

/// A caller's own `x-request-id` is kept (it ties the caller's logs to ours) only when it
/// looks like an id: 1 to 64 letters, digits, `-`, `_`, `.` or `:`. Anything else is
/// replaced by one of ours, so a caller cannot put a token or a megabyte into the logs.
async fn clean_request_id(mut req: Request) -> Request {
    let keep = req.headers().get("x-request-id").is_none_or(|v| {
        let b = v.as_bytes();
        (1..=64).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
    });
    if !keep {
        req.headers_mut().remove("x-request-id");
    }
    req
}

/// The `{botId}` segment of `path`, found where the route template has it.
fn bot_of<'p>(route: &str, path: &'p str) -> Option<&'p str> {
    let at = route.split('/').position(|s| s == "{botId}")?;
    path.split('/').nth(at)
}

/// Request ids from a fast user-space generator: a UUID v4 per request costs a
/// `getrandom` system call, measurable at tens of thousands of requests per second.
#[derive(Clone, Copy)]
struct FastRequestId;

impl MakeRequestId for FastRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        axum::http::HeaderValue::from_str(&format!("{:032x}", fastrand::u128(..)))
            .ok()
            .map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_with_the_request_id() {
        let app = Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    let v: Vec<u8> = Vec::new();
                    // A slice out of range, as the SSN check once did.
                    format!("{}", v[3])
                }),
            )
            .layer(CatchPanicLayer::custom(panicked))
            .layer(middleware::from_fn(
                |req: Request<Body>, next: Next| async move {
                    let mut response = next.run(req).await;
                    answer_panic(&mut response, "/boom", "req-1").unwrap_or(response)
                },
            ));
        let response = app
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], 500);
        assert_eq!(body["message"], "internal error (request id req-1)");
    }
}
