//! What the two baseline servers share: the allocator (the same as wrapup's, so the ratios
//! compare like with like), the demo secret, and the HS256 check of header `token`.

use axum::http::{HeaderMap, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rusqlite::Connection;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECRET: &[u8] = b"demo-secret-DO-NOT-USE-IN-PRODUCTION-0001";

/// The `content-type` header of every answer.
pub const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

/// An answer: status, content type, body.
pub type Answer = (StatusCode, [(&'static str, &'static str); 1], &'static str);

/// The body as JSON once the token checks out, or the answer refusing the request.
pub fn checked(headers: &HeaderMap, body: &[u8]) -> Result<serde_json::Value, Answer> {
    if !token_is_valid(headers) {
        return Err((StatusCode::UNAUTHORIZED, JSON, r#"{"code":401}"#));
    }
    serde_json::from_slice(body).map_err(|_| (StatusCode::BAD_REQUEST, JSON, r#"{"code":400}"#))
}

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

/// The durable baselines' database: WAL, `synchronous=FULL`, one table of ends.
#[allow(dead_code)] // not the ceiling's
pub fn open_ends(path: &str) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS ends (bot_id TEXT, conversation_id TEXT, body TEXT, PRIMARY KEY (bot_id, conversation_id))",
    )
    .unwrap();
    conn
}
