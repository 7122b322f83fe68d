//! The HTTPS server under hostile clients, in-process over real TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::serve_app;
use crate::webhook::{certs, tls};

/// A server of `GET /healthz` with at most `max_connections`, and a connector trusting it.
async fn start(max_connections: usize) -> (SocketAddr, TlsConnector, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let generated = certs::generate("amime-meshd", "amime-system").unwrap();
    let key = tls::certified_key(generated.cert_pem.as_bytes(), generated.key_pem.as_bytes()).unwrap();
    let acceptor = tls::acceptor(tls::SwappableCert::new(key)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/healthz", get(|| async { "ok\n" }));
    let server = tokio::spawn(serve_app(listener, acceptor, app, max_connections));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(generated.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (addr, TlsConnector::from(Arc::new(config)), server)
}

async fn handshake(addr: SocketAddr, connector: &TlsConnector) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector.connect(ServerName::try_from("amime-meshd.amime-system.svc").unwrap(), tcp).await
}

/// The status line of the answer to `head` (a request without a body).
async fn status_of(tls: &mut TlsStream<TcpStream>, head: &str) -> String {
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_one_to_close() {
    let (addr, connector, _server) = start(2).await;
    let first = handshake(addr, &connector).await.unwrap();
    let _second = handshake(addr, &connector).await.unwrap();
    // The third is not served (its handshake gets no answer) while two are open...
    let mut third = tokio::spawn({
        let connector = connector.clone();
        async move { handshake(addr, &connector).await }
    });
    let early = tokio::time::timeout(Duration::from_millis(500), &mut third).await;
    assert!(early.is_err(), "a third connection was served past the cap of two: {early:?}");
    // ...and is once one closes.
    drop(first);
    let mut third = tokio::time::timeout(Duration::from_secs(5), third).await.unwrap().unwrap().unwrap();
    let status = status_of(&mut third, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let (addr, connector, _server) = start(8).await;
    let mut tls = handshake(addr, &connector).await.unwrap();
    let padding = "a".repeat(100 << 10);
    let head = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: {padding}\r\nConnection: close\r\n\r\n");
    assert_eq!(status_of(&mut tls, &head).await, "HTTP/1.1 431 Request Header Fields Too Large");
    // One within the limit is served.
    let mut tls = handshake(addr, &connector).await.unwrap();
    let head =
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\nConnection: close\r\n\r\n", &padding[..8000]);
    assert_eq!(status_of(&mut tls, &head).await, "HTTP/1.1 200 OK");
}
