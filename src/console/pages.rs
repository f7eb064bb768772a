//! The pages' frame, the sign-in page, error pages, and the overview and destinations
//! pages. Every value shown comes from callers: maud escapes whatever it interpolates,
//! and nothing is marked pre-escaped except the fixed markup here.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::session::Operator;
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::insight::{DestinationStats, TrafficPoint, destination_stats, overview_of};

/// A page that could not be shown, as a page.
#[derive(Debug)]
pub struct ConsoleError {
    status: StatusCode,
    message: String,
}

impl ConsoleError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// Without an admin token the console does not exist, like the admin API.
    pub fn off() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found.")
    }
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        let status = e.status();
        let message = match e {
            ApiError::Internal(cause) => {
                tracing::error!(
                    cause = format!("{cause:#}"),
                    "internal error in the console"
                );
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        Self { status, message }
    }
}

impl From<crate::store::StoreError> for ConsoleError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = html! {
            h1 { (self.status.as_u16()) " " (title) }
            p.error { (self.message) }
            p { a href="/console" { "Back to the overview" } }
        };
        (
            self.status,
            Html(layout(title, None, "", false, body).into_string()),
        )
            .into_response()
    }
}

/// The frame of every page: the navigation, and the sign-out form when signed in.
pub fn layout(
    title: &str,
    op: Option<&Operator>,
    active: &str,
    refresh: bool,
    body: Markup,
) -> Markup {
    let nav = [
        ("overview", "/console", "Overview"),
        ("conversations", "/console/conversations", "Conversations"),
        ("jobs", "/console/jobs", "Jobs"),
        ("destinations", "/console/destinations", "Destinations"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if refresh { meta http-equiv="refresh" content="5"; }
                title { (title) " · wrapup" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/console/style.css";
                script src="/console/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/console" { "wrapup" }
                    @if let Some(op) = op {
                        nav {
                            @for (key, href, label) in nav {
                                a href=(href) class=[(key == active).then_some("on")] { (label) }
                            }
                        }
                        form.signout method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(op.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn page(title: &str, op: &Operator, active: &str, body: Markup) -> Html<String> {
    Html(layout(title, Some(op), active, false, body).into_string())
}

pub fn login_page(status: StatusCode, message: Option<&str>) -> impl IntoResponse {
    let body = html! {
        section.login {
            h1 { "Sign in to the console" }
            @if let Some(m) = message { p.error role="alert" { (m) } }
            form method="post" action="/console/login" {
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Sign in" }
            }
            p.hint { "The admin token: the value of the environment variable named by " code { "[admin] token_env" } ", or " code { "[admin] token" } " in a demo configuration." }
        }
    };
    (
        status,
        Html(layout("Sign in", None, "", false, body).into_string()),
    )
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or("–".to_owned(), |r| format!("{:.1} %", r * 100.0))
}

fn ms(v: Option<u64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{v} ms"))
}

pub fn age(ms: Option<u64>) -> String {
    match ms {
        None => "–".to_owned(),
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) if ms < 120_000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) if ms < 7_200_000 => format!("{} min", ms / 60_000),
        Some(ms) => format!("{:.1} h", ms as f64 / 3_600_000.0),
    }
}

/// A bar chart of one series (an SVG drawn here: no script, no inline style).
fn chart(title: &str, unit: &str, points: &[f64]) -> Markup {
    let (w, h) = (360.0, 80.0);
    let max = points.iter().cloned().fold(0.0_f64, f64::max);
    let bar = w / points.len().max(1) as f64;
    let last = points.last().copied().unwrap_or(0.0);
    html! {
        figure.chart {
            figcaption { (title) " " span.now { (format!("{last:.1}")) " " (unit) } span.max { "max " (format!("{max:.1}")) } }
            svg viewBox=(format!("0 0 {w} {h}")) role="img" aria-label=(title) {
                @for (i, v) in points.iter().enumerate() {
                    @let bh = if max > 0.0 { (v / max) * (h - 2.0) } else { 0.0 };
                    rect x=(format!("{:.1}", i as f64 * bar)) y=(format!("{:.1}", h - bh)) width=(format!("{:.1}", (bar - 1.0).max(0.5))) height=(format!("{bh:.1}")) {}
                }
            }
            div.axis { span { "15 min ago" } span { "now" } }
        }
    }
}

fn destinations_table(rows: &[DestinationStats]) -> Markup {
    html! {
        @if rows.is_empty() { p.empty { "No bot has an on_end action, and no job was ever scheduled." } }
        @else {
        table.data #destinations {
            thead { tr {
                th { "Bot" } th { "Action" } th { "Kind" } th.num { "Pending" } th.num { "Running" }
                th.num { "Succeeded" } th.num { "Dead" } th.num { "Orphaned" } th.num { "Success 1 h" }
                th.num { "Success 24 h" } th.num { "p50" } th.num { "p99" } th { "Last error" }
            } }
            tbody {
                @for d in rows {
                    tr {
                        td { (d.bot_id) }
                        td { a href=(format!("/console/jobs?bot={}&action={}", enc(&d.bot_id), enc(&d.action))) { (d.action) } @if !d.configured { " " span.badge.warn { "not configured" } }
                            @if d.paused { " " span.badge.bad.paused title=(format!("{} failed attempts in a row; its due jobs wait without spending attempts; next probe in {} s", d.failures_in_row.unwrap_or(0), d.next_probe_in_s.unwrap_or(0))) { "paused" } } }
                        td.nowrap { (d.kind) }
                        td.num { (d.jobs.pending) }
                        td.num { (d.jobs.running) }
                        td.num { (d.jobs.succeeded) }
                        td.num { @if d.jobs.dead > 0 { a.bad href=(format!("/console/jobs?state=dead&bot={}&action={}", enc(&d.bot_id), enc(&d.action))) { (d.jobs.dead) } } @else { "0" } }
                        td.num { (d.jobs.orphaned) }
                        td.num { (percent(d.success_rate_1h)) }
                        td.num { (percent(d.success_rate_24h)) }
                        td.num { (ms(d.latency_p50_ms)) }
                        td.num { (ms(d.latency_p99_ms)) }
                        td.error-cell { @if let Some(e) = &d.last_error { time { (e.at) } " " @if let Some(c) = e.status_code { "HTTP " (c) " " } (e.error) } }
                    }
                }
            }
        }
        }
    }
}

/// A query parameter's value, percent-encoded.
pub fn enc(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

pub async fn overview(
    State(state): State<Arc<AppState>>,
    op: Operator,
) -> Result<Response, ConsoleError> {
    let o = overview_of(&state).await?;
    let series =
        |f: &dyn Fn(&TrafficPoint) -> f64| -> Vec<f64> { o.traffic.iter().map(f).collect() };
    let body = html! {
        h1 { "Overview" }
        p.hint { "Figures of the whole deployment, as of " time { (o.at) } "; this page refreshes every 5 seconds." }
        div.cards {
            div.card { div.label { "Active conversations" } div.value { (o.active_conversations) } }
            div.card { div.label { "Pending jobs" } div.value { (o.jobs.pending) } }
            div.card { div.label { "Running jobs" } div.value { (o.jobs.running) } }
            div.card { div.label { "Succeeded jobs" } div.value { (o.jobs.succeeded) } }
            div.card.bad[o.jobs.dead > 0] { div.label { "Dead jobs" } div.value { a href="/console/jobs?state=dead" { (o.jobs.dead) } } }
            div.card { div.label { "Orphaned jobs" } div.value { (o.jobs.orphaned) } }
            div.card { div.label { "Oldest due job" } div.value { (age(o.oldest_due_age_ms)) } }
        }
        div.charts {
            (chart("Events", "/s", &series(&|p| p.events as f64 / 10.0)))
            (chart("Ends", "/min", &series(&|p| p.ends as f64 * 6.0)))
            (chart("Duplicate ends", "/min", &series(&|p| p.duplicate_ends as f64 * 6.0)))
        }
        h2 { "Destinations" }
        (destinations_table(&o.destinations))
    };
    Ok(Html(layout("Overview", Some(&op), "overview", true, body).into_string()).into_response())
}

pub async fn destinations(
    State(state): State<Arc<AppState>>,
    op: Operator,
) -> Result<Response, ConsoleError> {
    let d = destination_stats(&state).await?;
    let body = html! {
        h1 { "Destinations" }
        p.hint { "Every bot's on_end action. Success rates count attempts; latency is the attempts' duration over the last 24 hours (the newest 50,000 attempts). A paused destination failed too often in a row: its jobs wait without spending attempts, one probe per interval resumes it ([workers] pause_after, pause_for; a reload retries at once)." }
        (destinations_table(&d.destinations))
    };
    Ok(page("Destinations", &op, "destinations", body).into_response())
}

/// What a retry form did, from the redirect's query: numbers only, so a crafted link
/// cannot put words in the console's mouth.
#[derive(serde::Deserialize, Default)]
pub struct Outcome {
    retried: Option<u64>,
    discarded: Option<u64>,
    repointed: Option<u64>,
    skipped: Option<u64>,
    more: Option<u8>,
    empty: Option<u8>,
}

impl Outcome {
    pub fn render(&self) -> Option<Markup> {
        let text = if self.empty.is_some() {
            "Select at least one dead or orphaned job.".to_owned()
        } else if let Some(n) = self.discarded {
            let mut t = format!("Discarded {n} job{}.", if n == 1 { "" } else { "s" });
            if let Some(s) = self.skipped.filter(|s| *s > 0) {
                t.push_str(&format!(
                    " {s} not discarded: not dead or orphaned any more, or unknown."
                ));
            }
            t
        } else if let Some(n) = self.repointed {
            let mut t = format!("Re-pointed {n} job{}.", if n == 1 { "" } else { "s" });
            if let Some(s) = self.skipped.filter(|s| *s > 0) {
                t.push_str(&format!(
                    " {s} not re-pointed: the action cannot take their kind, or they changed state."
                ));
            }
            if self.more == Some(1) {
                t.push_str(" There may be more: submit again.");
            }
            t
        } else {
            let n = self.retried?;
            let mut t = format!("Retried {n} job{}.", if n == 1 { "" } else { "s" });
            if let Some(s) = self.skipped.filter(|s| *s > 0) {
                t.push_str(&format!(
                    " {s} not retried: not dead any more, unknown, or their destination is not in the configuration."
                ));
            }
            t
        };
        Some(html! { p.notice role="status" { (text) } })
    }
}
