//! HTTPS for the web app with the school's own certificate and key (PEM files named in
//! `node.toml`), for a school without a reverse proxy of its own. TLS 1.2 and 1.3, HTTP/1.1.
//! Handshakes run concurrently, each within a time limit, so a slow or silent client holds up
//! no one. The region's certificates are not used here: browsers do not know the region's CA.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// The school's certificate chain and key, as PEM.
#[derive(Clone)]
pub struct WebTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for WebTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebTls")
            .field("key_pem", &"<hidden>")
            .finish_non_exhaustive()
    }
}

/// The server configuration for the school's certificate.
pub fn server_config(tls: &WebTls) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("reading the web app's certificate (web_tls_cert)")?;
    if certs.is_empty() {
        anyhow::bail!("web_tls_cert holds no certificate");
    }
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem)
        .context("reading the web app's key (web_tls_key)")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the web app's certificate does not match its key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// TLS connections for axum: accepted on `listener`, each handshake in a task of its own.
pub struct TlsListener {
    ready: mpsc::Receiver<TlsStream<TcpStream>>,
    addr: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    // The server stopped: let go of the port.
                    _ = tx.closed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(e) => {
                            tracing::debug!(error = %e, "accepting a web connection failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(stream).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "a web TLS handshake failed"),
                        Err(_) => tracing::debug!("a web TLS handshake took too long"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Some(stream) = self.ready.recv().await {
                let peer = stream.get_ref().0.peer_addr().unwrap_or(self.addr);
                return (stream, peer);
            }
            std::future::pending::<()>().await;
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
