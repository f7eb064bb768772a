//! Calls to a running server's admin API, and what the CLI prints: caller-supplied text
//! made safe for a terminal.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

pub fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Sends one request on a one-off runtime (the CLI is synchronous); its status and body.
pub fn call(
    url: &str,
    build: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let response = build(&client)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        Ok((status, response.text().await?))
    })
}

pub fn admin_call(
    method: reqwest::Method,
    url: &str,
    token: &str,
) -> anyhow::Result<(bool, Value)> {
    let (status, text) = call(url, |c| c.request(method, url).bearer_auth(token))?;
    eprintln!("HTTP {status}");
    Ok((
        status.is_success(),
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// POSTs a JSON body to the admin API.
pub fn admin_json(url: &str, token: &str, body: &Value) -> anyhow::Result<(bool, Value)> {
    let (status, text) = call(url, |c| c.post(url).bearer_auth(token).json(body))?;
    eprintln!("HTTP {status}");
    Ok((
        status.is_success(),
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Text that came from callers, made safe for a terminal: control characters (ANSI
/// escapes, newlines that would fake a row) are shown escaped, as `\u{1b}`.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            // Control characters, and the invisible ones that reorder or hide text
            // (bidirectional overrides and isolates, zero-width characters).
            if c.is_control()
                || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
            {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Like [`printable`], but keeps line breaks (a pretty-printed answer stays readable).
pub fn printable_lines(s: &str) -> String {
    s.split('\n').map(printable).collect::<Vec<_>>().join("\n")
}

pub fn print_jobs(body: &Value) {
    println!(
        "{:<38} {:<10} {:<14} {:<16} {:>8}  {:<24} LAST ERROR",
        "ID", "STATE", "KIND", "ACTION", "ATTEMPTS", "CONVERSATION"
    );
    for job in body["jobs"].as_array().into_iter().flatten() {
        let s = |k: &str| printable(job[k].as_str().unwrap_or(""));
        println!(
            "{:<38} {:<10} {:<14} {:<16} {:>8}  {:<24} {}",
            s("id"),
            s("state"),
            s("kind"),
            s("action"),
            format!("{}/{}", job["attempts"], job["maxAttempts"]),
            s("conversationId"),
            s("lastError")
        );
    }
    if let Some(next) = body["nextCursor"].as_str() {
        println!("next: --cursor {}", printable(next));
    }
}
