//! From the file as written to [`Settings`]: every check that needs more than one key,
//! or the environment, or a file; each problem named by its key.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};

use super::actions::validate_action;
use super::*;
use crate::domain::caps::Caps;

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
        header_read_timeout: positive("server.header_read_timeout", s.header_read_timeout)?,
        body_read_timeout: positive("server.body_read_timeout", s.body_read_timeout)?,
        request_timeout: positive("server.request_timeout", s.request_timeout)?,
        write_timeout: positive("server.write_timeout", s.write_timeout)?,
        max_connections: s.max_connections,
        max_connections_per_address: match s.max_connections_per_address {
            None => s.max_connections.div_ceil(4),
            Some(n) if n == 0 || n > s.max_connections => {
                return Err(cerr(
                    "server.max_connections_per_address",
                    format!(
                        "must be from 1 to server.max_connections ({})",
                        s.max_connections
                    ),
                ));
            }
            Some(n) => n,
        },
        trusted_proxies: s
            .trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        cerr(
                            "server.trusted_proxies",
                            format!("\"{p}\" is not an address or a CIDR block like 10.0.0.0/8"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
        shutdown_grace: s.shutdown_grace,
        health_listen: address("server.health_listen", &s.health_listen)?,
        access_log: s.access_log,
        admin_listen: address("server.admin_listen", &s.admin_listen)?,
        tls: server_tls(s, base)?,
    };

    let raw = &file.store.url;
    let url = if let Some(path) = raw.strip_prefix("sqlite://").filter(|p| !p.is_empty()) {
        // Relative to the configuration file's folder, like every other path in it: the
        // same file names the same database from any working directory (`wrapup backup`
        // run by an operator from their home finds the server's file).
        StoreUrl::Sqlite(base.join(path))
    } else if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        StoreUrl::Postgres(raw.clone())
    } else {
        return Err(cerr(
            "store.url",
            format!(
                "\"{}\" is not supported; use sqlite://PATH or postgres://USER@HOST/DB",
                crate::redact::masked(raw)
            ),
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
    if !(1..=64).contains(&file.store.read_connections) {
        return Err(cerr("store.read_connections", "must be 1 to 64"));
    }
    let store = StoreSettings {
        url,
        queue_capacity: file.store.queue_capacity,
        max_batch: file.store.max_batch,
        pool_size: file.store.pool_size,
        read_connections: file.store.read_connections,
        connect_timeout: positive("store.connect_timeout", file.store.connect_timeout)?,
        statement_timeout: positive("store.statement_timeout", file.store.statement_timeout)?,
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
                .map(|v| positive(&format!("{key}.retention.events"), v))
                .transpose()?,
            transcript: bot
                .retention
                .transcript
                .map(|v| positive(&format!("{key}.retention.transcript"), v))
                .transpose()?,
        };
        let summary = summary_settings(bot, &key, &env)?;
        // With `[bots.summary]`, `summary` names the bot's summary jobs (re-pointing,
        // retrying by action), so no other action of the bot may take it.
        if let Some(j) = summary
            .as_ref()
            .and_then(|_| on_end.iter().position(|a| a.name == "summary"))
        {
            return Err(cerr(
                format!("{key}.on_end[{j}].name"),
                "\"summary\" names the bot's [bots.summary] jobs: give this action another name",
            ));
        }
        bots.push(BotSettings {
            id: bot.id.clone(),
            apps: bot.apps.clone(),
            inactivity_timeout,
            retention,
            on_end,
            caps: validate_caps(&bot.caps, &format!("{key}.caps"))?,
            redact: redactor(bot, &key)?,
            summary,
        });
    }

    let w = &file.workers;
    if w.concurrency == 0 {
        return Err(cerr("workers.concurrency", "must be greater than 0"));
    }
    if w.per_destination == 0 {
        return Err(cerr("workers.per_destination", "must be greater than 0"));
    }
    let workers = WorkerSettings {
        concurrency: w.concurrency,
        poll_interval: positive("workers.poll_interval", w.poll_interval)?,
        lease_margin: positive("workers.lease_margin", w.lease_margin)?,
        shutdown_grace: w.shutdown_grace,
        orphan_after: w.orphan_after,
        keep_finished_jobs: positive("workers.keep_finished_jobs", w.keep_finished_jobs)?,
        per_destination: w.per_destination,
        pause_after: w.pause_after,
        pause_for: positive("workers.pause_for", w.pause_for)?,
    };
    let admin_token = match (&file.admin.token_env, &file.admin.token) {
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(cerr("admin", "set token_env or token, not both".to_owned()));
        }
        (None, Some(token)) => {
            if token.len() < 16 {
                return Err(cerr(
                    "admin.token",
                    "the token is shorter than 16 characters".to_owned(),
                ));
            }
            Some(token.clone())
        }
        (Some(var), None) => {
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

    let demo_values = demo_values(file, &env);
    let parts = parts(file, &bots, base);
    Ok(Settings {
        server,
        store,
        apps,
        bots,
        workers,
        admin_token,
        demo_values,
        parts,
    })
}

/// Each app, bot, action and summary table by name, with a hash of how it is written
/// (secrets included, so a rotated one shows as changed; the hash never leaves the
/// process, and only names are logged).
fn parts(
    file: &FileConfig,
    bots: &[BotSettings],
    base: &Path,
) -> std::collections::BTreeMap<String, u64> {
    use std::hash::{Hash, Hasher};
    let hash = |v: &dyn std::fmt::Debug| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{v:?}").hash(&mut h);
        h.finish()
    };
    let mut parts = std::collections::BTreeMap::new();
    for app in &file.apps {
        // A public key rotated in its file, at the same path, is a change too.
        let key = app
            .public_key_file
            .as_ref()
            .map(|p| std::fs::read(base.join(p)).unwrap_or_default());
        parts.insert(format!("app {}", app.client_id), hash(&(app, key)));
    }
    for (written, bot) in file.bots.iter().zip(bots) {
        let mut bare = written.clone();
        bare.on_end.clear();
        bare.summary = None;
        parts.insert(format!("bot {}", bot.id), hash(&bare));
        for (action, settled) in written.on_end.iter().zip(&bot.on_end) {
            parts.insert(format!("action {}/{}", bot.id, settled.name), hash(action));
        }
        if let Some(summary) = &written.summary {
            parts.insert(format!("summary of {}", bot.id), hash(summary));
        }
    }
    parts
}

/// The keys whose secret is one of the demo values published with wrapup (each holds
/// `DO-NOT-USE`, a webhook secret once decoded): `serve` refuses them off loopback.
fn demo_values(file: &FileConfig, env: &impl Fn(&str) -> Option<String>) -> Vec<String> {
    let demo = |value: &[u8]| value.windows(10).any(|w| w == b"DO-NOT-USE");
    let resolved = |value: &Option<String>, var: &Option<String>| {
        value.clone().or_else(|| var.as_deref().and_then(env))
    };
    let mut keys = Vec::new();
    for (i, app) in file.apps.iter().enumerate() {
        if resolved(&app.client_secret, &app.client_secret_env).is_some_and(|s| demo(s.as_bytes()))
        {
            keys.push(format!("apps[{i}].client_secret"));
        }
    }
    if resolved(&file.admin.token, &file.admin.token_env).is_some_and(|t| demo(t.as_bytes())) {
        keys.push("admin.token".to_owned());
    }
    for (b, bot) in file.bots.iter().enumerate() {
        for (a, action) in bot.on_end.iter().enumerate() {
            if let ActionFile::Webhook {
                secret, secret_env, ..
            } = action
                && let Some(value) = resolved(secret, secret_env)
                && (demo(value.as_bytes())
                    || super::actions::decode_whsec(&value).is_some_and(|k| demo(&k)))
            {
                keys.push(format!("bots[{b}].on_end[{a}].secret"));
            }
        }
    }
    keys
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
        let alg = algorithm(name).ok_or_else(|| {
            cerr(
                format!("{key}.algorithms[{j}]"),
                format!("\"{name}\" is not supported (supported: HS256, HS512, RS256, RS512)"),
            )
        })?;
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
pub(super) fn validate_caps(file: &CapsFile, key: &str) -> Result<Caps, ConfigError> {
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

/// A duration that must not be zero (a zero timeout or interval would spin or refuse all).
pub(super) fn positive(key: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(cerr(key, "must be longer than 0s"));
    }
    Ok(d)
}

fn address(key: &str, value: &Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    value
        .as_ref()
        .map(|a| {
            a.parse::<SocketAddr>().map_err(|_| {
                cerr(
                    key,
                    format!("\"{a}\" is not an address like 127.0.0.1:8081"),
                )
            })
        })
        .transpose()
}

/// `server.tls_cert` and `server.tls_key`: both or neither; the chain and key must load
/// and go together (the key is the certificate's).
fn server_tls(
    s: &ServerFile,
    base: &Path,
) -> Result<Option<std::sync::Arc<rustls::sign::CertifiedKey>>, ConfigError> {
    let (cert, key) = match (&s.tls_cert, &s.tls_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (base.join(c), base.join(k)),
        (Some(_), None) => return Err(cerr("server.tls_key", "is needed with tls_cert")),
        (None, Some(_)) => return Err(cerr("server.tls_cert", "is needed with tls_key")),
    };
    let read = |key: &str, path: &Path| {
        std::fs::read(path).map_err(|e| cerr(key, format!("cannot read {}: {e}", path.display())))
    };
    let pem = read("server.tls_cert", &cert)?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            cerr(
                "server.tls_cert",
                format!("{} holds no PEM certificate", cert.display()),
            )
        })?;
    let pem = read("server.tls_key", &key)?;
    let private = rustls_pemfile::private_key(&mut pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| {
            cerr(
                "server.tls_key",
                format!("{} holds no PEM private key", key.display()),
            )
        })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified =
        rustls::sign::CertifiedKey::from_der(chain, private, &provider).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => cerr(
                "server.tls_key",
                format!("does not go with server.tls_cert: {e}"),
            ),
            e => cerr(
                "server.tls_key",
                format!("cannot use the key in {}: {e}", key.display()),
            ),
        })?;
    Ok(Some(std::sync::Arc::new(certified)))
}

/// A bot's `redact` kinds and `[[bots.redact_pattern]]`s: known kinds, each once; patterns
/// with a marker name of 1 to 32 letters, digits, `_` or `-` and a regex that compiles
/// within 1 MiB (the `regex` crate: linear time on any input).
fn redactor(bot: &BotFile, key: &str) -> Result<crate::domain::pii::Redactor, ConfigError> {
    use crate::domain::pii::KINDS;
    for (i, kind) in bot.redact.iter().enumerate() {
        if !KINDS.contains(&kind.as_str()) {
            return Err(cerr(
                format!("{key}.redact[{i}]"),
                format!("\"{kind}\" is not one of {}", KINDS.join(", ")),
            ));
        }
        if bot.redact[..i].contains(kind) {
            return Err(cerr(
                format!("{key}.redact[{i}]"),
                format!("\"{kind}\" is listed twice"),
            ));
        }
    }
    let mut custom = Vec::new();
    for (i, p) in bot.redact_pattern.iter().enumerate() {
        let k = format!("{key}.redact_pattern[{i}]");
        let name_ok = (1..=32).contains(&p.name.len())
            && p.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(cerr(
                format!("{k}.name"),
                "must be 1 to 32 letters, digits, _ or -",
            ));
        }
        if KINDS.contains(&p.name.as_str()) || custom.iter().any(|(n, _)| n == &p.name) {
            return Err(cerr(
                format!("{k}.name"),
                format!("\"{}\" is already used", p.name),
            ));
        }
        let re = regex::RegexBuilder::new(&p.regex)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| cerr(format!("{k}.regex"), e.to_string().replace('\n', " ")))?;
        // A pattern that can match nothing (`a*`, `\b`) would put markers between letters.
        let empty = ["", "x", "x y", "0", "a@b.c", "-"]
            .iter()
            .any(|probe| re.find_iter(probe).any(|m| m.start() == m.end()));
        if empty {
            return Err(cerr(format!("{k}.regex"), "can match the empty text"));
        }
        custom.push((p.name.clone(), re));
    }
    let redactor = crate::domain::pii::Redactor::new(&bot.redact, custom);
    let Some(regions) = &bot.redact_phone_regions else {
        return Ok(redactor);
    };
    let mut parsed = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        let k = format!("{key}.redact_phone_regions[{i}]");
        let region = r
            .parse::<crate::domain::pii::Region>()
            .ok()
            .filter(|_| r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()))
            .ok_or_else(|| {
                cerr(
                    &k,
                    format!("\"{r}\" is not a region code such as \"US\" or \"GB\""),
                )
            })?;
        if parsed.contains(&region) {
            return Err(cerr(k, format!("\"{r}\" is listed twice")));
        }
        parsed.push(region);
    }
    Ok(redactor.with_phone_regions(parsed))
}

/// `[bots.summary]`: the provider (`extractive`, or `openai` with its server, model and
/// key), a final summary at the end unless `at_end = false`, the timeout and retries.
fn summary_settings(
    bot: &BotFile,
    key: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<SummarySettings>, ConfigError> {
    let Some(s) = &bot.summary else {
        return Ok(None);
    };
    let k = |field: &str| format!("{key}.summary.{field}");
    let timeout = positive(&k("timeout"), s.timeout.unwrap_or(Duration::from_secs(30)))?;
    let openai_only = [
        ("base_url", s.base_url.is_some()),
        ("model", s.model.is_some()),
        ("api_key_env", s.api_key_env.is_some()),
        ("max_tokens", s.max_tokens.is_some()),
        ("max_tokens_field", s.max_tokens_field.is_some()),
        ("instructions", s.instructions.is_some()),
    ];
    let provider = match s.provider.as_deref().unwrap_or("extractive") {
        "extractive" => {
            if let Some((field, _)) = openai_only.iter().find(|(_, set)| *set) {
                return Err(cerr(k(field), "applies to provider = \"openai\" only"));
            }
            SummaryProvider::Extractive
        }
        "openai" => {
            let raw = s
                .base_url
                .as_deref()
                .ok_or_else(|| cerr(k("base_url"), "is required with provider = \"openai\" (e.g. \"https://api.openai.com/v1\" or \"http://127.0.0.1:11434/v1\")"))?;
            let base_url = reqwest::Url::parse(raw)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.query().is_none())
                .ok_or_else(|| {
                    cerr(
                        k("base_url"),
                        format!(
                            "\"{}\" is not an http:// or https:// URL without a query",
                            crate::redact::masked(raw)
                        ),
                    )
                })?;
            let model = s
                .model
                .clone()
                .filter(|m| !m.trim().is_empty() && m.len() <= 256)
                .ok_or_else(|| {
                    cerr(
                        k("model"),
                        "is required with provider = \"openai\" (1 to 256 characters)",
                    )
                })?;
            let api_key = match &s.api_key_env {
                None => None,
                Some(var) => Some(env(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                    cerr(
                        k("api_key_env"),
                        format!("environment variable {var} is not set"),
                    )
                })?),
            };
            if let Some(key) = &api_key
                && reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).is_err()
            {
                return Err(cerr(
                    k("api_key_env"),
                    "the key holds characters a header cannot carry",
                ));
            }
            let max_tokens = s.max_tokens.unwrap_or(800);
            if !(16..=32_768).contains(&max_tokens) {
                return Err(cerr(k("max_tokens"), "must be between 16 and 32768"));
            }
            let max_tokens_field = match s.max_tokens_field.as_deref() {
                None => MaxTokensField::for_base_url(&base_url),
                Some("max_completion_tokens") => MaxTokensField::MaxCompletionTokens,
                Some("max_tokens") => MaxTokensField::MaxTokens,
                Some(other) => {
                    return Err(cerr(
                        k("max_tokens_field"),
                        format!(
                            "\"{}\" is not a field: write \"max_completion_tokens\" (OpenAI) or \"max_tokens\" (Ollama, vLLM, llama.cpp)",
                            other.escape_debug()
                        ),
                    ));
                }
            };
            let instructions = match &s.instructions {
                Some(i) if i.trim().is_empty() => {
                    return Err(cerr(k("instructions"), "must not be empty"));
                }
                Some(i) if i.len() > 16 * 1024 => {
                    return Err(cerr(k("instructions"), "must be at most 16 KiB"));
                }
                Some(i) => i.clone(),
                None => crate::actions::summary::openai::DEFAULT_INSTRUCTIONS.to_owned(),
            };
            SummaryProvider::OpenAi(std::sync::Arc::new(OpenAiSettings {
                base_url,
                model,
                api_key,
                timeout,
                max_tokens,
                max_tokens_field,
                instructions,
            }))
        }
        other => {
            return Err(cerr(
                k("provider"),
                format!("\"{other}\" is not a provider: write \"extractive\" or \"openai\""),
            ));
        }
    };
    // The attempt outlasts the provider's request by a margin, so a request that timed
    // out on the last attempt still has its FAILED summary stored.
    let margin = match provider {
        SummaryProvider::Extractive => Duration::ZERO,
        SummaryProvider::OpenAi(_) => SUMMARY_STORE_MARGIN,
    };
    Ok(Some(SummarySettings {
        at_end: s.at_end.unwrap_or(true),
        action: ActionSettings {
            name: "summary".into(),
            previous_names: Vec::new(),
            kind: ActionKind::Summary { provider },
            timeout: timeout + margin,
            retry: super::actions::retry_policy(s.retry.as_ref(), &k)?,
        },
    }))
}

/// What a summary attempt has, beyond its provider's request, to read the transcript and
/// store the outcome.
const SUMMARY_STORE_MARGIN: Duration = Duration::from_secs(5);
