//! The hub's TLS: TLS 1.3 only, client certificates required and checked against the region
//! CA, ring as the one crypto provider. Handshakes run concurrently, so a slow or failing client
//! never holds up others; a failed handshake is logged and dropped, and so is a connection whose
//! client says nothing once TLS is up (keep-alive pings only start once HTTP/2 does).

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::Context;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// PEM texts for the hub's server identity and the region CA.
#[derive(Clone)]
pub struct ServerTls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("key_pem", &"<hidden>")
            .finish_non_exhaustive()
    }
}

/// Builds the rustls server configuration.
pub fn server_config(tls: &ServerTls) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&tls.ca_pem) {
        roots.add(ca.context("reading the region CA certificate")?)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("building the client certificate verifier")?;
    let (certs, key) = identity(tls)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("the hub certificate does not match its key")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The hub's certificate chain and key, which both of its ports present.
fn identity(
    tls: &ServerTls,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("reading the hub certificate")?;
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem).context("reading the hub TLS key")?;
    Ok((certs, key))
}

/// The dashboard's TLS: the hub's own certificate, TLS 1.3 only, HTTP/1.1, no client
/// certificate (a coordinator signs in with a session token from the authority).
pub fn web_config(tls: &ServerTls) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (certs, key) = identity(tls)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the hub certificate does not match its key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// What a client must send first, once TLS is up, before the connection is handed to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    /// The HTTP/2 client preface, which every gRPC client sends first.
    Http2,
    /// Any first byte of an HTTP/1.1 request (hyper bounds the rest of its headers).
    Http1,
}

/// The HTTP/2 client connection preface (RFC 9113, section 3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A TLS connection whose first bytes were read ahead (to see that the client speaks at all);
/// reading hands them back first.
pub struct Greeted {
    ahead: Vec<u8>,
    at: usize,
    inner: TlsStream<TcpStream>,
}

impl Greeted {
    /// The peer's TCP address.
    pub fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.get_ref().0.peer_addr()
    }
}

impl AsyncRead for Greeted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.at < this.ahead.len() {
            let n = buf.remaining().min(this.ahead.len() - this.at);
            buf.put_slice(&this.ahead[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Greeted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The client certificate reaches the gRPC handlers as it would from a bare TLS stream.
impl Connected for Greeted {
    type ConnectInfo = <TlsStream<TcpStream> as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Completes the TLS handshake and reads the client's first bytes.
async fn greet(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    greeting: Greeting,
) -> std::io::Result<Greeted> {
    let mut inner = acceptor.accept(tcp).await?;
    let mut ahead = vec![0u8; 64];
    let mut got = 0;
    let want = match greeting {
        Greeting::Http2 => HTTP2_PREFACE.len(),
        Greeting::Http1 => 1,
    };
    while got < want {
        let n = inner.read(&mut ahead[got..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    ahead.truncate(got);
    if greeting == Greeting::Http2 && !ahead.starts_with(HTTP2_PREFACE) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the client did not open with the HTTP/2 preface",
        ));
    }
    Ok(Greeted {
        ahead,
        at: 0,
        inner,
    })
}

/// Accepts TCP connections, completes TLS handshakes and waits for each client's first bytes,
/// all within `limit` of the accept (a client that stalls in between is dropped, so silent
/// sockets cannot pile up) and concurrently, yielding only connections that got that far.
pub fn incoming(
    listener: TcpListener,
    config: rustls::ServerConfig,
    greeting: Greeting,
    limit: Duration,
) -> ReceiverStream<Result<Greeted, std::io::Error>> {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(limit, greet(&acceptor, tcp, greeting)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "connection refused before its first call")
                    }
                    Err(_) => {
                        tracing::info!(%peer, "connection timed out before its first call (TLS handshake or first bytes)")
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
