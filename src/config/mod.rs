//! Configuration: a TOML file (names from DESIGN.md), a few `WRAPUP_*` environment
//! overrides, and validation into typed [`Settings`] at start-up.
//!
//! Every problem is reported as one line naming the key, e.g.
//! `bots[0].apps[1]: no app with client_id "cs-x"`, so an operator can fix the file
//! without reading code. Secrets are resolved (env, PEM files) here too, so a server
//! that started has every key it needs.

mod actions;
mod file;
#[cfg(test)]
mod tests;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};

use crate::domain::caps::Caps;
use crate::domain::retry::RetryPolicy;

pub use file::{
    ActionFile, AdminFile, AppFile, BotFile, CapsFile, FileConfig, RetentionFile, RetryFile,
    ServerFile, StoreFile, WorkersFile, parse,
};
pub use validate::validate;

/// The JWT algorithms an app may pin: HMAC and RSA with SHA-256 or SHA-512.
pub const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::HS256,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS512,
];

/// An algorithm by its JOSE name (`HS256`), if it is one of [`ALGORITHMS`].
pub fn algorithm(name: &str) -> Option<Algorithm> {
    name.parse::<Algorithm>()
        .ok()
        .filter(|a| ALGORITHMS.contains(a))
}

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

pub(crate) fn cerr(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
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
    /// The keys holding a demo value published with wrapup (`serve` refuses them unless
    /// every listener is on loopback, or `--demo`).
    pub demo_values: Vec<String>,
    /// Each app, bot, action and summary table by name (`app cs-1`, `bot st-1`, `action
    /// st-1/crm`, `summary of st-1`), with a hash of how it is written: a reload says what
    /// it added, removed and changed. Only the names are ever shown.
    pub parts: std::collections::BTreeMap<String, u64>,
}

/// What a reload changed, by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Changes {
    pub fn between(
        old: &std::collections::BTreeMap<String, u64>,
        new: &std::collections::BTreeMap<String, u64>,
    ) -> Changes {
        let mut c = Changes::default();
        for (name, hash) in new {
            match old.get(name) {
                None => c.added.push(name.clone()),
                Some(h) if h != hash => c.changed.push(name.clone()),
                Some(_) => {}
            }
        }
        c.removed = old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect();
        c
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no app, bot or action changed");
        }
        let mut parts = Vec::new();
        for (what, names) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("changed", &self.changed),
        ] {
            if !names.is_empty() {
                parts.push(format!("{what}: {}", names.join(", ")));
            }
        }
        f.write_str(&parts.join("; "))
    }
}

impl Settings {
    /// Why `serve` must not start: a published demo secret on a listener others can
    /// reach. `None` when every listener is on loopback (the quick start) or there is no
    /// demo value.
    pub fn demo_refusal(&self) -> Option<String> {
        let s = &self.server;
        let exposed: Vec<String> = [
            ("server.listen", Some(s.listen)),
            ("server.health_listen", s.health_listen),
            ("server.admin_listen", s.admin_listen),
        ]
        .into_iter()
        .filter_map(|(key, at)| {
            at.filter(|a| !a.ip().is_loopback())
                .map(|a| format!("{key} = \"{a}\""))
        })
        .collect();
        if self.demo_values.is_empty() || exposed.is_empty() {
            return None;
        }
        Some(format!(
            "{} {} the demo value published with wrapup, and {} is reachable from other machines: anyone could sign tokens or use the admin API. Set secrets of your own (client_secret_env, [admin] token_env, secret_env), or listen on 127.0.0.1 only, or pass --demo to run it as it is",
            self.demo_values.join(", "),
            if self.demo_values.len() == 1 {
                "holds"
            } else {
                "hold"
            },
            exposed.join(", ")
        ))
    }
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub lease_margin: Duration,
    pub shutdown_grace: Duration,
    pub orphan_after: Duration,
    pub keep_finished_jobs: Duration,
    pub per_destination: usize,
    pub pause_after: u32,
    pub pause_for: Duration,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_events_per_request: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub request_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub shutdown_grace: Duration,
    pub health_listen: Option<SocketAddr>,
    pub access_log: bool,
    pub admin_listen: Option<SocketAddr>,
    /// `tls_cert` and `tls_key`, loaded and checked to go together: every listener serves
    /// HTTPS with it, and a reload swaps a renewed one in.
    pub tls: Option<std::sync::Arc<rustls::sign::CertifiedKey>>,
}

/// `Debug` shows a PostgreSQL URL masked: it may carry a password.
#[derive(Clone)]
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
    pub read_connections: u32,
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
    /// `redact` and `[[bots.redact_pattern]]`, compiled.
    pub redact: crate::domain::pii::Redactor,
    /// `[bots.summary]`: how summaries are made, as an action (kind `summary`).
    pub summary: Option<SummarySettings>,
}

#[derive(Debug, Clone)]
pub struct SummarySettings {
    /// A final summary at the end too (`summary@end`).
    pub at_end: bool,
    pub action: ActionSettings,
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
    /// Names it had (`previous_names`): their jobs are its jobs.
    pub previous_names: Vec<String>,
    pub kind: ActionKind,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

/// `Debug` shows URLs masked and no secret or header value.
#[derive(Clone)]
pub enum ActionKind {
    Webhook {
        url: reqwest::Url,
        /// The decoded key of a `whsec_` secret.
        secret: Vec<u8>,
        headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
        /// Statuses after which the job is dead at once (`give_up_on`, default 410 Gone).
        give_up_on: Vec<u16>,
        tls: Option<ClientTls>,
    },
    Nats {
        url: String,
        subject: String,
        tls: Option<ClientTls>,
    },
    RedisCleanup {
        url: String,
        keys: Vec<String>,
        tls: Option<ClientTls>,
    },
    /// `[bots.summary]`: summarize the transcript and store the summary.
    Summary { provider: SummaryProvider },
}

/// Who writes a bot's summaries.
#[derive(Clone)]
pub enum SummaryProvider {
    /// Built in: sentences picked from the transcript (`domain::summary`), no network.
    Extractive,
    /// A server speaking the OpenAI Chat Completions protocol.
    OpenAi(std::sync::Arc<OpenAiSettings>),
}

impl SummaryProvider {
    pub fn name(&self) -> &'static str {
        match self {
            SummaryProvider::Extractive => "extractive",
            SummaryProvider::OpenAi(_) => "openai",
        }
    }
}

/// `provider = "openai"`: `POST {base_url}/chat/completions`.
#[derive(Clone)]
pub struct OpenAiSettings {
    /// Ends without a slash (`https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`).
    pub base_url: reqwest::Url,
    pub model: String,
    /// From `api_key_env`; sent as `Authorization: Bearer`, never shown.
    pub api_key: Option<String>,
    /// One request's bound (the attempt's is this plus a margin to store the outcome).
    pub timeout: Duration,
    pub max_tokens: u32,
    /// The request field that carries `max_tokens` (`max_tokens_field`).
    pub max_tokens_field: MaxTokensField,
    /// The system message.
    pub instructions: String,
}

/// The name under which the answer's token limit is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensField {
    /// `max_completion_tokens`: OpenAI's current field (`max_tokens` is deprecated there
    /// and refused by o-series models).
    MaxCompletionTokens,
    /// `max_tokens`: the field servers speaking the older protocol know (Ollama, vLLM,
    /// llama.cpp); one that does not know a field ignores it, so the limit would be lost.
    MaxTokens,
}

impl MaxTokensField {
    pub fn as_str(self) -> &'static str {
        match self {
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
            MaxTokensField::MaxTokens => "max_tokens",
        }
    }

    /// The default for a base URL: OpenAI's own API and Azure OpenAI take
    /// `max_completion_tokens`; any other server gets `max_tokens`, which every
    /// compatible server knows.
    pub fn for_base_url(url: &reqwest::Url) -> MaxTokensField {
        match url.host_str() {
            Some(h) if h == "api.openai.com" || h.ends_with(".openai.azure.com") => {
                MaxTokensField::MaxCompletionTokens
            }
            _ => MaxTokensField::MaxTokens,
        }
    }
}

impl OpenAiSettings {
    pub fn endpoint(&self) -> String {
        format!(
            "{}/chat/completions",
            self.base_url.as_str().trim_end_matches('/')
        )
    }
}

/// An action's `tls` table, read and checked at load: the PEM files' paths (NATS takes
/// paths) and contents (Redis takes bytes). `Debug` shows the paths only.
#[derive(Clone, Default)]
pub struct ClientTls {
    pub ca_file: Option<std::path::PathBuf>,
    pub ca_pem: Option<Vec<u8>>,
    /// Certificate and key paths, and their PEM bytes.
    pub client: Option<ClientCert>,
}

#[derive(Clone)]
pub struct ClientCert {
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl ClientTls {
    /// What distinguishes two TLS setups of one URL (the connection caches key on it).
    pub fn identity(&self) -> String {
        format!(
            "{:?}|{:?}",
            self.ca_file,
            self.client.as_ref().map(|c| (&c.cert_file, &c.key_file))
        )
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client.as_ref().map(|c| &c.cert_file))
            .field("client_key", &self.client.as_ref().map(|c| &c.key_file))
            .finish()
    }
}

/// A destination's identity: its bot, its kind and its name (`webhook:crm@st-1`; a kind
/// has no `:` and a name no `@`, so two identities are equal only for the same three).
/// Jobs carry it and run only against the action it names, with that action's settings
/// as they are when the attempt starts: fixing a URL delivers the queue, while removing
/// an action or changing its kind under the same name never hands its jobs to another.
pub fn destination(bot_id: &str, kind: &str, name: &str) -> String {
    format!("{kind}:{name}@{bot_id}")
}

impl ActionSettings {
    /// This action's identity as a destination of `bot_id`.
    pub fn destination(&self, bot_id: &str) -> String {
        destination(bot_id, self.kind.name(), &self.name)
    }

    /// The identities of its previous names: their jobs are its own.
    pub fn previous_destinations(&self, bot_id: &str) -> impl Iterator<Item = String> + '_ {
        let (bot_id, kind) = (bot_id.to_owned(), self.kind.name());
        self.previous_names
            .iter()
            .map(move |old| destination(&bot_id, kind, old))
    }
}

impl ActionSettings {
    /// Whether it is sent each `conversation.summarized` of its bot (webhooks and NATS).
    pub fn delivers_summaries(&self) -> bool {
        matches!(
            self.kind,
            ActionKind::Webhook { .. } | ActionKind::Nats { .. }
        )
    }
}

impl ActionKind {
    pub fn name(&self) -> &'static str {
        match self {
            ActionKind::Webhook { .. } => "webhook",
            ActionKind::Nats { .. } => "nats",
            ActionKind::RedisCleanup { .. } => "redis_cleanup",
            ActionKind::Summary { .. } => "summary",
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
    let mut file = parse(&text).map_err(|e| {
        let at = match e.key.as_str() {
            "config" => path.display().to_string(),
            key => format!("{}: {key}", path.display()),
        };
        cerr(at, e.message)
    })?;
    apply_env(&mut file, |k| std::env::var(k).ok());
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    validate(&file, base, |k| std::env::var(k).ok())
}

/// `WRAPUP_LISTEN`, `WRAPUP_HEALTH_LISTEN`, `WRAPUP_ADMIN_LISTEN` and `WRAPUP_STORE_URL`
/// override the file (an empty `…_HEALTH_LISTEN` or `…_ADMIN_LISTEN` turns it off), so
/// several instances on one host can share one file.
pub fn apply_env(file: &mut FileConfig, env: impl Fn(&str) -> Option<String>) {
    if let Some(v) = env("WRAPUP_LISTEN") {
        file.server.listen = v;
    }
    if let Some(v) = env("WRAPUP_HEALTH_LISTEN") {
        file.server.health_listen = Some(v).filter(|v| !v.is_empty());
    }
    if let Some(v) = env("WRAPUP_ADMIN_LISTEN") {
        file.server.admin_listen = Some(v).filter(|v| !v.is_empty());
    }
    if let Some(v) = env("WRAPUP_STORE_URL") {
        file.store.url = v;
    }
}

impl StoreUrl {
    /// `sqlite` or `postgres`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreUrl::Sqlite(_) => "sqlite",
            StoreUrl::Postgres(_) => "postgres",
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            StoreUrl::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&crate::redact::masked(url))
                .finish(),
        }
    }
}

impl fmt::Debug for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let masked = crate::redact::masked;
        match self {
            ActionKind::Webhook {
                url,
                headers,
                give_up_on,
                ..
            } => f
                .debug_struct("Webhook")
                .field("url", &masked(url.as_str()))
                .field("give_up_on", give_up_on)
                .field("secret", &"***")
                .field(
                    "headers",
                    &headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                )
                .finish(),
            ActionKind::Nats { url, subject, tls } => f
                .debug_struct("Nats")
                .field("url", &masked(url))
                .field("subject", subject)
                .field("tls", tls)
                .finish(),
            ActionKind::RedisCleanup { url, keys, tls } => f
                .debug_struct("RedisCleanup")
                .field("url", &masked(url))
                .field("keys", keys)
                .field("tls", tls)
                .finish(),
            ActionKind::Summary {
                provider: SummaryProvider::Extractive,
            } => f
                .debug_struct("Summary")
                .field("provider", &"extractive")
                .finish(),
            ActionKind::Summary {
                provider: SummaryProvider::OpenAi(o),
            } => f
                .debug_struct("Summary")
                .field("provider", &"openai")
                .field("base_url", &masked(o.base_url.as_str()))
                .field("model", &o.model)
                .field("api_key", &o.api_key.as_ref().map(|_| "***"))
                .field("max_tokens", &o.max_tokens)
                .finish(),
        }
    }
}
