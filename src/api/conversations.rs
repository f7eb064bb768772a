//! The records API: conversations, their event logs and transcripts, under the same
//! JWT rules as the hooks endpoint.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;

use crate::domain::{ConversationRecord, Status, Timestamp};
use crate::store::{ConversationFilter, EventPage};

#[utoipa::path(
    get,
    path = "/api/v1/bots/{botId}/conversations/{conversationId}",
    tag = "records",
    params(("botId" = String, Path), ("conversationId" = String, Path, pattern = "^[^\\u0000]+$")),
    responses(
        (status = 200, description = "The conversation record", body = ConversationRecord),
        (status = 400, description = "Unknown bot, or a bad query parameter (named in the message)", body = super::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's app may not act for this bot", body = super::openapi::ErrorBody),
        (status = 429, description = "The app is over its rate_limit; retry after Retry-After seconds", body = super::openapi::ErrorBody),
        (status = 404, description = "Never seen", body = super::openapi::ErrorBody),
        (status = 503, description = "The store is unavailable; retry after Retry-After seconds", body = super::openapi::ErrorBody),
    ),
    security(("auth" = []), ("token" = []), ("bearer" = []))
)]
pub async fn get_conversation(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<ConversationRecord>, ApiError> {
    let Path((bot_id, conversation_id)) = path?;
    caller.use_jti(&state).await?;
    let conversation = state
        .store
        .conversation(&bot_id, &conversation_id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no conversation {conversation_id} for bot {bot_id}"
            ))
        })?;
    let mut record = ConversationRecord::new(
        &conversation.bot_id,
        &conversation.conversation_id,
        &conversation.state,
    );
    record.summaries = Some(stored_summaries(&state, &bot_id, &conversation_id).await?);
    Ok(Json(record))
}

/// A conversation's stored summaries, as JSON.
async fn stored_summaries(
    state: &AppState,
    bot_id: &str,
    conversation_id: &str,
) -> Result<Vec<Box<serde_json::value::RawValue>>, ApiError> {
    Ok(state
        .store
        .summaries(bot_id, conversation_id)
        .await?
        .into_iter()
        .filter_map(|s| serde_json::value::RawValue::from_string(s).ok())
        .collect())
}

/// A conversation's summaries, oldest first.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Summaries {
    #[schema(value_type = Vec<crate::domain::summary::StoredSummary>)]
    pub summaries: Vec<Box<serde_json::value::RawValue>>,
}

#[utoipa::path(
    get,
    path = "/api/v1/bots/{botId}/conversations/{conversationId}/summaries",
    tag = "records",
    params(("botId" = String, Path), ("conversationId" = String, Path, pattern = "^[^\\u0000]+$")),
    responses(
        (status = 200, description = "The conversation's summaries, oldest first (at most 1,000)", body = Summaries),
        (status = 400, description = "Unknown bot", body = super::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's app may not act for this bot", body = super::openapi::ErrorBody),
        (status = 404, description = "Never seen", body = super::openapi::ErrorBody),
        (status = 429, description = "The app is over its rate_limit; retry after Retry-After seconds", body = super::openapi::ErrorBody),
        (status = 503, description = "The store is unavailable; retry after Retry-After seconds", body = super::openapi::ErrorBody),
    ),
    security(("auth" = []), ("token" = []), ("bearer" = []))
)]
pub async fn summaries(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Summaries>, ApiError> {
    let Path((bot_id, conversation_id)) = path?;
    caller.use_jti(&state).await?;
    if state
        .store
        .conversation(&bot_id, &conversation_id)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound(format!(
            "no conversation {conversation_id} for bot {bot_id}"
        )));
    }
    let summaries = stored_summaries(&state, &bot_id, &conversation_id).await?;
    Ok(Json(Summaries { summaries }))
}

/// A page of conversations stops once their stored states reach this many bytes (the
/// cursor continues): with states capped at `caps.state_bytes`, an answer stays within
/// this plus one conversation's record.
pub const PAGE_BYTES: usize = 4 << 20;

/// A filtered page (by tag or status) examines at most this many conversations of the
/// index it reads, whatever the filter passes over: a filter that matches nothing in
/// 30,000 conversations costs what a page of 2,000 costs (about 2–3 ms), and `nextCursor`
/// continues from where examining stopped, so a page can be short, or empty, with a cursor.
pub const LIST_SCAN_ROWS: usize = 2_000;

/// An event log or transcript page stops once its entries' bodies reach this many bytes
/// (`nextAfter` continues); an entry is at most one request body.
pub const EVENT_PAGE_BYTES: usize = 4 << 20;

fn millis(t: OffsetDateTime) -> Timestamp {
    Timestamp::from_offset(t)
}

pub(crate) fn encode_cursor(at: Timestamp, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.millis()))
}

pub(crate) fn decode_cursor(c: &str) -> Result<(Timestamp, String), ApiError> {
    let bad = || ApiError::BadRequest("cursor is not one this server gave".into());
    let raw = URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (at, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((
        Timestamp::from_millis(at.parse().map_err(|_| bad())?),
        id.to_owned(),
    ))
}

/// `GET /api/v1/bots/{botId}/conversations`: newest first by `endedAt` (or
/// `lastEventAt` while active), keyset-paginated.
#[utoipa::path(
    get,
    path = "/api/v1/bots/{botId}/conversations",
    tag = "records",
    params(("botId" = String, Path), ListQuery),
    responses(
        (status = 200, description = "Newest first", body = ConversationPage),
        (status = 400, description = "Unknown bot, or a bad query parameter (named in the message)", body = super::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's app may not act for this bot", body = super::openapi::ErrorBody),
        (status = 429, description = "The app is over its rate_limit; retry after Retry-After seconds", body = super::openapi::ErrorBody),
        (status = 503, description = "The store is unavailable; retry after Retry-After seconds", body = super::openapi::ErrorBody),
    ),
    security(("auth" = []), ("token" = []), ("bearer" = []))
)]
pub async fn list_conversations(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ConversationPage>, ApiError> {
    let Query(q) = query?;
    let filter = q.filter()?;
    // Only a request that is not refused uses its token's jti.
    let bot_id = caller.bot_id.clone();
    caller.use_jti(&state).await?;
    Ok(Json(list_page(&state, &bot_id, filter).await?))
}

/// A page of a bot's conversations (the records API's and the console's).
pub(crate) async fn list_page(
    state: &AppState,
    bot_id: &str,
    filter: ConversationFilter,
) -> Result<ConversationPage, ApiError> {
    let limit = filter.limit;
    let list = state.store.list_conversations(bot_id, filter).await?;
    let page = list.listed;
    let bytes: usize = page.iter().map(|l| l.bytes).sum();
    let next = if page.len() == limit || bytes >= PAGE_BYTES {
        page.last()
            .map(|l| encode_cursor(l.sort_at, &l.conversation.conversation_id))
    } else {
        // The scan bound was reached before the page filled: more may match past where
        // examining stopped (the page may even be empty), so the cursor continues there.
        list.examined_to.map(|(at, id)| encode_cursor(at, &id))
    };
    let records: Vec<ConversationRecord> = page
        .iter()
        .map(|l| {
            ConversationRecord::new(
                bot_id,
                &l.conversation.conversation_id,
                &l.conversation.state,
            )
        })
        .collect();
    Ok(ConversationPage {
        conversations: records,
        next_cursor: next,
    })
}

/// `GET .../conversations/{id}/events`: the event log in order.
#[utoipa::path(
    get,
    path = "/api/v1/bots/{botId}/conversations/{conversationId}/events",
    tag = "records",
    params(
        ("botId" = String, Path),
        ("conversationId" = String, Path, pattern = "^[^\\u0000]+$"),
        EventsQuery,
    ),
    responses(
        (status = 200, description = "The event log in order", body = EventLog),
        (status = 400, description = "Unknown bot, or a bad query parameter (named in the message)", body = super::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's app may not act for this bot", body = super::openapi::ErrorBody),
        (status = 429, description = "The app is over its rate_limit; retry after Retry-After seconds", body = super::openapi::ErrorBody),
        (status = 404, description = "Never seen", body = super::openapi::ErrorBody),
        (status = 503, description = "The store is unavailable; retry after Retry-After seconds", body = super::openapi::ErrorBody),
    ),
    security(("auth" = []), ("token" = []), ("bearer" = []))
)]
pub async fn list_events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<EventLog>, ApiError> {
    let (bot_id, conversation_id, page, limit) =
        event_page(&state, caller, path, query, None).await?;
    let next = (page.events.len() == limit)
        .then(|| page.events.last().map(|e| e.seq))
        .flatten();
    // Each body is JSON the server wrote: it is passed through as it is, not parsed again
    // (a parsed page would take several times its size in memory).
    let events = page
        .events
        .into_iter()
        .map(|e| LoggedEvent {
            seq: e.seq,
            received_at: e.received_at.to_rfc3339(),
            event: RawValue::from_string(e.body).ok(),
            name: e.name,
        })
        .collect();
    Ok(Json(EventLog {
        bot_id,
        conversation_id,
        events,
        next_after: next,
        events_purged_at: page.events_purged_at.map(Timestamp::to_rfc3339),
        transcript_purged_at: page.transcript_purged_at.map(Timestamp::to_rfc3339),
    }))
}

/// `GET .../conversations/{id}/transcript`: the propagated messages in order.
#[utoipa::path(
    get,
    path = "/api/v1/bots/{botId}/conversations/{conversationId}/transcript",
    tag = "records",
    params(
        ("botId" = String, Path),
        ("conversationId" = String, Path, pattern = "^[^\\u0000]+$"),
        EventsQuery,
    ),
    responses(
        (status = 200, description = "The propagated messages in order", body = Transcript),
        (status = 400, description = "Unknown bot, or a bad query parameter (named in the message)", body = super::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = super::openapi::ErrorBody),
        (status = 403, description = "The token's app may not act for this bot", body = super::openapi::ErrorBody),
        (status = 429, description = "The app is over its rate_limit; retry after Retry-After seconds", body = super::openapi::ErrorBody),
        (status = 404, description = "Never seen", body = super::openapi::ErrorBody),
        (status = 503, description = "The store is unavailable; retry after Retry-After seconds", body = super::openapi::ErrorBody),
    ),
    security(("auth" = []), ("token" = []), ("bearer" = []))
)]
pub async fn transcript(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Transcript>, ApiError> {
    let (bot_id, conversation_id, page, limit) =
        event_page(&state, caller, path, query, Some("MESSAGE")).await?;
    let messages: Vec<TranscriptMessage> = page.events.iter().map(TranscriptMessage::of).collect();
    let next = (messages.len() == limit)
        .then(|| page.events.last().map(|e| e.seq))
        .flatten();
    Ok(Json(Transcript {
        bot_id,
        conversation_id,
        messages,
        next_after: next,
        transcript_purged_at: page
            .events_purged_at
            .or(page.transcript_purged_at)
            .map(Timestamp::to_rfc3339),
    }))
}

async fn event_page(
    state: &AppState,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    only: Option<&'static str>,
) -> Result<(String, String, EventPage, usize), ApiError> {
    let Path((bot_id, conversation_id)) = path?;
    let Query(q) = query?;
    let limit = super::limit(q.limit, 1000, 1000)?;
    let after = match q.after {
        None => 0,
        Some(a) => u64::try_from(a).map_err(|_| {
            ApiError::BadRequest(format!(
                "after must be an event seq number from 0 to {}",
                i64::MAX
            ))
        })?,
    };
    caller.use_jti(state).await?;
    let page = state
        .store
        .events(crate::store::EventQuery {
            bot_id: &bot_id,
            conversation_id: &conversation_id,
            only,
            after,
            limit,
            max_bytes: Some(EVENT_PAGE_BYTES),
        })
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no conversation {conversation_id} for bot {bot_id}"
            ))
        })?;
    // A page cut short by its byte budget continues like a full one.
    let bytes: usize = page.events.iter().map(|e| e.body.len()).sum();
    let limit = if bytes >= EVENT_PAGE_BYTES {
        page.events.len()
    } else {
        limit
    };
    Ok((bot_id, conversation_id, page, limit))
}

/// `GET …/conversations`'s query.
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `active` or `ended`.
    #[param(value_type = Option<Status>, inline)]
    pub status: Option<Status>,
    /// RFC 3339; on `endedAt`, or `lastEventAt` while active.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<OffsetDateTime>,
    /// RFC 3339; on `endedAt`, or `lastEventAt` while active.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<OffsetDateTime>,
    /// 1 to 500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// `nextCursor` of the previous page (opaque: only the server makes one).
    pub cursor: Option<String>,
    /// Only conversations one of whose agents has this `identity` (at most 256 bytes of
    /// UTF-8, no NUL).
    #[param(min_length = 1, max_length = 64, pattern = "^[^\\u0000]+$")]
    pub agent: Option<String>,
    /// Only conversations one of whose agents has this `customFields.queueId` or
    /// `customFields.queueName` (at most 256 bytes of UTF-8, no NUL).
    #[param(min_length = 1, max_length = 64, pattern = "^[^\\u0000]+$")]
    pub queue: Option<String>,
    /// Only conversations that ended with this `reason` (at most 256 bytes of UTF-8, no NUL).
    #[param(min_length = 1, max_length = 64, pattern = "^[^\\u0000]+$")]
    pub reason: Option<String>,
    /// Only conversations with this `experience` (at most 256 bytes of UTF-8, no NUL).
    #[param(min_length = 1, max_length = 64, pattern = "^[^\\u0000]+$")]
    pub experience: Option<String>,
    /// Only conversations with an anomaly of this code; `any` for any anomaly (at most 256
    /// bytes of UTF-8, no NUL).
    #[param(min_length = 1, max_length = 64, pattern = "^[^\\u0000]+$")]
    pub anomaly: Option<String>,
}

impl ListQuery {
    /// The store's filter, or a 400 naming the bad parameter.
    pub fn filter(&self) -> Result<ConversationFilter, ApiError> {
        Ok(ConversationFilter {
            tags: self.tags()?,
            status: self.status,
            from: self.from.map(millis),
            to: self.to.map(millis),
            limit: super::limit(self.limit, 50, 500)?,
            after: self.cursor.as_deref().map(decode_cursor).transpose()?,
            max_bytes: Some(PAGE_BYTES),
            scan: LIST_SCAN_ROWS,
        })
    }

    /// The filters as tags, the most selective first (the store reads the first one's
    /// index range and checks the others per row).
    pub fn tags(&self) -> Result<Vec<String>, ApiError> {
        use crate::domain::tags::{ANY_ANOMALY, MAX_VALUE_BYTES, TagKind, tag};
        let mut tags = Vec::new();
        let mut any_anomaly = false;
        let given = [
            ("anomaly", TagKind::Anomaly, &self.anomaly),
            ("agent", TagKind::Agent, &self.agent),
            ("queue", TagKind::Queue, &self.queue),
            ("reason", TagKind::Reason, &self.reason),
            ("experience", TagKind::Experience, &self.experience),
        ];
        for (name, kind, value) in given {
            let Some(value) = value else { continue };
            if value.is_empty() || value.len() > MAX_VALUE_BYTES || value.contains('\0') {
                return Err(ApiError::BadRequest(format!(
                    "{name}: must be 1 to {MAX_VALUE_BYTES} bytes, without NUL"
                )));
            }
            if kind == TagKind::Anomaly && value == "any" {
                any_anomaly = true;
            } else {
                tags.push(tag(kind, value));
            }
        }
        if any_anomaly {
            tags.push(ANY_ANOMALY.to_owned());
        }
        Ok(tags)
    }
}

/// The event log's and the transcript's query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only entries after this event seq (0 to 2^63-1).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// 1 to 1000, default 1000.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A page of conversation records.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationPage {
    pub conversations: Vec<ConversationRecord>,
    /// Pass as `cursor` for the next page; null on the last. A filtered page that examined
    /// its bound of conversations may be short or empty and still have one.
    pub next_cursor: Option<String>,
}

/// A page of a conversation's event log.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventLog {
    pub bot_id: String,
    pub conversation_id: String,
    /// In order.
    pub events: Vec<LoggedEvent>,
    /// Pass as `after` for the next page; null on the last.
    pub next_after: Option<u64>,
    pub events_purged_at: Option<String>,
    pub transcript_purged_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoggedEvent {
    pub seq: u64,
    /// `END_OF_CONVERSATION`, `INTERNAL_TRANSFER_EVENT`, `TRIGGER_SUMMARY_EVENT`, `MESSAGE`
    /// or the server's own `INACTIVITY_TIMEOUT`.
    pub name: String,
    pub received_at: String,
    /// The event's JSON as received, unknown fields included.
    #[schema(value_type = Object)]
    pub event: Option<Box<RawValue>>,
}

/// A page of a conversation's propagated messages.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transcript {
    pub bot_id: String,
    pub conversation_id: String,
    /// In order.
    pub messages: Vec<TranscriptMessage>,
    /// Pass as `after` for the next page; null on the last.
    pub next_after: Option<u64>,
    pub transcript_purged_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptMessage {
    pub seq: u64,
    /// `USER` or `AGENT`; null for a bare message.
    pub author_type: Option<String>,
    #[schema(value_type = Option<String>)]
    pub agent_id: Option<Box<RawValue>>,
    #[schema(value_type = Option<String>)]
    pub source: Option<Box<RawValue>>,
    /// The message's `query`.
    #[schema(value_type = Option<String>)]
    pub text: Option<Box<RawValue>>,
    pub at: String,
}

impl TranscriptMessage {
    /// The transcript's view of a logged `MESSAGE`.
    pub(crate) fn of(e: &crate::store::StoredEvent) -> Self {
        // Only the fields shown are read; the rest of the body is skipped, not built.
        let m: StoredMessage<'_> = serde_json::from_str(&e.body).unwrap_or_default();
        TranscriptMessage {
            seq: e.seq,
            author_type: m
                .author
                .and_then(|a| a.kind)
                .map(|k| k.to_ascii_uppercase()),
            agent_id: m.agent_id.map(RawValue::to_owned),
            source: m.source.map(RawValue::to_owned),
            text: m.query.map(RawValue::to_owned),
            at: e.received_at.to_rfc3339(),
        }
    }
}

/// The fields of a stored message that the transcript shows.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredMessage<'a> {
    #[serde(borrow)]
    query: Option<&'a RawValue>,
    #[serde(borrow)]
    agent_id: Option<&'a RawValue>,
    #[serde(borrow)]
    source: Option<&'a RawValue>,
    author: Option<StoredAuthor>,
}

#[derive(Deserialize)]
struct StoredAuthor {
    #[serde(rename = "type")]
    kind: Option<String>,
}
