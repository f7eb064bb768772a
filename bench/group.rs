//! Baseline: the minimal group-commit writer, the engine limit wrapup on SQLite is measured
//! against. Parses the body, checks the token, and hands one row per request to a single
//! writer thread, which takes every request waiting, inserts them in one transaction
//! (WAL, synchronous=FULL: one fsync a batch) and answers each after the commit.
//!
//! cargo run --release -p wrapup-bench --bin bench-group -- 127.0.0.1:8084 /tmp/group.db

#[path = "common.rs"]
mod common;

use std::sync::mpsc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use rusqlite::Connection;
use tokio::sync::oneshot;

/// One request's row and where its answer goes.
struct Write {
    bot_id: String,
    conversation_id: String,
    body: Bytes,
    done: oneshot::Sender<bool>,
}

/// Requests taken into one transaction at most, as wrapup's writer does.
const BATCH: usize = 256;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8084".into());
    let path = args.next().unwrap_or_else(|| "group.db".into());
    let conn = common::open_ends(&path);
    let (tx, rx) = mpsc::channel::<Write>();
    std::thread::spawn(move || writer(conn, rx));
    let app = Router::new()
        .route("/agentai/api/v1/hooks/{botId}", post(handle))
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    axum::serve(listener, app).await.unwrap();
}

/// Takes what is waiting (blocking for the first), writes it in one transaction, answers.
fn writer(mut conn: Connection, rx: mpsc::Receiver<Write>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let stored = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO ends (bot_id, conversation_id, body) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                )?;
                for w in &batch {
                    insert.execute(rusqlite::params![w.bot_id, w.conversation_id, w.body.as_ref()])?;
                }
            }
            tx.commit()
        })()
        .is_ok();
        for w in batch {
            let _ = w.done.send(stored);
        }
    }
}

async fn handle(
    State(writer): State<mpsc::Sender<Write>>,
    headers: HeaderMap,
    body: Bytes,
) -> common::Answer {
    let ct = common::JSON;
    let v = match common::checked(&headers, &body) {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let (Some(bot_id), Some(conversation_id)) = (v["botId"].as_str(), v["conversationId"].as_str())
    else {
        return (StatusCode::BAD_REQUEST, ct, r#"{"code":400}"#);
    };
    let (done, answer) = oneshot::channel();
    let write = Write {
        bot_id: bot_id.to_owned(),
        conversation_id: conversation_id.to_owned(),
        body,
        done,
    };
    if writer.send(write).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, ct, r#"{"code":503}"#);
    }
    match answer.await {
        Ok(true) => (StatusCode::OK, ct, r#"{"STATUS":"OK"}"#),
        _ => (StatusCode::SERVICE_UNAVAILABLE, ct, r#"{"code":503}"#),
    }
}
