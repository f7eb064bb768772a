//! What the two baseline servers share: the allocator (the same as wrapup's, so the ratios
//! compare like with like), the demo secret, and the HS256 check of header `token`.

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECRET: &[u8] = b"demo-secret-DO-NOT-USE-IN-PRODUCTION-0001";

/// The `content-type` header of every answer.
pub const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

/// Whether header `token` holds an HS256 JWT signed with the demo secret.
pub fn token_is_valid(headers: &HeaderMap) -> bool {
    let token = headers
        .get("token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<serde_json::Value>(token, &DecodingKey::from_secret(SECRET), &validation)
        .is_ok()
}
