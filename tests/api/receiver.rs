//! A real HTTP receiver for webhook actions: records every delivery, answers with the
//! status codes it is told to, optionally slowly.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

#[derive(Clone, Debug)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Delivery {
    pub fn id(&self) -> String {
        self.headers["webhook-id"].to_str().unwrap().to_owned()
    }
}

#[derive(Default)]
struct Inner {
    deliveries: Vec<Delivery>,
    /// Statuses to answer, in order; 200 once they run out.
    script: VecDeque<u16>,
    always: Option<u16>,
    /// `Retry-After` seconds sent with every answer that is not a 2xx.
    retry_after: Option<u64>,
    delay: Duration,
    started: usize,
    in_flight: usize,
    most_in_flight: usize,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, inner }
    }

    pub fn answer(&self, statuses: &[u16]) {
        self.inner.lock().unwrap().script = statuses.iter().copied().collect();
    }

    pub fn always(&self, status: Option<u16>) {
        self.inner.lock().unwrap().always = status;
    }

    pub fn retry_after(&self, secs: Option<u64>) {
        self.inner.lock().unwrap().retry_after = secs;
    }

    /// The most deliveries it was answering at once.
    pub fn most_in_flight(&self) -> usize {
        self.inner.lock().unwrap().most_in_flight
    }

    pub fn delay(&self, d: Duration) {
        self.inner.lock().unwrap().delay = d;
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.lock().unwrap().deliveries.clone()
    }

    /// Requests that arrived, finished or not.
    pub fn started(&self) -> usize {
        self.inner.lock().unwrap().started
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    let delay = {
        let mut i = inner.lock().unwrap();
        i.started += 1;
        i.in_flight += 1;
        i.most_in_flight = i.most_in_flight.max(i.in_flight);
        i.delay
    };
    tokio::time::sleep(delay).await;
    let mut i = inner.lock().unwrap();
    i.in_flight -= 1;
    i.deliveries.push(Delivery {
        headers,
        body,
        at: Instant::now(),
    });
    let status =
        StatusCode::from_u16(i.always.or_else(|| i.script.pop_front()).unwrap_or(200)).unwrap();
    let mut answer = HeaderMap::new();
    if let Some(secs) = i.retry_after.filter(|_| !status.is_success()) {
        answer.insert("retry-after", secs.into());
    }
    (status, answer)
}
