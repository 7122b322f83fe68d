//! The webhook's TLS: a certificate that can be swapped while serving (files rotated by
//! cert-manager, or the generated one), PEM loading, and the reload of `--webhook-cert` /
//! `--webhook-key` when their content changes (the last good pair stays on a bad one).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{Error as TlsError, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Serves whatever certificate was set last.
#[derive(Debug)]
pub struct SwappableCert(ArcSwap<CertifiedKey>);

impl SwappableCert {
    pub fn new(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(SwappableCert(ArcSwap::new(key)))
    }

    pub fn set(&self, key: Arc<CertifiedKey>) {
        self.0.store(key);
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// A TLS acceptor (TLS 1.2 and 1.3, HTTP/1.1) serving `cert`.
pub fn acceptor(cert: Arc<SwappableCert>) -> Result<TlsAcceptor, TlsError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A certificate chain and its private key from PEM, checked to belong together.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("certificate: no CERTIFICATE block in the PEM".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key: no usable PEM private key: {e}"))?;
    let key = default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("key: unsupported private key: {e}"))?;
    let certified = CertifiedKey::new(certs, key);
    match certified.keys_match() {
        Ok(()) | Err(TlsError::InconsistentKeys(tokio_rustls::rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(e) => Err(format!("the key does not match the certificate ({e})")),
    }
}

/// Whether `ca_pem` verifies the serving certificate (chain) `cert_pem` for `dns_name` now,
/// as the API server will with that CA as the webhook's `caBundle`.
pub fn verify_for(ca_pem: &[u8], cert_pem: &[u8], dns_name: &str) -> Result<(), String> {
    use tokio_rustls::rustls::client::danger::ServerCertVerifier;
    use tokio_rustls::rustls::client::WebPkiServerVerifier;
    use tokio_rustls::rustls::pki_types::{ServerName, UnixTime};
    use tokio_rustls::rustls::RootCertStore;

    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        let ca = ca.map_err(|e| format!("CA: not PEM: {e}"))?;
        roots.add(ca).map_err(|e| format!("CA: {e}"))?;
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::new(default_provider()))
        .build()
        .map_err(|e| format!("CA: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: not PEM: {e}"))?;
    let (leaf, intermediates) = chain.split_first().ok_or("certificate: no CERTIFICATE block in the PEM")?;
    let name = ServerName::try_from(dns_name).map_err(|e| format!("{dns_name}: {e}"))?;
    verifier.verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now()).map(|_| ()).map_err(|e| e.to_string())
}

/// `--webhook-cert` and `--webhook-key`.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), String> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        Ok((read(&self.cert)?, read(&self.key)?))
    }

    /// The pair as it is now on disk.
    pub fn load(&self) -> Result<Arc<CertifiedKey>, String> {
        let (cert, key) = self.read()?;
        certified_key(&cert, &key).map_err(|e| self.describe(&e))
    }

    fn describe(&self, problem: &str) -> String {
        format!("--webhook-cert {} / --webhook-key {}: {problem}", self.cert.display(), self.key.display())
    }

    /// Checks the files every `interval`; serves a changed pair once it loads, keeps the
    /// last good one (and says why, once per content) when it does not.
    pub async fn watch(self, target: Arc<SwappableCert>, interval: Duration) {
        let mut seen = self.read().ok();
        loop {
            tokio::time::sleep(interval).await;
            let (cert, key) = match self.read() {
                Ok(pair) if seen.as_ref() == Some(&pair) => continue,
                Ok(pair) => seen.insert(pair).clone(),
                Err(e) => {
                    if seen.take().is_some() {
                        tracing::warn!(error = %self.describe(&e), "cannot read the webhook certificate; serving the last good one");
                    }
                    continue;
                }
            };
            match certified_key(&cert, &key) {
                Ok(loaded) => {
                    target.set(loaded);
                    tracing::info!(cert = %self.cert.display(), key = %self.key.display(), "webhook certificate reloaded");
                }
                Err(e) => {
                    tracing::warn!(error = %self.describe(&e), "webhook certificate not reloaded; serving the last good one")
                }
            }
        }
    }
}
