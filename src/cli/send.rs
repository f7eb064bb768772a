//! Requests to a running server as a platform sends them: tokens, event bodies.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Map, Value, json};
use wrapup::auth::{self, MintRequest};

use super::args::{EventCommon, Target, TokenArgs, TokenHeader};
use super::output::{call, printable_lines};

pub fn participant(c: &EventCommon) -> Value {
    let mut p = json!({
        "identity": c.participant_identity,
        "name": c.participant_name,
        "type": c.participant_type,
    });
    if !c.custom_fields.is_empty() {
        let fields: Map<String, Value> = c
            .custom_fields
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        p["customFields"] = Value::Object(fields);
    }
    p
}

pub fn events_body(bot: &str, conversation: &str, event: Value) -> Value {
    json!({"botId": bot, "conversationId": conversation, "events": [event]})
}

pub fn mint(args: &TokenArgs) -> anyhow::Result<String> {
    let algorithm = auth::algorithm(&args.alg)
        .with_context(|| format!("--alg {}: use HS256, HS512, RS256 or RS512", args.alg))?;
    let key = match (&args.secret, &args.private_key) {
        (Some(s), None) => s.clone().into_bytes(),
        (None, Some(path)) => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
        }
        _ => {
            return Err(
                super::Usage("give exactly one of --secret (HS*) or --private-key (RS*)").into(),
            );
        }
    };
    let client_id = args
        .client_id
        .as_deref()
        .context("--client-id (or WRAPUP_CLIENT_ID) is required")?;
    auth::mint(&MintRequest {
        client_id,
        sub: &args.sub,
        algorithm,
        key: &key,
        ttl: (!args.no_exp).then(|| Duration::from(args.exp)),
        jti: args.jti.then(|| uuid::Uuid::new_v4().to_string()),
        extra: Map::new(),
    })
}

/// An answer as printed: on a terminal, JSON pretty-printed and caller text made safe;
/// piped, the answer as it came.
fn shown(text: &str, terminal: bool) -> String {
    if !terminal {
        return text.to_owned();
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => {
            printable_lines(&serde_json::to_string_pretty(&v).unwrap_or_else(|_| text.to_owned()))
        }
        Err(_) => printable_lines(text),
    }
}

pub fn request(
    target: &Target,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> anyhow::Result<ExitCode> {
    let token = mint(&target.token)?;
    let (status, text) = call(url, |client| {
        let req = client.request(method, url);
        let req = match target.header {
            TokenHeader::Auth => req.header("auth", &token),
            TokenHeader::Token => req.header("token", &token),
            TokenHeader::Bearer => req.bearer_auth(&token),
        };
        match body {
            Some(body) => req.json(&body),
            None => req,
        }
    })?;
    // The status to standard error, the answer alone to standard output, so it pipes
    // into jq: pretty and made safe for a terminal on one, as the server sent it when piped.
    eprintln!("HTTP {status}");
    println!(
        "{}",
        shown(&text, std::io::IsTerminal::is_terminal(&std::io::stdout()))
    );
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
