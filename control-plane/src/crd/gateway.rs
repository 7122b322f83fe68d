//! Gateway: a load balancer at the edge of the mesh, its listening ports and hosts
//! (Istio's `networking.istio.io/v1` Gateway, field for field).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::MeshStatus;

/// Ports and hosts a gateway workload (selected by labels) listens on; VirtualServices
/// bound to the gateway route what it receives. Same fields and meaning as Istio's
/// Gateway.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.amime.dev",
    version = "v1",
    kind = "Gateway",
    namespaced,
    doc = "Gateway of networking.amime.dev: the same fields and meaning as Istio's Gateway (networking.istio.io/v1). meshd reports in status.conditions (type Accepted) whether it put the object in effect.",
    status = "MeshStatus",
    category = "amime",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status","description":"Whether meshd put the gateway in effect"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct GatewaySpec {
    /// The listeners: a port, the hosts served on it and their TLS settings. Required.
    pub servers: Option<Vec<Server>>,
    /// Labels of the gateway pods this configuration applies to (in any namespace
    /// unless meshd restricts it).
    pub selector: Option<BTreeMap<String, String>>,
}

/// One listener of the gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Server {
    /// The port listened on. Required.
    pub port: Port,
    /// The address or Unix socket (`unix://...`) to bind to. Default: all addresses.
    pub bind: Option<String>,
    /// Hosts served on this port, optionally `namespace/host` to restrict which
    /// VirtualServices may bind (`*` wildcards allowed). Required.
    pub hosts: Vec<String>,
    /// TLS settings (HTTPS and TLS ports; `httpsRedirect` on HTTP ports).
    pub tls: Option<ServerTlsSettings>,
    /// Where traffic goes by default (`127.0.0.1:PORT` or `unix://...`); for sidecar
    /// ingress only.
    pub default_endpoint: Option<String>,
    /// A name for the listener, shown in statistics.
    pub name: Option<String>,
}

/// The port a gateway listens on, and its protocol.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// The port number (1-65535). Required.
    #[schemars(range(max = 65535))]
    pub number: u32,
    /// `HTTP`, `HTTPS`, `GRPC`, `GRPC-WEB`, `HTTP2`, `MONGO`, `TCP` or `TLS`. Required.
    pub protocol: String,
    /// A name for the port (e.g. `http`, `https-web`). Required.
    pub name: String,
    /// The port the workload listens on, if it differs from `number`.
    #[schemars(range(max = 65535))]
    pub target_port: Option<u32>,
}

/// TLS settings of a gateway listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerTlsSettings {
    /// Answer plain HTTP requests with a redirect to HTTPS.
    pub https_redirect: Option<bool>,
    /// `PASSTHROUGH`, `SIMPLE`, `MUTUAL`, `AUTO_PASSTHROUGH`, `ISTIO_MUTUAL` or
    /// `OPTIONAL_MUTUAL`.
    #[schemars(extend("enum" = ["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"]))]
    pub mode: Option<String>,
    /// Path of the server certificate file.
    pub server_certificate: Option<String>,
    /// Path of the server private key file.
    pub private_key: Option<String>,
    /// Path of the CA certificates file that verifies clients (`MUTUAL`).
    pub ca_certificates: Option<String>,
    /// Path of the certificate revocation list file.
    pub ca_crl: Option<String>,
    /// Name of the Secret holding the certificate, key (and CA).
    pub credential_name: Option<String>,
    /// Names of Secrets holding certificates (e.g. one RSA and one ECDSA).
    pub credential_names: Option<Vec<String>>,
    /// Certificates given inline as file paths (e.g. one RSA and one ECDSA).
    pub tls_certificates: Option<Vec<TlsCertificate>>,
    /// Subject alternative names accepted in client certificates.
    pub subject_alt_names: Option<Vec<String>>,
    /// Base64 SHA-256 hashes of accepted client certificates' public keys (SPKI).
    pub verify_certificate_spki: Option<Vec<String>>,
    /// Hex SHA-256 hashes of accepted client certificates.
    pub verify_certificate_hash: Option<Vec<String>>,
    /// Minimum TLS version.
    #[schemars(extend("enum" = ["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]))]
    pub min_protocol_version: Option<String>,
    /// Maximum TLS version.
    #[schemars(extend("enum" = ["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]))]
    pub max_protocol_version: Option<String>,
    /// Cipher suites offered (OpenSSL names). Default: Envoy's.
    pub cipher_suites: Option<Vec<String>>,
    /// Name of the Secret (or ConfigMap) holding only the CA certificates that
    /// verify clients (`MUTUAL`), when the server certificate is elsewhere.
    pub ca_cert_credential_name: Option<String>,
    /// ALPN protocols offered in the handshake (e.g. `h2`, `http/1.1`), replacing
    /// the defaults.
    pub alpn_protocols: Option<Vec<String>>,
    /// ECDH curves accepted (e.g. `X25519`, `P-256`). Default: Envoy's.
    pub ecdh_curves: Option<Vec<String>>,
    /// Accept client certificates that fail verification (`MUTUAL`): checked, but
    /// the connection is not refused.
    pub insecure_skip_verify: Option<bool>,
}

/// A server certificate given as file paths.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsCertificate {
    /// Path of the certificate file.
    pub server_certificate: Option<String>,
    /// Path of the private key file.
    pub private_key: Option<String>,
    /// Path of the CA certificates file.
    pub ca_certificates: Option<String>,
}
