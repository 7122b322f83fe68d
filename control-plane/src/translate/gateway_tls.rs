//! TLS termination on gateway servers: the certificate from a `kubernetes.io/tls`
//! Secret (`credentialName`) or from files on the proxy's machine
//! (`serverCertificate`, `privateKey`), sent inline (no SDS yet); and [`redact`], which
//! hides private keys from anything meshd shows (as Envoy's config dump does).

use envoy_types::pb::envoy::config::core::v3::{data_source, transport_socket, DataSource, TransportSocket};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context, CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, TlsCertificate,
    TlsParameters,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use prost::{Message, Name};

use super::envoy::any;
use crate::model::index::Index;
use crate::model::secret::REDACTED;
use crate::model::{ServerTls, ServerTlsMode};

const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";

/// Where a certificate, key or CA bundle comes from. `Debug` never shows inline text
/// (it may be a private key).
#[derive(Clone, PartialEq)]
pub(crate) enum Pem {
    /// PEM text (from a Secret).
    Inline(String),
    /// A file on the gateway proxy's machine.
    File(String),
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pem::Inline(text) => write!(f, "Inline({} bytes)", text.len()),
            Pem::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl Pem {
    fn data_source(&self) -> DataSource {
        DataSource {
            specifier: Some(match self {
                Pem::Inline(text) => data_source::Specifier::InlineString(text.clone()),
                Pem::File(path) => data_source::Specifier::Filename(path.clone()),
            }),
            ..Default::default()
        }
    }
}

/// What a TLS-terminating server presents, and the CA it checks clients against (MUTUAL).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ServerCert {
    /// (certificate chain, private key), one per credential.
    certs: Vec<(Pem, Pem)>,
    client_ca: Option<Pem>,
    /// TLS 1.x minor versions accepted (None: Envoy's default).
    versions: (Option<u8>, Option<u8>),
}

/// The certificate of a SIMPLE or MUTUAL server whose Gateway is in `namespace`. Err:
/// the `tls` sub-field at fault and why.
pub(crate) fn server_cert(model: &Index, namespace: &str, tls: &ServerTls) -> Result<ServerCert, (String, String)> {
    let mut certs = Vec::new();
    let mut secret_ca = None;
    for (i, name) in tls.credential_names.iter().enumerate() {
        let field = if i == 0 { "credentialName".to_owned() } else { format!("credentialNames[{}]", i - 1) };
        let Some(secret) = model.secrets.get(&(namespace.to_owned(), name.clone())) else {
            return Err((
                field,
                format!("no Secret {namespace}/{name} of type kubernetes.io/tls (the Gateway's namespace) holds the certificate"),
            ));
        };
        certs.push((Pem::Inline(secret.cert_chain.clone()), Pem::Inline(secret.private_key.0.clone())));
        secret_ca = secret_ca.or_else(|| secret.ca_cert.clone().map(Pem::Inline));
    }
    if let Some((cert, key)) = &tls.cert_files {
        certs.push((Pem::File(cert.clone()), Pem::File(key.clone())));
    }
    let client_ca = match tls.mode {
        ServerTlsMode::Mutual => {
            let ca = tls.ca_file.clone().map(Pem::File).or(secret_ca);
            if ca.is_none() {
                return Err((
                    "mode".to_owned(),
                    "MUTUAL needs a CA for client certificates: ca.crt in the credentialName Secret, or caCertificates"
                        .to_owned(),
                ));
            }
            ca
        }
        _ => None,
    };
    Ok(ServerCert { certs, client_ca, versions: (tls.min_version, tls.max_version) })
}

/// Envoy's downstream TLS transport socket for `cert`: h2 and http/1.1 offered; with a
/// client CA, a client certificate it signed is required.
pub(crate) fn transport_socket(cert: &ServerCert) -> TransportSocket {
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: cert
                .certs
                .iter()
                .map(|(chain, key)| TlsCertificate {
                    certificate_chain: Some(chain.data_source()),
                    private_key: Some(key.data_source()),
                    ..Default::default()
                })
                .collect(),
            validation_context_type: cert.client_ca.as_ref().map(|ca| {
                common_tls_context::ValidationContextType::ValidationContext(CertificateValidationContext {
                    trusted_ca: Some(ca.data_source()),
                    ..Default::default()
                })
            }),
            alpn_protocols: vec!["h2".to_owned(), "http/1.1".to_owned()],
            // Envoy's TlsProtocol: TLS_AUTO = 0, TLSv1_0 = 1, ... TLSv1_3 = 4.
            tls_params: (cert.versions != (None, None)).then(|| TlsParameters {
                tls_minimum_protocol_version: cert.versions.0.map_or(0, |v| i32::from(v) + 1),
                tls_maximum_protocol_version: cert.versions.1.map_or(0, |v| i32::from(v) + 1),
                ..Default::default()
            }),
            ..Default::default()
        }),
        require_client_certificate: cert.client_ca.as_ref().map(|_| BoolValue { value: true }),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(context))),
    }
}

/// `resource` with every inline private key replaced by `[redacted]` (listeners are the
/// only resources meshd puts keys in); other resources unchanged.
pub fn redact(resource: &Any) -> Any {
    if resource.type_url != Listener::type_url() {
        return resource.clone();
    }
    let Ok(mut listener) = Listener::decode(resource.value.as_slice()) else { return resource.clone() };
    let mut changed = false;
    for chain in listener.filter_chains.iter_mut().chain(listener.default_filter_chain.iter_mut()) {
        changed |= redact_chain(chain);
    }
    if changed {
        any(listener)
    } else {
        resource.clone()
    }
}

fn redact_chain(chain: &mut FilterChain) -> bool {
    let Some(socket) = chain.transport_socket.as_mut() else { return false };
    let Some(transport_socket::ConfigType::TypedConfig(typed)) = socket.config_type.as_mut() else { return false };
    if typed.type_url != DownstreamTlsContext::type_url() {
        return false;
    }
    let Ok(mut context) = DownstreamTlsContext::decode(typed.value.as_slice()) else { return false };
    let mut changed = false;
    for cert in context.common_tls_context.iter_mut().flat_map(|c| c.tls_certificates.iter_mut()) {
        if let Some(key) = cert.private_key.as_mut() {
            if matches!(
                key.specifier,
                Some(data_source::Specifier::InlineString(_) | data_source::Specifier::InlineBytes(_))
            ) {
                key.specifier = Some(data_source::Specifier::InlineString(REDACTED.to_owned()));
                changed = true;
            }
        }
    }
    if changed {
        *typed = any(context);
    }
    changed
}
