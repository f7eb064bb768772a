//! `[[bots.on_end]]` entries: each kind's own checks (which keys a kind has is the file's
//! type, `ActionFile`), the secret resolved, the name defaulted and unique within the bot.

use super::file::{ActionFile, RetryFile, TlsFile};
use super::validate::positive;
use super::*;

pub(super) fn validate_action(
    a: &ActionFile,
    key: &str,
    earlier: &[ActionSettings],
    env: &impl Fn(&str) -> Option<String>,
) -> Result<ActionSettings, ConfigError> {
    let k = |field: &str| format!("{key}.{field}");
    let non_empty = |field: &str, v: &str| -> Result<String, ConfigError> {
        if v.trim().is_empty() {
            return Err(cerr(k(field), "must not be empty"));
        }
        Ok(v.to_owned())
    };
    let kind = match a {
        ActionFile::Webhook {
            url,
            secret,
            secret_env,
            headers,
            give_up_on,
            tls,
            ..
        } => {
            let give_up_on = give_up_on.clone().unwrap_or_else(|| vec![410]);
            if let Some(bad) = give_up_on.iter().find(|s| !(400..=599).contains(*s)) {
                return Err(cerr(
                    k("give_up_on"),
                    format!("{bad} is not a 4xx or 5xx status"),
                ));
            }
            let raw_url = non_empty("url", url)?;
            let url = reqwest::Url::parse(&raw_url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    cerr(
                        k("url"),
                        format!(
                            "\"{}\" is not an http:// or https:// URL",
                            crate::redact::masked(&raw_url)
                        ),
                    )
                })?;
            let secret = match (secret, secret_env) {
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
            let mut parsed = Vec::new();
            for (name, value) in headers.iter().flatten() {
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
                parsed.push((n, v));
            }
            if tls.is_some() && url.scheme() != "https" {
                return Err(cerr(k("tls"), "applies to an https:// URL only"));
            }
            let tls = tls.as_ref().map(|t| client_tls(t, &k)).transpose()?;
            ActionKind::Webhook {
                url,
                secret,
                headers: parsed,
                give_up_on,
                tls,
            }
        }
        ActionFile::Nats {
            url, subject, tls, ..
        } => {
            let url = non_empty("url", url)?;
            let subject = non_empty("subject", subject)?;
            if subject.contains(char::is_whitespace) || subject.contains(['*', '>']) {
                return Err(cerr(
                    k("subject"),
                    "must be a concrete subject (no spaces or wildcards)",
                ));
            }
            let tls = tls.as_ref().map(|t| client_tls(t, &k)).transpose()?;
            ActionKind::Nats { url, subject, tls }
        }
        ActionFile::RedisCleanup { url, keys, tls, .. } => {
            let url = non_empty("url", url)?;
            let secure = url.starts_with("rediss://");
            if !secure && !url.starts_with("redis://") && !url.starts_with("unix://") {
                return Err(cerr(
                    k("url"),
                    format!(
                        "\"{}\" is not a redis:// or rediss:// URL",
                        crate::redact::masked(&url)
                    ),
                ));
            }
            if tls.is_some() && !secure {
                return Err(cerr(
                    k("tls"),
                    "applies to a rediss:// URL only (write rediss:// to use TLS)",
                ));
            }
            let tls = tls.as_ref().map(|t| client_tls(t, &k)).transpose()?;
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
            ActionKind::RedisCleanup {
                url,
                keys: keys.clone(),
                tls,
            }
        }
    };
    let common = a.common();
    let kind_name = a.kind();
    let name_ok = |key: String, n: &str| match n {
        n if n.trim().is_empty() => Err(cerr(key, "must not be empty")),
        // `@` is kept for the jobs wrapup names itself (`summary@end`, `crm@summary@7`).
        n if n.contains('@') => Err(cerr(key, "must not contain @")),
        // Nor what marks a re-pointed job (`crm (re-pointed from hook)`): the jobs of an
        // action are told apart by these names.
        n if n.contains(" (re-pointed from ") => {
            Err(cerr(key, "must not contain \" (re-pointed from \""))
        }
        _ => Ok(()),
    };
    // An action's identity is its bot, its kind and its name: a job follows its action's
    // settings (URL, secret, headers, retry) as they are when an attempt starts. A name
    // defaults to the kind; a second action of the same kind must be named (a default
    // by position would hand jobs to another action when the list is reordered).
    let name = match common.name {
        Some(n) => {
            name_ok(k("name"), n)?;
            n.clone()
        }
        None => {
            if let Some(j) = earlier.iter().position(|e| e.kind.name() == kind_name) {
                return Err(cerr(
                    k("name"),
                    format!(
                        "is required: on_end[{j}] is a {kind_name} action too; name each (jobs follow their action by name)"
                    ),
                ));
            }
            kind_name.to_owned()
        }
    };
    if earlier.iter().any(|e| e.name == name) {
        return Err(cerr(
            k("name"),
            format!("\"{name}\" is used by another action of this bot"),
        ));
    }
    for (i, old) in common.previous_names.iter().enumerate() {
        let key = k(&format!("previous_names[{i}]"));
        name_ok(key.clone(), old)?;
        let taken = *old == name
            || earlier
                .iter()
                .any(|e| e.name == *old || e.previous_names.contains(old))
            || common.previous_names[..i].contains(old);
        if taken {
            return Err(cerr(
                key,
                format!("\"{old}\" is this bot's action's name already"),
            ));
        }
    }
    let (timeout, retry) = (common.timeout, common.retry);
    let timeout = positive(&k("timeout"), timeout.unwrap_or(Duration::from_secs(10)))?;
    Ok(ActionSettings {
        name,
        previous_names: common.previous_names.to_vec(),
        kind,
        timeout,
        retry: retry_policy(retry, &k)?,
    })
}

pub(super) fn retry_policy(
    r: Option<&RetryFile>,
    k: &impl Fn(&str) -> String,
) -> Result<RetryPolicy, ConfigError> {
    let defaults = RetryPolicy::default();
    let Some(r) = r else { return Ok(defaults) };
    let retry = RetryPolicy {
        max_attempts: r.max_attempts.unwrap_or(defaults.max_attempts),
        initial_delay: match r.initial_delay {
            Some(v) => positive(&k("retry.initial_delay"), v)?,
            None => defaults.initial_delay,
        },
        max_delay: match r.max_delay {
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
    Ok(retry)
}

/// The key of a Standard Webhooks secret: `whsec_` + base64.
pub(super) fn decode_whsec(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let b64 = secret.strip_prefix("whsec_")?;
    let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}

/// Reads an action's `tls` files and checks they hold what they should: the CA at least
/// one certificate, the client certificate a certificate and its key a private key, both
/// or neither. A mistake names the key and the file.
fn client_tls(t: &TlsFile, k: &impl Fn(&str) -> String) -> Result<ClientTls, ConfigError> {
    let read = |field: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| cerr(k(field), format!("cannot read {}: {e}", path.display())))
    };
    let certs = |field: &str, path: &std::path::Path| -> Result<Vec<u8>, ConfigError> {
        let pem = read(field, path)?;
        let found = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cerr(k(field), format!("{}: {e}", path.display())))?;
        if found.is_empty() {
            return Err(cerr(
                k(field),
                format!("{} holds no PEM certificate", path.display()),
            ));
        }
        Ok(pem)
    };
    let ca_pem = t
        .ca_file
        .as_deref()
        .map(|p| certs("tls.ca_file", p))
        .transpose()?;
    let client = match (&t.client_cert, &t.client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let cert_pem = certs("tls.client_cert", cert)?;
            let key_pem = read("tls.client_key", key)?;
            match rustls_pemfile::private_key(&mut key_pem.as_slice()) {
                Ok(Some(_)) => {}
                _ => {
                    return Err(cerr(
                        k("tls.client_key"),
                        format!("{} holds no PEM private key", key.display()),
                    ));
                }
            }
            Some(ClientCert {
                cert_file: cert.clone(),
                key_file: key.clone(),
                cert_pem,
                key_pem,
            })
        }
        (Some(_), None) => return Err(cerr(k("tls.client_key"), "is needed with client_cert")),
        (None, Some(_)) => return Err(cerr(k("tls.client_cert"), "is needed with client_key")),
    };
    Ok(ClientTls {
        ca_file: t.ca_file.clone(),
        ca_pem,
        client,
    })
}
