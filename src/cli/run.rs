//! Each command, run.

use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::json;
use wrapup::config;

use super::args::{Cli, Command, ConversationsWhat, JobsWhat, SendWhat};
use super::output::{admin_call, admin_json, exit, print_jobs};
use super::send::{events_body, mint, participant, request};
use super::serve;

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config, demo } => {
            let settings = super::load(&config)?;
            if let Some(why) = settings.demo_refusal().filter(|_| !demo) {
                return Err(super::ConfigInvalid(why).into());
            }
            wrapup::telemetry::init_logs();
            if !settings.demo_values.is_empty() {
                tracing::warn!(keys = %settings.demo_values.join(", "), "running with the published demo secrets: for trying wrapup only");
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve(settings, config, demo))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { config } => {
            let settings = super::load(&config)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let version = runtime.block_on(async {
                let store = wrapup::store::open(
                    &settings.store,
                    std::sync::Arc::new(wrapup::clock::SystemClock),
                )
                .await
                .map_err(|e| anyhow::Error::new(e).context("store.url"))?;
                let version = store.schema_version().await;
                store.close().await;
                anyhow::Ok(version?)
            })?;
            println!(
                "{}: the {} store's schema is at version {} (this wrapup's newest is {})",
                config.display(),
                settings.store.url.kind(),
                version.current,
                version.known
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { config, to } => {
            let settings = super::load(&config)?;
            let config::StoreUrl::Sqlite(db) = &settings.store.url else {
                bail!(
                    "store.url: wrapup backup copies the embedded SQLite store; for PostgreSQL use pg_dump or the database's base backups (docs/backups.md)"
                );
            };
            if to.symlink_metadata().is_ok() {
                bail!(
                    "--to: {} exists; a backup never overwrites a file",
                    to.display()
                );
            }
            let report = wrapup::store::sqlite::backup(db, &to).map_err(|e| {
                anyhow::Error::new(e).context(format!("backup of {}", db.display()))
            })?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => {
            let settings = super::load(&config)?;
            // What `serve` would refuse is not ok here either (`serve --demo` runs it).
            if let Some(why) = settings.demo_refusal() {
                return Err(super::ConfigInvalid(format!("{why} (serve --demo)")).into());
            }
            println!(
                "{}: ok ({} apps, {} bots, listen {})",
                config.display(),
                settings.apps.len(),
                settings.bots.len(),
                settings.server.listen
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(args) => {
            println!("{}", mint(&args)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Send { target, what } => {
            let body = match what {
                SendWhat::End {
                    conversation,
                    reason,
                    common,
                } => events_body(
                    &target.bot,
                    &conversation,
                    json!({
                        "name": "END_OF_CONVERSATION",
                        "reason": reason,
                        "language": common.language,
                        "experience": common.experience,
                        "participant": participant(&common),
                    }),
                ),
                SendWhat::Transfer {
                    conversation,
                    transfer_type,
                    transition,
                    is_ext_ad,
                    common,
                } => {
                    let mut event = json!({
                        "name": "INTERNAL_TRANSFER_EVENT",
                        "transfertype": transfer_type,
                        "transition": transition,
                        "language": common.language,
                        "experience": common.experience,
                        "participant": participant(&common),
                    });
                    if let Some(b) = is_ext_ad {
                        event["isExtAD"] = json!(b);
                    }
                    events_body(&target.bot, &conversation, event)
                }
                SendWhat::Summary {
                    conversation,
                    language,
                    locale,
                    summary_type,
                } => events_body(
                    &target.bot,
                    &conversation,
                    json!({
                        "name": "TRIGGER_SUMMARY_EVENT",
                        "data": {"language": language, "locale": locale, "type": summary_type},
                    }),
                ),
                SendWhat::Message {
                    conversation,
                    query,
                    author,
                    agent_id,
                    source,
                    experience,
                    language,
                } => json!({
                    "botId": target.bot,
                    "conversationId": conversation,
                    "query": query,
                    "agentId": agent_id,
                    "author": {"type": author},
                    "source": source,
                    "experience": experience,
                    "language": language,
                    "sendUserMessage": false,
                    "sendAgentMessage": false,
                }),
                SendWhat::Raw { file } => {
                    let text = if file.as_os_str() == "-" {
                        std::io::read_to_string(std::io::stdin())?
                    } else {
                        std::fs::read_to_string(&file)
                            .with_context(|| format!("reading {}", file.display()))?
                    };
                    serde_json::from_str(&text).context("the file is not JSON")?
                }
            };
            let url = format!(
                "{}/agentai/api/v1/hooks/{}",
                target.url.trim_end_matches('/'),
                target.bot
            );
            request(&target, reqwest::Method::POST, &url, Some(body))
        }
        Command::Jobs {
            url,
            admin_token,
            what,
        } => {
            let token = admin_token.ok_or(super::Usage(
                "--admin-token (or WRAPUP_ADMIN_TOKEN) is required",
            ))?;
            let base = format!("{}/admin/v1", url.trim_end_matches('/'));
            match what {
                JobsWhat::List {
                    state,
                    bot,
                    conversation,
                    limit,
                    cursor,
                    json,
                } => {
                    let mut query = vec![("limit", limit.to_string())];
                    for (k, v) in [
                        ("state", state),
                        ("bot", bot),
                        ("conversation", conversation),
                        ("cursor", cursor),
                    ] {
                        if let Some(v) = v {
                            query.push((k, v));
                        }
                    }
                    let url = reqwest::Url::parse_with_params(&format!("{base}/jobs"), &query)?;
                    let (ok, body) = admin_call(reqwest::Method::GET, url.as_str(), &token)?;
                    if !ok || json {
                        println!("{body}");
                    } else {
                        print_jobs(&body);
                    }
                    Ok(exit(ok))
                }
                JobsWhat::Show { id } => {
                    let (ok, body) =
                        admin_call(reqwest::Method::GET, &format!("{base}/jobs/{id}"), &token)?;
                    println!("{}", serde_json::to_string_pretty(&body)?);
                    Ok(exit(ok))
                }
                JobsWhat::Retry {
                    id,
                    bot,
                    action,
                    since,
                    until,
                } => {
                    window(since.as_deref(), until.as_deref())?;
                    let (ok, body) = match (id, bot, action) {
                        (Some(id), _, _) => {
                            let url = format!("{base}/jobs/{id}/retry");
                            admin_call(reqwest::Method::POST, &url, &token)?
                        }
                        (None, Some(bot), Some(action)) => {
                            let url = format!("{base}/jobs/retry");
                            let req = json!({ "bot": bot, "action": action, "since": since, "until": until });
                            admin_json(&url, &token, &req)?
                        }
                        (None, Some(bot), None) => {
                            let url = format!("{base}/bots/{bot}/jobs/retry");
                            admin_call(reqwest::Method::POST, &url, &token)?
                        }
                        (None, None, _) => {
                            return Err(super::Usage("give a job id or --bot").into());
                        }
                    };
                    println!("{body}");
                    if body["more"] == true {
                        eprintln!("more jobs may match: run the command again");
                    }
                    if body["retried"].as_u64() == Some(0)
                        && body["notRetried"].as_array().is_none_or(Vec::is_empty)
                    {
                        eprintln!("no dead job matched: nothing was retried");
                    }
                    Ok(exit(ok))
                }
                JobsWhat::Discard { ids } => {
                    let (ok, body) = if let [id] = ids.as_slice() {
                        let url = format!("{base}/jobs/{id}/discard");
                        admin_call(reqwest::Method::POST, &url, &token)?
                    } else {
                        let url = format!("{base}/jobs/discard");
                        admin_json(&url, &token, &json!({ "ids": ids }))?
                    };
                    println!("{body}");
                    Ok(exit(ok))
                }
                JobsWhat::Repoint {
                    id,
                    action,
                    bot,
                    from,
                    state,
                    since,
                    until,
                } => {
                    window(since.as_deref(), until.as_deref())?;
                    let (ok, body) = match (id, bot, from) {
                        (Some(id), _, _) => {
                            let url = format!("{base}/jobs/{id}/repoint");
                            admin_json(&url, &token, &json!({ "action": action }))?
                        }
                        (None, Some(bot), Some(from)) => {
                            let url = format!("{base}/jobs/repoint");
                            let req = json!({
                                "bot": bot, "from": from, "to": action, "state": state,
                                "since": since, "until": until,
                            });
                            admin_json(&url, &token, &req)?
                        }
                        _ => {
                            return Err(super::Usage("give a job id, or --bot and --from").into());
                        }
                    };
                    println!("{body}");
                    // Matching nothing is no error (said on standard error); matching jobs
                    // and re-pointing none of them is.
                    let repointed = body["repointed"].as_u64();
                    let refused = body["notRepointed"].as_array().map_or(0, Vec::len);
                    if body["more"] == true {
                        eprintln!("more jobs may match: run the command again");
                    }
                    if repointed == Some(0) && refused == 0 {
                        eprintln!("no job matched: nothing was re-pointed");
                    }
                    Ok(exit(ok && !(repointed == Some(0) && refused > 0)))
                }
            }
        }
        Command::Conversations { target, what } => match what {
            ConversationsWhat::Show { conversation } => {
                let url = format!(
                    "{}/api/v1/bots/{}/conversations/{}",
                    target.url.trim_end_matches('/'),
                    target.bot,
                    conversation
                );
                request(&target, reqwest::Method::GET, &url, None)
            }
            ConversationsWhat::List {
                status,
                agent,
                queue,
                reason,
                experience,
                anomaly,
                from,
                to,
                limit,
                cursor,
            } => {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                query.append_pair("limit", &limit.to_string());
                for (k, v) in [
                    ("status", status),
                    ("agent", agent),
                    ("queue", queue),
                    ("reason", reason),
                    ("experience", experience),
                    ("anomaly", anomaly),
                    ("from", from),
                    ("to", to),
                    ("cursor", cursor),
                ] {
                    if let Some(v) = v {
                        query.append_pair(k, &v);
                    }
                }
                let url = format!(
                    "{}/api/v1/bots/{}/conversations?{}",
                    target.url.trim_end_matches('/'),
                    target.bot,
                    query.finish()
                );
                request(&target, reqwest::Method::GET, &url, None)
            }
        },
    }
}

/// A time window the server would take as empty (`until` at or before `since`): a usage
/// mistake here, said before anything is sent.
fn window(since: Option<&str>, until: Option<&str>) -> anyhow::Result<()> {
    let at = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    };
    if let (Some(since), Some(until)) = (since.and_then(at), until.and_then(at))
        && until <= since
    {
        return Err(
            super::Usage("--until must be after --since: the window would match no job").into(),
        );
    }
    Ok(())
}
