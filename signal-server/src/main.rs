//! `signal-server`: runs Burrow's rendezvous server until SIGINT or SIGTERM.

use clap::Parser;
use signal_server::Config;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::parse();
    if !config.www.join("index.html").exists() {
        tracing::warn!(www = %config.www.display(), "no index.html there: the page will 404 (pass --www)");
    }
    let running = signal_server::start(config, shutdown_signal()).await?;
    // One stable line on stdout, so scripts and tests can learn the ports picked for port 0.
    let metrics = running
        .metrics_addr
        .map(|a| format!(" metrics={a}"))
        .unwrap_or_default();
    let redirect = running
        .redirect_addr
        .map(|a| format!(" redirect={a}"))
        .unwrap_or_default();
    println!(
        "listening http={} stun={} stun-alt={}{metrics}{redirect}",
        running.http_addr, running.stun_addr, running.stun_alt_addr
    );
    let scheme = if running.tls { "https" } else { "http" };
    tracing::info!("open {scheme}://{}/ in a browser", running.http_addr);
    running.wait().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
