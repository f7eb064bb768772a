//! The operator console: server-rendered pages under `/console`, compiled into the
//! binary (maud templates, checked at compile time; one stylesheet and one small script
//! served from here; nothing from another origin).
//!
//! - `session`: signing in with the admin token, the signed session cookie, CSRF tokens;
//! - `pages`: the frame, errors, the overview and the destinations;
//! - `lists`: conversations and jobs, with their filters, and the retry forms;
//! - `detail`: one conversation.
//!
//! The conversations list, the overview, the destinations and the forms go through what
//! the admin and records APIs answer (`api::insight`, `api::admin`, `api::conversations`,
//! with their checks: a retry or re-point the API would refuse is refused here too); the
//! jobs list and the conversation page make the same store queries as those APIs (jobs,
//! record, events, summaries). So the console shows nothing the API cannot. The rules the
//! console holds itself are signing in (`session`: the admin token, a sign-in limit per
//! client address, the session's 12-hour expiry, CSRF tokens on every form that changes
//! something) and the security headers set below.

mod detail;
mod lists;
mod pages;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower_http::set_header::SetResponseHeaderLayer;

pub use session::LoginLimiter;

use crate::api::AppState;

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");

/// Scripts and styles only from this server, no inline script or style, no frames, no
/// forms to elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console", get(pages::overview))
        .route("/console/", get(pages::overview))
        .route(
            "/console/login",
            get(session::login_form).post(session::login),
        )
        .route("/console/logout", post(session::logout))
        .route("/console/conversations", get(lists::conversations))
        .route(
            "/console/bots/{bot}/conversations/{id}",
            get(detail::conversation),
        )
        .route("/console/jobs", get(lists::jobs))
        .route("/console/jobs/retry", post(lists::retry))
        .route("/console/jobs/discard", post(lists::discard))
        .route("/console/jobs/repoint", post(lists::repoint))
        .route("/console/destinations", get(pages::destinations))
        .route(
            "/console/style.css",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
            }),
        )
        .route(
            "/console/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    SCRIPT,
                )
                    .into_response()
            }),
        )
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
}
