//! JWT apps: which app a token speaks for, whether its signature and times hold,
//! and which bots it may act for.
//!
//! Follows RFC 8725: the algorithm is pinned per app (the header's `alg` must be one
//! of the app's `algorithms`, `none` never parses), and an app's key belongs to one
//! family, so an RSA public key can never be used as an HMAC secret. The client id is
//! read from `appId` (documented) or else `iss` (the vendor's SDK-style tokens) before
//! the signature is checked, because it selects the key; nothing else from an
//! unverified payload is trusted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation, dangerous, decode, encode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::Digest;
use thiserror::Error;

use crate::clock::Clock;
use crate::config::AppSettings;
use crate::domain::Timestamp;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY: Duration = Duration::from_secs(60);
/// A time claim below this is seconds (1e11 s is the year 5138)...
const MILLIS_THRESHOLD: f64 = 100_000_000_000.0;
/// ...and from this up to [`MILLIS_MAX`] it is milliseconds (1e12 ms is September 2001,
/// 1e14 ms the year 5138). In between, or above, it is plausible in neither unit and
/// refused: read either way it would pass a check it should fail.
const MILLIS_MIN: f64 = 1_000_000_000_000.0;
const MILLIS_MAX: f64 = 100_000_000_000_000.0;

/// Why a token was refused. Every variant answers 401; the messages say what to fix
/// on the client without telling an attacker which check came closest.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("a JWT is required in header auth, token or Authorization: Bearer")]
    Missing,
    #[error("different tokens were sent in auth, token and Authorization headers")]
    Conflicting,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token is not valid for any configured app")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's iat is in the future")]
    IssuedInFuture,
    #[error("this app requires an exp claim")]
    ExpRequired,
    #[error("this app limits token age; an iat claim is required")]
    IatRequired,
    #[error("the token is older than this app allows")]
    TooOld,
    #[error("this app enforces JTI; a jti claim is required")]
    JtiRequired,
    /// A jti the store cannot keep (PostgreSQL's text holds no NUL): refused at the door,
    /// so it never fails a batch of other requests.
    #[error("the jti claim must be at most 256 bytes with no NUL or other control character")]
    JtiInvalid,
    #[error("this token's jti has already been used")]
    Replayed,
    #[error("the token's botId claim must be a non-empty string naming the bot")]
    BadBotClaim,
    #[error("the token's header lists critical extensions (crit) this server does not support")]
    CriticalHeader,
    #[error(
        "a time claim (exp, nbf, iat) is outside any plausible time, in seconds or milliseconds"
    )]
    ImplausibleTime,
}

/// What a verified token says about its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub client_id: String,
    /// A `botId` claim, when the token carries one (SDK-style tokens).
    pub bot_claim: Option<String>,
    /// Present when the app enforces JTI: the id to record, and until when it matters.
    pub jti: Option<JtiUse>,
}

pub use crate::domain::JtiUse;

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(rename = "appId")]
    app_id: Option<Value>,
    iss: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    jti: Option<Value>,
    #[serde(rename = "botId")]
    bot_id: Option<Value>,
}

pub struct Authenticator {
    apps: HashMap<String, App>,
    /// Tokens already verified, by the SHA-256 of their exact text (signature included),
    /// with the time window in which they stay valid. Apps that enforce JTI are never
    /// cached: each of their tokens is good once anyway. Keyed by the digest, not the
    /// text, so a caller sending many large tokens (up to 8 KiB each) makes the cache no
    /// larger than 10,000 small entries (~1.5 MB), whatever the tokens' size.
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

/// Entries kept at most; the cache is emptied when it is full (the vendor's clients
/// reuse a handful of long-lived tokens, so it refills with the hot ones at once).
const CACHE_ENTRIES: usize = 10_000;

#[derive(Clone)]
struct Cached {
    verified: Verified,
    /// Seconds since the epoch, leeway included.
    valid_from: f64,
    valid_until: f64,
}

struct App {
    settings: AppSettings,
    validation: Validation,
}

impl Authenticator {
    pub fn new(apps: &[AppSettings]) -> Self {
        let apps = apps
            .iter()
            .map(|a| {
                let mut validation = Validation::new(a.algorithms[0]);
                validation.algorithms = a.algorithms.clone();
                // Time claims are checked below, where milliseconds are understood.
                validation.validate_exp = false;
                validation.validate_nbf = false;
                validation.validate_aud = false;
                validation.required_spec_claims.clear();
                validation.leeway = 0;
                (
                    a.client_id.clone(),
                    App {
                        settings: a.clone(),
                        validation,
                    },
                )
            })
            .collect();
        Self {
            apps,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies `token` at time `now`; a token verified before is answered from the cache
    /// while its time window holds.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Verified, AuthError> {
        let now_s = now.millis() as f64 / 1000.0;
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Ok(cache) = self.cache.lock()
            && let Some(hit) = cache.get(&key)
            && hit.valid_from <= now_s
            && now_s <= hit.valid_until
        {
            return Ok(hit.verified.clone());
        }
        let (verified, window) = self.verify_uncached(token, now)?;
        if let Some((valid_from, valid_until)) = window
            && let Ok(mut cache) = self.cache.lock()
        {
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(
                key,
                Cached {
                    verified: verified.clone(),
                    valid_from,
                    valid_until,
                },
            );
        }
        Ok(verified)
    }

    /// Why a token was refused as `Invalid`, for the operator's log only (the caller is
    /// told no more than "not valid for any configured app"). The app id it names comes
    /// from the caller: cut to 64 characters.
    pub fn explain_invalid(&self, token: &str) -> String {
        let Ok(unverified) = dangerous::insecure_decode_claims::<Claims>(token) else {
            return "unreadable claims".into();
        };
        let Some(client_id) =
            string_claim(&unverified.app_id).or_else(|| string_claim(&unverified.iss))
        else {
            return "no appId or iss claim".into();
        };
        let shown: String = client_id.chars().take(64).collect();
        if self.apps.contains_key(client_id) {
            format!("wrong signature or algorithm for app {shown}")
        } else {
            format!("unknown app {shown}")
        }
    }

    /// The full check; also returns the window in which the same answer holds, or
    /// `None` when the token must not be cached (JTI).
    fn verify_uncached(
        &self,
        token: &str,
        now: Timestamp,
    ) -> Result<(Verified, Option<(f64, f64)>), AuthError> {
        if token.len() > MAX_TOKEN_BYTES || token.is_empty() {
            return Err(AuthError::Malformed);
        }
        refuse_critical_extensions(token)?;
        let unverified: Claims =
            dangerous::insecure_decode_claims(token).map_err(|_| AuthError::Malformed)?;
        let client_id = string_claim(&unverified.app_id)
            .or_else(|| string_claim(&unverified.iss))
            .ok_or(AuthError::Invalid)?;
        let app = self.apps.get(client_id).ok_or(AuthError::Invalid)?;
        let claims = decode::<Claims>(token, &app.settings.key, &app.validation)
            .map_err(|_| AuthError::Invalid)?
            .claims;
        // The verified payload must name the same app (it does unless the token is crafted twice).
        let verified_id = string_claim(&claims.app_id).or_else(|| string_claim(&claims.iss));
        if verified_id != Some(client_id) {
            return Err(AuthError::Invalid);
        }

        let now_s = now.millis() as f64 / 1000.0;
        let leeway = LEEWAY.as_secs_f64();
        let exp = time_claim(&claims.exp)?;
        let nbf = time_claim(&claims.nbf)?;
        let iat = time_claim(&claims.iat)?;
        match exp {
            Some(exp) if exp + leeway < now_s => return Err(AuthError::Expired),
            None if app.settings.require_exp => return Err(AuthError::ExpRequired),
            _ => {}
        }
        if let Some(nbf) = nbf
            && nbf - leeway > now_s
        {
            return Err(AuthError::NotYetValid);
        }
        if let Some(iat) = iat
            && iat - leeway > now_s
        {
            return Err(AuthError::IssuedInFuture);
        }
        if let Some(max_age) = app.settings.max_token_age {
            let iat = iat.ok_or(AuthError::IatRequired)?;
            if now_s - iat > max_age.as_secs_f64() + leeway {
                return Err(AuthError::TooOld);
            }
        }
        let jti = if app.settings.enforce_jti {
            let id = string_claim(&claims.jti)
                .filter(|j| !j.is_empty())
                .ok_or(AuthError::JtiRequired)?;
            if id.len() > 256 || id.chars().any(char::is_control) {
                return Err(AuthError::JtiInvalid);
            }
            Some(JtiUse {
                client_id: client_id.to_owned(),
                jti: id.to_owned(),
                expires_at: exp.map(|e| Timestamp::from_millis(((e + leeway) * 1000.0) as i64)),
            })
        } else {
            None
        };
        let window = (!app.settings.enforce_jti).then(|| {
            let from = [nbf, iat]
                .into_iter()
                .flatten()
                .map(|t| t - leeway)
                .fold(f64::MIN, f64::max);
            let mut until = exp.map(|e| e + leeway).unwrap_or(f64::MAX);
            if let (Some(max_age), Some(iat)) = (app.settings.max_token_age, iat) {
                until = until.min(iat + max_age.as_secs_f64() + leeway);
            }
            (from, until)
        });
        Ok((
            Verified {
                client_id: client_id.to_owned(),
                bot_claim: bot_claim(&claims.bot_id)?,
                jti,
            },
            window,
        ))
    }
}

/// RFC 7515 §4.1.11: a recipient must refuse a token whose `crit` header names an
/// extension it does not understand; this server understands none.
fn refuse_critical_extensions(token: &str) -> Result<(), AuthError> {
    use base64::Engine;
    let header = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    if header.contains_key("crit") {
        return Err(AuthError::CriticalHeader);
    }
    Ok(())
}

/// A `botId` claim, when present, must be a non-empty string: anything else would
/// otherwise be ignored and the token accepted on every bot of its app.
fn bot_claim(v: &Option<Value>) -> Result<Option<String>, AuthError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(AuthError::BadBotClaim),
    }
}

fn string_claim(v: &Option<Value>) -> Option<&str> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    }
}

/// A NumericDate in seconds, or in milliseconds as the vendor's widget sends it.
fn time_claim(v: &Option<Value>) -> Result<Option<f64>, AuthError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let x = n
                .as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or(AuthError::Malformed)?;
            if x < MILLIS_THRESHOLD {
                Ok(Some(x))
            } else if (MILLIS_MIN..=MILLIS_MAX).contains(&x) {
                Ok(Some(x / 1000.0))
            } else {
                Err(AuthError::ImplausibleTime)
            }
        }
        Some(_) => Err(AuthError::Malformed),
    }
}

/// Parses an algorithm name as the CLI and config spell it.
pub fn algorithm(name: &str) -> Option<Algorithm> {
    crate::config::algorithm(&name.to_ascii_uppercase())
}

/// What `wrapup token` mints: exactly the vendor's documented payload (`sub`,
/// `appId`), plus `iat` and `exp` when a lifetime is asked for, and `jti` when asked for.
pub struct MintRequest<'a> {
    pub client_id: &'a str,
    pub sub: &'a str,
    pub algorithm: Algorithm,
    /// The HMAC secret, or an RSA private key in PEM for RS algorithms.
    pub key: &'a [u8],
    pub ttl: Option<Duration>,
    pub jti: Option<String>,
    pub extra: Map<String, Value>,
}

pub fn mint(req: &MintRequest<'_>) -> anyhow::Result<String> {
    let now = crate::clock::SystemClock.now().millis() / 1000;
    let mut claims = json!({ "sub": req.sub, "appId": req.client_id });
    if let Some(ttl) = req.ttl {
        claims["iat"] = json!(now);
        claims["exp"] = json!(now + ttl.as_secs() as i64);
    }
    if let Some(jti) = &req.jti {
        claims["jti"] = json!(jti);
    }
    for (k, v) in &req.extra {
        claims[k] = v.clone();
    }
    let key = match req.algorithm {
        Algorithm::RS256 | Algorithm::RS512 => EncodingKey::from_rsa_pem(req.key)?,
        _ => EncodingKey::from_secret(req.key),
    };
    Ok(encode(&Header::new(req.algorithm), &claims, &key)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::DecodingKey;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn auth(enforce_jti: bool, require_exp: bool) -> Authenticator {
        Authenticator::new(&[AppSettings {
            client_id: "cs-1".into(),
            algorithms: vec![Algorithm::HS256],
            key: DecodingKey::from_secret(SECRET),
            enforce_jti,
            require_exp,
            max_token_age: None,
            rate_limit: None,
        }])
    }

    fn token(extra: Value, alg: Algorithm) -> String {
        let mut claims = json!({"sub": "1", "appId": "cs-1"});
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        if claims["appId"].is_null() {
            claims.as_object_mut().unwrap().remove("appId");
        }
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    #[test]
    fn the_documented_payload_without_exp_is_accepted() {
        let now = crate::clock::SystemClock.now();
        let v = auth(false, false)
            .verify(&token(json!({}), Algorithm::HS256), now)
            .unwrap();
        assert_eq!(v.client_id, "cs-1");
    }

    #[test]
    fn the_client_id_may_come_from_iss() {
        let t = token(
            json!({"appId": null, "iss": "cs-1", "botId": "st-1"}),
            Algorithm::HS256,
        );
        let v = auth(false, false)
            .verify(&t, crate::clock::SystemClock.now())
            .unwrap();
        assert_eq!(v.bot_claim.as_deref(), Some("st-1"));
    }

    #[test]
    fn expiry_in_seconds_and_in_milliseconds_is_enforced() {
        let now = crate::clock::SystemClock.now();
        let a = auth(false, false);
        let past_s = now.millis() / 1000 - 3600;
        assert_eq!(
            a.verify(&token(json!({"exp": past_s}), Algorithm::HS256), now),
            Err(AuthError::Expired)
        );
        let past_ms = now.millis() - 3_600_000;
        assert_eq!(
            a.verify(&token(json!({"exp": past_ms}), Algorithm::HS256), now),
            Err(AuthError::Expired)
        );
        let future_ms = now.millis() + 3_600_000;
        assert!(
            a.verify(&token(json!({"exp": future_ms}), Algorithm::HS256), now)
                .is_ok()
        );
    }

    #[test]
    fn a_cached_token_still_expires_on_time() {
        let a = auth(false, false);
        let now = crate::clock::SystemClock.now();
        let exp = now.millis() / 1000 + 120;
        let t = token(json!({"exp": exp}), Algorithm::HS256);
        assert!(a.verify(&t, now).is_ok());
        assert!(a.verify(&t, now).is_ok(), "from the cache");
        let later = Timestamp::from_millis((exp + 61) * 1000);
        assert_eq!(a.verify(&t, later), Err(AuthError::Expired));
        let before_nbf = token(json!({"nbf": exp}), Algorithm::HS256);
        assert_eq!(a.verify(&before_nbf, now), Err(AuthError::NotYetValid));
    }

    #[test]
    fn jti_tokens_are_never_cached() {
        let a = auth(true, false);
        let t = token(json!({"jti": "one"}), Algorithm::HS256);
        a.verify(&t, crate::clock::SystemClock.now()).unwrap();
        assert!(a.cache.lock().unwrap().is_empty());
    }

    #[test]
    fn a_pinned_algorithm_refuses_others() {
        let t = token(json!({}), Algorithm::HS512);
        assert_eq!(
            auth(false, false).verify(&t, crate::clock::SystemClock.now()),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn enforcing_apps_require_jti_and_exp_when_configured() {
        let now = crate::clock::SystemClock.now();
        assert_eq!(
            auth(true, false).verify(&token(json!({}), Algorithm::HS256), now),
            Err(AuthError::JtiRequired)
        );
        assert_eq!(
            auth(false, true).verify(&token(json!({}), Algorithm::HS256), now),
            Err(AuthError::ExpRequired)
        );
    }
}
