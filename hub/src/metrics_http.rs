//! The plain-HTTP `/metrics` endpoint, served the same way by the hub and the node. The node
//! compiles this very file as its own module (`#[path]` in `node/src/lib.rs`): the two daemons
//! share no crate that may do I/O, and `overstap-proto` does none (DESIGN.md, invariant 6).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;

/// The content type of OpenMetrics text, which Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `listener` until `shutdown`, each scrape rendered by `render`.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    render: F,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move {
                match render().await {
                    Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
                    Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
                }
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` and writes the address it got to `addr_file` (if given), for whoever started us
/// with port 0: the hub's and the node's side ports (metrics, dashboard) announce themselves so.
pub async fn bind_announced(
    addr: SocketAddr,
    addr_file: Option<&Path>,
) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    if let Some(path) = addr_file {
        std::fs::write(path, format!("{bound}\n"))?;
    }
    Ok((listener, bound))
}

/// When `addr` is set: binds it, writes the bound address to `addr_file` (if given), and serves
/// `/metrics` in the background until `stop` turns true. Nothing when `addr` is unset.
pub async fn start<F, Fut>(
    addr: Option<SocketAddr>,
    addr_file: Option<&Path>,
    render: F,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    let Some(addr) = addr else {
        return Ok(None);
    };
    let (listener, bound) = bind_announced(addr, addr_file).await?;
    tracing::info!(addr = %bound, "metrics at http://{bound}/metrics");
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    Ok(Some(tokio::spawn(serve(listener, render, stopped))))
}
