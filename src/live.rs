//! What the configuration decides while the server runs — apps and their keys, rate
//! limits, bots, their actions and caps, the admin token, request limits — built whole
//! from [`Settings`] and swapped whole on `SIGHUP` ([`crate::App::reload`]). A request
//! reads one `Live` from start to end, so it never sees half of an old configuration and
//! half of a new one. Listeners, the store, `[workers]` sizes and the rest of `[server]`
//! are fixed at start.

use std::collections::HashMap;
use std::sync::Arc;

use crate::actions::{Runner, action_refs};
use crate::api::auth::RateLimits;
use crate::auth::Authenticator;
use crate::config::{BotSettings, Settings};
use crate::domain::Limits;

pub struct Live {
    pub auth: Authenticator,
    /// Each rate-limited app's share of requests (a reload starts every bucket full).
    pub rates: RateLimits,
    pub bots: HashMap<String, BotSettings>,
    /// The bots in the file's order (the sweeper walks them).
    pub bot_list: Vec<BotSettings>,
    /// What the domain's plan needs of each bot: its actions and caps.
    pub plans: HashMap<String, crate::domain::ingest::Bot>,
    pub admin_token: Option<String>,
    pub limits: Limits,
    /// The actions, and the clients they share.
    pub runner: Arc<Runner>,
    /// How long an unknown destination's due jobs wait before they are orphaned.
    pub orphan_after: std::time::Duration,
    pub keep_finished_jobs: std::time::Duration,
}

impl Live {
    pub fn new(settings: &Settings) -> anyhow::Result<Live> {
        Ok(Live {
            auth: Authenticator::new(&settings.apps),
            rates: RateLimits::new(&settings.apps),
            bots: settings
                .bots
                .iter()
                .map(|b| (b.id.clone(), b.clone()))
                .collect(),
            bot_list: settings.bots.clone(),
            plans: settings
                .bots
                .iter()
                .map(|b| {
                    let bot = crate::domain::ingest::Bot {
                        on_end: action_refs(b),
                        caps: b.caps,
                        summary: b
                            .summary
                            .as_ref()
                            .map(|s| crate::actions::summary_ref(&b.id, s, "")),
                    };
                    (b.id.clone(), bot)
                })
                .collect(),
            admin_token: settings.admin_token.clone(),
            limits: Limits {
                max_events: settings.server.max_events_per_request,
                ..Limits::default()
            },
            runner: Arc::new(Runner::new(&settings.bots)?),
            orphan_after: settings.workers.orphan_after,
            keep_finished_jobs: settings.workers.keep_finished_jobs,
        })
    }
}

/// The live configuration, shared by the handlers, the workers and the sweeper.
pub type Shared = Arc<arc_swap::ArcSwap<Live>>;
