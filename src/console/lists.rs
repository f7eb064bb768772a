//! The conversations and jobs pages (filters in the URL, cursor paging), and the retry
//! forms.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use time::OffsetDateTime;

use super::pages::{ConsoleError, age, enc, page};
use super::session::Operator;
use crate::api::AppState;
use crate::api::conversations::{ListQuery, list_page};
use crate::api::insight::{BulkRetry, discard_many, find, retry_many};
use crate::domain::{Status, Timestamp};
use crate::store::{JobFilter, JobState};

/// A time from a form: RFC 3339, or a `datetime-local` value (read as UTC).
fn when(field: &str, v: &Option<String>) -> Result<Option<OffsetDateTime>, ConsoleError> {
    let Some(v) = v.as_deref().filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(v, &Rfc3339) {
        return Ok(Some(t));
    }
    let local = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let local_s =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(v, &local)
        .or_else(|_| time::PrimitiveDateTime::parse(v, &local_s))
        .map(|t| Some(t.assume_utc()))
        .map_err(|_| {
            ConsoleError::new(
                StatusCode::BAD_REQUEST,
                format!("{field}: not a time (use YYYY-MM-DDTHH:MM, UTC)"),
            )
        })
}

fn some(v: &Option<String>) -> Option<String> {
    v.clone().filter(|v| !v.is_empty())
}

/// The conversations page's query: every filter of the records API, the bot, and a search.
#[derive(Deserialize, Default)]
pub struct ConversationsQuery {
    bot: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    agent: Option<String>,
    queue: Option<String>,
    reason: Option<String>,
    experience: Option<String>,
    anomaly: Option<String>,
    cursor: Option<String>,
    /// Every bot's page: where each bot's list goes on ([`every_bot_page`]).
    cursors: Option<String>,
    /// A conversation id to find across bots.
    q: Option<String>,
}

/// Every bot's conversations, newest first: each bot's next page is read with the same
/// filters and the pages merged; the page holds the newest `limit` of them. `cursors`
/// (base64url of a JSON object, bot → that bot's cursor; a bot left out has no more)
/// says where each bot's list goes on, so no conversation is skipped or shown twice
/// whatever the bots' times. Each bot's read is bounded as the API's is.
async fn every_bot_page(
    state: &AppState,
    bots: &[String],
    base: crate::store::ConversationFilter,
    cursors: Option<&str>,
) -> Result<(Vec<crate::domain::ConversationRecord>, Option<String>), ConsoleError> {
    use crate::api::conversations::{PAGE_BYTES, decode_cursor, encode_cursor};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let bad = || ConsoleError::new(StatusCode::BAD_REQUEST, "cursors: not ones this page gave");
    let positions: Vec<(String, Option<String>)> = match cursors {
        None => bots.iter().map(|b| (b.clone(), None)).collect(),
        Some(c) => {
            let raw = URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?;
            let map: std::collections::BTreeMap<String, String> =
                serde_json::from_slice(&raw).map_err(|_| bad())?;
            map.into_iter()
                .filter(|(b, _)| bots.contains(b))
                .map(|(b, c)| (b, Some(c)))
                .collect()
        }
    };
    // Each bot's page, and where its list goes on once all of it is shown.
    let mut pages = Vec::new();
    for (bot, after) in positions {
        let mut filter = base.clone();
        // An empty cursor: from the newest (a bot none of whose conversations were shown yet).
        filter.after = after
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(decode_cursor)
            .transpose()
            .map_err(ConsoleError::from)?;
        let list = state.store.list_conversations(&bot, filter).await?;
        let bytes: usize = list.listed.iter().map(|l| l.bytes).sum();
        let then = if list.listed.len() == base.limit || bytes >= PAGE_BYTES {
            list.listed
                .last()
                .map(|l| encode_cursor(l.sort_at, &l.conversation.conversation_id))
        } else {
            list.examined_to.map(|(at, id)| encode_cursor(at, &id))
        };
        pages.push((bot, after, list.listed, then));
    }
    let mut all: Vec<(Timestamp, &str, &str, &crate::store::StoredConversation)> = pages
        .iter()
        .flat_map(|(bot, _, listed, _)| {
            listed.iter().map(move |l| {
                (
                    l.sort_at,
                    l.conversation.conversation_id.as_str(),
                    bot.as_str(),
                    &l.conversation,
                )
            })
        })
        .collect();
    all.sort_by(|a, b| (b.0, b.1, b.2).cmp(&(a.0, a.1, a.2)));
    all.truncate(base.limit);
    let mut next = std::collections::BTreeMap::new();
    for (bot, after, listed, then) in &pages {
        let shown: Vec<_> = all.iter().filter(|(_, _, b, _)| b == bot).collect();
        let goes_on = if shown.len() == listed.len() {
            then.clone()
        } else if let Some(last) = shown.last() {
            Some(encode_cursor(last.0, last.1))
        } else {
            // Nothing of it shown: it goes on where it was.
            after.clone().or_else(|| Some(String::new()))
        };
        if let Some(c) = goes_on {
            next.insert(bot.clone(), c);
        }
    }
    let records = all
        .iter()
        .map(|(_, id, bot, c)| crate::domain::ConversationRecord::new(bot, id, &c.state))
        .collect();
    let next = (!next.is_empty())
        .then(|| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&next).unwrap_or_default()));
    Ok((records, next))
}

fn bots(state: &AppState) -> Vec<String> {
    let mut bots: Vec<String> = state.live().bots.keys().cloned().collect();
    bots.sort();
    bots
}

fn text_input(label: &str, name: &str, value: &Option<String>, placeholder: &str) -> Markup {
    html! {
        label { span { (label) } input type="text" name=(name) value=[value.as_deref()] placeholder=(placeholder); }
    }
}

pub async fn conversations(
    State(state): State<Arc<AppState>>,
    op: Operator,
    query: Result<Query<ConversationsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ConsoleError> {
    let Query(q) = query.map_err(|e| ConsoleError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let bots = bots(&state);
    if let Some(id) = some(&q.q) {
        let found = find(&state, &id).await?;
        let body = html! {
            h1 { "Conversations with id " code { (id) } }
            @if found.conversations.is_empty() { p.empty { "No bot has a conversation with this id." } }
            @else {
                table.data { thead { tr { th { "Bot" } th { "Conversation" } th { "Status" } th { "Ended or last event" } } }
                tbody { @for f in &found.conversations { tr {
                    td { (f.bot_id) }
                    td { a href=(detail_href(&f.bot_id, &f.conversation_id)) { (f.conversation_id) } }
                    td { span class=(format!("badge {}", f.status)) { (f.status) } }
                    td { time { (f.at) } }
                } } } }
            }
            p { a href="/console/conversations" { "Back to the list" } }
        };
        return Ok(page("Search", &op, "conversations", body).into_response());
    }
    // No bot chosen: every bot, newest first.
    let bot = some(&q.bot);
    if let Some(bot) = &bot
        && !state.live().bots.contains_key(bot)
    {
        return Err(ConsoleError::new(
            StatusCode::BAD_REQUEST,
            format!("bot: {bot} is not configured"),
        ));
    }
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some("active") => Some(Status::Active),
        Some("ended") => Some(Status::Ended),
        Some(_) => {
            return Err(ConsoleError::new(
                StatusCode::BAD_REQUEST,
                "status: active or ended",
            ));
        }
    };
    let list = ListQuery {
        status,
        from: when("from", &q.from)?,
        to: when("to", &q.to)?,
        limit: Some(50),
        cursor: some(&q.cursor),
        agent: some(&q.agent),
        queue: some(&q.queue),
        reason: some(&q.reason),
        experience: some(&q.experience),
        anomaly: some(&q.anomaly),
    };
    let (conversations, next_cursor) = match &bot {
        Some(bot) => {
            let page = list_page(&state, bot, list.filter()?).await?;
            (page.conversations, page.next_cursor)
        }
        None => {
            let mut base = list.filter()?;
            base.after = None;
            every_bot_page(&state, &bots, base, some(&q.cursors).as_deref()).await?
        }
    };
    let every_bot = bot.is_none();
    // The next page keeps every filter.
    let mut next_query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(bot) = &bot {
        next_query.append_pair("bot", bot);
    }
    for (k, v) in [
        ("status", &q.status),
        ("from", &q.from),
        ("to", &q.to),
        ("agent", &q.agent),
        ("queue", &q.queue),
        ("reason", &q.reason),
        ("experience", &q.experience),
        ("anomaly", &q.anomaly),
    ] {
        if let Some(v) = some(v) {
            next_query.append_pair(k, &v);
        }
    }
    let base_query = next_query.finish();
    let body = html! {
        h1 { "Conversations" }
        form.search method="get" action="/console/conversations" {
            label { span { "Find a conversation id in every bot" } input type="search" name="q" placeholder="conversation id"; }
            button type="submit" { "Find" }
        }
        form.filters method="get" action="/console/conversations" {
            label { span { "Bot" } select name="bot" {
                option value="" selected[every_bot] { "every bot" }
                @for b in &bots { option value=(b) selected[bot.as_deref() == Some(b.as_str())] { (b) } }
            } }
            label { span { "Status" } select name="status" {
                option value="" { "any" }
                option value="active" selected[q.status.as_deref() == Some("active")] { "active" }
                option value="ended" selected[q.status.as_deref() == Some("ended")] { "ended" }
            } }
            label { span { "From (UTC)" } input type="datetime-local" name="from" value=[q.from.as_deref()]; }
            label { span { "To (UTC)" } input type="datetime-local" name="to" value=[q.to.as_deref()]; }
            (text_input("Agent", "agent", &q.agent, "identity"))
            (text_input("Queue", "queue", &q.queue, "queueId or queueName"))
            (text_input("End reason", "reason", &q.reason, "e.g. agent_initiated"))
            (text_input("Experience", "experience", &q.experience, "voice, chat…"))
            (text_input("Anomaly", "anomaly", &q.anomaly, "code, or any"))
            button type="submit" { "Filter" }
            a.reset href="/console/conversations" { "Clear" }
        }
        @if conversations.is_empty() && next_cursor.is_some() {
            p.empty { "No conversation matches among the newest examined; older ones may (a filtered page examines at most "
                (crate::api::conversations::LIST_SCAN_ROWS) " conversations)." }
        } @else if conversations.is_empty() { p.empty { "No conversation matches." } }
        @else {
            table.data #conversations {
                thead { tr { @if every_bot { th { "Bot" } } th { "Conversation" } th { "Status" } th { "Last event" } th { "Ended" } th { "Reason" } th { "Agents" } th.num { "Events" } th.num { "Anomalies" } th.num { "Duplicate ends" } } }
                tbody {
                    @for c in &conversations {
                        tr {
                            @if every_bot { td { (c.bot_id) } }
                            td { a href=(detail_href(&c.bot_id, &c.conversation_id)) { (c.conversation_id) } }
                            td { span class=(format!("badge {}", c.status)) { (c.status) } }
                            td { time { (c.last_event_at) } }
                            td { @if let Some(e) = &c.ended_at { time { (e) } } }
                            td { (c.end_reason.as_deref().unwrap_or("")) }
                            td { @for (i, a) in c.agents.iter().enumerate() { @if i > 0 { ", " } (a.identity) } }
                            td.num { (c.event_count) }
                            td.num { @if !c.anomalies.is_empty() { span.badge.warn { (c.anomalies.len() as u64 + c.anomalies_dropped) } } @else { "0" } }
                            td.num { (c.duplicate_ends) }
                        }
                    }
                }
            }
        }
        @if let Some(next) = &next_cursor {
            p.pager { a href=(format!("/console/conversations?{base_query}&{}={}", if every_bot { "cursors" } else { "cursor" }, enc(next))) { "Older →" } }
        }
    };
    Ok(page("Conversations", &op, "conversations", body).into_response())
}

pub fn detail_href(bot: &str, id: &str) -> String {
    format!(
        "/console/bots/{}/conversations/{}",
        path_enc(bot),
        path_enc(id)
    )
}

/// A path segment, percent-encoded.
pub fn path_enc(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[derive(Deserialize, Default)]
pub struct JobsQuery {
    state: Option<String>,
    bot: Option<String>,
    action: Option<String>,
    since: Option<String>,
    cursor: Option<i64>,
}

pub async fn jobs(
    State(state): State<Arc<AppState>>,
    op: Operator,
    query: Result<Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
    outcome: Result<Query<super::pages::Outcome>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ConsoleError> {
    let outcome = outcome.ok().and_then(|o| o.0.render());
    let Query(q) = query.map_err(|e| ConsoleError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let job_state = match some(&q.state) {
        None => None,
        Some(s) => Some(JobState::parse(&s).ok_or_else(|| {
            ConsoleError::new(
                StatusCode::BAD_REQUEST,
                "state: pending, running, succeeded, dead, orphaned or discarded",
            )
        })?),
    };
    let since = when("since", &q.since)?;
    let jobs = state
        .store
        .list_jobs(JobFilter {
            state: job_state,
            bot_id: some(&q.bot),
            conversation_id: None,
            action: some(&q.action),
            since: since.map(Timestamp::from_offset),
            until: None,
            limit: 100,
            before: q.cursor,
        })
        .await?;
    let now = state.clock.now();
    let bots = bots(&state);
    let mut base = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("state", &q.state),
        ("bot", &q.bot),
        ("action", &q.action),
        ("since", &q.since),
    ] {
        if let Some(v) = some(v) {
            base.append_pair(k, &v);
        }
    }
    let base = base.finish();
    let back = format!("/console/jobs?{base}");
    let body = html! {
        h1 { "Jobs" }
        @if let Some(n) = outcome { (n) }
        form.filters method="get" action="/console/jobs" {
            label { span { "State" } select name="state" {
                option value="" { "any" }
                @for s in JobState::ALL { option value=(s.as_str()) selected[q.state.as_deref() == Some(s.as_str())] { (s.as_str()) } }
            } }
            label { span { "Bot" } select name="bot" {
                option value="" { "any" }
                @for b in &bots { option value=(b) selected[q.bot.as_deref() == Some(b.as_str())] { (b) } }
            } }
            (text_input("Action", "action", &q.action, "action name"))
            label { span { "Created since (UTC)" } input type="datetime-local" name="since" value=[q.since.as_deref()]; }
            button type="submit" { "Filter" }
            a.reset href="/console/jobs" { "Clear" }
        }
        form.bulk method="post" action="/console/jobs/retry" {
            input type="hidden" name="csrf" value=(op.csrf);
            input type="hidden" name="back" value=(back);
            input type="hidden" name="mode" value="bulk";
            strong { "Retry every dead job of" }
            label { span { "Bot" } select name="bot" { @for b in &bots { option value=(b) selected[q.bot.as_deref() == Some(b.as_str())] { (b) } } } }
            label { span { "Action" } input type="text" name="action" required value=[q.action.as_deref()]; }
            label { span { "Created since (UTC)" } input type="datetime-local" name="since" required value=[q.since.as_deref()]; }
            label { span { "until (optional)" } input type="datetime-local" name="until"; }
            button type="submit" { "Retry all" }
        }
        form.bulk #repoint method="post" action="/console/jobs/repoint" {
            input type="hidden" name="csrf" value=(op.csrf);
            input type="hidden" name="back" value=(back);
            strong { "Re-point every" }
            label { span { "State" } select name="state" {
                @for s in ["orphaned", "dead", "pending"] { option value=(s) selected[q.state.as_deref() == Some(s)] { (s) } }
            } }
            label { span { "Bot" } select name="bot" { @for b in &bots { option value=(b) selected[q.bot.as_deref() == Some(b.as_str())] { (b) } } } }
            label { span { "job of action" } input type="text" name="from" required value=[q.action.as_deref()]; }
            label { span { "to action" } input type="text" name="to" required; }
            label { span { "Created since (UTC, optional)" } input type="datetime-local" name="since" value=[q.since.as_deref()]; }
            label { span { "until (optional)" } input type="datetime-local" name="until"; }
            button type="submit" { "Re-point all" }
        }
        form #jobs-form method="post" action="/console/jobs/retry" {
            input type="hidden" name="csrf" value=(op.csrf);
            input type="hidden" name="back" value=(back);
            input type="hidden" name="mode" value="selected";
            @if jobs.is_empty() { p.empty { "No job matches." } }
            @else {
                table.data #jobs {
                    thead { tr { th { input type="checkbox" #select-all aria-label="Select every dead or orphaned job"; } th { "Job" } th { "State" } th { "Bot" } th { "Action" } th { "Conversation" } th.num { "Attempts" } th { "Created" } th { "Due" } th { "Last error" } } }
                    tbody {
                        @for j in &jobs {
                            tr {
                                td { @if matches!(j.state, JobState::Dead | JobState::Orphaned) { input type="checkbox" name="ids" value=(j.id) aria-label="Select"; } }
                                td { code { (j.id) } }
                                td { span class=(format!("badge {}", j.state.as_str())) { (j.state.as_str()) } }
                                td { (j.bot_id) }
                                td { (j.action) }
                                td { a href=(detail_href(&j.bot_id, &j.conversation_id)) { (j.conversation_id) } }
                                td.num { (j.attempts) "/" (j.max_attempts) }
                                td { time { (j.created_at.to_rfc3339()) } }
                                td { @if j.state == JobState::Pending { @if j.due_at < now { "overdue " (age(Some((now.millis() - j.due_at.millis()) as u64))) } @else { time { (j.due_at.to_rfc3339()) } } } }
                                td.error-cell { (j.last_error.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
                div.actions {
                    button type="submit" { "Retry selected" }
                    button.danger type="submit" formaction="/console/jobs/discard" { "Discard selected" }
                }
            }
        }
        @if jobs.len() == 100 {
            @if let Some(last) = jobs.last() {
                p.pager { a href=(format!("/console/jobs?{base}&cursor={}", last.cursor)) { "Older →" } }
            }
        }
    };
    Ok(page("Jobs", &op, "jobs", body).into_response())
}

/// `POST /console/jobs/retry`: the selected jobs, or every dead job of an action since a
/// time; answers with a redirect back, carrying what happened.
pub async fn retry(
    State(state): State<Arc<AppState>>,
    op: Operator,
    body: axum::body::Bytes,
) -> Result<Response, ConsoleError> {
    let form = JobsForm::read(&op, &body)?;
    let back = &form.back;
    let req = match form.get("mode").as_deref() {
        Some("bulk") => BulkRetry {
            bot: form.get("bot"),
            action: form.get("action"),
            since: when("since", &form.get("since"))?,
            until: when("until", &form.get("until"))?,
            ..Default::default()
        },
        _ => {
            if form.ids.is_empty() {
                return Ok(redirect(back, "empty=1"));
            }
            BulkRetry {
                ids: Some(form.ids.clone()),
                ..Default::default()
            }
        }
    };
    let done = retry_many(&state, req).await?;
    let outcome = format!(
        "retried={}&skipped={}",
        done.retried,
        done.not_retried.len()
    );
    Ok(redirect(back, &outcome))
}

/// `POST /console/jobs/repoint`: every job of an action in one state (created in a window)
/// pointed at another action, 1,000 at a time; answers with a redirect back, carrying what
/// happened.
pub async fn repoint(
    State(state): State<Arc<AppState>>,
    op: Operator,
    body: axum::body::Bytes,
) -> Result<Response, ConsoleError> {
    let form = JobsForm::read(&op, &body)?;
    let field = |name: &str| {
        form.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ConsoleError::new(StatusCode::BAD_REQUEST, format!("{name}: required")))
    };
    let req = crate::api::admin::BulkRepoint {
        bot: field("bot")?,
        from: field("from")?,
        to: field("to")?,
        state: form.get("state"),
        since: when("since", &form.get("since"))?,
        until: when("until", &form.get("until"))?,
    };
    let done = crate::api::admin::repoint_many(&state, req).await?;
    let outcome = format!(
        "repointed={}&skipped={}&more={}",
        done.repointed,
        done.not_repointed.len(),
        u8::from(done.more)
    );
    Ok(redirect(&form.back, &outcome))
}

/// `POST /console/jobs/discard`: gives up the selected jobs (dead or orphaned) for good;
/// answers with a redirect back, carrying what happened.
pub async fn discard(
    State(state): State<Arc<AppState>>,
    op: Operator,
    body: axum::body::Bytes,
) -> Result<Response, ConsoleError> {
    let form = JobsForm::read(&op, &body)?;
    if form.ids.is_empty() {
        return Ok(redirect(&form.back, "empty=1"));
    }
    let done = discard_many(&state, form.ids).await?;
    let outcome = format!(
        "discarded={}&skipped={}",
        done.discarded,
        done.not_discarded.len()
    );
    Ok(redirect(&form.back, &outcome))
}

/// A jobs form's fields, once its CSRF token is checked.
struct JobsForm {
    pairs: Vec<(String, String)>,
    /// Where to go back to: a console page, never elsewhere.
    back: String,
    ids: Vec<String>,
}

impl JobsForm {
    fn read(op: &Operator, body: &[u8]) -> Result<Self, ConsoleError> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
        let mut form = Self {
            back: String::new(),
            ids: pairs
                .iter()
                .filter(|(n, _)| n == "ids")
                .map(|(_, v)| v.clone())
                .collect(),
            pairs,
        };
        op.check_csrf(&form.get("csrf").unwrap_or_default())?;
        form.back = form
            .get("back")
            .filter(|b| {
                b.starts_with("/console")
                    && b.chars().all(|c| c.is_ascii_graphic() && c != '\\')
                    && !b.split(['/', '?']).any(|seg| seg == ".." || seg == ".")
                    && !b.to_ascii_lowercase().contains("%2e")
                    && !b.to_ascii_lowercase().contains("%5c")
            })
            .unwrap_or_else(|| "/console/jobs".to_owned());
        Ok(form)
    }

    fn get(&self, k: &str) -> Option<String> {
        self.pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    }
}

/// Back to the page the form was on, with what happened (numbers only).
fn redirect(back: &str, outcome: &str) -> Response {
    let back = back.split('#').next().unwrap_or(back);
    let sep = if back.contains('?') { '&' } else { '?' };
    let to = format!("{back}{sep}{outcome}");
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}
