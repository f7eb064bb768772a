//! Who is calling, and may they act for this bot.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::{ApiError, UNKNOWN_BOT};
use crate::auth::{AuthError, Verified};
use crate::config::AppSettings;

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

/// Each rate-limited app's token bucket: `rate_limit` requests per second, `rate_burst`
/// at once. Kept in each instance's memory: with N instances an app gets up to N times
/// its rate, which bounds what it can take from the others on each instance.
#[derive(Default)]
pub struct RateLimits {
    apps: HashMap<String, DefaultDirectRateLimiter>,
}

impl RateLimits {
    pub fn new(apps: &[AppSettings]) -> Self {
        let apps = apps
            .iter()
            .filter_map(|a| {
                let r = a.rate_limit?;
                let quota = Quota::per_second(r.per_second).allow_burst(r.burst);
                Some((a.client_id.clone(), RateLimiter::direct(quota)))
            })
            .collect();
        Self { apps }
    }

    /// Takes one request from `client_id`'s share, or says when to come back.
    fn take(&self, client_id: &str) -> Result<(), ApiError> {
        let Some(limiter) = self.apps.get(client_id) else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics::counter!("wrapup_requests_rate_limited_total").increment(1);
            ApiError::TooManyRequests {
                message: format!(
                    "app {client_id} is over its rate_limit; retry after the Retry-After seconds"
                ),
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u32,
            }
        })
    }
}

/// Authenticates the caller, takes one request from its app's rate, and checks that the
/// app may act for `bot_id`.
pub fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    bot_id: &str,
) -> Result<Verified, ApiError> {
    let live = state.live();
    let given = token(headers)?;
    let verified = live
        .auth
        .verify(given, state.clock.now())
        .inspect_err(|e| {
            // Why, for the operator; the token itself is never logged.
            let reason = match e {
                AuthError::Invalid => live.auth.explain_invalid(given),
                other => other.to_string(),
            };
            let bot_id: String = bot_id.chars().take(64).collect();
            tracing::warn!(target: "wrapup::auth", bot_id, reason, "token refused");
        })?;
    live.rates.take(&verified.client_id)?;
    let bot = live
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

/// The authenticated caller of a hooks or records route: its token verified, one request
/// taken from its app's rate, its app allowed to act for the path's `botId`. An enforcing
/// app's `jti` is used later, once the request is known not to be refused
/// ([`Caller::use_jti`] for reads; the store records it with the events for hooks).
pub struct Caller {
    pub bot_id: String,
    pub verified: Verified,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("path: {}", e.body_text())))?;
        let bot_id = params
            .iter()
            .find(|(name, _)| *name == "botId")
            .map(|(_, value)| value.to_owned())
            .ok_or_else(|| ApiError::BadRequest("botId is required in the path".into()))?;
        let verified = authorize(state, &parts.headers, &bot_id)?;
        if let Some(note) = parts.extensions.get::<super::CallerNote>() {
            let _ = note.0.set(verified.client_id.clone());
        }
        Ok(Caller { bot_id, verified })
    }
}

impl Caller {
    /// Records the token's `jti` for apps that enforce it; a `jti` used before is refused.
    pub async fn use_jti(self, state: &AppState) -> Result<(), ApiError> {
        if let Some(jti) = self.verified.jti
            && !state.store.consume_jti(jti).await?
        {
            return Err(AuthError::Replayed.into());
        }
        Ok(())
    }
}

/// The admin API's caller: the bearer token of `[admin] token_env`. Without that setting
/// the admin API answers 404, as if it did not exist.
pub struct Admin;

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let live = state.live();
        let Some(expected) = &live.admin_token else {
            return Err(ApiError::NotFound(
                "the admin API is off; set [admin] token_env".into(),
            ));
        };
        let given = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .unwrap_or("");
        // Compare digests so the comparison's time says nothing about the token.
        if Sha256::digest(given.trim().as_bytes()) == Sha256::digest(expected.as_bytes()) {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized(
                "an admin token is required in Authorization: Bearer".into(),
            ))
        }
    }
}
