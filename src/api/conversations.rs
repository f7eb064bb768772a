//! `GET /api/v1/bots/{botId}/conversations/{conversationId}`: the conversation as stored.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;

use super::AppState;
use super::auth::authorize;
use super::error::ApiError;
use crate::auth::AuthError;
use crate::domain::ConversationRecord;

pub async fn get_conversation(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<ConversationRecord>, ApiError> {
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
    Ok(Json(ConversationRecord::new(
        &conversation.bot_id,
        &conversation.conversation_id,
        &conversation.state,
    )))
}
