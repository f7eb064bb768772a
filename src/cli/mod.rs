//! The `wrapup` command line: arguments, the commands, what they print.

pub mod args;
mod output;
mod run;
mod send;

pub use run::run;

use wrapup::{App, config};

pub async fn serve(settings: config::Settings, path: std::path::PathBuf) -> anyhow::Result<()> {
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
            tokio::spawn(reload_on_hangup(hangups, app.reloader(), path));
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
) {
    while hangups.recv().await.is_some() {
        let loaded = config::load(&path).map_err(anyhow::Error::from);
        match loaded.and_then(|settings| reloader.reload(&settings)) {
            Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
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
