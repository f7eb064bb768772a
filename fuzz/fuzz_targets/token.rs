//! Tokens: arbitrary text, and well-signed tokens with arbitrary headers and claims (so the
//! claim checks are reached). Verification must never panic, and must refuse every token
//! that is not signed with the app's own secret by an algorithm the app allows.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use std::sync::LazyLock;
use wrapup::auth::Authenticator;
use wrapup::config::AppSettings;
use wrapup::domain::Timestamp;

const SECRET: &[u8] = b"fuzz-secret-0123456789abcdef";

static AUTH: LazyLock<Authenticator> = LazyLock::new(|| {
    let app = |id: &str, alg, jti| AppSettings {
        client_id: id.into(),
        algorithms: vec![alg],
        key: jsonwebtoken::DecodingKey::from_secret(SECRET),
        enforce_jti: jti,
        require_exp: jti,
        max_token_age: None,
        rate_limit: None,
    };
    Authenticator::new(&[
        app("cs-hs256", jsonwebtoken::Algorithm::HS256, false),
        app("cs-hs512", jsonwebtoken::Algorithm::HS512, true),
    ])
});

fn sign(header: &[u8], claims: &[u8], secret: &[u8]) -> String {
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

fuzz_target!(|data: &[u8]| {
    let now = Timestamp::from_millis(1_800_000_000_000);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        // Any text as the token.
        0 => {
            let _ = AUTH.verify(&String::from_utf8_lossy(rest), now);
        }
        // Claims from the input, signed correctly with HS256.
        1 => {
            let token = sign(br#"{"alg":"HS256","typ":"JWT"}"#, rest, SECRET);
            if let Ok(v) = AUTH.verify(&token, now) {
                assert_eq!(v.client_id, "cs-hs256", "an HS256 token accepted for another app");
            }
        }
        // Header and claims from the input (split at the first NUL), signed with HS256.
        2 => {
            let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let (header, claims) = rest.split_at(split);
            let claims = claims.get(1..).unwrap_or_default();
            let token = sign(header, claims, SECRET);
            if let Ok(v) = AUTH.verify(&token, now) {
                assert_eq!(v.client_id, "cs-hs256", "a token accepted for an app that does not allow its algorithm");
            }
        }
        // Claims from the input, signed with the wrong secret: never accepted.
        _ => {
            let token = sign(br#"{"alg":"HS256","typ":"JWT"}"#, rest, b"not-the-secret-0123456789");
            assert!(AUTH.verify(&token, now).is_err(), "a token with a wrong signature accepted");
        }
    }
});
