//! Baseline: the HTTP ceiling. Bare axum answering `{"STATUS":"OK"}`; with `--work`, it
//! also parses the body with serde and checks the HS256 token (the work ceiling).
//!
//! cargo run --release -p wrapup-bench --bin bench-ceiling -- 127.0.0.1:8081 [--work]

#[path = "common.rs"]
mod common;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8081".into());
    let work = args.any(|a| a == "--work");
    let app = if work {
        Router::new().route("/agentai/api/v1/hooks/{botId}", post(with_work))
    } else {
        Router::new().route(
            "/agentai/api/v1/hooks/{botId}",
            post(|| async { (common::JSON, r#"{"STATUS":"OK"}"#) }),
        )
    };
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    axum::serve(listener, app).await.unwrap();
}

async fn with_work(headers: HeaderMap, body: Bytes) -> common::Answer {
    let ct = common::JSON;
    match common::checked(&headers, &body) {
        Ok(v) if v["events"][0]["participant"]["identity"].is_string() => {
            (StatusCode::OK, ct, r#"{"STATUS":"OK"}"#)
        }
        Ok(_) => (StatusCode::BAD_REQUEST, ct, r#"{"code":400}"#),
        Err(answer) => answer,
    }
}
