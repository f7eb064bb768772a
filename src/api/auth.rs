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
///
/// A request is charged by its cost, not counted once: a records answer of `b` bytes
/// costs one request more per [`COST_UNIT`] bytes (at most a burst), taken with the app's
/// next request. So an app reading 5 MB pages gets about 1/80 of the pages per second it
/// would get of small answers, and its share of the readers and the CPU is what its rate
/// says, not 80 times that.
#[derive(Default)]
pub struct RateLimits {
    apps: HashMap<String, AppRate>,
}

/// The bytes of answer one request's worth of the rate buys.
pub const COST_UNIT: u64 = 64 * 1024;

struct AppRate {
    limiter: DefaultDirectRateLimiter,
    burst: u32,
    /// Requests' worth owed for answers already sent, paid with the next request.
    owed: std::sync::atomic::AtomicU32,
}

impl RateLimits {
    pub fn new(apps: &[AppSettings]) -> Self {
        let apps = apps
            .iter()
            .filter_map(|a| {
                let r = a.rate_limit?;
                let quota = Quota::per_second(r.per_second).allow_burst(r.burst);
                let rate = AppRate {
                    limiter: RateLimiter::direct(quota),
                    burst: r.burst.get(),
                    owed: Default::default(),
                };
                Some((a.client_id.clone(), rate))
            })
            .collect();
        Self { apps }
    }

    /// Charges `client_id` for an answer of `bytes` bytes: one request's worth per
    /// [`COST_UNIT`], paid with its next request (a burst at most).
    pub fn charge(&self, client_id: &str, bytes: u64) {
        use std::sync::atomic::Ordering;
        let Some(rate) = self.apps.get(client_id) else {
            return;
        };
        let units = u32::try_from(bytes / COST_UNIT).unwrap_or(u32::MAX);
        if units > 0 {
            let cap = rate.burst.saturating_sub(1);
            let _ = rate
                .owed
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| {
                    Some(o.saturating_add(units).min(cap))
                });
        }
    }

    /// Takes one request, and what the app owes for its earlier answers, from
    /// `client_id`'s share, or says when to come back (the debt then stays owed).
    fn take(&self, client_id: &str) -> Result<(), ApiError> {
        use std::sync::atomic::Ordering;
        let Some(rate) = self.apps.get(client_id) else {
            return Ok(());
        };
        let owed = rate.owed.swap(0, Ordering::Relaxed);
        let n = std::num::NonZeroU32::new(owed.saturating_add(1).min(rate.burst))
            .unwrap_or(std::num::NonZeroU32::MIN);
        let checked = match rate.limiter.check_n(n) {
            Ok(result) => result,
            // More than a burst: cannot happen (owed is capped below it); charge one.
            Err(_) => rate.limiter.check(),
        };
        if checked.is_err() {
            rate.owed.fetch_add(owed, Ordering::Relaxed);
        }
        checked.map_err(|not_until| {
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
        } else if given.trim().is_empty() {
            Err(ApiError::Unauthorized(
                "an admin token is required in Authorization: Bearer".into(),
            ))
        } else {
            Err(ApiError::Unauthorized(
                "the admin token is wrong: it is not [admin] token_env's (or token's)".into(),
            ))
        }
    }
}
