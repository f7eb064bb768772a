//! `TestApp`: a wrapup server in this process on 127.0.0.1:0 with a fresh database.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use tempfile::TempDir;
use wrapup::App;
use wrapup::clock::ManualClock;
use wrapup::config;

pub const BOT: &str = "st-56fbfece-0293-55a3-9154-7e3e19xxxxxx";
pub const OTHER_BOT: &str = "st-00000000-0000-0000-0000-000000000002";

pub const HS256_APP: &str = "cs-6363fcbb-310e-5b07-91a9-c614cd3cbf6e";
pub const HS256_SECRET: &str = "test-secret-hs256-0123456789abcdef";
pub const HS512_APP: &str = "cs-test-hs512";
pub const HS512_SECRET: &str = "test-secret-hs512-0123456789abcdef";
pub const RS256_APP: &str = "cs-test-rs256";
pub const JTI_APP: &str = "cs-test-jti";
pub const JTI_SECRET: &str = "test-secret-jti-0123456789abcdef";
pub const OTHER_APP: &str = "cs-test-other";
pub const OTHER_SECRET: &str = "test-secret-other-0123456789abcdef";

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub const ADMIN_TOKEN_ENV: &str = "WRAPUP_TEST_ADMIN_TOKEN";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The `api_key_env` of the `openai` summary tests, and the key it holds.
pub const OPENAI_KEY_ENV: &str = "WRAPUP_TEST_OPENAI_KEY";
pub const OPENAI_KEY: &str = "sk-test-0123456789";

/// The test configuration, with `extra_server` lines added to `[server]`.
pub fn config_text(db: &Path, extra_server: &str) -> String {
    config_with_actions(db, extra_server, "")
}

/// The test configuration; `tail` is appended after the demo bot's `[[bots]]` table, so
/// `[[bots.on_end]]` entries there belong to BOT (and `[workers]` may follow them).
pub fn config_with_actions(db: &Path, extra_server: &str, tail: &str) -> String {
    config_for_store(
        &format!("url = \"sqlite://{}\"", db.display()),
        extra_server,
        tail,
    )
}

/// The test configuration with `store` as the body of its `[store]` table.
pub fn config_for_store(store: &str, extra_server: &str, tail: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{extra_server}

[store]
{store}

[[apps]]
client_id = "{HS256_APP}"
client_secret = "{HS256_SECRET}"

[[apps]]
client_id = "{HS512_APP}"
client_secret = "{HS512_SECRET}"
algorithms = ["HS512"]

[[apps]]
client_id = "{RS256_APP}"
public_key_file = "test-only-rs256-public.pem"
algorithms = ["RS256"]

[[apps]]
client_id = "{JTI_APP}"
client_secret = "{JTI_SECRET}"
enforce_jti = true

[[apps]]
client_id = "{OTHER_APP}"
client_secret = "{OTHER_SECRET}"

[admin]
token_env = "{ADMIN_TOKEN_ENV}"

[[bots]]
id = "{OTHER_BOT}"
apps = ["{OTHER_APP}"]

[[bots]]
id = "{BOT}"
apps = ["{HS256_APP}", "{HS512_APP}", "{RS256_APP}", "{JTI_APP}"]
{tail}
"#
    )
}

/// Writes a configuration file (and the RS256 test key it names) into `dir`; returns its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let config = dir.join("wrapup.toml");
    std::fs::write(&config, text).expect("write config");
    std::fs::copy(
        fixtures().join("test-only-rs256-public.pem"),
        dir.join("test-only-rs256-public.pem"),
    )
    .expect("copy test key");
    config
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// Held so the database directory lives as long as the server.
    _dir: TempDir,
    app: Option<App>,
    /// The configuration the server runs with (again after a restart).
    config: String,
    /// The server's clock: real time, which a test may move forward ([`TestApp::advance`]).
    pub clock: Arc<ManualClock>,
}

impl TestApp {
    /// A server with the test configuration and a fresh database.
    pub async fn spawn() -> TestApp {
        Self::build().spawn().await
    }

    /// A server built step by step: [`Build::server`], [`Build::actions`], [`Build::dir`],
    /// [`Build::config`], then [`Build::spawn`].
    pub fn build() -> Build {
        Build::default()
    }

    /// Stops the server and starts it again on the same database and clock with the demo
    /// bot's `tail` changed (its actions, say), as an operator's restart after an edit.
    pub async fn reconfigure(&mut self, tail: &str) {
        self.config = config_with_actions(&self._dir.path().join("wrapup.db"), "", tail);
        self.restart().await;
    }

    /// Moves the server's clock forward: timeouts, leases, retry delays and retention
    /// periods pass at once, and the workers and the sweeper look again at once.
    pub fn advance(&self, by: std::time::Duration) {
        self.clock.advance(by);
    }

    /// The main listener's connections now.
    pub fn connections(&self) -> wrapup::connections::Counts {
        self.app
            .as_ref()
            .map(|a| a.connections())
            .unwrap_or_default()
    }

    /// Waits (bounded) until the main listener's connections satisfy `check`: the server
    /// has taken, closed or started answering the connections a test opened.
    pub async fn connections_until(
        &self,
        what: &str,
        check: impl Fn(wrapup::connections::Counts) -> bool,
    ) -> wrapup::connections::Counts {
        eventually(what, || async {
            let now = self.connections();
            check(now).then_some(now)
        })
        .await
    }

    /// The base URL of `server.health_listen`, when the test configured one.
    pub fn health_base(&self) -> Option<String> {
        self.app
            .as_ref()?
            .health_addr()
            .map(|a| format!("http://{a}"))
    }

    /// Stops the server gracefully and starts a new one on the same database.
    pub async fn restart(&mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        let app = start(&self.config, self.clock.clone()).await;
        self.base = format!("http://{}", app.local_addr());
        self.app = Some(app);
    }

    /// Starts the server's graceful shutdown without waiting for it (see [`App::stop`]).
    pub fn begin_shutdown(&self) {
        if let Some(app) = &self.app {
            app.shutdown_token().cancel();
        }
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }

    /// POSTs `body` to `path` with the token in header `header` (`auth`, `token` or `bearer`).
    pub async fn post(
        &self,
        path: &str,
        header: &str,
        token: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        let req = self.client.post(format!("{}{path}", self.base)).json(body);
        let req = match header {
            "bearer" => req.bearer_auth(token),
            "" => req,
            name => req.header(name, token),
        };
        into_json(req.send().await.expect("request")).await
    }

    /// POSTs `body` to the seed's path for BOT with a valid token.
    pub async fn hook(&self, body: &Value) -> (StatusCode, Value) {
        self.post(
            &format!("/agentai/api/v1/hooks/{BOT}"),
            "token",
            &token(),
            body,
        )
        .await
    }

    /// POSTs raw bytes as `application/json` to the seed's path for BOT with a valid token.
    pub async fn hook_raw(&self, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(format!("{}/agentai/api/v1/hooks/{BOT}", self.base))
            .header("token", token())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        into_json(resp).await
    }

    pub async fn end(&self, conversation: &str) -> (StatusCode, Value) {
        self.hook(&seed_with(conversation)).await
    }

    pub async fn conversation(&self, conversation: &str) -> (StatusCode, Value) {
        let url = format!(
            "{}/api/v1/bots/{BOT}/conversations/{conversation}",
            self.base
        );
        into_json(
            self.client
                .get(url)
                .header("auth", token())
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    /// An admin API call.
    pub async fn admin(&self, method: reqwest::Method, path: &str) -> (StatusCode, Value) {
        let resp = self
            .client
            .request(method, format!("{}/admin/v1{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request");
        into_json(resp).await
    }

    /// The jobs of one conversation, oldest first.
    pub async fn jobs_of(&self, conversation: &str) -> Vec<Value> {
        let (status, body) = self
            .admin(
                reqwest::Method::GET,
                &format!("/jobs?conversation={conversation}&limit=1000"),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let mut jobs = body["jobs"].as_array().cloned().unwrap_or_default();
        jobs.reverse();
        jobs
    }

    /// Waits (bounded) until every job of `conversation` is succeeded or dead.
    pub async fn settled_jobs(&self, conversation: &str, expected: usize) -> Vec<Value> {
        eventually("the jobs settle", || async {
            let jobs = self.jobs_of(conversation).await;
            let settled = jobs.len() == expected
                && jobs
                    .iter()
                    .all(|j| j["state"] == "succeeded" || j["state"] == "dead");
            settled.then_some(jobs)
        })
        .await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request")
    }
}

/// What a test server runs with (see [`TestApp::build`]).
#[derive(Default)]
pub struct Build {
    dir: Option<TempDir>,
    server: String,
    tail: String,
    config: Option<String>,
}

impl Build {
    /// Lines added to the `[server]` table.
    pub fn server(mut self, lines: &str) -> Self {
        self.server = lines.to_owned();
        self
    }

    /// The demo bot's `[[bots.on_end]]` entries (and any tables after them).
    pub fn actions(mut self, tail: &str) -> Self {
        self.tail = tail.to_owned();
        self
    }

    /// The folder that holds the database (a fresh one by default).
    pub fn dir(mut self, dir: TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// The whole configuration, instead of the test one with `server` and `actions`.
    pub fn config(mut self, text: &str) -> Self {
        self.config = Some(text.to_owned());
        self
    }

    pub async fn spawn(self) -> TestApp {
        let dir = self
            .dir
            .unwrap_or_else(|| tempfile::tempdir().expect("tempdir"));
        let config = self.config.unwrap_or_else(|| {
            config_with_actions(&dir.path().join("wrapup.db"), &self.server, &self.tail)
        });
        let clock = Arc::new(ManualClock::default());
        let app = start(&config, clock.clone()).await;
        TestApp {
            base: format!("http://{}", app.local_addr()),
            client: client(),
            _dir: dir,
            app: Some(app),
            config,
            clock,
        }
    }
}

/// Every item of a paged list: `path` (with its query, `limit` included) on `base`, read
/// with `auth` (`admin` or a hooks token), `field` of each page, following `nextCursor`.
/// Returns the items and the number of pages.
pub async fn pages(base: &str, path: &str, auth: Auth<'_>, field: &str) -> (Vec<Value>, usize) {
    let client = client();
    let (mut all, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let mut url = format!("{base}{path}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let req = match auth {
            Auth::Admin => client.get(url).bearer_auth(ADMIN_TOKEN),
            Auth::Token(t) => client.get(url).header("auth", t),
        };
        let (status, page) = into_json(req.send().await.expect("request")).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        all.extend(page[field].as_array().cloned().unwrap_or_default());
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return (all, pages),
        }
    }
}

/// How a test reads a list: the admin token or a hooks token.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    Admin,
    Token(&'a str),
}

/// Asserts that every conversation in `acknowledged` (ends answered 200) is stored and
/// ended at `base`: the check after a kill, a crash or an outage.
pub async fn assert_ended(base: &str, acknowledged: &[String]) {
    let (client, token) = (client(), token());
    for c in acknowledged {
        let resp = client
            .get(format!("{base}/api/v1/bots/{BOT}/conversations/{c}"))
            .header("auth", &token)
            .send()
            .await
            .expect("request");
        let (status, r) = into_json(resp).await;
        assert_eq!(
            (status.as_u16(), r["status"].as_str()),
            (200, Some("ended")),
            "{c} was acknowledged but is missing"
        );
    }
}

/// The PostgreSQL the tests use: `DATABASE_URL`, else the machine's.
pub fn pg_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A `[store]` body on PostgreSQL in a schema of its own (`<prefix>_<uuid>`), and the schema.
pub fn pg_store(prefix: &str, pool_size: u32) -> (String, String) {
    let schema = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let body = format!(
        "url = \"{}\"\nschema = \"{schema}\"\npool_size = {pool_size}",
        pg_url()
    );
    (body, schema)
}

/// The webhook signing secret the tests configure (Standard Webhooks' `whsec_` form).
pub fn whsec() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(b"test-webhook-key-0123456789abcdef")
    )
}

/// An RFC 3339 time in an answer, as Unix milliseconds.
pub fn millis(v: &Value) -> i64 {
    let t = time::OffsetDateTime::parse(
        v.as_str().unwrap_or_default(),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// An HTTP client for tests (the TLS provider installed first, as the binary does).
pub fn client() -> reqwest::Client {
    wrapup::install_tls_provider();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn start(config: &str, clock: Arc<ManualClock>) -> App {
    let file = config::parse(config).expect("test config parses");
    let settings = config::validate(&file, &fixtures(), |k| match k {
        ADMIN_TOKEN_ENV => Some(ADMIN_TOKEN.to_owned()),
        OPENAI_KEY_ENV => Some(OPENAI_KEY.to_owned()),
        _ => None,
    })
    .expect("test config is valid");
    App::build_with_clock(settings, clock)
        .await
        .expect("server starts")
}

pub async fn into_json(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// The seed document's sample body, verbatim.
pub fn seed() -> Value {
    serde_json::from_str(SEED_BODY).expect("seed is JSON")
}

pub const SEED_BODY: &str = r#"{
    "botId": "st-56fbfece-0293-55a3-9154-7e3e19xxxxxx",
    "conversationId": "atesta-mlxxxxxx",
    "events": [{
        "name": "END_OF_CONVERSATION",
        "reason": "agent_initiated",
        "language": "en",
        "experience": "voice",
        "participant": {
            "identity": "agent1",
            "name": "Agent AI",
            "type": "agent",
            "customFields": {
                "agentEmail": "qqqqqq",
                "queueId": "1694",
                "queueName": "queue11"
            }
        }
    }]
}"#;

pub fn seed_with(conversation: &str) -> Value {
    let mut body = seed();
    body["conversationId"] = json!(conversation);
    body
}

pub fn event_body(conversation: &str, events: Value) -> Value {
    json!({"botId": BOT, "conversationId": conversation, "events": events})
}

pub fn transfer(transfer_type: &str, transition: &str, agent: &str) -> Value {
    json!({
        "name": "INTERNAL_TRANSFER_EVENT", "transfertype": transfer_type, "transition": transition,
        "isExtAD": "false", "language": "en", "experience": "voice",
        "participant": {"identity": agent, "name": agent, "type": "agent", "customFields": {"queueId": "1"}}
    })
}

pub fn summary() -> Value {
    json!({"name": "TRIGGER_SUMMARY_EVENT", "data": {"language": "English", "locale": "en", "type": "post"}})
}

/// A token for the HS256 demo app with the documented payload.
pub fn token() -> String {
    sign(
        Algorithm::HS256,
        HS256_SECRET,
        json!({"sub": "1234567890", "appId": HS256_APP}),
    )
}

pub fn sign(alg: Algorithm, secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

pub fn sign_rs256(claims: Value) -> String {
    let pem = std::fs::read(fixtures().join("test-only-rs256-private.pem")).expect("key");
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&pem).expect("pem"),
    )
    .expect("sign")
}

/// An HS256 JWT built by hand from RFC 7519 (HMAC-SHA256 over base64url parts),
/// independent of the JWT library wrapup uses.
pub fn handmade_hs256(secret: &str, header: &Value, claims: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

/// Polls `check` until it gives a value, for at most 30 s (then fails, naming `what`).
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(std::time::Duration::from_secs(30), what, check).await
}

/// Polls `check` until it gives a value, for at most `limit`. The one place the tests wait
/// for something that happens in the background (a server in another process, whose clock
/// a test cannot move, may need longer than 30 s: a killed worker's lease).
pub async fn eventually_within<T, F, Fut>(limit: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Waits (bounded: 10 s, then fails naming `what`) until something listens on
/// 127.0.0.1:`port`: a program started by a test (chromedriver, a TLS proxy).
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} listens on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A JetStream stream of its own for one test (`WRAPUP_TEST_<run>`), capturing
/// `<prefix>.<run>.>`; returns the stream, the context and `run`.
pub async fn test_stream(
    prefix: &str,
) -> (
    async_nats::jetstream::stream::Stream,
    async_nats::jetstream::Context,
    String,
) {
    let client = async_nats::connect("127.0.0.1:4222")
        .await
        .expect("NATS runs on 127.0.0.1:4222");
    let js = async_nats::jetstream::new(client);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: format!("WRAPUP_TEST_{run}"),
            subjects: vec![format!("{prefix}.{run}.>")],
            max_age: std::time::Duration::from_secs(600),
            ..Default::default()
        })
        .await
        .expect("JetStream is enabled");
    (stream, js, run)
}

/// What a stream holds (up to 10 messages), oldest first.
pub async fn stream_messages(
    stream: &async_nats::jetstream::stream::Stream,
) -> Vec<async_nats::jetstream::Message> {
    use futures::StreamExt;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(10)
        .expires(std::time::Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    let mut messages = Vec::new();
    while let Some(m) = batch.next().await {
        messages.push(m.unwrap());
    }
    messages
}

/// Every table of a PostgreSQL schema, each as the text of all its rows: what a scan for
/// data that must not be stored reads.
pub async fn pg_tables_as_text(pool: &sqlx::PgPool, schema: &str) -> Vec<(String, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(tables.len() >= 5, "{tables:?}");
    let mut out = Vec::new();
    for table in tables {
        let rows: Option<String> = sqlx::query_scalar(&format!(
            "SELECT string_agg(t::text, '') FROM {schema}.{table} t"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        out.push((table, rows.unwrap_or_default()));
    }
    out
}

/// A TCP relay to PostgreSQL that can stop passing bytes while keeping its connections
/// open: a store that hangs (a full disk, a stuck failover), not one that refuses.
pub struct Relay {
    pub port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    pub async fn start(to: &str) -> Relay {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (to, flag) = (to.to_owned(), frozen.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(&to).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                for (mut from, mut into) in [
                    (
                        Box::new(ri) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(wo) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                    ),
                    (Box::new(ro), Box::new(wi)),
                ] {
                    let flag = flag.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf).await {
                            while flag.load(Ordering::SeqCst) {
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            }
                            if n == 0 || into.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        Relay { port, frozen }
    }

    pub fn freeze(&self, frozen: bool) {
        self.frozen
            .store(frozen, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Every table of a SQLite database, each as the text of all its rows (read while the
/// server runs: WAL lets a reader in).
pub fn sqlite_tables_as_text(path: &Path) -> Vec<(String, String)> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(tables.len() >= 5, "{tables:?}");
    tables
        .into_iter()
        .map(|table| {
            let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
            let columns = stmt.column_count();
            let mut text = String::new();
            let mut rows = stmt.query([]).unwrap();
            while let Some(row) = rows.next().unwrap() {
                for i in 0..columns {
                    match row.get_ref(i).unwrap() {
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                            text.push_str(&String::from_utf8_lossy(t))
                        }
                        other => text.push_str(&format!("{other:?}")),
                    }
                    text.push('|');
                }
            }
            (table, text)
        })
        .collect()
}

/// The server's `/metrics` at `base`, as text.
pub async fn metrics_text(base: &str) -> String {
    client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
