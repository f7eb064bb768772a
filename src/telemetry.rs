//! Logs (JSON through `tracing`) and Prometheus metrics.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the JSON log subscriber; the filter comes from `WRAPUP_LOG` (default `info`).
pub fn init_logs() {
    // PostgreSQL's routine notices ("schema already exists, skipping") are not news.
    let filter = EnvFilter::try_from_env("WRAPUP_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The process-wide Prometheus recorder (installed once; several apps in one test
/// process share it).
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("wrapup_commit_batch_size".into()),
                        &[
                            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                        ],
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (embedding); render an empty registry.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            describe();
            handle
        })
        .clone()
}

/// `# HELP` for every metric, and `wrapup_build_info`. Gauges read from the store are
/// the whole cluster's (every instance reports the same figure): alert on `max`, not `sum`.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    let counters = [
        (
            "wrapup_http_requests_total",
            "HTTP requests answered, by route template, status and bot (configured bots only)",
        ),
        (
            "wrapup_events_received_total",
            "Events received in hook requests, by event name",
        ),
        ("wrapup_events_stored_total", "Events stored (committed)"),
        (
            "wrapup_conversations_ended_total",
            "Conversations ended (by a client or for inactivity), by bot",
        ),
        (
            "wrapup_conversations_expired_total",
            "Conversations ended by the sweeper for inactivity, by bot",
        ),
        (
            "wrapup_conversations_unreadable_total",
            "Idle conversations the inactivity sweep could not read (their stored state is unreadable): left active, logged, by bot",
        ),
        (
            "wrapup_duplicate_ends_total",
            "END_OF_CONVERSATION events for conversations already ended (acknowledged, not applied), by bot",
        ),
        (
            "wrapup_requests_over_cap_total",
            "Hook requests refused because a conversation would pass a cap, by cap",
        ),
        (
            "wrapup_requests_rate_limited_total",
            "Requests refused with 429 because their app is over its rate_limit",
        ),
        (
            "wrapup_connections_refused_total",
            "Connections refused, by reason: full (503: server.max_connections open, none idle) or per_address (429: server.max_connections_per_address)",
        ),
        (
            "wrapup_connections_idle_closed_total",
            "Idle connections closed to make room for a new one (the listener or its address was full)",
        ),
        (
            "wrapup_connections_dropped_total",
            "Connections closed unread because even the shedding was full",
        ),
        (
            "wrapup_action_attempts_total",
            "Action attempts, by kind, bot, action, event and outcome",
        ),
        (
            "wrapup_http_panics_total",
            "Requests whose handler panicked, answered 500 with their request id",
        ),
        (
            "wrapup_jobs_orphaned_total",
            "Jobs moved to orphaned: their destination is not in the configuration",
        ),
        (
            "wrapup_jobs_purged_total",
            "Succeeded and discarded jobs deleted after workers.keep_finished_jobs",
        ),
        (
            "wrapup_retention_purged_total",
            "Conversations whose events or transcript were removed by a bot's retention",
        ),
        (
            "wrapup_jti_purged_total",
            "Used jti values forgotten after their token expired",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(name, help);
    }
    let histograms = [
        (
            "wrapup_http_request_duration_seconds",
            "Time to answer a request, by route template",
        ),
        (
            "wrapup_action_attempt_duration_seconds",
            "Time one action attempt took, by kind, bot and action",
        ),
        (
            "wrapup_action_delivery_latency_seconds",
            "From the end to the successful attempt, by kind",
        ),
        (
            "wrapup_commit_duration_seconds",
            "Time one store commit (a group of requests) took, fsync included",
        ),
    ];
    for (name, help) in histograms {
        describe_histogram!(name, Unit::Seconds, help);
    }
    describe_histogram!(
        "wrapup_commit_batch_size",
        "Requests committed together in one transaction"
    );
    let gauges = [
        (
            "wrapup_jobs",
            "Jobs by kind and state, cluster-wide (read from the store: alert on max, not sum)",
        ),
        (
            "wrapup_jobs_due",
            "Pending jobs already due, cluster-wide (alert on max, not sum)",
        ),
        (
            "wrapup_jobs_oldest_due_age_seconds",
            "How long the oldest due job has waited, cluster-wide (alert on max, not sum)",
        ),
        (
            "wrapup_jobs_oldest_waiting_age_seconds",
            "How long the oldest dead or orphaned job has waited for an operator (since it died, or since it fell due), cluster-wide; 0 when none (alert on max, not sum)",
        ),
        (
            "wrapup_ready",
            "1 when this instance's /readyz answers 200 (its store took a write within 800 ms at the last check: each scrape and each probe), else 0",
        ),
        (
            "wrapup_store_up",
            "1 when the store took a write within 800 ms at the last check (each scrape and each /readyz), else 0",
        ),
        (
            "wrapup_connections_open",
            "Connections the main listener is serving now (at most server.max_connections)",
        ),
        (
            "wrapup_connections_busy",
            "Of the main listener's open connections, those answering a request now (the rest are idle, and closed first to make room)",
        ),
        (
            "wrapup_build_info",
            "1, labelled with the version of this instance",
        ),
        (
            "wrapup_destination_paused",
            "1 while this instance's circuit breaker pauses the action (workers.pause_after failed attempts in a row), else 0",
        ),
    ];
    for (name, help) in gauges {
        describe_gauge!(name, help);
    }
    metrics::gauge!("wrapup_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Every counter at zero, with its label values from the configuration, so an instance
/// exports them from its start: a rate over a restart compares something, a rule on a
/// counter can fire at its first increment and `absent()` does not fire on a healthy
/// instance. `increment(0)` registers a series without moving it (several apps in one
/// test process share the registry). Called at start and after each reload (a new bot's
/// or action's series appear then).
pub fn register_series(settings: &crate::config::Settings) {
    use crate::domain::outbox::JobEvent;
    use metrics::counter;
    for name in [
        "wrapup_events_stored_total",
        "wrapup_requests_rate_limited_total",
        "wrapup_connections_idle_closed_total",
        "wrapup_connections_dropped_total",
        "wrapup_http_panics_total",
        "wrapup_jobs_orphaned_total",
        "wrapup_jobs_purged_total",
        "wrapup_retention_purged_total",
        "wrapup_jti_purged_total",
    ] {
        counter!(name).increment(0);
    }
    // `increment(0.0)` registers the gauges without moving them (a reload keeps them).
    for name in ["wrapup_connections_open", "wrapup_connections_busy"] {
        metrics::gauge!(name).increment(0.0);
    }
    for name in crate::domain::payload::EVENT_NAMES {
        counter!("wrapup_events_received_total", "name" => name).increment(0);
    }
    for reason in ["full", "per_address"] {
        counter!("wrapup_connections_refused_total", "reason" => reason).increment(0);
    }
    for cap in crate::domain::caps::Cap::ALL {
        counter!("wrapup_requests_over_cap_total", "cap" => cap.key()).increment(0);
    }
    for bot in &settings.bots {
        for name in [
            "wrapup_conversations_ended_total",
            "wrapup_conversations_expired_total",
            "wrapup_conversations_unreadable_total",
            "wrapup_duplicate_ends_total",
        ] {
            counter!(name, "bot" => bot.id.clone()).increment(0);
        }
        let summary = bot.summary.as_ref().map(|s| &s.action);
        let mut series: Vec<(&crate::config::ActionSettings, JobEvent)> =
            bot.on_end.iter().map(|a| (a, JobEvent::Ended)).collect();
        if let Some(s) = summary {
            series.push((s, JobEvent::Summary));
            series.extend(
                bot.on_end
                    .iter()
                    .filter(|a| a.delivers_summaries())
                    .map(|a| (a, JobEvent::Summarized)),
            );
        }
        for (action, event) in series {
            for outcome in ["succeeded", "failed"] {
                counter!("wrapup_action_attempts_total", "kind" => action.kind.name(), "bot" => bot.id.clone(), "action" => action.name.clone(), "event" => event.as_str(), "outcome" => outcome)
                    .increment(0);
            }
        }
    }
}
