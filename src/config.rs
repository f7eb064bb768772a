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
}

impl Default for StoreFile {
    fn default() -> Self {
        Self {
            url: "sqlite://wrapup.db".into(),
            queue_capacity: 16_384,
            max_batch: 1024,
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
}

/// Validated configuration, ready to run.
#[derive(Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub apps: Vec<AppSettings>,
    pub bots: Vec<BotSettings>,
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
}

#[derive(Debug, Clone)]
pub enum StoreUrl {
    Sqlite(PathBuf),
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub url: StoreUrl,
    pub queue_capacity: usize,
    pub max_batch: usize,
}

#[derive(Clone)]
pub struct AppSettings {
    pub client_id: String,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
    pub enforce_jti: bool,
    pub require_exp: bool,
    pub max_token_age: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct BotSettings {
    pub id: String,
    pub apps: Vec<String>,
    pub inactivity_timeout: Option<Duration>,
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
    };

    let url = match file.store.url.strip_prefix("sqlite://") {
        Some(path) if !path.is_empty() => StoreUrl::Sqlite(PathBuf::from(path)),
        _ => {
            return Err(cerr(
                "store.url",
                format!("\"{}\" is not supported; use sqlite://PATH", file.store.url),
            ));
        }
    };
    let store = StoreSettings {
        url,
        queue_capacity: file.store.queue_capacity,
        max_batch: file.store.max_batch,
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
        bots.push(BotSettings {
            id: bot.id.clone(),
            apps: bot.apps.clone(),
            inactivity_timeout,
        });
    }

    Ok(Settings {
        server,
        store,
        apps,
        bots,
    })
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
