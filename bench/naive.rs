//! Baseline: the naive durable server. Parses the body, checks the token, and commits
//! one SQLite row per request behind a mutex (WAL, synchronous=FULL): one fsync each.
//!
//! cargo run --release -p wrapup-bench --bin bench-naive -- 127.0.0.1:8082 /tmp/naive.db

#[path = "common.rs"]
mod common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use rusqlite::Connection;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8082".into());
    let path = args.next().unwrap_or_else(|| "naive.db".into());
    let conn = common::open_ends(&path);
    let app = Router::new()
        .route("/agentai/api/v1/hooks/{botId}", post(handle))
        .with_state(Arc::new(Mutex::new(conn)));
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    axum::serve(listener, app).await.unwrap();
}

async fn handle(
    State(db): State<Arc<Mutex<Connection>>>,
    headers: HeaderMap,
    body: Bytes,
) -> common::Answer {
    let ct = common::JSON;
    let v = match common::checked(&headers, &body) {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let stored = tokio::task::block_in_place(|| {
        let conn = db.lock().unwrap();
        conn.execute(
            "INSERT INTO ends (bot_id, conversation_id, body) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            rusqlite::params![v["botId"].as_str(), v["conversationId"].as_str(), body.as_ref()],
        )
    });
    match stored {
        Ok(_) => (StatusCode::OK, ct, r#"{"STATUS":"OK"}"#),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, ct, r#"{"code":503}"#),
    }
}
