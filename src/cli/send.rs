//! Requests to a running server as a platform sends them: tokens, event bodies.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
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
        _ => bail!("give exactly one of --secret (HS*) or --private-key (RS*)"),
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
        ttl: args.exp.map(Duration::from),
        jti: args.jti.then(|| uuid::Uuid::new_v4().to_string()),
        extra: Map::new(),
    })
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
    println!("{}", status.as_u16());
    println!("{}", printable_lines(&text));
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
