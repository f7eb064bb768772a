//! wrapup: a self-hosted server for the Agent AI hooks API.
//!
//! A contact-center platform POSTs conversation events to `.../hooks/{botId}`;
//! wrapup authenticates the JWT, parses the body into typed events, and commits them
//! durably before answering `{"STATUS":"OK"}`. The first `END_OF_CONVERSATION` ends
//! the conversation exactly once; repeats are acknowledged and counted.
//!
//! How a request flows:
//!
//! ```text
//! app     binds, bounds connections, graceful shutdown
//!  └ api      HTTP: routes, auth extractor, ApiError -> {"code","message"}
//!     ├ auth      JWT apps, algorithm pinning, time claims (s or ms), jti
//!     ├ domain    pure: payload parsing, Conversation::apply (state, event) -> state
//!     └ store     Store trait; sqlite: group-commit writer thread, WAL + synchronous=FULL
//!                 (the end's transaction also schedules one job per `on_end` action)
//! actions  outbox workers: claim with a lease, run webhook / nats / redis_cleanup,
//!          record attempts, retry with backoff, dead-letter
//! sweeper  ends conversations silent past inactivity_timeout; applies retention
//! config  TOML + WRAPUP_* env -> validated Settings (one-line errors naming the key)
//! telemetry   JSON logs, Prometheus metrics
//! ```

pub mod actions;
pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod store;
pub mod sweeper;
pub mod telemetry;

pub use app::App;

/// Installs the process's TLS provider (ring) for the HTTP and NATS clients; idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
