//! The webhook's own certificates when none are given: a CA and a serving certificate it
//! signs for the webhook Service's DNS names (and localhost), generated with rcgen.

use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// How long generated certificates are valid (from the start of last year).
const VALIDITY_YEARS: i32 = 10;

/// A CA and the serving certificate and key it signed, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookCerts {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for WebhookCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookCerts").field("ca_pem", &self.ca_pem).finish_non_exhaustive()
    }
}

/// The names the API server may dial the webhook by: `service`, `service.namespace`,
/// `service.namespace.svc`, `service.namespace.svc.cluster.local`, and localhost.
pub fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ]
}

fn current_year() -> i32 {
    let days = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0);
    1970 + (days * 400 / 146_097) as i32
}

/// A new CA and a serving certificate for [`dns_names`] (ECDSA P-256).
pub fn generate(service: &str, namespace: &str) -> Result<WebhookCerts, rcgen::Error> {
    let year = current_year();
    let (not_before, not_after) = (date_time_ymd(year - 1, 1, 1), date_time_ymd(year + VALIDITY_YEARS, 1, 1));

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, format!("amime webhook CA ({namespace})"));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    (ca.not_before, ca.not_after) = (not_before, not_after);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

    let mut leaf = CertificateParams::new(dns_names(service, namespace))?;
    leaf.distinguished_name.push(DnType::CommonName, format!("{service}.{namespace}.svc"));
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (leaf.not_before, leaf.not_after) = (not_before, not_after);
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca)?;
    Ok(WebhookCerts { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_every_way_to_the_service() {
        assert_eq!(
            dns_names("amime-meshd", "amime-system"),
            [
                "amime-meshd",
                "amime-meshd.amime-system",
                "amime-meshd.amime-system.svc",
                "amime-meshd.amime-system.svc.cluster.local",
                "localhost",
                "127.0.0.1"
            ]
        );
        assert!((2025..2200).contains(&current_year()));
    }

    #[test]
    fn generated_certificates_load_and_differ_per_call() {
        let a = generate("amime-meshd", "amime-system").unwrap();
        let b = generate("amime-meshd", "amime-system").unwrap();
        assert_ne!(a.ca_pem, b.ca_pem);
        for pem in [&a.ca_pem, &a.cert_pem] {
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        }
        super::super::tls::certified_key(a.cert_pem.as_bytes(), a.key_pem.as_bytes()).unwrap();
        let mismatched = super::super::tls::certified_key(a.cert_pem.as_bytes(), b.key_pem.as_bytes()).unwrap_err();
        assert!(mismatched.contains("does not match"), "{mismatched}");
    }
}
