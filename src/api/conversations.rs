//! The records API: conversations, their event logs and transcripts, under the same
//! JWT rules as the hooks endpoint.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;

use super::AppState;
use super::auth::authorize;
use super::error::ApiError;
use crate::auth::AuthError;
use std::collections::HashMap;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::domain::{ConversationRecord, Status, Timestamp};
use crate::store::{ConversationFilter, EventPage};

#[utoipa::path(
    get,
    path = "/api/v1/bots/{botId}/conversations/{conversationId}",
    tag = "records",
    params(("botId" = String, Path), ("conversationId" = String, Path)),
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
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<ConversationRecord>, ApiError> {
    let Path((bot_id, conversation_id)) =
        path.map_err(|e| ApiError::BadRequest(format!("path: {e}")))?;
    authorize_read(&state, &headers, &bot_id).await?;
    let conversation = state
        .store
        .conversation(&bot_id, &conversation_id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no conversation {conversation_id} for bot {bot_id}"
            ))
        })?;
    Ok(Json(ConversationRecord::new(
        &conversation.bot_id,
        &conversation.conversation_id,
        &conversation.state,
    )))
}

/// A page of conversations stops once their stored states reach this many bytes (the
/// cursor continues): with states capped at `caps.state_bytes`, an answer stays within
/// this plus one conversation's record.
pub const PAGE_BYTES: usize = 4 << 20;

/// An event log or transcript page stops once its entries' bodies reach this many bytes
/// (`nextAfter` continues); an entry is at most one request body.
pub const EVENT_PAGE_BYTES: usize = 4 << 20;

fn query_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("query: {e}"))
}

fn parse_time(name: &str, v: &str) -> Result<Timestamp, ApiError> {
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "{name} must be an RFC 3339 time such as 2026-11-26T14:00:00Z"
            ))
        })?;
    Ok(Timestamp::from_millis(
        (t.unix_timestamp_nanos() / 1_000_000) as i64,
    ))
}

fn encode_cursor(at: Timestamp, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.millis()))
}

fn decode_cursor(c: &str) -> Result<(Timestamp, String), ApiError> {
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
    params(
        ("botId" = String, Path),
        ("status" = Option<String>, Query, description = "active or ended"),
        ("from" = Option<String>, Query, description = "RFC 3339; on endedAt, or lastEventAt while active"),
        ("to" = Option<String>, Query, description = "RFC 3339; on endedAt, or lastEventAt while active"),
        ("limit" = Option<usize>, Query, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, description = "nextCursor of the previous page"),
    ),
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
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<ConversationPage>, ApiError> {
    let Path(bot_id) = path.map_err(|e| ApiError::BadRequest(format!("path: {e}")))?;
    let principal = authorize(&state, &headers, &bot_id)?;
    let Query(q) = query.map_err(query_err)?;
    let status = match q.get("status").map(String::as_str) {
        None => None,
        Some("active") => Some(Status::Active),
        Some("ended") => Some(Status::Ended),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "status \"{other}\" is not one of active, ended"
            )));
        }
    };
    let filter = ConversationFilter {
        status,
        from: q.get("from").map(|v| parse_time("from", v)).transpose()?,
        to: q.get("to").map(|v| parse_time("to", v)).transpose()?,
        limit: super::query_limit(&q, 50, 500)?,
        after: q.get("cursor").map(|c| decode_cursor(c)).transpose()?,
        max_bytes: Some(PAGE_BYTES),
    };
    // Only a request that is not refused uses its token's jti.
    use_jti(&state, principal).await?;
    let limit = filter.limit;
    let page = state.store.list_conversations(&bot_id, filter).await?;
    let bytes: usize = page.iter().map(|l| l.bytes).sum();
    let next = (page.len() == limit || bytes >= PAGE_BYTES)
        .then(|| {
            page.last()
                .map(|l| encode_cursor(l.sort_at, &l.conversation.conversation_id))
        })
        .flatten();
    let records: Vec<ConversationRecord> = page
        .iter()
        .map(|l| {
            ConversationRecord::new(
                &bot_id,
                &l.conversation.conversation_id,
                &l.conversation.state,
            )
        })
        .collect();
    Ok(Json(ConversationPage {
        conversations: records,
        next_cursor: next,
    }))
}

/// `GET .../conversations/{id}/events`: the event log in order.
#[utoipa::path(
    get,
    path = "/api/v1/bots/{botId}/conversations/{conversationId}/events",
    tag = "records",
    params(
        ("botId" = String, Path),
        ("conversationId" = String, Path),
        ("after" = Option<u64>, Query, description = "Only events after this seq"),
        ("limit" = Option<usize>, Query, description = "1 to 1000, default 1000"),
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
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<EventLog>, ApiError> {
    let (bot_id, conversation_id, page, limit) =
        event_page(&state, path, query, &headers, None).await?;
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
        ("conversationId" = String, Path),
        ("after" = Option<u64>, Query, description = "Only messages after this event seq"),
        ("limit" = Option<usize>, Query, description = "1 to 1000, default 1000"),
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
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Transcript>, ApiError> {
    let (bot_id, conversation_id, page, limit) =
        event_page(&state, path, query, &headers, Some("MESSAGE")).await?;
    let messages: Vec<TranscriptMessage> = page
        .events
        .iter()
        .map(|e| {
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
        })
        .collect();
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
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: &HeaderMap,
    only: Option<&'static str>,
) -> Result<(String, String, EventPage, usize), ApiError> {
    let Path((bot_id, conversation_id)) =
        path.map_err(|e| ApiError::BadRequest(format!("path: {e}")))?;
    let principal = authorize(state, headers, &bot_id)?;
    let Query(q) = query.map_err(query_err)?;
    let limit = super::query_limit(&q, 1000, 1000)?;
    let after = match q.get("after") {
        None => 0,
        Some(a) => a
            .parse::<i64>()
            .ok()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "after must be an event seq number from 0 to {}",
                    i64::MAX
                ))
            })?,
    };
    use_jti(state, principal).await?;
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

/// The JWT rules of the hooks endpoint, plus the `jti` check for enforcing apps.
async fn authorize_read(
    state: &AppState,
    headers: &HeaderMap,
    bot_id: &str,
) -> Result<(), ApiError> {
    let principal = authorize(state, headers, bot_id)?;
    use_jti(state, principal).await
}

/// Records the token's `jti` for apps that enforce it, once the request is known to be
/// answered (a request refused for its query does not use it up).
async fn use_jti(state: &AppState, principal: crate::auth::Verified) -> Result<(), ApiError> {
    if let Some(jti) = principal.jti
        && !state.store.consume_jti(jti).await?
    {
        return Err(AuthError::Replayed.into());
    }
    Ok(())
}

/// A page of conversation records.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationPage {
    pub conversations: Vec<ConversationRecord>,
    /// Pass as `cursor` for the next page; null on the last.
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
