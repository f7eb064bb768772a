//! The configuration file as written, typed by serde: durations are `Duration`s (written
//! "30s", "5m", "4h"), actions a tagged enum on `kind`, unknown keys refused. A parse error
//! names the key path (from the deserializer) and the line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, cerr};

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
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How much longer than an attempt's timeout a claimed job stays leased.
    #[serde(with = "humantime_serde")]
    pub lease_margin: Duration,
    /// On shutdown, how long running attempts may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How long a due job whose destination is not in this instance's configuration waits
    /// (for an instance that knows it, as during a rolling deploy) before it is `orphaned`.
    #[serde(with = "humantime_serde")]
    pub orphan_after: Duration,
    /// Attempts one destination may have running at once in this process (at most its
    /// even share of `concurrency` among the destinations).
    pub per_destination: usize,
    /// Failed attempts in a row after which a destination is paused (0: never).
    pub pause_after: u32,
    /// How long a paused destination waits between probe attempts.
    #[serde(with = "humantime_serde")]
    pub pause_for: Duration,
    /// How long succeeded and discarded jobs (and their attempts) are kept after they
    /// finished; the sweeper deletes them after. Dead and orphaned jobs are kept until an
    /// operator retries or discards them.
    #[serde(with = "humantime_serde")]
    pub keep_finished_jobs: Duration,
}

impl Default for WorkersFile {
    fn default() -> Self {
        Self {
            concurrency: 64,
            poll_interval: Duration::from_secs(1),
            lease_margin: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            orphan_after: Duration::from_secs(600),
            per_destination: 8,
            pause_after: 5,
            pause_for: Duration::from_secs(30),
            keep_finished_jobs: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// The environment variable holding the admin bearer token; unset (and no `token`):
    /// admin API and console off.
    pub token_env: Option<String>,
    /// The token itself, for demos (the example configuration's is published: never use
    /// it in production).
    #[serde(default, deserialize_with = "secret")]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerFile {
    pub listen: String,
    pub max_body_bytes: usize,
    pub max_events_per_request: usize,
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A client that takes no byte of its answer for this long is cut off.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    pub max_connections: usize,
    /// Connections one client address may hold (an IPv6 client is its /64); default a
    /// quarter of `max_connections`. `trusted_proxies` are not limited by it.
    pub max_connections_per_address: Option<usize>,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` names the client, for
    /// the console's sign-in limit; not limited per address.
    pub trusted_proxies: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// A second address that answers only `/healthz`, `/readyz` and `/metrics`, with its
    /// own connections, so probes are answered even when `listen` is flooded.
    pub health_listen: Option<String>,
    /// One log line per request (target `wrapup::access`): method, route, status,
    /// duration, app, bot, request id.
    pub access_log: bool,
    /// A second address for `/admin`, `/console` and `/metrics` (and the health checks);
    /// when set, `listen` answers 404 for them and carries only the hooks and records APIs.
    pub admin_listen: Option<String>,
    /// PEM files: with both, `listen` and `admin_listen` speak HTTPS (TLS 1.2 and 1.3)
    /// only; `health_listen` stays plain HTTP for probes on a private address.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerFile {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 1024 * 1024,
            max_events_per_request: 100,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_connections_per_address: None,
            trusted_proxies: Vec::new(),
            shutdown_grace: Duration::from_secs(30),
            health_listen: None,
            access_log: true,
            admin_listen: None,
            tls_cert: None,
            tls_key: None,
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
    /// SQLite: read-only connections (reads run beside the writer, each on its own).
    pub read_connections: u32,
    /// PostgreSQL: how long to wait for a connection (503 after).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// PostgreSQL: the server cancels any statement running longer.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
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
            read_connections: 4,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            schema: "public".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppFile {
    pub client_id: String,
    #[serde(default, deserialize_with = "secret")]
    pub client_secret: Option<String>,
    pub client_secret_env: Option<String>,
    pub public_key_file: Option<PathBuf>,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default)]
    pub enforce_jti: bool,
    #[serde(default)]
    pub require_exp: bool,
    #[serde(default, with = "humantime_serde")]
    pub max_token_age: Option<Duration>,
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
    #[serde(default, with = "humantime_serde")]
    pub inactivity_timeout: Option<Duration>,
    #[serde(default)]
    pub retention: RetentionFile,
    #[serde(default)]
    pub on_end: Vec<ActionFile>,
    #[serde(default)]
    pub caps: CapsFile,
    /// What to redact from message text and custom fields before anything is stored:
    /// any of "card", "email", "phone", "iban", "ssn".
    #[serde(default)]
    pub redact: Vec<String>,
    /// With "phone": the regions (ISO 3166 codes such as "US", "GB") whose national
    /// formats are read; numbers with `+` or `00` are read for every country. Default:
    /// `domain::pii::DEFAULT_PHONE_REGIONS`.
    #[serde(default)]
    pub redact_phone_regions: Option<Vec<String>>,
    /// `[[bots.redact_pattern]]`: a bot's own patterns.
    #[serde(default)]
    pub redact_pattern: Vec<RedactPatternFile>,
    /// `[bots.summary]`: a summary for every TRIGGER_SUMMARY_EVENT (and at the end).
    pub summary: Option<SummaryFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryFile {
    /// `extractive` (built in, no network; the default) or `openai` (any server speaking
    /// the OpenAI Chat Completions protocol).
    pub provider: Option<String>,
    /// `openai`: the API's base, e.g. `https://api.openai.com/v1`.
    pub base_url: Option<String>,
    /// `openai`: the model's name.
    pub model: Option<String>,
    /// `openai`: the environment variable holding the API key (none: no `Authorization`).
    pub api_key_env: Option<String>,
    /// `openai`: the most tokens of an answer (default 800).
    pub max_tokens: Option<u32>,
    /// `openai`: the request field that carries `max_tokens`: `max_completion_tokens`
    /// (OpenAI's current name, which o-series models require) or `max_tokens` (what
    /// Ollama, vLLM and llama.cpp know). Default: `max_completion_tokens` for
    /// api.openai.com and Azure OpenAI, `max_tokens` elsewhere.
    pub max_tokens_field: Option<String>,
    /// `openai`: the system message (default: asks for the four sections as JSON).
    pub instructions: Option<String>,
    /// Also a final summary when the conversation ends (default true).
    pub at_end: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub retry: Option<RetryFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactPatternFile {
    /// The marker's name: a match becomes `[name]`.
    pub name: String,
    /// A regular expression (Rust `regex` syntax: no backreferences, linear time).
    pub regex: String,
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
    #[serde(default, with = "humantime_serde")]
    pub events: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub transcript: Option<Duration>,
}

/// One `[[bots.on_end]]` entry as written, by `kind`; a key of another kind is an
/// unknown key of this one.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionFile {
    Webhook {
        name: Option<String>,
        /// Names this action had: their jobs are this action's.
        #[serde(default)]
        previous_names: Vec<String>,
        url: String,
        #[serde(default, deserialize_with = "secret")]
        secret: Option<String>,
        secret_env: Option<String>,
        headers: Option<BTreeMap<String, String>>,
        /// Statuses that mean "never": the job is dead at once (default `[410]`).
        give_up_on: Option<Vec<u16>>,
        /// For an https:// URL: the authority to trust instead of the system's, and a
        /// client certificate.
        tls: Option<TlsFile>,
        #[serde(default, with = "humantime_serde")]
        timeout: Option<Duration>,
        retry: Option<RetryFile>,
    },
    Nats {
        name: Option<String>,
        #[serde(default)]
        previous_names: Vec<String>,
        url: String,
        subject: String,
        /// TLS beyond the URL (`tls://` turns it on): a CA and a client certificate.
        tls: Option<TlsFile>,
        #[serde(default, with = "humantime_serde")]
        timeout: Option<Duration>,
        retry: Option<RetryFile>,
    },
    RedisCleanup {
        name: Option<String>,
        #[serde(default)]
        previous_names: Vec<String>,
        url: String,
        keys: Vec<String>,
        /// TLS for a `rediss://` URL: a CA and a client certificate.
        tls: Option<TlsFile>,
        #[serde(default, with = "humantime_serde")]
        timeout: Option<Duration>,
        retry: Option<RetryFile>,
    },
}

/// The keys every kind of action has.
pub struct Common<'a> {
    pub name: &'a Option<String>,
    pub previous_names: &'a [String],
    pub timeout: Option<Duration>,
    pub retry: Option<&'a RetryFile>,
}

impl ActionFile {
    /// The kind as written in `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            ActionFile::Webhook { .. } => "webhook",
            ActionFile::Nats { .. } => "nats",
            ActionFile::RedisCleanup { .. } => "redis_cleanup",
        }
    }

    /// What every kind has: its name, attempt timeout and retry policy.
    pub fn common(&self) -> Common<'_> {
        match self {
            ActionFile::Webhook {
                name,
                previous_names,
                timeout,
                retry,
                ..
            }
            | ActionFile::Nats {
                name,
                previous_names,
                timeout,
                retry,
                ..
            }
            | ActionFile::RedisCleanup {
                name,
                previous_names,
                timeout,
                retry,
                ..
            } => Common {
                name,
                previous_names,
                timeout: *timeout,
                retry: retry.as_ref(),
            },
        }
    }
}

/// `tls = { ca_file, client_cert, client_key }` on an action: PEM files. Without
/// `ca_file` the system's trust store is used.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    pub max_attempts: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub initial_delay: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub max_delay: Option<Duration>,
}

/// Parses TOML text. A mistake is reported at its key path as the deserializer saw it
/// (`bots[0].inactivity_timeout`), with its line when TOML knows it.
pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
    let line = |span: Option<std::ops::Range<usize>>| {
        span.map(|s| {
            let before = &text.as_bytes()[..s.start.min(text.len())];
            format!(
                "line {}: ",
                before.iter().filter(|b| **b == b'\n').count() + 1
            )
        })
        .unwrap_or_default()
    };
    let de = toml::Deserializer::parse(text).map_err(|e| {
        cerr(
            "config",
            format!("{}{}", line(e.span()), one_line(e.message())),
        )
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = format!("{}{}", line(inner.span()), one_line(inner.message()));
        if path == "." {
            cerr("config", message)
        } else {
            cerr(path, message)
        }
    })
}

fn one_line(s: &str) -> String {
    s.trim().replace('\n', " ")
}

/// A secret's value: a string, and an error that never repeats what was written (a
/// mistyped secret — a number, a table — would otherwise be echoed into a log).
fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Secret;
    impl serde::de::Visitor<'_> for Secret {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string (the value written is not shown)")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<String, E> {
            Err(E::custom(
                "a secret must be a string in quotes (the value written is not shown)",
            ))
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<String, E> {
            Err(E::custom(
                "a secret must be a string in quotes (the value written is not shown)",
            ))
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<String, E> {
            Err(E::custom(
                "a secret must be a string in quotes (the value written is not shown)",
            ))
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<String, E> {
            Err(E::custom(
                "a secret must be a string in quotes (the value written is not shown)",
            ))
        }
    }
    d.deserialize_any(Secret).map(Some)
}
