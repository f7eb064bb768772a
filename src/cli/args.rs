//! The command line, as clap reads it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "wrapup",
    version,
    about = "Self-hosted Agent AI hooks API: ends every conversation exactly once, durably."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        /// The configuration file.
        #[arg(long, short, env = "WRAPUP_CONFIG", default_value = "wrapup.toml")]
        config: PathBuf,
        /// Run with the published demo secrets even on a listener other machines can
        /// reach (refused without it; on 127.0.0.1 they are always allowed).
        #[arg(long)]
        demo: bool,
    },
    /// Create or upgrade the store's schema and exit (serve does this at start too).
    Migrate {
        /// The configuration file.
        #[arg(long, short, env = "WRAPUP_CONFIG", default_value = "wrapup.toml")]
        config: PathBuf,
    },
    /// Copy the embedded (SQLite) store to a new file while the server runs: one consistent
    /// snapshot, checked by opening it; prints what the copy holds. For PostgreSQL, use
    /// the database's own tools (pg_dump, base backups).
    Backup {
        /// The configuration file (its store.url names the database).
        #[arg(long, short, env = "WRAPUP_CONFIG", default_value = "wrapup.toml")]
        config: PathBuf,
        /// The file to write; it must not exist yet (created readable by its owner only).
        #[arg(long)]
        to: PathBuf,
    },
    /// Validate a configuration file and exit.
    CheckConfig {
        /// The configuration file.
        #[arg(long, short, env = "WRAPUP_CONFIG", default_value = "wrapup.toml")]
        config: PathBuf,
    },
    /// Print a JWT like the vendor's JWT tool makes (payload: sub, appId).
    Token(TokenArgs),
    /// Post a request to a running server with a freshly minted token; prints the answer
    /// (the HTTP status goes to standard error).
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
        /// The admin token (the value of the variable named by [admin] token_env, or [admin] token).
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
pub struct TokenArgs {
    /// The JWT app's client id (cs-...), written to the appId claim.
    #[arg(long, env = "WRAPUP_CLIENT_ID", global = true)]
    pub client_id: Option<String>,
    /// The client secret (HS algorithms).
    #[arg(
        long,
        env = "WRAPUP_CLIENT_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub secret: Option<String>,
    /// An RSA private key in PEM (RS algorithms).
    #[arg(long, global = true)]
    pub private_key: Option<PathBuf>,
    /// The signing algorithm: HS256, HS384, HS512, RS256, RS384 or RS512.
    #[arg(long, default_value = "HS256", global = true)]
    pub alg: String,
    /// The exp claim, this far ahead: a token that leaks stops working (an app with
    /// require_exp refuses a token without one).
    #[arg(long, default_value = "15m", global = true)]
    pub exp: humantime::Duration,
    /// Mint a token without an exp claim, valid until the app's secret changes (as the
    /// vendor's samples do; refused by apps with require_exp).
    #[arg(long, global = true, conflicts_with = "exp")]
    pub no_exp: bool,
    /// Add a random jti claim (for apps with enforce_jti).
    #[arg(long, global = true)]
    pub jti: bool,
    /// The sub claim.
    #[arg(long, default_value = "1234567890", global = true)]
    pub sub: String,
}

#[derive(Args)]
pub struct Target {
    /// The server's base URL.
    #[arg(
        long,
        env = "WRAPUP_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// The bot (stream) id, st-...
    #[arg(
        long,
        env = "WRAPUP_BOT",
        global = true,
        default_value = "st-56fbfece-0293-55a3-9154-7e3e19xxxxxx"
    )]
    pub bot: String,
    /// Which header carries the token.
    #[arg(long, value_enum, default_value_t = TokenHeader::Token, global = true)]
    pub header: TokenHeader,
    #[command(flatten)]
    pub token: TokenArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TokenHeader {
    Auth,
    Token,
    Bearer,
}

#[derive(Subcommand)]
pub enum SendWhat {
    /// END_OF_CONVERSATION
    End {
        /// The conversation id.
        #[arg(long)]
        conversation: String,
        /// The end's reason.
        #[arg(long, default_value = "agent_initiated")]
        reason: String,
        #[command(flatten)]
        common: EventCommon,
    },
    /// INTERNAL_TRANSFER_EVENT
    Transfer {
        /// The conversation id.
        #[arg(long)]
        conversation: String,
        /// NA, COLD, WARM or redial.
        #[arg(long = "type", default_value = "NA")]
        transfer_type: String,
        /// entry or exit.
        #[arg(long)]
        transition: String,
        /// The isExtAD field (true or false); left out when not given.
        #[arg(long)]
        is_ext_ad: Option<bool>,
        #[command(flatten)]
        common: EventCommon,
    },
    /// TRIGGER_SUMMARY_EVENT
    Summary {
        /// The conversation id.
        #[arg(long)]
        conversation: String,
        /// data.language.
        #[arg(long, default_value = "English")]
        language: String,
        /// data.locale.
        #[arg(long, default_value = "en")]
        locale: String,
        /// data.type.
        #[arg(long = "type", default_value = "post")]
        summary_type: String,
    },
    /// A message-propagation request.
    Message {
        /// The conversation id.
        #[arg(long)]
        conversation: String,
        /// The message's text.
        #[arg(long)]
        query: String,
        /// USER or AGENT.
        #[arg(long, default_value = "USER")]
        author: String,
        /// agentId.
        #[arg(long, default_value = "agent1")]
        agent_id: String,
        /// source.
        #[arg(long, default_value = "wrapup-cli")]
        source: String,
        /// experience.
        #[arg(long, default_value = "chat")]
        experience: String,
        /// language.
        #[arg(long, default_value = "en")]
        language: String,
    },
    /// A body from a file (or - for standard input), sent as it is.
    Raw {
        /// The file; - for standard input.
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Args)]
pub struct EventCommon {
    /// The event's language.
    #[arg(long, default_value = "en")]
    pub language: String,
    /// The event's experience.
    #[arg(long, default_value = "voice")]
    pub experience: String,
    /// participant.identity.
    #[arg(long, default_value = "agent1")]
    pub participant_identity: String,
    /// participant.name.
    #[arg(long, default_value = "Agent AI")]
    pub participant_name: String,
    /// participant.type.
    #[arg(long, default_value = "agent")]
    pub participant_type: String,
    /// customFields entries as KEY=VALUE; repeatable.
    #[arg(long = "custom-field", value_parser = parse_key_value)]
    pub custom_fields: Vec<(String, String)>,
}

#[derive(Subcommand)]
pub enum JobsWhat {
    /// List jobs, newest first, one line each.
    List {
        /// pending, running, succeeded, dead, orphaned or discarded.
        #[arg(long)]
        state: Option<String>,
        /// Only this bot's jobs.
        #[arg(long)]
        bot: Option<String>,
        /// Only this conversation's jobs.
        #[arg(long)]
        conversation: Option<String>,
        /// 1 to 1000.
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
    Show {
        /// The job's id (job_...).
        id: String,
    },
    /// Put a dead job (or all dead jobs of --bot, or of --bot's --action created since
    /// --since) back in the queue, or make a pending job (waiting out its backoff) due now.
    Retry {
        /// The job's id (job_...).
        #[arg(required_unless_present = "bot", conflicts_with = "bot")]
        id: Option<String>,
        /// Every dead job of this bot instead.
        #[arg(long)]
        bot: Option<String>,
        /// With --bot and --since: only this action's dead jobs.
        #[arg(long, requires_all = ["bot", "since"])]
        action: Option<String>,
        /// RFC 3339, with --action: only jobs created at or after this instant.
        #[arg(long, requires = "action")]
        since: Option<String>,
        /// RFC 3339, with --since: only jobs created before this instant.
        #[arg(long, requires = "since")]
        until: Option<String>,
    },
    /// Give up dead or orphaned jobs for good (clears a dead-job alert).
    Discard {
        /// The jobs' ids (job_...), 1 to 1000.
        #[arg(required = true, num_args = 1..=1000)]
        ids: Vec<String>,
    },
    /// Point a dead, orphaned or pending job at one of its bot's actions (by name), due now;
    /// or, with --bot and --from, every job of an action in one state (orphaned by default).
    Repoint {
        /// The job's id (job_...).
        #[arg(required_unless_present = "from", conflicts_with_all = ["from", "bot", "state"])]
        id: Option<String>,
        /// The name of the action to run it with.
        #[arg(long)]
        action: String,
        /// With --from: the bot whose jobs to re-point.
        #[arg(long, requires = "from")]
        bot: Option<String>,
        /// Every job of this action (a removed or renamed one, say) instead of one job.
        #[arg(long, requires = "bot")]
        from: Option<String>,
        /// With --from: orphaned (default), dead or pending.
        #[arg(long, requires = "from")]
        state: Option<String>,
        /// RFC 3339, with --from: only jobs created at or after this instant.
        #[arg(long, requires = "from")]
        since: Option<String>,
        /// RFC 3339, with --from: only jobs created before this instant.
        #[arg(long, requires = "from")]
        until: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ConversationsWhat {
    /// Show one conversation's record.
    Show {
        /// The conversation id.
        #[arg(long)]
        conversation: String,
    },
    /// List the bot's conversations, newest first (the records API's list and filters).
    List {
        /// active or ended.
        #[arg(long)]
        status: Option<String>,
        /// Only conversations one of whose agents has this identity.
        #[arg(long)]
        agent: Option<String>,
        /// Only conversations one of whose agents has this queueId or queueName.
        #[arg(long)]
        queue: Option<String>,
        /// Only conversations that ended with this reason.
        #[arg(long)]
        reason: Option<String>,
        /// Only conversations with this experience.
        #[arg(long)]
        experience: Option<String>,
        /// Only conversations with an anomaly of this code; any for any anomaly.
        #[arg(long)]
        anomaly: Option<String>,
        /// RFC 3339: ended (or last event, while active) at or after.
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339: ended (or last event, while active) at or before.
        #[arg(long)]
        to: Option<String>,
        /// 1 to 500.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// nextCursor of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
}

pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s}"))
}
