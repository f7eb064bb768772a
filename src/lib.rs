//! wrapup: a self-hosted server for the Agent AI hooks API.
//!
//! A contact-center platform POSTs conversation events to `.../hooks/{botId}`;
//! wrapup authenticates the JWT, parses the body into typed events, and commits them
//! durably before answering `{"STATUS":"OK"}`. The first `END_OF_CONVERSATION` ends
//! the conversation exactly once; repeats are acknowledged and counted.
//!
//! How a request flows, and where each rule lives (arrows point down only: `domain`
//! imports none of the others and no IO crate; `config` nothing above it but the openai
//! provider's default instructions (`actions::summary::openai`); `store` nothing of `auth`
//! or `api`):
//!
//! ```text
//! app     binds, bounds connections (connections: per address, idle ones closed first),
//!         graceful shutdown
//!  ├ console  server-rendered pages under /console (maud); its own rules are signing in:
//!  │          the sign-in limit per address, the signed session cookie, CSRF. Renders
//!  │          what the admin and records APIs answer (api::insight, api::admin,
//!  │          api::conversations; the conversation page makes their store queries itself)
//!  └ api      HTTP: routes, auth (JWT, per-app rate charged by size), one ApiError ->
//!     │       {"code","message"}, typed answers that are also the OpenAPI schemas; insight:
//!     │       the console's views. Holds the rules of requests (Content-Type, body size and
//!     │       time, an end last in its request, page limits and budgets, the admin API's
//!     │       retry and re-point checks), not those of conversations or jobs
//!     ├ auth      JWT apps, algorithm pinning, time claims (s or ms), crit, jti
//!     ├ domain    pure: payload parsing, the lifecycle (Conversation::apply), caps, and
//!     │           ingest::plan / plan_expiry: (state, events, bot, now) -> the whole write
//!     │           (new state, log entries, jobs with their payload, tags, outcome or
//!     │           refusal); tags: what a conversation is found by in a filtered list
//!     └ store     Store trait; loads state, writes the domain's plan, answers queries
//!         ├ sqlite     schema (+ migrations/*.sql), writer (group commit), conversations, jobs
//!         └ postgres   the same split; rows locked FOR UPDATE, claims SKIP LOCKED
//! actions  outbox workers: claim with a lease, run webhook / nats / redis_cleanup /
//!          summary (extractive or openai), record attempts, retry with backoff
//!          (domain::retry), dead-letter
//! sweeper  ends conversations silent past inactivity_timeout (through plan_expiry);
//!          applies retention; forgets expired jti; orphans due jobs this configuration has
//!          no action for; deletes finished jobs after keep_finished_jobs
//! config   TOML + WRAPUP_* env, typed by serde (file), validated into Settings (validate,
//!          actions); one-line errors naming the key
//! telemetry   JSON logs, Prometheus metrics
//! traffic     per-instance counts of events and ends per 10 s, added to the store every 2 s
//! ```

pub mod actions;
pub mod api;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod connections;
pub mod console;
pub mod domain;
pub mod live;
pub mod redact;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod tls;
pub mod traffic;

pub use app::App;

/// Installs the process's TLS provider (ring) for the HTTP and NATS clients; idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
