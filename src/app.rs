//! Builds and runs the server: binds the listener (port 0 in tests reports the real
//! port), opens the store, serves HTTP with bounded connections and timeouts, and
//! shuts down gracefully.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::actions::worker::Workers;
use crate::actions::{Runner, action_refs};
use crate::api::{self, AppState};
use crate::auth::Authenticator;
use crate::config::Settings;
use crate::domain::Limits;
use crate::store::{self, Store};

pub struct App {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    /// Opens the store and binds the listener; serving starts at once in the background.
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        crate::install_tls_provider();
        let store = store::open(&settings.store)
            .await
            .map_err(|e| anyhow::anyhow!("store.url: {e}"))?;
        let listener = TcpListener::bind(settings.server.listen)
            .await
            .map_err(|e| {
                anyhow::anyhow!("server.listen: cannot bind {}: {e}", settings.server.listen)
            })?;
        let addr = listener.local_addr()?;
        let limits = Limits {
            max_events: settings.server.max_events_per_request,
            ..Limits::default()
        };
        let runner = Arc::new(Runner::new(&settings.bots)?);
        let workers = Workers::start(store.clone(), runner, &settings.workers);
        let state = Arc::new(AppState {
            store: store.clone(),
            auth: Authenticator::new(&settings.apps),
            bots: settings
                .bots
                .iter()
                .map(|b| (b.id.clone(), b.clone()))
                .collect::<HashMap<_, _>>(),
            on_end: settings
                .bots
                .iter()
                .map(|b| (b.id.clone(), action_refs(b)))
                .collect(),
            wake: workers.waker(),
            admin_token: settings.admin_token.clone(),
            limits,
            server: settings.server.clone(),
            metrics: crate::telemetry::metrics(),
        });
        let cancel = CancellationToken::new();
        let sweeper = tokio::spawn(crate::sweeper::run(
            store.clone(),
            settings.bots.clone(),
            workers.waker(),
            cancel.clone(),
        ));
        let task = tokio::spawn(serve(
            listener,
            state,
            store,
            workers,
            sweeper,
            cancel.clone(),
        ));
        tracing::info!(%addr, "wrapup listening");
        Ok(App { addr, cancel, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cancelling this token starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits until the server has stopped (after the shutdown token was cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// Shuts down and waits: in-flight requests are answered, queued writes committed.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.wait().await;
    }
}

async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    store: Arc<dyn Store>,
    workers: Workers,
    sweeper: tokio::task::JoinHandle<()>,
    cancel: CancellationToken,
) {
    let router = api::router(state.clone());
    let server = &state.server;
    // Bounds open connections (and so memory and file descriptors); past it a client
    // gets an immediate 503 instead of waiting in the kernel's backlog.
    let connections = Arc::new(Semaphore::new(server.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, _peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(server.header_read_timeout);
        let io = TokioIo::new(stream);
        match connections.clone().try_acquire_owned() {
            Ok(permit) => {
                let router = router.clone();
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    router.clone().oneshot(req)
                });
                let conn = graceful.watch(builder.serve_connection(io, service));
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(permit);
                });
            }
            Err(_) => {
                metrics::counter!("wrapup_connections_refused_total").increment(1);
                let conn = builder.keep_alive(false).serve_connection(
                    io,
                    hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(overloaded())
                    }),
                );
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        }
    }
    drop(listener);
    tracing::info!("shutting down: answering in-flight requests");
    if tokio::time::timeout(server.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
    let _ = sweeper.await;
    tracing::info!("stopping workers: letting running attempts finish");
    workers.shutdown().await;
    store.close().await;
    tracing::info!("stopped");
}

fn overloaded() -> Response<Body> {
    let mut response = Response::new(Body::from(
        r#"{"code":503,"message":"too many connections; retry shortly"}"#,
    ));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}
