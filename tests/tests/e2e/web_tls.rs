//! The web app with the school's own certificate: HTTPS on its own port, no reverse proxy.

use std::sync::Arc;

use overstap_tests::cast::SCHOOL;
use overstap_tests::*;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTPS request to `url`, trusting only `cert` (DER): the raw answer.
async fn https_get(url: &str, cert: &CertificateDer<'static>, path: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let host = url.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("the web app presents the school's certificate");
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept-Language: nl\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A school that has its own certificate names it in node.toml: the web app speaks HTTPS with
/// it (and tells browsers to keep to HTTPS), speaks no plain HTTP on that port, and a client
/// that opens a connection and says nothing holds up no one.
#[tokio::test]
async fn the_web_app_speaks_https_with_the_schools_own_certificate() {
    let (_tmp, mut region) = region().await;
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = region.node_dir(SCHOOL);
    std::fs::write(dir.join("web-cert.pem"), made.cert.pem()).unwrap();
    std::fs::write(dir.join("web-key.pem"), made.signing_key.serialize_pem()).unwrap();
    region.stop_node(SCHOOL).await.unwrap();
    let toml = dir.join("node.toml");
    let settings = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        format!("{settings}\nweb_tls_cert = \"web-cert.pem\"\nweb_tls_key = \"web-key.pem\"\n"),
    )
    .unwrap();
    let _ = std::fs::remove_file(dir.join("web.url"));
    region.start_node(SCHOOL).await.unwrap();
    let url = web_url(&region, SCHOOL);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // A client that connects and never speaks does not keep others out.
    let host = url.trim_start_matches("https://").to_string();
    let silent = tokio::net::TcpStream::connect(&host).await.unwrap();
    let cert = made.cert.der().clone();
    let page = https_get(&url, &cert, "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("Welkom bij"), "{page}");
    // The page came while the silent connection was still waiting in its own handshake (the
    // server closes it only after its limit), so it did not wait behind it.
    let mut one = [0u8; 1];
    match silent.try_read(&mut one) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the silent connection should still be waiting: {other:?}"),
    }
    assert!(
        page.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{page}"
    );

    // Plain HTTP on the same port gets no page.
    let mut tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut plain = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        tcp.read_to_end(&mut plain),
    )
    .await;
    assert!(
        !plain.starts_with(b"HTTP/1.1"),
        "{:?}",
        String::from_utf8_lossy(&plain)
    );

    // Only one of the two files named: the node says which to set, and does not start.
    region.stop_node(SCHOOL).await.unwrap();
    std::fs::write(
        &toml,
        format!("{settings}\nweb_tls_cert = \"web-cert.pem\"\n"),
    )
    .unwrap();
    let err = overstap_node::Settings::load(&toml)
        .unwrap()
        .resolve()
        .unwrap_err();
    assert!(
        err.to_string().contains("web_tls_cert and web_tls_key"),
        "{err}"
    );
    region.shutdown().await.unwrap();
}
