//! `GET /api/v1/bots/{botId}/conversations/{conversationId}`: the conversation as stored.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::Value;

use super::AppState;
use super::auth::authorize;
use super::error::ApiError;
use crate::auth::AuthError;
use crate::domain::Anomaly;
use crate::store::StoredConversation;

/// The conversation record, camelCase like the vendor, times in RFC 3339.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationView {
    pub bot_id: String,
    pub conversation_id: String,
    pub status: &'static str,
    pub created_at: String,
    pub last_event_at: String,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
    pub ended_by: Option<Value>,
    pub experience: Option<String>,
    pub language: Option<String>,
    pub duplicate_ends: u64,
    pub event_count: u64,
    pub anomalies: Vec<Anomaly>,
}

impl From<StoredConversation> for ConversationView {
    fn from(c: StoredConversation) -> Self {
        let s = c.state;
        Self {
            bot_id: c.bot_id,
            conversation_id: c.conversation_id,
            status: s.status.as_str(),
            created_at: s.created_at.to_rfc3339(),
            last_event_at: s.last_event_at.to_rfc3339(),
            ended_at: s.ended_at.map(|t| t.to_rfc3339()),
            end_reason: s.end_reason,
            ended_by: s.ended_by,
            experience: s.experience,
            language: s.language,
            duplicate_ends: s.duplicate_ends,
            event_count: s.event_count,
            anomalies: s.anomalies,
        }
    }
}

pub async fn get_conversation(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<ConversationView>, ApiError> {
    let Path((bot_id, conversation_id)) =
        path.map_err(|e| ApiError::BadRequest(format!("path: {e}")))?;
    let principal = authorize(&state, &headers, &bot_id)?;
    if let Some(jti) = principal.jti
        && !state.store.consume_jti(jti).await?
    {
        return Err(AuthError::Replayed.into());
    }
    let conversation = state
        .store
        .conversation(&bot_id, &conversation_id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no conversation {conversation_id} for bot {bot_id}"
            ))
        })?;
    Ok(Json(conversation.into()))
}
