//! TLS servers for tests of SNI routing: a test CA, and per site a server that presents
//! a certificate for the site's name and answers `secure-<site>`, so a client that
//! verified the handshake for a name knows which upstream terminated its connection.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Running TLS sites; stopped when dropped.
pub struct TlsSites {
    /// The CA that signed every site's certificate.
    pub ca_pem: String,
    servers: Vec<JoinHandle<()>>,
}

/// One site: its short name (the answer is `secure-<site>`), the DNS name its
/// certificate is for, and where it listens.
pub struct Site {
    pub site: &'static str,
    pub name: &'static str,
    pub listener: TcpListener,
}

impl TlsSites {
    pub fn serve(sites: Vec<Site>) -> Result<Self> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let mut servers = Vec::new();
        for Site { site, name, listener } in sites {
            let key = KeyPair::generate()?;
            let cert = CertificateParams::new(vec![name.to_string()])?.signed_by(&key, &ca)?;
            let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())?;
            let config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], key)?;
            let acceptor = TlsAcceptor::from(Arc::new(config));
            let answer = format!("secure-{site}");
            servers.push(tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (acceptor, answer) = (acceptor.clone(), answer.clone());
                    tokio::spawn(async move {
                        if let Ok(mut tls) = acceptor.accept(stream).await {
                            let _ = tls.write_all(answer.as_bytes()).await;
                            let _ = tls.shutdown().await;
                        }
                    });
                }
            }));
        }
        Ok(Self { ca_pem: ca.pem(), servers })
    }

    /// A TLS handshake over `tcp` for `sni`, the certificate verified for that name
    /// against the sites' CA; what the server said.
    pub async fn call(&self, tcp: TcpStream, sni: &str) -> Result<String> {
        let name = ServerName::try_from(sni.to_string())?;
        let call = async {
            let mut tls = crate::webhook::connector(&self.ca_pem)?.connect(name, tcp).await.context("TLS handshake")?;
            let mut answer = String::new();
            tls.read_to_string(&mut answer).await.context("read")?;
            Ok::<_, anyhow::Error>(answer)
        };
        tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .map_err(|_| anyhow!("TLS call for {sni} did not finish in 10s"))?
            .with_context(|| format!("TLS as {sni}"))
    }
}

impl Drop for TlsSites {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}
