//! The `wrapup` command: the server, and the tools an integrator uses to try it.

// mimalloc: glibc malloc/free were ~20 % of all instructions per request (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

use wrapup::auth::{self, MintRequest};
use wrapup::{App, config};

#[derive(Parser)]
#[command(
    name = "wrapup",
    version,
    about = "Self-hosted Agent AI hooks API: ends every conversation exactly once, durably."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        #[arg(long, short, env = "WRAPUP_CONFIG", default_value = "wrapup.toml")]
        config: PathBuf,
    },
    /// Create or upgrade the store's schema and exit (serve does this at start too).
    Migrate {
        #[arg(long, short, env = "WRAPUP_CONFIG", default_value = "wrapup.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and exit.
    CheckConfig {
        #[arg(long, short, env = "WRAPUP_CONFIG", default_value = "wrapup.toml")]
        config: PathBuf,
    },
    /// Print a JWT like the vendor's JWT tool makes (payload: sub, appId).
    Token(TokenArgs),
    /// Post a request to a running server with a freshly minted token; prints status and body.
    Send {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        what: SendWhat,
    },
    /// See and replay post-conversation action jobs (admin API).
    Jobs {
        /// The server's base URL.
        #[arg(
            long,
            env = "WRAPUP_URL",
            default_value = "http://127.0.0.1:8080",
            global = true
        )]
        url: String,
        /// The admin token (the value of the variable named by [admin] token_env).
        #[arg(
            long,
            env = "WRAPUP_ADMIN_TOKEN",
            hide_env_values = true,
            global = true
        )]
        admin_token: Option<String>,
        #[command(subcommand)]
        what: JobsWhat,
    },
    /// Read conversations back from a running server.
    Conversations {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        what: ConversationsWhat,
    },
}

#[derive(Args, Clone)]
struct TokenArgs {
    /// The JWT app's client id (cs-...), written to the appId claim.
    #[arg(long, env = "WRAPUP_CLIENT_ID", global = true)]
    client_id: Option<String>,
    /// The client secret (HS algorithms).
    #[arg(
        long,
        env = "WRAPUP_CLIENT_SECRET",
        hide_env_values = true,
        global = true
    )]
    secret: Option<String>,
    /// An RSA private key in PEM (RS algorithms).
    #[arg(long, global = true)]
    private_key: Option<PathBuf>,
    #[arg(long, default_value = "HS256", global = true)]
    alg: String,
    /// Add an exp claim this far ahead, e.g. 1h.
    #[arg(long, global = true)]
    exp: Option<humantime::Duration>,
    /// Add a random jti claim (for apps with enforce_jti).
    #[arg(long, global = true)]
    jti: bool,
    #[arg(long, default_value = "1234567890", global = true)]
    sub: String,
}

#[derive(Args)]
struct Target {
    /// The server's base URL.
    #[arg(
        long,
        env = "WRAPUP_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// The bot (stream) id, st-...
    #[arg(
        long,
        global = true,
        default_value = "st-56fbfece-0293-55a3-9154-7e3e19xxxxxx"
    )]
    bot: String,
    /// Which header carries the token.
    #[arg(long, value_enum, default_value_t = TokenHeader::Token, global = true)]
    header: TokenHeader,
    #[command(flatten)]
    token: TokenArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum TokenHeader {
    Auth,
    Token,
    Bearer,
}

#[derive(Subcommand)]
enum SendWhat {
    /// END_OF_CONVERSATION
    End {
        #[arg(long)]
        conversation: String,
        #[arg(long, default_value = "agent_initiated")]
        reason: String,
        #[command(flatten)]
        common: EventCommon,
    },
    /// INTERNAL_TRANSFER_EVENT
    Transfer {
        #[arg(long)]
        conversation: String,
        /// NA, COLD, WARM or redial.
        #[arg(long = "type", default_value = "NA")]
        transfer_type: String,
        /// entry or exit.
        #[arg(long)]
        transition: String,
        #[arg(long)]
        is_ext_ad: Option<bool>,
        #[command(flatten)]
        common: EventCommon,
    },
    /// TRIGGER_SUMMARY_EVENT
    Summary {
        #[arg(long)]
        conversation: String,
        #[arg(long, default_value = "English")]
        language: String,
        #[arg(long, default_value = "en")]
        locale: String,
        #[arg(long = "type", default_value = "post")]
        summary_type: String,
    },
    /// A message-propagation request.
    Message {
        #[arg(long)]
        conversation: String,
        #[arg(long)]
        query: String,
        /// USER or AGENT.
        #[arg(long, default_value = "USER")]
        author: String,
        #[arg(long, default_value = "agent1")]
        agent_id: String,
        #[arg(long, default_value = "wrapup-cli")]
        source: String,
        #[arg(long, default_value = "chat")]
        experience: String,
        #[arg(long, default_value = "en")]
        language: String,
    },
    /// A body from a file (or - for standard input), sent as it is.
    Raw {
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Args)]
struct EventCommon {
    #[arg(long, default_value = "en")]
    language: String,
    #[arg(long, default_value = "voice")]
    experience: String,
    #[arg(long, default_value = "agent1")]
    participant_identity: String,
    #[arg(long, default_value = "Agent AI")]
    participant_name: String,
    #[arg(long, default_value = "agent")]
    participant_type: String,
    /// customFields entries as KEY=VALUE; repeatable.
    #[arg(long = "custom-field", value_parser = parse_key_value)]
    custom_fields: Vec<(String, String)>,
}

#[derive(Subcommand)]
enum JobsWhat {
    /// List jobs, newest first, one line each.
    List {
        /// pending, running, succeeded or dead.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        bot: Option<String>,
        #[arg(long)]
        conversation: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// From a previous list's "next:" line.
        #[arg(long)]
        cursor: Option<String>,
        /// Print the JSON answer instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Show one job with all its attempts (JSON).
    Show { id: String },
    /// Put a dead job (or all dead jobs of --bot) back in the queue.
    Retry {
        #[arg(required_unless_present = "bot", conflicts_with = "bot")]
        id: Option<String>,
        #[arg(long)]
        bot: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConversationsWhat {
    /// Show one conversation.
    Show {
        #[arg(long)]
        conversation: String,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    wrapup::install_tls_provider();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wrapup: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let settings =
                config::load(&config).map_err(|e| anyhow::anyhow!("config error: {e}"))?;
            wrapup::telemetry::init_logs();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve(settings))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { config } => {
            let settings =
                config::load(&config).map_err(|e| anyhow::anyhow!("config error: {e}"))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let store = wrapup::store::open(&settings.store)
                    .await
                    .map_err(|e| anyhow::anyhow!("store.url: {e}"))?;
                store.close().await;
                anyhow::Ok(())
            })?;
            println!("{}: the store's schema is up to date", config.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => {
            let settings =
                config::load(&config).map_err(|e| anyhow::anyhow!("config error: {e}"))?;
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
            let token = admin_token.context("--admin-token (or WRAPUP_ADMIN_TOKEN) is required")?;
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
                JobsWhat::Retry { id, bot } => {
                    let url = match (id, bot) {
                        (Some(id), _) => format!("{base}/jobs/{id}/retry"),
                        (None, Some(bot)) => format!("{base}/bots/{bot}/jobs/retry"),
                        (None, None) => bail!("give a job id or --bot"),
                    };
                    let (ok, body) = admin_call(reqwest::Method::POST, &url, &token)?;
                    println!("{body}");
                    Ok(exit(ok))
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
        },
    }
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn admin_call(method: reqwest::Method, url: &str, token: &str) -> anyhow::Result<(bool, Value)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let response = client
            .request(method, url)
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let ok = response.status().is_success();
        let text = response.text().await?;
        Ok((
            ok,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    })
}

/// Text that came from callers, made safe for a terminal: control characters (ANSI
/// escapes, newlines that would fake a row) are shown escaped, as `\u{1b}`.
fn printable(s: &str) -> String {
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
fn printable_lines(s: &str) -> String {
    s.split('\n').map(printable).collect::<Vec<_>>().join("\n")
}

fn print_jobs(body: &Value) {
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

fn participant(c: &EventCommon) -> Value {
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

fn events_body(bot: &str, conversation: &str, event: Value) -> Value {
    json!({"botId": bot, "conversationId": conversation, "events": [event]})
}

fn mint(args: &TokenArgs) -> anyhow::Result<String> {
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

fn request(
    target: &Target,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> anyhow::Result<ExitCode> {
    let token = mint(&target.token)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut req = client.request(method, url);
        req = match target.header {
            TokenHeader::Auth => req.header("auth", &token),
            TokenHeader::Token => req.header("token", &token),
            TokenHeader::Bearer => req.bearer_auth(&token),
        };
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        println!("{}", status.as_u16());
        println!("{}", printable_lines(&text));
        Ok(if status.is_success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

async fn serve(settings: config::Settings) -> anyhow::Result<()> {
    let app = App::build(settings).await?;
    let cancel = app.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("signal received");
        cancel.cancel();
    });
    app.wait().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
