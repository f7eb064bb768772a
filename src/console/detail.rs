//! One conversation: its record's header, the agent timeline, the transcript as a chat,
//! anomalies linked to their events, summary requests, every job with every attempt,
//! and the raw event log.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::Value;

use super::lists::detail_href;
use super::pages::{ConsoleError, page};
use super::session::Operator;
use crate::api::AppState;
use crate::api::conversations::{EVENT_PAGE_BYTES, TranscriptMessage};
use crate::domain::conversation::Conversation;
use crate::domain::payload::TransferType;
use crate::domain::{ConversationRecord, Timestamp};
use crate::store::{EventQuery, JobFilter, JobState, JobView};

/// At most this many log entries are shown (the records API pages through all of them).
const SHOWN_EVENTS: usize = 1000;
/// At most this many jobs are shown.
const SHOWN_JOBS: usize = 50;

/// At most this many attempts of a job are shown (the newest).
const SHOWN_ATTEMPTS: usize = 50;

fn transfer_name(t: TransferType) -> &'static str {
    match t {
        TransferType::Na => "NA",
        TransferType::Cold => "COLD",
        TransferType::Warm => "WARM",
        TransferType::Redial => "redial",
    }
}

/// One row per agent, each segment a bar on a shared time axis, coloured by transfer
/// type; a transfer's start is marked.
fn timeline(c: &Conversation) -> Markup {
    let start = c
        .agents
        .iter()
        .flat_map(|a| a.segments.iter().map(|s| s.started_at))
        .min()
        .unwrap_or(c.created_at);
    let end = c.ended_at.unwrap_or(c.last_event_at).max(start);
    let span = (end.millis() - start.millis()).max(1) as f64;
    let (label_w, w, row_h) = (160.0, 640.0, 28.0);
    let x = |t: Timestamp| {
        label_w + ((t.millis() - start.millis()) as f64 / span) * (w - label_w - 8.0)
    };
    let h = row_h * c.agents.len() as f64 + 24.0;
    html! {
        @if c.agents.is_empty() { p.empty { "No agent entered this conversation." } }
        @else {
            svg.timeline #timeline viewBox=(format!("0 0 {w} {h}")) role="img" aria-label="Agent timeline" {
                @for (i, a) in c.agents.iter().enumerate() {
                    @let y = i as f64 * row_h;
                    g.agent-row {
                        text.agent-name x="4" y=(format!("{:.1}", y + row_h * 0.65)) { (truncate(&a.identity, 22)) }
                        @for s in &a.segments {
                            @let x0 = x(s.started_at);
                            @let x1 = x(s.ended_at.unwrap_or(end)).max(x0 + 2.0);
                            rect class=(format!("seg {}", transfer_name(s.transfer_type).to_ascii_lowercase())) x=(format!("{x0:.1}")) y=(format!("{:.1}", y + 4.0)) width=(format!("{:.1}", x1 - x0)) height=(format!("{:.1}", row_h - 8.0)) {
                                title { (a.identity) ": " (transfer_name(s.transfer_type)) " from " (s.started_at.to_rfc3339()) " to " (s.ended_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "the end".into())) }
                            }
                            @if s.transfer_type != TransferType::Na {
                                line.transfer x1=(format!("{x0:.1}")) x2=(format!("{x0:.1}")) y1=(format!("{:.1}", y)) y2=(format!("{:.1}", y + row_h)) {}
                            }
                        }
                    }
                }
                text.axis x=(label_w) y=(format!("{:.1}", h - 6.0)) { (start.to_rfc3339()) }
                text.axis x=(w - 8.0) y=(format!("{:.1}", h - 6.0)) text-anchor="end" { (end.to_rfc3339()) }
            }
            p.legend { span.key.na { "NA" } span.key.cold { "COLD" } span.key.warm { "WARM" } span.key.redial { "redial" } span.key.mark { "transfer" } }
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// A JSON value as text: a string as itself, anything else as JSON.
fn shown(v: &Option<Box<serde_json::value::RawValue>>) -> String {
    match v.as_ref().map(|r| serde_json::from_str::<Value>(r.get())) {
        Some(Ok(Value::String(s))) => s,
        Some(Ok(other)) => other.to_string(),
        _ => String::new(),
    }
}

fn attempts(j: &JobView) -> Markup {
    html! {
        @if let Some(log) = &j.attempt_log {
            @if !log.is_empty() {
                table.data.attempts {
                    thead { tr { th.num { "#" } th { "Started" } th.num { "Duration" } th { "Outcome" } th.num { "Status" } th { "Error" } th { "Response" } } }
                    tbody { @for a in log.iter().skip(log.len().saturating_sub(SHOWN_ATTEMPTS)) { tr {
                        td.num { (a.attempt) }
                        td { time { (a.started_at.to_rfc3339()) } }
                        td.num { (a.duration_ms) " ms" }
                        td { span class=(format!("badge {}", a.outcome.as_str())) { (a.outcome.as_str()) } }
                        td.num { @if let Some(c) = a.status_code { (c) } }
                        td.error-cell { (a.error.as_deref().unwrap_or("")) }
                        td { @if let Some(r) = &a.response { code.excerpt { (truncate(r, 200)) } } }
                    } } }
                }
            }
        }
    }
}

pub async fn conversation(
    State(state): State<Arc<AppState>>,
    op: Operator,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    query: Result<Query<super::pages::Outcome>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ConsoleError> {
    let Path((bot, id)) =
        path.map_err(|e| ConsoleError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let outcome = query.ok().and_then(|q| q.0.render());
    let Some(stored) = state.store.conversation(&bot, &id).await? else {
        return Err(ConsoleError::new(
            StatusCode::NOT_FOUND,
            format!("No conversation {id} for bot {bot}."),
        ));
    };
    let c = &stored.state;
    let record = ConversationRecord::new(&bot, &id, c);
    let log = state
        .store
        .events(EventQuery {
            bot_id: &bot,
            conversation_id: &id,
            only: None,
            after: 0,
            limit: SHOWN_EVENTS,
            max_bytes: Some(EVENT_PAGE_BYTES),
        })
        .await?
        .unwrap_or_else(|| crate::store::EventPage {
            events: Vec::new(),
            events_purged_at: None,
            transcript_purged_at: None,
        });
    let listed = state
        .store
        .list_jobs(JobFilter {
            bot_id: Some(bot.clone()),
            conversation_id: Some(id.clone()),
            limit: SHOWN_JOBS,
            ..Default::default()
        })
        .await?;
    let summaries: Vec<Value> = state
        .store
        .summaries(&bot, &id)
        .await?
        .iter()
        .filter_map(|s| serde_json::from_str(s).ok())
        .collect();
    let mut jobs = Vec::with_capacity(listed.len());
    for j in listed.iter().rev() {
        jobs.push(state.store.job(&j.id).await?.unwrap_or_else(|| j.clone()));
    }
    let messages: Vec<TranscriptMessage> = log
        .events
        .iter()
        .filter(|e| e.name == "MESSAGE")
        .map(TranscriptMessage::of)
        .collect();
    let back = detail_href(&bot, &id);
    let body = html! {
        p.crumbs { a href=(format!("/console/conversations?bot={}", super::pages::enc(&bot))) { "Conversations of " (bot) } }
        h1 { "Conversation " code #conversation-id { (id) } }
        @if let Some(n) = outcome { (n) }
        dl.header {
            dt { "Status" } dd { span class=(format!("badge {}", record.status)) { (record.status) } }
            dt { "Reason" } dd { (record.end_reason.as_deref().unwrap_or("–")) }
            dt { "Duration" } dd { (super::pages::age(Some(record.duration_ms.max(0) as u64))) }
            dt { "Ended by" } dd { @match &record.ended_by { Some(Value::Object(p)) => { (p.get("identity").and_then(Value::as_str).unwrap_or("")) " (" (p.get("type").and_then(Value::as_str).unwrap_or("")) ")" }, Some(other) => { (other.to_string()) }, None => { "–" } } }
            dt { "Duplicate ends" } dd { (record.duplicate_ends) }
            dt { "Created" } dd { time { (record.created_at) } }
            dt { "Last event" } dd { time { (record.last_event_at) } }
            dt { "Ended" } dd { @if let Some(e) = &record.ended_at { time { (e) } } @else { "–" } }
            dt { "Experience" } dd { (record.experience.as_deref().unwrap_or("–")) }
            dt { "Events" } dd { (record.event_count) }
            dt { "Transfers" } dd { (record.transfers.cold) " cold, " (record.transfers.warm) " warm, " (record.transfers.redial) " redial" }
        }
        h2 { "Agents" }
        (timeline(c))
        h2 { "Transcript" }
        @if let Some(at) = log.transcript_purged_at.or(log.events_purged_at) { p.empty { "Removed by retention at " (at.to_rfc3339()) "." } }
        @if messages.is_empty() { p.empty { "No messages." } }
        @else {
            ol.chat #transcript {
                @for m in &messages {
                    @let side = match m.author_type.as_deref() { Some("USER") => "customer", Some("AGENT") => "agent", _ => "other" };
                    li class=(format!("msg {side}")) {
                        div.who { (match side { "customer" => "Customer".to_owned(), "agent" => format!("Agent {}", shown(&m.agent_id)), _ => "Message".to_owned() }) " · " time { (m.at) } }
                        div.text { (shown(&m.text)) }
                    }
                }
            }
        }
        h2 { "Anomalies" }
        @if c.anomalies.is_empty() { p.empty { "None." } }
        @else {
            ul.anomalies #anomalies { @for a in &c.anomalies { li { a href=(format!("#event-{}", a.event_seq)) { code { (a.code) } } " — " (a.message) } } }
            @if c.anomalies_dropped > 0 { p.hint { (c.anomalies_dropped) " more were only counted." } }
        }
        h2 { "Summaries" }
        @if summaries.is_empty() { p.empty { "None." } }
        @for s in &summaries {
            section.summary id=(format!("summary-{}", s["summaryId"].as_str().unwrap_or(""))) {
                p {
                    strong { (s["type"].as_str().unwrap_or("")) } " — " (s["trigger"].as_str().unwrap_or(""))
                    ", " (s["provider"].as_str().unwrap_or(""))
                    @if let Some(model) = s["model"].as_str() { " (" (model) ")" }
                    ", " (s["messages"].as_u64().unwrap_or(0)) " messages, "
                    time { (s["createdAt"].as_str().unwrap_or("")) }
                    " "
                    @match s["status"].as_str() {
                        Some("FAILED") => { span.badge.dead { "failed" } " " code { (s["failureCode"].as_str().unwrap_or("")) } },
                        _ => span.badge.succeeded { "completed" },
                    }
                }
                @if s["status"] == "COMPLETED" {
                dl.header {
                    dt { "Summary" } dd.summary-text { (s["text"].as_str().filter(|x| !x.is_empty()).unwrap_or("–")) }
                    @for (label, key) in [("Situation", "situation"), ("Action", "action"), ("Resolution", "resolution"), ("Customer", "satisfaction")] {
                        dt { (label) } dd { (s["sections"][key].as_str().filter(|x| !x.is_empty()).unwrap_or("–")) }
                    }
                }
                }
            }
        }
        h2 { "Summary requests" }
        @if c.summary_requests.is_empty() { p.empty { "None." } }
        @else { ul { @for s in &c.summary_requests { li { time { (s.requested_at.to_rfc3339()) } " — " (s.kind) ", " (s.language) " / " (s.locale) " " a href=(format!("#event-{}", s.event_seq)) { "event " (s.event_seq) } } } } }
        h2 { "Jobs" }
        @if jobs.is_empty() { p.empty { "No jobs (the conversation has not ended, or its bot has no actions)." } }
        @for j in &jobs {
            section.job id=(format!("job-{}", j.id)) {
                h3 { (j.action) " " span class=(format!("badge {}", j.state.as_str())) { (j.state.as_str()) } " " small { code { (j.id) } " · " (j.kind) " · " (j.attempts) "/" (j.max_attempts) " attempts" } }
                (attempts(j))
                @if matches!(j.state, JobState::Dead | JobState::Orphaned) {
                    form.actions method="post" action="/console/jobs/retry" {
                        input type="hidden" name="csrf" value=(op.csrf);
                        input type="hidden" name="back" value=(back);
                        input type="hidden" name="mode" value="selected";
                        input type="hidden" name="ids" value=(j.id);
                        @if j.state == JobState::Dead { button type="submit" { "Retry" } }
                        button.danger type="submit" formaction="/console/jobs/discard" { "Discard" }
                    }
                }
            }
        }
        details.log #event-log {
            summary { "Event log (" @if (log.events.len() as u64) < record.event_count { "the first " (log.events.len()) " of " } (record.event_count) @if record.event_count == 1 { " entry)" } @else { " entries)" } }
            @if let Some(at) = log.events_purged_at { p.empty { "Removed by retention at " (at.to_rfc3339()) "." } }
            ol.events { @for e in &log.events {
                li id=(format!("event-{}", e.seq)) {
                    div.who { "#" (e.seq) " " strong { (e.name) } " · " time { (e.received_at.to_rfc3339()) } }
                    pre { (serde_json::from_str::<Value>(&e.body).ok().and_then(|v| serde_json::to_string_pretty(&v).ok()).unwrap_or_else(|| e.body.clone())) }
                }
            } }
        }
    };
    Ok(page(&format!("Conversation {id}"), &op, "conversations", body).into_response())
}
