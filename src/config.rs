//! Configuration: a TOML file (names from DESIGN.md), a few `WRAPUP_*` environment
//! overrides, and validation into typed [`Settings`] at start-up.
//!
//! Every problem is reported as one line naming the key, e.g.
//! `bots[0].apps[1]: no app with client_id "cs-x"`, so an operator can fix the file
//! without reading code. Secrets are resolved (env, PEM files) here too, so a server
//! that started has every key it needs.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::domain::caps::Caps;
use crate::domain::retry::RetryPolicy;

/// A configuration problem, rendered as `key: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn cerr(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// The file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub store: StoreFile,
    #[serde(default)]
    pub apps: Vec<AppFile>,
    #[serde(default)]
    pub bots: Vec<BotFile>,
    #[serde(default)]
    pub workers: WorkersFile,
    #[serde(default)]
    pub admin: AdminFile,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersFile {
    /// Attempts running at once in this process.
    pub concurrency: usize,
    /// How often to look for due jobs when nothing wakes the workers (retries, other instances).
    pub poll_interval: String,
    /// How much longer than an attempt's timeout a claimed job stays leased.
    pub lease_margin: String,
    /// On shutdown, how long running attempts may take to finish.
    pub shutdown_grace: String,
}

impl Default for WorkersFile {
    fn default() -> Self {
        Self {
            concurrency: 64,
            poll_interval: "1s".into(),
            lease_margin: "30s".into(),
            shutdown_grace: "30s".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// The environment variable holding the admin bearer token; unset: admin API off.
    pub token_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerFile {
    pub listen: String,
    pub max_body_bytes: usize,
    pub max_events_per_request: usize,
    pub header_read_timeout: String,
    pub body_read_timeout: String,
    pub request_timeout: String,
    pub max_connections: usize,
    pub shutdown_grace: String,
    /// A second address that answers only `/healthz`, `/readyz` and `/metrics`, with its
    /// own connections, so probes are answered even when `listen` is flooded.
    pub health_listen: Option<String>,
}

impl Default for ServerFile {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 1024 * 1024,
            max_events_per_request: 100,
            header_read_timeout: "10s".into(),
            body_read_timeout: "30s".into(),
            request_timeout: "30s".into(),
            max_connections: 4096,
            shutdown_grace: "30s".into(),
            health_listen: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreFile {
    pub url: String,
    /// Requests waiting for the writer beyond this are refused with 503.
    pub queue_capacity: usize,
    /// The most requests committed in one transaction.
    pub max_batch: usize,
    /// PostgreSQL: connections per instance.
    pub pool_size: u32,
    /// PostgreSQL: how long to wait for a connection (503 after).
    pub connect_timeout: String,
    /// PostgreSQL: the server cancels any statement running longer.
    pub statement_timeout: String,
    /// PostgreSQL: the schema wrapup keeps its tables in (created if missing).
    pub schema: String,
}

impl Default for StoreFile {
    fn default() -> Self {
        Self {
            url: "sqlite://wrapup.db".into(),
            queue_capacity: 16_384,
            max_batch: 1024,
            pool_size: 16,
            connect_timeout: "5s".into(),
            statement_timeout: "10s".into(),
            schema: "public".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppFile {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub client_secret_env: Option<String>,
    pub public_key_file: Option<PathBuf>,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default)]
    pub enforce_jti: bool,
    #[serde(default)]
    pub require_exp: bool,
    pub max_token_age: Option<String>,
    /// Requests per second this app may make (all its bots together); none: no limit.
    pub rate_limit: Option<u32>,
    /// Requests allowed at once above the rate (default: one second's worth).
    pub rate_burst: Option<u32>,
}

fn default_algorithms() -> Vec<String> {
    vec!["HS256".into()]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotFile {
    pub id: String,
    #[serde(default)]
    pub apps: Vec<String>,
    pub inactivity_timeout: Option<String>,
    #[serde(default)]
    pub retention: RetentionFile,
    #[serde(default)]
    pub on_end: Vec<ActionFile>,
    #[serde(default)]
    pub caps: CapsFile,
}

/// `[bots.caps]`: what one conversation may accumulate (see `domain::caps`); each key
/// left out keeps its default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsFile {
    pub agents: Option<u64>,
    pub segments: Option<u64>,
    pub summary_requests: Option<u64>,
    pub events: Option<u64>,
    pub log_bytes: Option<u64>,
    pub custom_fields_keys: Option<u64>,
    pub custom_fields_bytes: Option<u64>,
    pub state_bytes: Option<u64>,
}

/// How long after the end a bot's event logs and transcripts are kept (default: keep).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    pub events: Option<String>,
    pub transcript: Option<String>,
}

/// One `[[bots.on_end]]` entry as written; which keys apply depends on `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionFile {
    pub kind: String,
    pub name: Option<String>,
    pub url: Option<String>,
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    pub subject: Option<String>,
    pub keys: Option<Vec<String>>,
    pub timeout: Option<String>,
    pub retry: Option<RetryFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    pub max_attempts: Option<u32>,
    pub initial_delay: Option<String>,
    pub max_delay: Option<String>,
}

/// Validated configuration, ready to run.
#[derive(Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub apps: Vec<AppSettings>,
    pub bots: Vec<BotSettings>,
    pub workers: WorkerSettings,
    /// The admin bearer token; `None` turns the admin API off.
    pub admin_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub lease_margin: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_events_per_request: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    pub health_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub url: StoreUrl,
    pub queue_capacity: usize,
    pub max_batch: usize,
    pub pool_size: u32,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub schema: String,
}

#[derive(Clone)]
pub struct AppSettings {
    pub client_id: String,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
    pub enforce_jti: bool,
    pub require_exp: bool,
    pub max_token_age: Option<Duration>,
    /// Requests per second, and the burst above it, when the app is rate limited.
    pub rate_limit: Option<RateLimit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: std::num::NonZeroU32,
    pub burst: std::num::NonZeroU32,
}

#[derive(Debug, Clone)]
pub struct BotSettings {
    pub id: String,
    pub apps: Vec<String>,
    pub inactivity_timeout: Option<Duration>,
    pub retention: Retention,
    pub on_end: Vec<ActionSettings>,
    pub caps: Caps,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Whole event logs are removed this long after the end.
    pub events: Option<Duration>,
    /// Messages (the transcript) are removed this long after the end.
    pub transcript: Option<Duration>,
}

/// A post-conversation action, ready to run.
#[derive(Debug, Clone)]
pub struct ActionSettings {
    /// Unique within the bot; jobs refer to their action by it, so reordering the list
    /// never sends a job to another action.
    pub name: String,
    pub kind: ActionKind,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone)]
pub enum ActionKind {
    Webhook {
        url: reqwest::Url,
        /// The decoded key of a `whsec_` secret.
        secret: Vec<u8>,
        headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    },
    Nats {
        url: String,
        subject: String,
    },
    RedisCleanup {
        url: String,
        keys: Vec<String>,
    },
}

impl ActionKind {
    pub fn name(&self) -> &'static str {
        match self {
            ActionKind::Webhook { .. } => "webhook",
            ActionKind::Nats { .. } => "nats",
            ActionKind::RedisCleanup { .. } => "redis_cleanup",
        }
    }
}

/// Reads, overrides from the environment and validates the file at `path`.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        cerr(
            path.display().to_string(),
            format!("cannot read the configuration file: {e}"),
        )
    })?;
    let mut file = parse(&text).map_err(|e| cerr(path.display().to_string(), e.message))?;
    apply_env(&mut file, |k| std::env::var(k).ok());
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    validate(&file, base, |k| std::env::var(k).ok())
}

/// Parses TOML text; the error names the line and the key when TOML says which.
pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str::<FileConfig>(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| {
                text.as_bytes()[..s.start.min(text.len())]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count()
                    + 1
            })
            .map(|l| format!("line {l}: "))
            .unwrap_or_default();
        cerr(
            "config",
            format!("{line}{}", e.message().replace('\n', " ")),
        )
    })
}

/// `WRAPUP_LISTEN` and `WRAPUP_STORE_URL` override the file.
pub fn apply_env(file: &mut FileConfig, env: impl Fn(&str) -> Option<String>) {
    if let Some(v) = env("WRAPUP_LISTEN") {
        file.server.listen = v;
    }
    if let Some(v) = env("WRAPUP_STORE_URL") {
        file.store.url = v;
    }
}

pub fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        cerr(
            key,
            format!("invalid duration \"{value}\" ({e}); write e.g. \"30s\", \"5m\", \"4h\""),
        )
    })
}

/// Turns the file into settings, resolving secrets through `env` and key files
/// relative to `base`.
pub fn validate(
    file: &FileConfig,
    base: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let s = &file.server;
    let listen = s.listen.parse::<SocketAddr>().map_err(|_| {
        cerr(
            "server.listen",
            format!("\"{}\" is not an address like 127.0.0.1:8080", s.listen),
        )
    })?;
    for (key, v) in [
        ("server.max_body_bytes", s.max_body_bytes),
        ("server.max_events_per_request", s.max_events_per_request),
        ("server.max_connections", s.max_connections),
        ("store.queue_capacity", file.store.queue_capacity),
        ("store.max_batch", file.store.max_batch),
    ] {
        if v == 0 {
            return Err(cerr(key, "must be greater than 0"));
        }
    }
    let server = ServerSettings {
        listen,
        max_body_bytes: s.max_body_bytes,
        max_events_per_request: s.max_events_per_request,
        header_read_timeout: positive("server.header_read_timeout", &s.header_read_timeout)?,
        body_read_timeout: positive("server.body_read_timeout", &s.body_read_timeout)?,
        request_timeout: positive("server.request_timeout", &s.request_timeout)?,
        max_connections: s.max_connections,
        shutdown_grace: parse_duration("server.shutdown_grace", &s.shutdown_grace)?,
        health_listen: s
            .health_listen
            .as_ref()
            .map(|a| {
                a.parse::<SocketAddr>().map_err(|_| {
                    cerr(
                        "server.health_listen",
                        format!("\"{a}\" is not an address like 127.0.0.1:8081"),
                    )
                })
            })
            .transpose()?,
    };

    let raw = &file.store.url;
    let url = if let Some(path) = raw.strip_prefix("sqlite://").filter(|p| !p.is_empty()) {
        StoreUrl::Sqlite(PathBuf::from(path))
    } else if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        StoreUrl::Postgres(raw.clone())
    } else {
        return Err(cerr(
            "store.url",
            format!("\"{raw}\" is not supported; use sqlite://PATH or postgres://USER@HOST/DB"),
        ));
    };
    let schema = &file.store.schema;
    let simple = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    if schema.is_empty()
        || !schema.chars().all(simple)
        || schema.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(cerr(
            "store.schema",
            format!("\"{schema}\" must be lowercase letters, digits and _"),
        ));
    }
    if file.store.pool_size == 0 {
        return Err(cerr("store.pool_size", "must be greater than 0"));
    }
    let store = StoreSettings {
        url,
        queue_capacity: file.store.queue_capacity,
        max_batch: file.store.max_batch,
        pool_size: file.store.pool_size,
        connect_timeout: positive("store.connect_timeout", &file.store.connect_timeout)?,
        statement_timeout: positive("store.statement_timeout", &file.store.statement_timeout)?,
        schema: schema.clone(),
    };

    let mut apps = Vec::with_capacity(file.apps.len());
    let mut seen = HashSet::new();
    for (i, app) in file.apps.iter().enumerate() {
        let key = format!("apps[{i}]");
        if app.client_id.trim().is_empty() {
            return Err(cerr(format!("{key}.client_id"), "must not be empty"));
        }
        if !seen.insert(app.client_id.as_str()) {
            return Err(cerr(
                format!("{key}.client_id"),
                format!("\"{}\" is configured twice", app.client_id),
            ));
        }
        apps.push(validate_app(app, &key, base, &env)?);
    }

    let mut bots = Vec::with_capacity(file.bots.len());
    let mut seen = HashSet::new();
    for (i, bot) in file.bots.iter().enumerate() {
        let key = format!("bots[{i}]");
        if bot.id.trim().is_empty() {
            return Err(cerr(format!("{key}.id"), "must not be empty"));
        }
        if !seen.insert(bot.id.as_str()) {
            return Err(cerr(
                format!("{key}.id"),
                format!("\"{}\" is configured twice", bot.id),
            ));
        }
        if bot.apps.is_empty() {
            return Err(cerr(
                format!("{key}.apps"),
                "must name at least one app (client_id) allowed to act for this bot",
            ));
        }
        for (j, client_id) in bot.apps.iter().enumerate() {
            if !file.apps.iter().any(|a| &a.client_id == client_id) {
                return Err(cerr(
                    format!("{key}.apps[{j}]"),
                    format!("no app with client_id \"{client_id}\""),
                ));
            }
        }
        let inactivity_timeout = bot
            .inactivity_timeout
            .as_deref()
            .map(|v| positive(&format!("{key}.inactivity_timeout"), v))
            .transpose()?;
        let mut on_end = Vec::with_capacity(bot.on_end.len());
        for (j, action) in bot.on_end.iter().enumerate() {
            let action = validate_action(action, &format!("{key}.on_end[{j}]"), &on_end, &env)?;
            on_end.push(action);
        }
        let retention = Retention {
            events: bot
                .retention
                .events
                .as_deref()
                .map(|v| positive(&format!("{key}.retention.events"), v))
                .transpose()?,
            transcript: bot
                .retention
                .transcript
                .as_deref()
                .map(|v| positive(&format!("{key}.retention.transcript"), v))
                .transpose()?,
        };
        bots.push(BotSettings {
            id: bot.id.clone(),
            apps: bot.apps.clone(),
            inactivity_timeout,
            retention,
            on_end,
            caps: validate_caps(&bot.caps, &format!("{key}.caps"))?,
        });
    }

    let w = &file.workers;
    if w.concurrency == 0 {
        return Err(cerr("workers.concurrency", "must be greater than 0"));
    }
    let workers = WorkerSettings {
        concurrency: w.concurrency,
        poll_interval: positive("workers.poll_interval", &w.poll_interval)?,
        lease_margin: positive("workers.lease_margin", &w.lease_margin)?,
        shutdown_grace: parse_duration("workers.shutdown_grace", &w.shutdown_grace)?,
    };
    let admin_token = match &file.admin.token_env {
        None => None,
        Some(var) => {
            let token = env(var).ok_or_else(|| {
                cerr(
                    "admin.token_env",
                    format!("environment variable {var} is not set"),
                )
            })?;
            if token.len() < 16 {
                return Err(cerr(
                    "admin.token_env",
                    format!("the token in {var} is shorter than 16 characters"),
                ));
            }
            Some(token)
        }
    };

    Ok(Settings {
        server,
        store,
        apps,
        bots,
        workers,
        admin_token,
    })
}

const ACTION_KINDS: &str = "webhook, nats, redis_cleanup";

fn validate_action(
    a: &ActionFile,
    key: &str,
    earlier: &[ActionSettings],
    env: &impl Fn(&str) -> Option<String>,
) -> Result<ActionSettings, ConfigError> {
    let k = |field: &str| format!("{key}.{field}");
    let required = |field: &str, v: &Option<String>| -> Result<String, ConfigError> {
        v.clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| cerr(k(field), format!("is required for kind \"{}\"", a.kind)))
    };
    // Keys that belong to other kinds are mistakes, not silently ignored.
    let allowed: &[&str] = match a.kind.as_str() {
        "webhook" => &["url", "secret", "secret_env", "headers"],
        "nats" => &["url", "subject"],
        "redis_cleanup" => &["url", "keys"],
        other => {
            return Err(cerr(
                k("kind"),
                format!("\"{other}\" is not supported (supported: {ACTION_KINDS})"),
            ));
        }
    };
    for (field, present) in [
        ("secret", a.secret.is_some()),
        ("secret_env", a.secret_env.is_some()),
        ("headers", a.headers.is_some()),
        ("subject", a.subject.is_some()),
        ("keys", a.keys.is_some()),
    ] {
        if present && !allowed.contains(&field) {
            return Err(cerr(
                k(field),
                format!("does not apply to kind \"{}\"", a.kind),
            ));
        }
    }
    let kind = match a.kind.as_str() {
        "webhook" => {
            let raw_url = required("url", &a.url)?;
            let url = reqwest::Url::parse(&raw_url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    cerr(
                        k("url"),
                        format!("\"{raw_url}\" is not an http:// or https:// URL"),
                    )
                })?;
            let secret = match (&a.secret, &a.secret_env) {
                (Some(s), None) => s.clone(),
                (None, Some(var)) => env(var).ok_or_else(|| {
                    cerr(
                        k("secret_env"),
                        format!("environment variable {var} is not set"),
                    )
                })?,
                _ => {
                    return Err(cerr(
                        k("secret"),
                        "set exactly one of secret or secret_env (a Standard Webhooks secret, whsec_...)",
                    ));
                }
            };
            let secret = decode_whsec(&secret).ok_or_else(|| {
                cerr(k("secret"), "is not a Standard Webhooks secret: write whsec_ followed by base64 of 24 to 64 bytes")
            })?;
            let mut headers = Vec::new();
            for (name, value) in a.headers.iter().flatten() {
                let n = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    cerr(
                        format!("{key}.headers.{name}"),
                        "is not a valid header name",
                    )
                })?;
                let v = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                    cerr(
                        format!("{key}.headers.{name}"),
                        "is not a valid header value",
                    )
                })?;
                headers.push((n, v));
            }
            ActionKind::Webhook {
                url,
                secret,
                headers,
            }
        }
        "nats" => {
            let url = required("url", &a.url)?;
            let subject = required("subject", &a.subject)?;
            if subject.contains(char::is_whitespace) || subject.contains(['*', '>']) {
                return Err(cerr(
                    k("subject"),
                    "must be a concrete subject (no spaces or wildcards)",
                ));
            }
            ActionKind::Nats { url, subject }
        }
        _ => {
            let url = required("url", &a.url)?;
            if !url.starts_with("redis://") && !url.starts_with("unix://") {
                return Err(cerr(k("url"), format!("\"{url}\" is not a redis:// URL")));
            }
            let keys = a.keys.clone().unwrap_or_default();
            if keys.is_empty() {
                return Err(cerr(k("keys"), "must name at least one key template"));
            }
            for (i, t) in keys.iter().enumerate() {
                if !t.contains("{conversationId}") {
                    // Without it one end would wipe every conversation's keys.
                    return Err(cerr(
                        format!("{key}.keys[{i}]"),
                        "must contain {conversationId}, so one end never deletes another conversation's keys",
                    ));
                }
            }
            ActionKind::RedisCleanup { url, keys }
        }
    };
    let name = match &a.name {
        Some(n) if n.trim().is_empty() => return Err(cerr(k("name"), "must not be empty")),
        Some(n) => n.clone(),
        None => {
            let same = earlier.iter().filter(|e| e.kind.name() == a.kind).count();
            if same == 0 {
                a.kind.clone()
            } else {
                format!("{}-{}", a.kind, same + 1)
            }
        }
    };
    if earlier.iter().any(|e| e.name == name) {
        return Err(cerr(
            k("name"),
            format!("\"{name}\" is used by another action of this bot"),
        ));
    }
    let timeout = positive(&k("timeout"), a.timeout.as_deref().unwrap_or("10s"))?;
    let r = a.retry.clone().unwrap_or_default();
    let defaults = RetryPolicy::default();
    let retry = RetryPolicy {
        max_attempts: r.max_attempts.unwrap_or(defaults.max_attempts),
        initial_delay: match &r.initial_delay {
            Some(v) => positive(&k("retry.initial_delay"), v)?,
            None => defaults.initial_delay,
        },
        max_delay: match &r.max_delay {
            Some(v) => positive(&k("retry.max_delay"), v)?,
            None => defaults.max_delay,
        },
    };
    if retry.max_attempts == 0 || retry.max_attempts > 100 {
        return Err(cerr(k("retry.max_attempts"), "must be between 1 and 100"));
    }
    if retry.max_delay < retry.initial_delay {
        return Err(cerr(
            k("retry.max_delay"),
            "must not be shorter than retry.initial_delay",
        ));
    }
    Ok(ActionSettings {
        name,
        kind,
        timeout,
        retry,
    })
}

/// The key of a Standard Webhooks secret: `whsec_` + base64.
fn decode_whsec(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let b64 = secret.strip_prefix("whsec_")?;
    let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}

fn positive(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(key, value)?;
    if d.is_zero() {
        return Err(cerr(key, "must be longer than 0s"));
    }
    Ok(d)
}

fn validate_app(
    app: &AppFile,
    key: &str,
    base: &Path,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<AppSettings, ConfigError> {
    if app.algorithms.is_empty() {
        return Err(cerr(
            format!("{key}.algorithms"),
            "must name at least one algorithm",
        ));
    }
    let mut algorithms = Vec::new();
    for (j, name) in app.algorithms.iter().enumerate() {
        let alg = match name.as_str() {
            "HS256" => Algorithm::HS256,
            "HS512" => Algorithm::HS512,
            "RS256" => Algorithm::RS256,
            "RS512" => Algorithm::RS512,
            other => {
                return Err(cerr(
                    format!("{key}.algorithms[{j}]"),
                    format!("\"{other}\" is not supported (supported: HS256, HS512, RS256, RS512)"),
                ));
            }
        };
        algorithms.push(alg);
    }
    let hmac = algorithms
        .iter()
        .all(|a| matches!(a, Algorithm::HS256 | Algorithm::HS512));
    let rsa = algorithms
        .iter()
        .all(|a| matches!(a, Algorithm::RS256 | Algorithm::RS512));
    if !hmac && !rsa {
        // RFC 8725 §3.1: one key, one family — an RSA public key must never be usable as an HMAC secret.
        return Err(cerr(
            format!("{key}.algorithms"),
            "mixes HS and RS algorithms; use one family per app",
        ));
    }
    let sources = [
        app.client_secret.is_some(),
        app.client_secret_env.is_some(),
        app.public_key_file.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(cerr(
            key.to_owned(),
            "set exactly one of client_secret, client_secret_env (HS*) or public_key_file (RS*)",
        ));
    }
    let key_material = if hmac {
        let secret = match (&app.client_secret, &app.client_secret_env) {
            (Some(s), _) => s.clone(),
            (None, Some(var)) => env(var).ok_or_else(|| {
                cerr(
                    format!("{key}.client_secret_env"),
                    format!("environment variable {var} is not set"),
                )
            })?,
            (None, None) => {
                return Err(cerr(
                    format!("{key}.public_key_file"),
                    "HS algorithms need client_secret or client_secret_env, not a public key",
                ));
            }
        };
        if secret.len() < 16 {
            return Err(cerr(
                format!("{key}.client_secret"),
                "is shorter than 16 bytes; use the client secret of the JWT app",
            ));
        }
        DecodingKey::from_secret(secret.as_bytes())
    } else {
        let Some(file) = &app.public_key_file else {
            return Err(cerr(
                format!("{key}.public_key_file"),
                "RS algorithms need the app's public key as a PEM file",
            ));
        };
        let path = if file.is_absolute() {
            file.clone()
        } else {
            base.join(file)
        };
        let pem = std::fs::read(&path).map_err(|e| {
            cerr(
                format!("{key}.public_key_file"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        DecodingKey::from_rsa_pem(&pem).map_err(|e| {
            cerr(
                format!("{key}.public_key_file"),
                format!("{} is not an RSA public key in PEM: {e}", path.display()),
            )
        })?
    };
    Ok(AppSettings {
        client_id: app.client_id.clone(),
        algorithms,
        key: key_material,
        enforce_jti: app.enforce_jti,
        require_exp: app.require_exp,
        max_token_age: app
            .max_token_age
            .as_deref()
            .map(|v| positive(&format!("{key}.max_token_age"), v))
            .transpose()?,
        rate_limit: rate_limit(app, key)?,
    })
}

fn rate_limit(app: &AppFile, key: &str) -> Result<Option<RateLimit>, ConfigError> {
    use std::num::NonZeroU32;
    let nonzero = |name: &str, v: u32| {
        NonZeroU32::new(v)
            .filter(|v| v.get() <= 1_000_000)
            .ok_or_else(|| cerr(format!("{key}.{name}"), "must be between 1 and 1000000"))
    };
    match (app.rate_limit, app.rate_burst) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(cerr(
            format!("{key}.rate_burst"),
            "goes with rate_limit (requests per second)",
        )),
        (Some(rate), burst) => {
            let per_second = nonzero("rate_limit", rate)?;
            let burst = match burst {
                Some(b) => nonzero("rate_burst", b)?,
                None => per_second,
            };
            Ok(Some(RateLimit { per_second, burst }))
        }
    }
}

/// Each cap must be a whole number from 1 up to a bound that keeps the work of one request
/// bounded too.
fn validate_caps(file: &CapsFile, key: &str) -> Result<Caps, ConfigError> {
    let d = Caps::default();
    let pick = |name: &str, value: Option<u64>, default: u64, max: u64| match value {
        None => Ok(default),
        Some(v) if (1..=max).contains(&v) => Ok(v),
        Some(_) => Err(cerr(
            format!("{key}.{name}"),
            format!("must be between 1 and {max}"),
        )),
    };
    let size = |v: u64| v as usize;
    Ok(Caps {
        agents: size(pick("agents", file.agents, d.agents as u64, 10_000)?),
        segments: size(pick("segments", file.segments, d.segments as u64, 100_000)?),
        summary_requests: size(pick(
            "summary_requests",
            file.summary_requests,
            d.summary_requests as u64,
            10_000,
        )?),
        events: pick("events", file.events, d.events, 10_000_000)?,
        log_bytes: pick("log_bytes", file.log_bytes, d.log_bytes, 1 << 40)?,
        custom_fields_keys: size(pick(
            "custom_fields_keys",
            file.custom_fields_keys,
            d.custom_fields_keys as u64,
            10_000,
        )?),
        custom_fields_bytes: size(pick(
            "custom_fields_bytes",
            file.custom_fields_bytes,
            d.custom_fields_bytes as u64,
            16 << 20,
        )?),
        state_bytes: size(pick(
            "state_bytes",
            file.state_bytes,
            d.state_bytes as u64,
            64 << 20,
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Settings, String> {
        let file = parse(text).map_err(|e| e.to_string())?;
        validate(&file, Path::new("."), |_| None).map_err(|e| e.to_string())
    }

    const APP: &str = r#"
[[apps]]
client_id = "cs-1"
client_secret = "0123456789abcdef0123"
"#;

    #[test]
    fn a_bot_naming_an_unknown_app_is_refused_with_its_key() {
        let text = format!("{APP}\n[[bots]]\nid = \"st-1\"\napps = [\"cs-1\", \"cs-x\"]\n");
        assert_eq!(
            check(&text).err().unwrap(),
            "bots[0].apps[1]: no app with client_id \"cs-x\""
        );
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_named() {
        let err = check("[server]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n")
            .err()
            .unwrap();
        assert!(err.contains("line 3") && err.contains("listne"), "{err}");
        let text = format!(
            "{APP}\n[[bots]]\nid = \"st-1\"\napps = [\"cs-1\"]\ninactivity_timeout = \"4x\"\n"
        );
        assert!(
            check(&text)
                .err()
                .unwrap()
                .starts_with("bots[0].inactivity_timeout: invalid duration")
        );
    }

    #[test]
    fn an_app_may_not_mix_algorithm_families() {
        let text = APP.replace(
            "client_secret =",
            "algorithms = [\"HS256\", \"RS256\"]\nclient_secret =",
        );
        assert_eq!(
            check(&text).err().unwrap(),
            "apps[0].algorithms: mixes HS and RS algorithms; use one family per app"
        );
    }
}
