//! The `wrapup` command line: arguments, the commands, what they print.

pub mod args;
mod output;
mod run;
mod send;

pub use run::run;

/// The exit statuses (README, "The command line"): 0 done; 1 failed (an HTTP error
/// answer, a store that cannot be opened, a file that exists); 2 usage (clap's); 3 the
/// server could not be reached (connection refused, timeout); 78 the configuration is
/// invalid (sysexits' `EX_CONFIG`; the package's unit does not restart on it).
pub fn exit_status(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<ConfigInvalid>().is_some() {
            return 78;
        }
        if cause.downcast_ref::<Usage>().is_some() {
            return 2;
        }
        if cause
            .downcast_ref::<reqwest::Error>()
            .is_some_and(|r| r.is_connect() || r.is_timeout())
        {
            return 3;
        }
    }
    1
}

/// A configuration that cannot run: its message names the key.
#[derive(Debug)]
pub struct ConfigInvalid(pub String);

impl std::fmt::Display for ConfigInvalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config error: {}", self.0)
    }
}

impl std::error::Error for ConfigInvalid {}

/// Arguments that do not make a command (what clap cannot check alone).
#[derive(Debug)]
pub struct Usage(pub &'static str);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Usage {}

/// Reads and validates the configuration file; an error is a [`ConfigInvalid`].
pub fn load(path: &std::path::Path) -> anyhow::Result<config::Settings> {
    config::load(path).map_err(|e| ConfigInvalid(e.to_string()).into())
}

use wrapup::{App, config};

/// `demo`: `--demo`, the published demo secrets allowed on any listener (a reload is held
/// to the same rule as the start).
pub async fn serve(
    settings: config::Settings,
    path: std::path::PathBuf,
    demo: bool,
) -> anyhow::Result<()> {
    // Take SIGHUP before anything slow (opening and migrating the store): its default
    // action would end the process. One sent during the start is handled right after it.
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let app = App::build(settings).await?;
    let cancel = app.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("signal received");
        cancel.cancel();
    });
    #[cfg(unix)]
    match hangups {
        Ok(hangups) => {
            tokio::spawn(reload_on_hangup(hangups, app.reloader(), path, demo));
        }
        Err(e) => tracing::warn!(error = %e, "SIGHUP cannot be handled; reload by restarting"),
    }
    app.wait().await;
    Ok(())
}

/// SIGHUP: read the file again, validate it, swap it in; or keep the running
/// configuration and log why.
#[cfg(unix)]
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    reloader: wrapup::app::Reloader,
    path: std::path::PathBuf,
    demo: bool,
) {
    while hangups.recv().await.is_some() {
        let loaded = config::load(&path)
            .map_err(anyhow::Error::from)
            .and_then(|settings| match settings.demo_refusal().filter(|_| !demo) {
                Some(why) => Err(ConfigInvalid(why).into()),
                None => Ok(settings),
            });
        match loaded.and_then(|settings| reloader.reload(&settings)) {
            Ok(changes) => tracing::info!(
                config = %path.display(),
                added = %changes.added.join(", "),
                removed = %changes.removed.join(", "),
                changed = %changes.changed.join(", "),
                summary = %changes,
                "configuration reloaded"
            ),
            Err(e) => tracing::warn!(
                config = %path.display(),
                error = %e,
                "configuration not reloaded; the running one stays"
            ),
        }
    }
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
