//! The `overstap-hub` binary: reads settings, sets up logging, binds, serves until Ctrl-C/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "overstap-hub",
    version,
    about = "The Overstap regional hub: routes sealed envelopes between member nodes"
)]
struct Args {
    /// Settings file (TOML). OVERSTAP_* environment variables override it.
    #[arg(long, short, env = "OVERSTAP_HUB_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, overriding the settings.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Write the address the hub listens on to this file once bound (useful with port 0).
    #[arg(long)]
    addr_file: Option<PathBuf>,
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
    let mut settings = overstap_hub::Settings::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        settings.listen = listen;
    }
    let config = settings.resolve()?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    if let Some(path) = &args.addr_file {
        std::fs::write(path, format!("{}\n", listener.local_addr()?))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    overstap_hub::serve(config, listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
