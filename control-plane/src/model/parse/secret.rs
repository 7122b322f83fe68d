//! Kubernetes Secrets of type `kubernetes.io/tls` (a Gateway server's certificate).
//! Other Secret types say nothing to meshd and are skipped with a note.

use std::collections::BTreeMap;

use base64::Engine as _;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::*;
use crate::model::secret::{PrivateKey, Secret};

/// The Secret type meshd reads.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// `data` (base64) and `stringData` (plain) merged, `stringData` winning as in Kubernetes.
fn entries(cx: &Context<'_>) -> Result<BTreeMap<String, String>, Diagnostic> {
    let mut out = BTreeMap::new();
    let data: BTreeMap<String, String> = cx.field("data")?;
    for (key, value) in data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|e| cx.error(&format!("data.{key}"), format!("not base64: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|_| cx.error(&format!("data.{key}"), "not PEM text"))?;
        out.insert(key, text);
    }
    let plain: BTreeMap<String, String> = cx.field("stringData")?;
    out.extend(plain);
    Ok(out)
}

fn check_certs(cx: &Context<'_>, field: &str, pem: &str) -> Result<(), Diagnostic> {
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        cert.map_err(|e| cx.error(field, format!("not a PEM certificate: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(cx.error(field, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(())
}

/// `Ok(None)`: a Secret of another type, which meshd does not use.
pub(super) fn parse_secret(cx: &mut Context<'_>, namespace: String) -> Result<Option<Secret>, Diagnostic> {
    let type_: String = cx.field("type")?;
    if type_ != TLS_SECRET_TYPE {
        return Ok(None);
    }
    let mut data = entries(cx)?;
    let field_of = |key: &str| format!("data.{key}");
    let cert_chain = data.remove("tls.crt").ok_or_else(|| cx.error(&field_of("tls.crt"), "required"))?;
    check_certs(cx, &field_of("tls.crt"), &cert_chain)?;
    let key = data.remove("tls.key").ok_or_else(|| cx.error(&field_of("tls.key"), "required"))?;
    // The key's text is never part of a message.
    PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|_| cx.error(&field_of("tls.key"), "not a PEM private key (PKCS#8, PKCS#1 or SEC1)"))?;
    let ca_cert = match data.remove("ca.crt") {
        Some(ca) => {
            check_certs(cx, &field_of("ca.crt"), &ca)?;
            Some(ca)
        }
        None => None,
    };
    Ok(Some(Secret { namespace, name: cx.raw.name.clone(), cert_chain, private_key: PrivateKey(key), ca_cert }))
}
