//! The `wrapup` command line: arguments, the commands, what they print.

pub mod args;
mod output;
mod run;
mod send;

pub use run::run;

use wrapup::{App, config};

pub async fn serve(settings: config::Settings) -> anyhow::Result<()> {
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
