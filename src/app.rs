//! Builds and runs the server: binds the listener (port 0 in tests reports the real
//! port), opens the store, serves HTTP with bounded connections and timeouts, and
//! shuts down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::actions::worker::Workers;
use crate::api::{self, AppState};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Settings;
use crate::connections::{AddressKey, ClientAddress, Connections, Held, Refused, client_address};
use crate::store::{self, Store};

pub struct App {
    addr: SocketAddr,
    health_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    reloader: Reloader,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// The main listener's connections.
    connections: Arc<Connections>,
}

impl App {
    /// Opens the store and binds the listener; serving starts at once in the background.
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// The same, with the time taken from `clock` (tests move a [`crate::clock::ManualClock`]).
    pub async fn build_with_clock(settings: Settings, clock: SharedClock) -> anyhow::Result<App> {
        crate::install_tls_provider();
        let store = store::open(&settings.store, clock.clone())
            .await
            .map_err(|e| anyhow::Error::new(e).context("store.url"))?;
        let listener = TcpListener::bind(settings.server.listen)
            .await
            .map_err(|e| {
                anyhow::anyhow!("server.listen: cannot bind {}: {e}", settings.server.listen)
            })?;
        let addr = listener.local_addr()?;
        let health_listener =
            bind_optional("server.health_listen", settings.server.health_listen).await?;
        let health_addr = health_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let admin_listener =
            bind_optional("server.admin_listen", settings.server.admin_listen).await?;
        let admin_addr = admin_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        // One certificate slot for every listener, which a reload can refill.
        let cert = settings.server.tls.clone().map(crate::tls::ServerCert::new);
        let acceptor = cert
            .as_ref()
            .map(crate::tls::ServerCert::acceptor)
            .transpose()
            .map_err(|e| anyhow::anyhow!("server.tls_cert: {e}"))?;
        let live: crate::live::Shared = Arc::new(arc_swap::ArcSwap::from_pointee(
            crate::live::Live::new(&settings)?,
        ));
        let workers = Workers::start(
            store.clone(),
            live.clone(),
            &settings.workers,
            clock.clone(),
        );
        let traffic = Arc::new(crate::traffic::Traffic::default());
        let metrics = crate::telemetry::metrics();
        crate::telemetry::register_series(&settings);
        let state = Arc::new(AppState {
            store: store.clone(),
            clock: clock.clone(),
            live: live.clone(),
            wake: workers.waker(),
            breakers: workers.breakers(),
            server: settings.server.clone(),
            metrics,
            traffic: traffic.clone(),
            console_logins: Default::default(),
            stats_cache: Default::default(),
            scrape_cache: Default::default(),
        });
        let cancel = CancellationToken::new();
        let sweeper = tokio::spawn(crate::sweeper::run(
            store.clone(),
            live.clone(),
            workers.waker(),
            traffic.clone(),
            cancel.clone(),
            clock.clone(),
        ));
        tokio::spawn(crate::traffic::run(
            store.clone(),
            traffic,
            cancel.clone(),
            clock,
        ));
        if let Some(listener) = health_listener {
            tokio::spawn(serve_side(
                Side {
                    router: api::router(state.clone()),
                    serves: |path| matches!(path, "/healthz" | "/readyz" | "/metrics"),
                    refusal: "this listener serves only /healthz, /readyz and /metrics",
                    access_log: state.server.access_log,
                    connections: 64,
                    tls: None,
                    header_read_timeout: state.server.header_read_timeout,
                    trusted: Arc::new(state.server.trusted_proxies.clone()),
                },
                listener,
                cancel.clone(),
            ));
        }
        if let Some(listener) = admin_listener {
            tokio::spawn(serve_side(
                Side {
                    router: api::router(state.clone()),
                    serves: |path| operator_path(path) || matches!(path, "/healthz" | "/readyz"),
                    refusal: "this listener serves only /admin, /console, /metrics and the health checks",
                    access_log: state.server.access_log,
                    connections: 256,
                    tls: acceptor.clone(),
                    header_read_timeout: state.server.header_read_timeout,
                    trusted: Arc::new(state.server.trusted_proxies.clone()),
                },
                listener,
                cancel.clone(),
            ));
        }
        let workers_wake = workers.waker();
        let connections = Connections::new(settings.server.max_connections_per_address);
        let task = tokio::spawn(serve(
            listener,
            (acceptor, connections.clone()),
            state,
            store,
            workers,
            sweeper,
            cancel.clone(),
        ));
        let shown = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            store = settings.store.url.kind(),
            listen = %addr,
            health_listen = shown(health_addr),
            admin_listen = shown(admin_addr),
            tls = settings.server.tls.is_some(),
            "wrapup listening"
        );
        if admin_addr.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(
                listen = %addr,
                "/metrics (unauthenticated), /admin and /console are served on the public listener: set server.admin_listen to move them to an operator listener"
            );
        }
        Ok(App {
            addr,
            health_addr,
            admin_addr,
            reloader: Reloader {
                live,
                fixed: fixed_part(&settings),
                at_restart: restart_part(&settings),
                wake: workers_wake,
                cert,
                parts: Arc::new(std::sync::Mutex::new(settings.parts.clone())),
            },
            cancel,
            task,
            connections,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The main listener's connections now: how many were taken, are open and are busy.
    pub fn connections(&self) -> crate::connections::Counts {
        self.connections.counts()
    }

    /// The address of `server.health_listen`, when set.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    /// The address of `server.admin_listen`, when set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// See [`Reloader::reload`].
    pub fn reload(&self, settings: &Settings) -> anyhow::Result<crate::config::Changes> {
        self.reloader.reload(settings)
    }

    /// What reloads this server's configuration, for a task of its own (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
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

/// Swaps the live configuration of a running server.
#[derive(Clone)]
pub struct Reloader {
    /// The configuration's run-time part.
    live: crate::live::Shared,
    /// What a reload may not change, as it was at start.
    fixed: Vec<(&'static str, String)>,
    /// What a reload does not change until a restart, as it was at start.
    at_restart: String,
    wake: Arc<tokio::sync::Notify>,
    /// The listeners' certificate, when they serve TLS.
    cert: Option<Arc<crate::tls::ServerCert>>,
    /// The apps, bots and actions as last loaded (names and hashes), to say what a reload
    /// changed.
    parts: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
}

impl Reloader {
    /// Swaps in a new configuration's apps, bots, actions and limits at once: requests
    /// from now on use it whole, requests in flight finish with the old one. The
    /// listeners' certificate and key are read again and swapped in (a renewed
    /// certificate needs no restart). A change of a listener, of TLS on or off, or of the
    /// store is refused (the old configuration stays) with the key that changed; other
    /// `[server]` and `[workers]` values take effect at the next restart, and the log
    /// says so.
    pub fn reload(&self, settings: &Settings) -> anyhow::Result<crate::config::Changes> {
        // A file caught half-written can still parse (cut at a table's end): one without
        // apps or bots would refuse every request, so it is taken for a mistake.
        if settings.apps.is_empty() || settings.bots.is_empty() {
            anyhow::bail!(
                "the file has no [[apps]] or no [[bots]]: every request would be refused (a file caught while being written? write it elsewhere and mv it into place)"
            );
        }
        let fixed = fixed_part(settings);
        if let Some(((key, _), _)) = fixed
            .iter()
            .zip(&self.fixed)
            .find(|((_, new), (_, old))| new != old)
        {
            anyhow::bail!("{key} changed; a restart is needed for it (nothing was reloaded)");
        }
        let live = crate::live::Live::new(settings)?;
        self.live.store(Arc::new(live));
        crate::telemetry::register_series(settings);
        if let (Some(slot), Some(cert)) = (&self.cert, &settings.server.tls) {
            slot.replace(cert.clone());
        }
        // The workers pick the new actions up at their next claim: now.
        self.wake.notify_one();
        if restart_part(settings) != self.at_restart {
            tracing::warn!(
                "[server] or [workers] values changed; those take effect at the next restart"
            );
        }
        let changes = match self.parts.lock() {
            Ok(mut last) => {
                let changes = crate::config::Changes::between(&last, &settings.parts);
                *last = settings.parts.clone();
                changes
            }
            Err(_) => crate::config::Changes::default(),
        };
        Ok(changes)
    }
}

/// Binds an optional listener; a failure names its key.
async fn bind_optional(key: &str, at: Option<SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    let Some(at) = at else { return Ok(None) };
    TcpListener::bind(at)
        .await
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{key}: cannot bind {at}: {e}"))
}

/// The keys a reload may not change, with their values.
fn fixed_part(settings: &Settings) -> Vec<(&'static str, String)> {
    let s = &settings.server;
    vec![
        ("server.listen", s.listen.to_string()),
        ("server.health_listen", format!("{:?}", s.health_listen)),
        ("server.admin_listen", format!("{:?}", s.admin_listen)),
        (
            "server.tls_cert (TLS on or off)",
            s.tls.is_some().to_string(),
        ),
        ("store", format!("{:?}", settings.store)),
    ]
}

/// The values a reload keeps until the next restart.
fn restart_part(settings: &Settings) -> String {
    let s = &settings.server;
    format!(
        "{:?}",
        (
            s.max_body_bytes,
            s.header_read_timeout,
            s.body_read_timeout,
            (s.request_timeout, s.write_timeout),
            (
                s.max_connections,
                s.max_connections_per_address,
                &s.trusted_proxies,
            ),
            s.shutdown_grace,
            s.access_log,
            &settings.workers.concurrency,
            &settings.workers.poll_interval,
            &settings.workers.per_destination,
            &settings.workers.shutdown_grace,
            &settings.workers.lease_margin,
        )
    )
}

async fn serve(
    listener: TcpListener,
    (tls, open): (Option<tokio_rustls::TlsAcceptor>, Arc<Connections>),
    state: Arc<AppState>,
    store: Arc<dyn Store>,
    workers: Workers,
    sweeper: tokio::task::JoinHandle<()>,
    cancel: CancellationToken,
) {
    let router = api::router(state.clone());
    let server = &state.server;
    // Bounds open connections (and so memory and file descriptors); past it a client
    // gets an immediate 503 instead of waiting in the kernel's backlog, once no idle
    // connection is left to close for it.
    let connections = Arc::new(Semaphore::new(server.max_connections));
    // Connections being refused (each answered once, within the header timeout), and new
    // ones waiting for an idle one to close, are bounded too: half the limit, at least 128.
    let shed = Arc::new(Semaphore::new((server.max_connections / 2).max(128)));
    // Cancelled at shutdown: every connection finishes its request and closes.
    let closing = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    let serving = Serving {
        router: router.clone(),
        tls: tls.clone(),
        header_read_timeout: server.header_read_timeout,
        admin_elsewhere: server.admin_listen.is_some(),
        access_log: server.access_log,
        trusted: Arc::new(server.trusted_proxies.clone()),
        write_timeout: server.write_timeout,
    };
    let refuse_with = |stream, why| {
        refuse(
            &shed,
            &router,
            &tls,
            stream,
            server.header_read_timeout,
            why,
        )
    };
    loop {
        let (stream, peer) = tokio::select! {
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
        let limited = !serving.trusted_peer(peer.ip());
        // `close`: the server stops (the request in progress finishes); `kill`: the
        // connection is idle and closed outright to make room for another.
        let (close, kill) = (closing.child_token(), CancellationToken::new());
        let held = match open.open(AddressKey::of(peer.ip()), limited, kill.clone()) {
            Ok(held) => held,
            Err(Refused::PerAddress) => {
                let why = ("per_address", too_many_from_address as fn() -> _);
                refuse_with(stream, why);
                continue;
            }
        };
        let permit = match connections.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) if open.close_longest_idle() => {
                // An idle connection was asked to close; it gives its place back as soon
                // as it has. The wait is bounded in time and, with the refusals, in number.
                let Ok(waiting) = shed.clone().try_acquire_owned() else {
                    drop_overloaded(stream, &tls);
                    continue;
                };
                let (connections, serving) = (connections.clone(), serving.clone());
                tasks.spawn(async move {
                    let permit = tokio::time::timeout(
                        std::time::Duration::from_secs(1),
                        connections.acquire_owned(),
                    )
                    .await;
                    drop(waiting);
                    if let Ok(Ok(permit)) = permit {
                        serving.serve(stream, peer, held, (close, kill)).await;
                        drop(permit);
                    } else {
                        metrics::counter!("wrapup_connections_refused_total", "reason" => "full")
                            .increment(1);
                        let _ = stream.try_write(OVERLOADED_RAW);
                    }
                });
                continue;
            }
            Err(_) => {
                drop(held);
                let why = ("full", overloaded as fn() -> _);
                refuse_with(stream, why);
                continue;
            }
        };
        let serving = serving.clone();
        tasks.spawn(async move {
            serving.serve(stream, peer, held, (close, kill)).await;
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: answering in-flight requests");
    closing.cancel();
    tasks.close();
    if tokio::time::timeout(server.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
    let _ = sweeper.await;
    tracing::info!("stopping workers: letting running attempts finish");
    workers.shutdown().await;
    state.traffic.flush(&*store).await;
    store.close().await;
    tracing::info!("stopped");
}

/// What serving one connection of the main listener needs.
#[derive(Clone)]
struct Serving {
    router: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    header_read_timeout: std::time::Duration,
    admin_elsewhere: bool,
    /// `server.access_log`, for the answers given here (a path another listener serves).
    access_log: bool,
    trusted: Arc<Vec<ipnet::IpNet>>,
    write_timeout: std::time::Duration,
}

impl Serving {
    fn trusted_peer(&self, ip: std::net::IpAddr) -> bool {
        self.trusted
            .iter()
            .any(|net| net.contains(&ip.to_canonical()))
    }

    /// Serves one admitted connection until it ends, the server stops (`close`: its
    /// request in progress finishes first) or it is closed outright to make room (`kill`:
    /// chosen while no request was in progress; a socket that has sent half a header is
    /// closed at once too, not left until `header_read_timeout`).
    async fn serve(
        self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        held: Held,
        (close, kill): (CancellationToken, CancellationToken),
    ) {
        let (router, trusted, elsewhere) = (self.router, self.trusted, self.admin_elsewhere);
        let access_log = self.access_log;
        held.serving();
        let held = Arc::new(held);
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            // Busy until the answer's body is sent: an idle connection is one between requests.
            let busy = held.request();
            mark_client(&mut req, peer, &trusted);
            let elsewhere = elsewhere && operator_path(req.uri().path());
            let router = router.clone();
            async move {
                let response = if elsewhere {
                    not_here(req.method(), "no such endpoint", access_log)
                } else {
                    match router.oneshot(req).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                };
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                        let _ = &busy;
                        frame
                    }))
                }))
            }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout);
        // A client that takes no byte of its answer for `write_timeout` is cut off, and
        // the answer it held in memory freed (a 4 MiB page per stalled reader otherwise).
        let mut timed = tokio_io_timeout::TimeoutStream::new(stream);
        timed.set_write_timeout(Some(self.write_timeout));
        let stream = Box::pin(timed);
        match self.tls {
            None => {
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                until_closed(connection, close, kill).await
            }
            Some(tls) => {
                if let Some(stream) = handshake_within(&tls, stream, self.header_read_timeout).await
                {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    until_closed(connection, close, kill).await;
                }
            }
        }
    }
}

/// Drives a connection; when `close` is cancelled, lets its request in progress finish
/// (an idle one closes at once) and closes it.
async fn until_closed<I, S>(
    connection: http1::Connection<I, S>,
    close: CancellationToken,
    kill: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = kill.cancelled() => return,
        _ = close.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// A connection that is not taken gets one answer (`answer`) and is closed; health checks
/// are still answered, so an orchestrator does not restart a server that is only busy.
/// Past the bound on refusals, the socket gets the 503 without being read.
fn refuse(
    shed: &Arc<Semaphore>,
    router: &axum::Router,
    tls: &Option<tokio_rustls::TlsAcceptor>,
    stream: tokio::net::TcpStream,
    handshake: std::time::Duration,
    (reason, answer): (&'static str, fn() -> Response<Body>),
) {
    metrics::counter!("wrapup_connections_refused_total", "reason" => reason).increment(1);
    let Ok(shed_permit) = shed.clone().try_acquire_owned() else {
        drop_overloaded(stream, tls);
        return;
    };
    let router = router.clone();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(handshake)
        .keep_alive(false);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let router = router.clone();
        async move {
            let health = req.method() == hyper::Method::GET
                && matches!(req.uri().path(), "/healthz" | "/readyz");
            if health {
                router.oneshot(req).await
            } else {
                Ok(answer())
            }
        }
    });
    let tls = tls.clone();
    tokio::spawn(async move {
        serve_one(builder, stream, service, tls, handshake).await;
        drop(shed_permit);
    });
}

/// Serves one connection until it ends: over TLS when the listener has it (the handshake
/// bounded by `within`, like reading a request's header), plain otherwise.
async fn serve_one<S>(
    builder: http1::Builder,
    stream: tokio::net::TcpStream,
    service: S,
    tls: Option<tokio_rustls::TlsAcceptor>,
    within: std::time::Duration,
) where
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match tls {
        None => {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
        Some(tls) => {
            if let Some(s) = handshake_within(&tls, stream, within).await {
                let _ = builder.serve_connection(TokioIo::new(s), service).await;
            }
        }
    }
}

/// Even the shedding is bounded: past it the socket gets the 503 without being read (one
/// non-blocking write, no task) and is closed; a TLS client cannot read plain bytes, so
/// its socket is just closed.
fn drop_overloaded(stream: tokio::net::TcpStream, tls: &Option<tokio_rustls::TlsAcceptor>) {
    metrics::counter!("wrapup_connections_dropped_total").increment(1);
    if tls.is_none() {
        let _ = stream.try_write(OVERLOADED_RAW);
    }
}

/// Tells the handlers who the client is: the connection's peer (`ConnectInfo`) and the
/// client's address (`ClientAddress`: what a trusted proxy forwarded for, else the peer).
fn mark_client(req: &mut hyper::Request<Incoming>, peer: SocketAddr, trusted: &[ipnet::IpNet]) {
    let client = client_address(peer.ip(), req.headers().get_all("x-forwarded-for"), trusted);
    req.extensions_mut().insert(ClientAddress(client));
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
}

/// The TLS handshake, bounded like reading a request's header.
async fn handshake_within<S>(
    tls: &tokio_rustls::TlsAcceptor,
    stream: S,
    within: std::time::Duration,
) -> Option<tokio_rustls::server::TlsStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(within, tls.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// The paths an operator uses, which `server.admin_listen` takes off the public port.
fn operator_path(path: &str) -> bool {
    path == "/metrics"
        || path == "/console"
        || path.starts_with("/console/")
        || path == "/admin"
        || path.starts_with("/admin/")
}

/// A path this listener does not serve: the API's 404, counted and logged as every
/// answer is (`api::account`), so probing for the operator's routes shows.
fn not_here(method: &hyper::Method, why: &'static str, access_log: bool) -> Response<Body> {
    use axum::response::IntoResponse;
    let started = std::time::Instant::now();
    let id = format!("{:032x}", fastrand::u128(..));
    let mut response = api::error::ApiError::NotFound(why.into()).into_response();
    if let Ok(v) = header::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    api::account(
        api::Answered {
            method,
            route: "elsewhere",
            status: 404,
            elapsed: started.elapsed(),
            app: "",
            bot: "",
            request_id: &id,
        },
        access_log,
    );
    response
}

/// A listener of its own for some routes (the health checks, or the operator's), with
/// its own bounded connections, so a flood on the main listener cannot starve it.
struct Side {
    router: axum::Router,
    serves: fn(&str) -> bool,
    /// What a path it does not serve is told (a 404's message).
    refusal: &'static str,
    access_log: bool,
    connections: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
    header_read_timeout: std::time::Duration,
    trusted: Arc<Vec<ipnet::IpNet>>,
}

async fn serve_side(side: Side, listener: TcpListener, cancel: CancellationToken) {
    let connections = Arc::new(Semaphore::new(side.connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            continue;
        };
        let (router, serves, refusal) = (side.router.clone(), side.serves, side.refusal);
        let access_log = side.access_log;
        let trusted = side.trusted.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            mark_client(&mut req, peer, &trusted);
            let router = router.clone();
            async move {
                if serves(req.uri().path()) {
                    router.oneshot(req).await
                } else {
                    Ok(not_here(req.method(), refusal, access_log))
                }
            }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(side.header_read_timeout);
        let (tls, within) = (side.tls.clone(), side.header_read_timeout);
        tokio::spawn(async move {
            serve_one(builder, stream, service, tls, within).await;
            drop(permit);
        });
    }
}

const OVERLOADED_BODY: &str = r#"{"code":503,"message":"too many connections; retry shortly"}"#;

/// The same answer as [`overloaded`], as bytes for a socket that is not read.
const OVERLOADED_RAW: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 60\r\n\r\n{\"code\":503,\"message\":\"too many connections; retry shortly\"}";

fn too_many_from_address() -> Response<Body> {
    let mut response = overloaded();
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    *response.body_mut() = Body::from(
        r#"{"code":429,"message":"too many connections from this address (server.max_connections_per_address); retry shortly"}"#,
    );
    response
}

fn overloaded() -> Response<Body> {
    let mut response = Response::new(Body::from(OVERLOADED_BODY));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_overload_answer_is_the_same_response_with_the_right_length() {
        let raw = std::str::from_utf8(OVERLOADED_RAW).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, OVERLOADED_BODY);
        assert!(
            head.lines()
                .any(|l| l == format!("content-length: {}", body.len()))
        );
        let typed = overloaded();
        assert_eq!(typed.status(), StatusCode::SERVICE_UNAVAILABLE);
        for (name, value) in typed.headers() {
            let line = format!("{name}: {}", value.to_str().unwrap());
            assert!(head.contains(&line), "{line} missing from the raw answer");
        }
    }
}
