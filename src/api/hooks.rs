//! `POST .../hooks/{botId}`: authenticate, read and parse the body, commit, answer.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::openapi::StatusOk;
use crate::domain::EventKind;
use crate::domain::payload::parse_request;
use crate::store::{Ingest, IngestOutcome, Refusal};

/// The same endpoint on each of the vendor's three paths, each documented.
macro_rules! hook_route {
    ($name:ident, $path:literal) => {
        #[utoipa::path(
            post,
            path = $path,
            tag = "hooks",
            params(("botId" = String, Path, description = "The AI Agent (stream) id, st-…")),
            request_body(content = super::openapi::HookBody, content_type = "application/json"),
            responses(
                (status = 200, description = "Stored durably", body = StatusOk),
                (status = 400, description = "Unknown bot, or a field missing or mistyped (named in the message)", body = super::openapi::ErrorBody),
                (status = 401, description = "No valid token", body = super::openapi::ErrorBody),
                (status = 403, description = "The token's app may not act for this bot", body = super::openapi::ErrorBody),
                (status = 429, description = "The app is over its rate_limit; retry after Retry-After seconds", body = super::openapi::ErrorBody),
                (status = 408, description = "The body was not received in time", body = super::openapi::ErrorBody),
                (status = 409, description = "An event other than a repeated end after the end", body = super::openapi::ErrorBody),
                (status = 413, description = "The body is over server.max_body_bytes", body = super::openapi::ErrorBody),
                (status = 422, description = "The request would take the conversation past one of the bot's caps (named in the message); nothing was stored. Never for a request with an END_OF_CONVERSATION", body = super::openapi::ErrorBody),
                (status = 415, description = "Content-Type is not application/json", body = super::openapi::ErrorBody),
                (status = 503, description = "Not stored; retry after Retry-After", body = super::openapi::ErrorBody),
            ),
            security(("auth" = []), ("token" = []), ("bearer" = []))
        )]
        pub async fn $name(
            state: State<Arc<AppState>>,
            caller: Caller,
            headers: HeaderMap,
            body: Body,
        ) -> Result<Json<StatusOk>, ApiError> {
            hook(state, caller, headers, body).await
        }
    };
}

hook_route!(hook_agentai, "/agentai/api/v1/hooks/{botId}");
hook_route!(hook_agentassist, "/agentassist/api/v1/hooks/{botId}");
hook_route!(hook_api, "/api/v1/hooks/{botId}");

/// Bodies larger than this are redacted on a blocking thread.
const BLOCKING_REDACTION_BYTES: usize = 16 * 1024;

pub async fn hook(
    State(state): State<Arc<AppState>>,
    Caller { bot_id, verified }: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<StatusOk>, ApiError> {
    require_json(&headers)?;
    let bytes = read_body(&state, &headers, body).await?;
    let mut value = crate::domain::strict_json::parse(&bytes)?;
    let live = state.live();
    // Redacted before it is parsed: the original text is in no event, state or payload.
    // A large body's redaction (up to ~0.3 s of CPU for a 1 MiB body of numbers) runs off
    // the async workers, so it never holds up other requests.
    let redacted = match live.bots.get(&bot_id) {
        Some(b) if !b.redact.is_empty() && bytes.len() > BLOCKING_REDACTION_BYTES => {
            let redact = b.redact.clone();
            let (redacted_value, counts) = tokio::task::spawn_blocking(move || {
                let counts = redact.body(&mut value);
                (value, counts)
            })
            .await
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("redaction failed")))?;
            value = redacted_value;
            counts
        }
        Some(b) => b.redact.body(&mut value),
        None => Vec::new(),
    };
    let mut request = parse_request(&value, &bot_id, &live.limits)?;
    // An end is the last event of a request: another event after it in the same request
    // would be refused as "after the end" although the end itself was never stored (and a
    // platform does not retry a 409). Said as what it is, before anything is written.
    if let Some(first_end) = request
        .events
        .iter()
        .position(|e| matches!(e.kind, EventKind::End(_)))
        && let Some(after) = request.events[first_end..]
            .iter()
            .position(|e| !matches!(e.kind, EventKind::End(_)))
    {
        return Err(ApiError::BadRequest(format!(
            "events[{}]: {} follows the END_OF_CONVERSATION at events[{first_end}] in the same request; the end must be the last event; nothing of this request was stored",
            first_end + after,
            request.events[first_end + after].kind.name()
        )));
    }
    for (event, counts) in request.events.iter_mut().zip(redacted) {
        event.redactions = counts;
    }

    for event in &request.events {
        metrics::counter!("wrapup_events_received_total", "name" => event.kind.name()).increment(1);
    }
    let conversation_id = request.conversation_id.clone();
    let has_end = request
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::End(_)));
    let bot = live.plans.get(&bot_id).cloned().unwrap_or_default();
    // An end schedules jobs only for a bot with actions; only then is there work to wake for.
    let schedules_jobs = !bot.on_end.is_empty();
    // A stored TRIGGER_SUMMARY_EVENT schedules a summary job when the bot summarizes.
    let schedules_summary = bot.summary.is_some()
        && request
            .events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Summary(_)));
    let ingest = Ingest {
        bot_id: request.bot_id,
        conversation_id: request.conversation_id,
        events: request.events,
        jti: verified.jti,
        bot,
    };
    let outcome = tokio::time::timeout(state.server.request_timeout, state.store.ingest(ingest))
        .await
        .map_err(|_| ApiError::Unavailable {
            message: "the store did not answer in time; retry later".into(),
            retry_after_secs: 5,
        })??;
    match outcome {
        IngestOutcome::Accepted {
            stored,
            duplicate_ends,
            ended,
        } => {
            metrics::counter!("wrapup_events_stored_total").increment(stored as u64);
            state.traffic.record(
                state.clock.now(),
                stored as u64,
                ended as u64,
                duplicate_ends as u64,
            );
            if ended {
                metrics::counter!("wrapup_conversations_ended_total", "bot" => bot_id.to_owned())
                    .increment(1);
                if schedules_jobs {
                    state.wake.notify_one();
                }
            }
            if schedules_summary && stored > 0 {
                state.wake.notify_one();
            }
            if duplicate_ends > 0 {
                metrics::counter!("wrapup_duplicate_ends_total", "bot" => bot_id.to_owned())
                    .increment(duplicate_ends as u64);
                tracing::info!(
                    bot_id,
                    conversation_id,
                    duplicate_ends,
                    "repeated END_OF_CONVERSATION acknowledged"
                );
            }
            debug_assert!(stored > 0 || duplicate_ends > 0 || !has_end);
            Ok(Json(StatusOk::ok()))
        }
        IngestOutcome::Refused(Refusal::EndedAlready { ended_at }) => {
            Err(ApiError::Conflict(format!(
                "conversation {conversation_id} ended at {}; after the end only a repeated END_OF_CONVERSATION is accepted",
                ended_at.to_rfc3339()
            )))
        }
        IngestOutcome::Refused(Refusal::OverCap(over)) => {
            metrics::counter!("wrapup_requests_over_cap_total", "cap" => over.cap.key())
                .increment(1);
            Err(ApiError::Unprocessable(format!(
                "conversation {conversation_id}: {over}; nothing of this request was stored (an END_OF_CONVERSATION is always accepted)"
            )))
        }
        IngestOutcome::Replay => Err(crate::auth::AuthError::Replayed.into()),
    }
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else if ct.is_empty() {
        Err(ApiError::UnsupportedMediaType(
            "Content-Type must be application/json (none was sent)".into(),
        ))
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type must be application/json, not {}",
            mime.chars().take(64).collect::<String>()
        )))
    }
}

/// Reads the body within `server.max_body_bytes` and `server.body_read_timeout`.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<axum::body::Bytes, ApiError> {
    let limit = state.server.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let collected = tokio::time::timeout(
        state.server.body_read_timeout,
        Limited::new(body, limit).collect(),
    )
    .await
    .map_err(|_| ApiError::RequestTimeout("the body was not received in time".into()))?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ApiError::PayloadTooLarge(limit)),
        Err(e) => Err(ApiError::BadRequest(format!(
            "the body could not be read: {e}"
        ))),
    }
}
