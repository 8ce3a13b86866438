//! The `overstap` binary: parses the command line and runs it; errors are printed plainly.

use clap::Parser;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OVERSTAP_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = overstap_cli::commands::Cli::parse();
    if let Err(e) = overstap_cli::commands::run(cli).await {
        eprintln!("overstap: {e:#}");
        std::process::exit(1);
    }
}
