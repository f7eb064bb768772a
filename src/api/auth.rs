//! Who is calling, and may they act for this bot.

use axum::http::HeaderMap;

use super::AppState;
use super::error::{ApiError, UNKNOWN_BOT};
use crate::auth::{AuthError, Verified};
use crate::domain::Timestamp;

/// The token from `auth` (documented), `token` (the vendor's samples) or
/// `Authorization: Bearer` (ours). Several are fine only if they agree.
pub fn token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut found: Option<&str> = None;
    let candidates = headers
        .get_all("auth")
        .iter()
        .chain(headers.get_all("token").iter())
        .map(|v| v.to_str().map(str::trim))
        .chain(headers.get_all("authorization").iter().map(|v| {
            v.to_str().map(|s| {
                let s = s.trim();
                match s.split_once(' ') {
                    Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
                    _ => s,
                }
            })
        }));
    for candidate in candidates {
        let t = candidate.map_err(|_| AuthError::Malformed)?;
        match found {
            None => found = Some(t),
            Some(prev) if prev == t => {}
            Some(_) => return Err(AuthError::Conflicting),
        }
    }
    found.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)
}

/// Authenticates the caller and checks that its app may act for `bot_id`.
pub fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    bot_id: &str,
) -> Result<Verified, ApiError> {
    let verified = state.auth.verify(token(headers)?, Timestamp::now())?;
    let bot = state
        .bots
        .get(bot_id)
        .ok_or_else(|| ApiError::BadRequest(UNKNOWN_BOT.into()))?;
    if !bot.apps.iter().any(|a| a == &verified.client_id) {
        return Err(ApiError::Forbidden(format!(
            "app {} is not allowed to act for bot {bot_id}",
            verified.client_id
        )));
    }
    if let Some(claim) = &verified.bot_claim
        && claim != bot_id
    {
        return Err(ApiError::Forbidden(format!(
            "the token's botId claim does not name bot {bot_id}"
        )));
    }
    Ok(verified)
}
