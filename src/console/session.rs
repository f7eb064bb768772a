//! Signing in to the console: the admin token buys a signed session cookie that carries
//! its own expiry, so any instance of a deployment accepts it without shared session
//! state; every form that changes something carries a token derived from the session.
//!
//! Both keys are derived from the admin token: changing the token signs everyone out.
//! Signing out removes the cookie from the browser; a copy taken before stays valid until
//! it expires (12 hours at most).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, CookieJar, Key, SameSite};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

use super::pages::{ConsoleError, login_page};
use crate::api::AppState;
use crate::connections::ClientAddress;

const COOKIE: &str = "wrapup_console";
/// How long a sign-in lasts.
pub const SESSION_SECS: i64 = 12 * 3600;
/// Sign-in attempts per client address: a burst of 10, then one every 6 seconds.
const LOGIN_BURST: u32 = 10;
/// Addresses remembered by the sign-in limiter before the idle ones are forgotten.
const LOGIN_ADDRESSES: usize = 10_000;

/// Per-address limit on sign-in attempts (an IPv6 address counts by its /64). Past
/// `LOGIN_ADDRESSES` addresses within a minute, a new address is limited by its network
/// instead (an IPv4 /16, an IPv6 /32), in a table of its own of the same bound; past that
/// too, by one shared limit. So an attacker holding many addresses (a few /48s of IPv6
/// are enough to fill the first table) drains only its own networks' limits, and an
/// operator elsewhere still signs in, while both tables stay bounded.
pub struct LoginLimiter {
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    by_network: DefaultKeyedRateLimiter<IpAddr>,
    overflow: governor::DefaultDirectRateLimiter,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        let burst = NonZeroU32::new(LOGIN_BURST).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(burst).allow_burst(burst);
        Self {
            by_address: RateLimiter::keyed(quota),
            by_network: RateLimiter::keyed(quota),
            overflow: RateLimiter::direct(quota),
        }
    }
}

/// `addr` with all but its first `v4` (IPv4) or `v6` (IPv6) bits cleared.
fn prefix(addr: IpAddr, v4: u32, v6: u32) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(a) => std::net::Ipv4Addr::from(u32::from(a) & (u32::MAX << (32 - v4))).into(),
        IpAddr::V6(a) => std::net::Ipv6Addr::from(u128::from(a) & (u128::MAX << (128 - v6))).into(),
    }
}

impl LoginLimiter {
    pub(crate) fn allow(&self, addr: IpAddr) -> bool {
        let has_room = |table: &DefaultKeyedRateLimiter<IpAddr>| {
            if table.len() >= LOGIN_ADDRESSES {
                table.retain_recent();
            }
            table.len() < LOGIN_ADDRESSES
        };
        if has_room(&self.by_address) {
            self.by_address.check_key(&prefix(addr, 32, 64)).is_ok()
        } else if has_room(&self.by_network) {
            self.by_network.check_key(&prefix(addr, 16, 32)).is_ok()
        } else {
            self.overflow.check().is_ok()
        }
    }
}

fn cookie_key(token: &str) -> Key {
    let digest = Sha512::digest(format!("wrapup console session\n{token}").as_bytes());
    Key::from(&digest[..])
}

fn csrf_mac(token: &str, nonce: &str) -> Hmac<Sha256> {
    let key = Sha256::digest(format!("wrapup console csrf\n{token}").as_bytes());
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(nonce.as_bytes());
    mac
}

/// A signed-in operator. Pages that need one take it as an extractor: without a valid
/// session the browser is sent to the sign-in page; without an admin token the console
/// does not exist (404).
pub struct Operator {
    /// The token every state-changing form of this session carries.
    pub csrf: String,
}

impl Operator {
    /// Checks a form's CSRF token against this session's.
    pub fn check_csrf(&self, given: &str) -> Result<(), ConsoleError> {
        if given.len() == self.csrf.len() && Sha256::digest(given) == Sha256::digest(&self.csrf) {
            Ok(())
        } else {
            Err(ConsoleError::new(
                StatusCode::FORBIDDEN,
                "This form is out of date or did not come from the console; reload the page and try again.",
            ))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Operator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Response> {
        let live = state.live();
        let Some(token) = &live.admin_token else {
            return Err(ConsoleError::off().into_response());
        };
        let mut jar = CookieJar::new();
        for value in parts.headers.get_all(header::COOKIE) {
            for c in value.to_str().unwrap_or("").split(';') {
                if let Ok(c) = Cookie::parse(c.trim().to_owned()) {
                    jar.add_original(c);
                }
            }
        }
        let now = state.clock.now().millis() / 1000;
        let session = jar.signed(&cookie_key(token)).get(COOKIE).and_then(|c| {
            let (exp, nonce) = c.value().split_once('.')?;
            let exp: i64 = exp.parse().ok()?;
            (exp > now).then(|| nonce.to_owned())
        });
        match session {
            Some(nonce) => Ok(Operator {
                csrf: hex(&csrf_mac(token, &nonce).finalize().into_bytes()),
            }),
            None => Err(Redirect::to("/console/login").into_response()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The request came over TLS (directly, or through a proxy that says so).
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn session_cookie(value: String, max_age: i64, secure: bool) -> String {
    Cookie::build((COOKIE, value))
        .path("/console")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(max_age))
        .build()
        .to_string()
}

pub async fn login_form(State(state): State<Arc<AppState>>) -> Response {
    if state.live().admin_token.is_none() {
        return ConsoleError::off().into_response();
    }
    login_page(StatusCode::OK, None).into_response()
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

pub async fn login(
    State(state): State<Arc<AppState>>,
    client: Option<axum::Extension<ClientAddress>>,
    headers: HeaderMap,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let live = state.live();
    let Some(expected) = &live.admin_token else {
        return ConsoleError::off().into_response();
    };
    // The client (every listener sets it, `app`: the peer, or what a trusted proxy says it
    // forwarded for); never one key for everybody, or ten wrong tokens from anywhere would
    // lock every operator out.
    let addr = client.map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.0);
    if !state.console_logins.allow(addr) {
        tracing::warn!(%addr, "console sign-in attempts over the limit");
        return login_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many sign-in attempts from this address; wait a minute and try again."),
        )
        .into_response();
    }
    let given = form.map(|f| f.0.token).unwrap_or_default();
    if Sha256::digest(given.trim().as_bytes()) != Sha256::digest(expected.as_bytes()) {
        tracing::warn!(%addr, "console sign-in refused: wrong token");
        return login_page(StatusCode::UNAUTHORIZED, Some("That token is not valid."))
            .into_response();
    }
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let exp = state.clock.now().millis() / 1000 + SESSION_SECS;
    let mut jar = CookieJar::new();
    jar.signed_mut(&cookie_key(expected))
        .add(Cookie::new(COOKIE, format!("{exp}.{nonce}")));
    let signed = jar
        .get(COOKIE)
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    tracing::info!(%addr, "console sign-in");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console".to_owned()),
            (
                header::SET_COOKIE,
                session_cookie(
                    signed,
                    SESSION_SECS,
                    state.server.tls.is_some() || over_tls(&headers),
                ),
            ),
        ],
    )
        .into_response()
}

#[derive(serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub async fn logout(
    State(state): State<Arc<AppState>>,
    operator: Operator,
    headers: HeaderMap,
    form: Result<axum::Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, ConsoleError> {
    operator.check_csrf(&form.map(|f| f.0.csrf).unwrap_or_default())?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console/login".to_owned()),
            (
                header::SET_COOKIE,
                session_cookie(
                    String::new(),
                    0,
                    state.server.tls.is_some() || over_tls(&headers),
                ),
            ),
        ],
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_attacking_addresses_drain_only_their_own_networks_limit() {
        let limiter = LoginLimiter::default();
        // 10,000 /64s of one /48 (and so of one /32) fill the per-address table.
        for i in 0..LOGIN_ADDRESSES as u128 {
            let a = std::net::Ipv6Addr::from((0x2001_0db8_0001u128 << 80) | (i << 64) | 1).into();
            assert!(limiter.allow(a), "each new address's first try is allowed");
        }
        // More of the attacker's addresses share its /32's limit: ten, then refused.
        let more =
            |i: u128| std::net::Ipv6Addr::from((0x2001_0db8_0002u128 << 80) | (i << 64) | 1).into();
        let allowed = (0..20).filter(|i| limiter.allow(more(*i))).count();
        assert_eq!(allowed, LOGIN_BURST as usize);
        // An operator on another network is not locked out.
        assert!(limiter.allow("198.51.100.7".parse().unwrap()));
        assert!(limiter.allow("2a00:1450::1".parse().unwrap()));
    }
}
