//! A real HTTP server speaking the OpenAI Chat Completions protocol for the `openai`
//! summary provider's tests: it records every request and answers as it is told to.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// One answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A completion whose message content is this.
    Content(String),
    /// This status, with `Retry-After` seconds when given, and an OpenAI-style error.
    Status(u16, Option<u64>),
    /// These bytes with 200.
    Raw(String),
    /// This status with these bytes.
    StatusBody(u16, String),
    /// Waits, then answers.
    Slow(Duration, Box<Reply>),
}

/// A good answer: the four sections and a summary, as the default instructions ask.
pub fn sections_json(situation: &str) -> Reply {
    Reply::Content(
        json!({
            "situation": situation,
            "action": "The agent checked the payments.",
            "resolution": "A refund of 49.99 was issued.",
            "satisfaction": "The customer thanked the agent.",
            "summary": format!("{situation} The agent refunded 49.99."),
        })
        .to_string(),
    )
}

#[derive(Default)]
struct Inner {
    requests: Vec<(HeaderMap, Value)>,
    script: VecDeque<Reply>,
    always: Option<Reply>,
}

#[derive(Clone)]
pub struct ChatServer {
    /// The `base_url` to configure (`…/v1`).
    pub base_url: String,
    inner: Arc<Mutex<Inner>>,
}

impl ChatServer {
    pub async fn start() -> ChatServer {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        ChatServer { base_url, inner }
    }

    /// Answers these in order, then `always` (else a good answer).
    pub fn script(&self, replies: Vec<Reply>) {
        self.inner.lock().unwrap().script = replies.into();
    }

    pub fn always(&self, reply: Option<Reply>) {
        self.inner.lock().unwrap().always = reply;
    }

    pub fn requests(&self) -> Vec<(HeaderMap, Value)> {
        self.inner.lock().unwrap().requests.clone()
    }
}

async fn complete(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let reply = {
        let mut i = inner.lock().unwrap();
        let parsed = serde_json::from_str(&body).unwrap_or(Value::String(body));
        i.requests.push((headers, parsed.clone()));
        i.script
            .pop_front()
            .or_else(|| i.always.clone())
            .unwrap_or_else(|| sections_json("The customer asked for help."))
    };
    answer(reply).await
}

async fn answer(mut reply: Reply) -> Response {
    while let Reply::Slow(wait, next) = reply {
        tokio::time::sleep(wait).await;
        reply = *next;
    }
    match reply {
        Reply::Content(content) => axum::Json(json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "test-model-2026",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 60, "total_tokens": 180},
        }))
        .into_response(),
        Reply::Status(code, retry_after) => {
            let mut headers = HeaderMap::new();
            if let Some(secs) = retry_after {
                headers.insert("retry-after", secs.into());
            }
            (
                StatusCode::from_u16(code).unwrap(),
                headers,
                axum::Json(json!({"error": {"message": "try later", "type": "server_error"}})),
            )
                .into_response()
        }
        Reply::StatusBody(code, text) => {
            (StatusCode::from_u16(code).unwrap(), text).into_response()
        }
        Reply::Raw(text) => {
            (StatusCode::OK, [("content-type", "application/json")], text).into_response()
        }
        Reply::Slow(..) => unreachable!(),
    }
}
