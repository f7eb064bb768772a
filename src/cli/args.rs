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
    #[arg(long, default_value = "HS256", global = true)]
    pub alg: String,
    /// Add an exp claim this far ahead, e.g. 1h.
    #[arg(long, global = true)]
    pub exp: Option<humantime::Duration>,
    /// Add a random jti claim (for apps with enforce_jti).
    #[arg(long, global = true)]
    pub jti: bool,
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
pub struct EventCommon {
    #[arg(long, default_value = "en")]
    pub language: String,
    #[arg(long, default_value = "voice")]
    pub experience: String,
    #[arg(long, default_value = "agent1")]
    pub participant_identity: String,
    #[arg(long, default_value = "Agent AI")]
    pub participant_name: String,
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
    /// Give up a dead or orphaned job for good.
    Discard { id: String },
    /// Point a dead, orphaned or pending job at one of its bot's actions (by name), due now.
    Repoint {
        id: String,
        #[arg(long)]
        action: String,
    },
}

#[derive(Subcommand)]
pub enum ConversationsWhat {
    /// Show one conversation.
    Show {
        #[arg(long)]
        conversation: String,
    },
}

pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s}"))
}
