//! Who is calling, and may they act for this bot.

use std::collections::HashMap;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::AppState;
use super::error::{ApiError, UNKNOWN_BOT};
use crate::auth::{AuthError, Verified};
use crate::config::AppSettings;
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
    let verified = state.auth.verify(token(headers)?, Timestamp::now())?;
    state.rates.take(&verified.client_id)?;
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
