//! Kubernetes TLS Secrets, as a Gateway server's `credentialName` names them: a
//! certificate chain, its private key and an optional CA for client certificates.
//! The key is never printed: [`PrivateKey`]'s `Debug` redacts it.

use std::fmt;

/// What replaces a private key wherever meshd shows configuration (as Envoy's
/// config dump does).
pub const REDACTED: &str = "[redacted]";

/// PEM text of a private key; `Debug` shows [`REDACTED`].
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey(pub String);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A `kubernetes.io/tls` Secret: `tls.crt`, `tls.key` and the optional `ca.crt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secret {
    pub namespace: String,
    pub name: String,
    /// PEM certificate chain (`tls.crt`).
    pub cert_chain: String,
    /// PEM private key (`tls.key`).
    pub private_key: PrivateKey,
    /// PEM CA bundle for client certificates (`ca.crt`), for `MUTUAL` servers.
    pub ca_cert: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_key() {
        let s = Secret {
            namespace: "ns".into(),
            name: "cert".into(),
            cert_chain: "CERT".into(),
            private_key: PrivateKey("-----BEGIN PRIVATE KEY-----\nsecret\n".into()),
            ca_cert: None,
        };
        let shown = format!("{s:?}");
        assert!(shown.contains(REDACTED) && !shown.contains("secret\n"), "{shown}");
    }
}
