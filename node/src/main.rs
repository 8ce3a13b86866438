//! The `overstap-node` binary: reads the node's settings, sets up logging, binds the local API,
//! and runs until Ctrl-C/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "overstap-node",
    version,
    about = "An Overstap node: one organisation's store and its sync with the hub"
)]
struct Args {
    /// The node's settings file (node.toml, written by `overstap authority admit`).
    #[arg(long, short, env = "OVERSTAP_NODE_CONFIG")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs go to stderr, so that stdout stays for what a program reads.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let settings = overstap_node::Settings::load(&args.config)?;
    let config = settings.resolve()?;
    let listener = tokio::net::TcpListener::bind(settings.api_listen)
        .await
        .with_context(|| format!("binding the local API on {}", settings.api_listen))?;
    overstap_node::run(config, listener, stop_requested()).await
}

/// Ctrl-C or SIGTERM (systemd, Kubernetes) ends the node gracefully.
async fn stop_requested() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}
