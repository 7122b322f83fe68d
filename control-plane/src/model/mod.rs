//! The mesh model: plain data for the objects meshd understands, and the index that
//! keeps the current set of them. No Kubernetes client or Envoy types here.
//!
//! Every source (the config directory now, Kubernetes watches later) turns what it
//! reads into [`RawObject`]s and goes through the same [`parse::parse_object`]
//! validation into [`MeshObject`]s, which it applies to the one [`index::Index`].

pub mod http_actions;
pub mod index;
pub mod l4_route;
pub mod locality;
pub mod parse;
pub mod policy;
pub mod rate_limit;
pub mod scope;
pub mod secret;
pub mod telemetry;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

pub use http_actions::{
    CorsPolicy, Delegate, DirectResponse, Mirror, Redirect, RedirectPath, RedirectPort, ResponseBody, Rewrite,
};
pub use l4_route::{Cidr, L4Match, L4Route};
pub use parse::{parse_object, Diagnostic, ObjectError, RawObject, Severity};
pub use policy::{
    effective_policy, ConnectionPool, ConsistentHash, HashKey, HashRing, LoadBalancer, OutlierDetection,
    PolicySections, TcpKeepalive, TlsOrigination, TrafficPolicy, UpstreamTls, Warmup,
};
pub use rate_limit::{RateLimit, RateLimitRule, TokenBucket};
pub use scope::{ExportTo, SidecarScope, SourceCondition};
pub use secret::Secret;
pub use telemetry::Telemetry;

/// Cluster-local DNS suffix of service hostnames.
pub const DOMAIN_SUFFIX: &str = "svc.cluster.local";

/// The kinds of object meshd reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Kind {
    Namespace,
    Service,
    Pod,
    EndpointSlice,
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    RateLimit,
    Secret,
    Telemetry,
    /// Only its topology labels (the locality of the pods on it).
    Node,
}

impl Kind {
    /// Kinds whose objects have no namespace (their key's namespace is empty).
    pub fn is_cluster_scoped(self) -> bool {
        matches!(self, Kind::Namespace | Kind::Node)
    }

    /// The kind of that name, if meshd reads it.
    pub fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "Namespace" => Kind::Namespace,
            "Service" => Kind::Service,
            "Pod" => Kind::Pod,
            "EndpointSlice" => Kind::EndpointSlice,
            "VirtualService" => Kind::VirtualService,
            "DestinationRule" => Kind::DestinationRule,
            "Gateway" => Kind::Gateway,
            "ServiceEntry" => Kind::ServiceEntry,
            "RateLimit" => Kind::RateLimit,
            "Secret" => Kind::Secret,
            "Telemetry" => Kind::Telemetry,
            "Node" => Kind::Node,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Identifies one object: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

/// Where an object was read: its file and the YAML document in it (from 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Shared by every object of the file.
    pub file: std::sync::Arc<str>,
    pub document: usize,
}

/// Each object's [`Origin`], for diagnostics found after parsing (while translating).
pub type Origins = BTreeMap<ObjectKey, Origin>;

/// `problems` with the file and document of their object filled in where `origins`
/// knows them (the translator sees objects, not files).
pub fn locate(origins: &Origins, problems: impl IntoIterator<Item = Diagnostic>) -> Vec<Diagnostic> {
    let origin_of = |p: &Diagnostic| {
        let kind = Kind::from_name(p.kind.as_deref()?)?;
        let namespace = if kind.is_cluster_scoped() { String::new() } else { p.namespace.clone().unwrap_or_default() };
        origins.get(&ObjectKey { kind, namespace, name: p.name.clone()? })
    };
    problems
        .into_iter()
        .map(|mut p| {
            if p.file.is_none() {
                if let Some(origin) = origin_of(&p) {
                    p.file = Some(origin.file.to_string());
                    p.document = Some(origin.document);
                }
            }
            p
        })
        .collect()
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

pub type Labels = BTreeMap<String, String>;

/// True when every selector entry is present in `labels`. An empty selector selects
/// everything.
pub fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A validated object of one of the kinds in [`Kind`].
#[derive(Clone, Debug, PartialEq)]
pub enum MeshObject {
    Namespace(Namespace),
    Service(Service),
    Pod(Pod),
    EndpointSlice(EndpointSlice),
    VirtualService(VirtualService),
    DestinationRule(DestinationRule),
    Gateway(Gateway),
    ServiceEntry(ServiceEntry),
    RateLimit(RateLimit),
    Secret(Secret),
    Telemetry(Telemetry),
    Node(locality::Node),
}

impl MeshObject {
    pub fn key(&self) -> ObjectKey {
        let (kind, namespace, name) = self.identity();
        ObjectKey { kind, namespace: namespace.to_owned(), name: name.to_owned() }
    }

    /// Kind, namespace (empty for namespaces) and name, borrowed.
    pub fn identity(&self) -> (Kind, &str, &str) {
        match self {
            MeshObject::Namespace(o) => (Kind::Namespace, "", &o.name),
            MeshObject::Service(o) => (Kind::Service, &o.namespace, &o.name),
            MeshObject::Pod(o) => (Kind::Pod, &o.namespace, &o.name),
            MeshObject::EndpointSlice(o) => (Kind::EndpointSlice, &o.namespace, &o.name),
            MeshObject::VirtualService(o) => (Kind::VirtualService, &o.namespace, &o.name),
            MeshObject::DestinationRule(o) => (Kind::DestinationRule, &o.namespace, &o.name),
            MeshObject::Gateway(o) => (Kind::Gateway, &o.namespace, &o.name),
            MeshObject::ServiceEntry(o) => (Kind::ServiceEntry, &o.namespace, &o.name),
            MeshObject::RateLimit(o) => (Kind::RateLimit, &o.namespace, &o.name),
            MeshObject::Secret(o) => (Kind::Secret, &o.namespace, &o.name),
            MeshObject::Telemetry(o) => (Kind::Telemetry, &o.namespace, &o.name),
            MeshObject::Node(o) => (Kind::Node, "", &o.name),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

/// How meshd treats a service port's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Http,
    Http2,
    /// Opaque TCP: `tcp` rules apply.
    Tcp,
    /// TLS the client speaks end to end (`tls-*`, `https-*`): routed by SNI, `tls` rules apply.
    Tls,
}

impl Protocol {
    /// HTTP/1.1 or HTTP/2: proxied by an HTTP connection manager, `http` rules apply.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub target_port: TargetPort,
    pub protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub cluster_ip: Option<IpAddr>,
    /// `None`: endpoints come from EndpointSlices only.
    pub selector: Option<Labels>,
    pub ports: Vec<ServicePort>,
}

impl Service {
    pub fn hostname(&self) -> String {
        format!("{}.{}.{}", self.name, self.namespace, DOMAIN_SUFFIX)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub ip: Option<IpAddr>,
    pub service_account: String,
    pub ports: Vec<ContainerPort>,
    /// False when the pod is known not to be ready (status conditions or phase).
    pub ready: bool,
    /// The Node it runs on (`spec.nodeName`): its locality is the Node's.
    pub node_name: Option<String>,
}

impl Pod {
    /// Resolves a service target port against this pod's container ports.
    pub fn resolve_port(&self, target: &TargetPort) -> Option<u16> {
        match target {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(name) => self.ports.iter().find(|p| p.name.as_deref() == Some(name)).map(|p| p.port),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SliceEndpoint {
    pub addresses: Vec<IpAddr>,
    pub ready: bool,
    /// Name of the pod behind this endpoint (`targetRef` of kind Pod).
    pub pod: Option<String>,
    /// The Node it runs on (`nodeName`), for its locality when the pod is unknown.
    pub node_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EndpointSlice {
    pub namespace: String,
    pub name: String,
    /// The service this slice belongs to (label `kubernetes.io/service-name`).
    pub service: String,
    /// Port name → port number.
    pub ports: Vec<(String, u16)>,
    pub endpoints: Vec<SliceEndpoint>,
}

/// One of the string matches of Istio's `StringMatch`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum HeaderMatch {
    Value(StringMatch),
    /// `{}` in Istio: the header is present, with any value.
    Present,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct HttpMatch {
    pub name: Option<String>,
    pub uri: Option<StringMatch>,
    /// By header name, in lower case (HTTP header names are case-insensitive; Envoy
    /// matches them in lower case).
    pub headers: BTreeMap<String, HeaderMatch>,
    /// Headers that must NOT match.
    pub without_headers: BTreeMap<String, HeaderMatch>,
    pub query_params: BTreeMap<String, StringMatch>,
    pub method: Option<StringMatch>,
    pub authority: Option<StringMatch>,
    pub port: Option<u16>,
    pub ignore_uri_case: bool,
    /// `scheme`: matched on `:scheme`.
    pub scheme: Option<StringMatch>,
    /// `sourceLabels`, `sourceNamespace`, `gateways`: who the match takes requests
    /// from (see [`HttpMatch::sidecar_scope`]).
    pub source_labels: Labels,
    pub source_namespace: Option<String>,
    pub gateways: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Destination {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RouteDestination {
    pub destination: Destination,
    pub weight: u32,
    /// Header edits for the requests sent to this destination (and their responses).
    pub headers: Headers,
}

/// Istio's `Headers`: edits of the request and of the response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Headers {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

/// Header names in lower case; values as written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderOps {
    /// Replace the header's value (or add it).
    pub set: BTreeMap<String, String>,
    /// Add a value to the header.
    pub add: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

impl Headers {
    pub fn is_empty(&self) -> bool {
        self.request == HeaderOps::default() && self.response == HeaderOps::default()
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct HttpRoute {
    pub name: Option<String>,
    pub matches: Vec<HttpMatch>,
    /// Empty when the rule redirects, answers or delegates instead.
    pub route: Vec<RouteDestination>,
    /// What the rule does with the requests besides choosing a destination.
    pub actions: RouteActions,
    /// Instead of `route`: a redirect, a direct response, or another VirtualService's rules.
    pub redirect: Option<Redirect>,
    pub direct_response: Option<DirectResponse>,
    pub delegate: Option<Delegate>,
}

/// The actions of an HTTP rule (Istio's `HTTPRoute` fields other than `match` and
/// `route`), as the user wrote them; the translator applies Istio's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteActions {
    /// `timeout`: None when unset (no timeout, as in Istio); zero also means none.
    pub timeout: Option<std::time::Duration>,
    /// `retries`: None when unset (Istio's default retry policy applies).
    pub retries: Option<Retries>,
    /// `fault`: delays and aborts injected into a share of the requests.
    pub fault: Option<Fault>,
    /// `headers`: edits of every request the rule takes (and of its response).
    pub headers: Headers,
    /// `rewrite`: the path and authority the destination is asked for.
    pub rewrite: Option<Rewrite>,
    /// `mirror` (with its percentage) and `mirrors`, in that order.
    pub mirrors: Vec<Mirror>,
    /// `corsPolicy`.
    pub cors: Option<CorsPolicy>,
}

/// Istio's `HTTPFaultInjection`. Shares are in millionths (Istio's `percentage.value`
/// times 10000, as Istio hands them to Envoy).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FaultDelay {
    pub fixed: std::time::Duration,
    pub per_million: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FaultAbort {
    pub status: AbortStatus,
    pub per_million: u32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AbortStatus {
    Http(u32),
    /// A gRPC status code (Istio's `grpcStatus` names it, e.g. `UNAVAILABLE`).
    Grpc(u32),
}

/// Istio's `HTTPRetry`. `attempts: 0` turns retries off.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Retries {
    pub attempts: u32,
    pub per_try_timeout: Option<std::time::Duration>,
    /// `retryOn`, split: None when unset (Istio's default conditions apply).
    pub retry_on: Option<RetryOn>,
    pub retry_remote_localities: bool,
    /// `retryIgnorePreviousHosts`, default true.
    pub ignore_previous_hosts: bool,
    /// `backoff`: the base interval between retries (Envoy's default 25ms when unset).
    pub backoff: Option<std::time::Duration>,
}

/// `retryOn` split as Istio does: condition names, and HTTP status codes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RetryOn {
    pub conditions: Vec<String>,
    pub status_codes: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VirtualService {
    pub namespace: String,
    pub name: String,
    /// Empty for a delegate (a VirtualService used only through another's `delegate`).
    pub hosts: Vec<String>,
    pub gateways: Vec<String>,
    pub http: Vec<HttpRoute>,
    /// `tcp` rules: opaque TCP ports of the hosts.
    pub tcp: Vec<L4Route>,
    /// `tls` rules: TLS ports of the hosts, by SNI.
    pub tls: Vec<L4Route>,
    /// Namespaces whose proxies see the rule.
    pub export_to: ExportTo,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Subset {
    pub name: String,
    pub labels: Labels,
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DestinationRule {
    pub namespace: String,
    pub name: String,
    pub host: String,
    /// Boxed: it is large and most rules have none.
    pub traffic_policy: Option<Box<TrafficPolicy>>,
    pub subsets: Vec<Subset>,
    /// The namespaces whose proxies may use the rule (`.` resolved); a rule with a
    /// workload selector is its own namespace's only.
    pub export_to: ExportTo,
    /// `workloadSelector.matchLabels`: only the proxies of the rule's namespace whose
    /// labels hold these use it (see `translate::dr_scope`).
    pub workload_selector: Option<Labels>,
}

/// Protocols a gateway server or a service entry port may declare (Istio's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortProtocol {
    Http,
    Https,
    Http2,
    Grpc,
    Tcp,
    Tls,
    Mongo,
}

/// TLS handling of a gateway server (Istio's `ServerTLSSettings.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerTlsMode {
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServerTls {
    pub mode: ServerTlsMode,
    /// Redirect plain HTTP to HTTPS.
    pub https_redirect: bool,
    /// Secrets (type `kubernetes.io/tls`, in the Gateway's namespace) holding the
    /// certificate and key: `credentialName`, then `credentialNames`.
    pub credential_names: Vec<String>,
    /// `serverCertificate` / `privateKey`: PEM files on the gateway proxy's machine.
    pub cert_files: Option<(String, String)>,
    /// `caCertificates`: a PEM file of CAs for client certificates (`MUTUAL`).
    pub ca_file: Option<String>,
    /// `minProtocolVersion` / `maxProtocolVersion`: the TLS 1.x minor version (0 to 3);
    /// `None` for `TLS_AUTO` or unset (Envoy's defaults: 1.2 to 1.3).
    pub min_version: Option<u8>,
    pub max_version: Option<u8>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GatewayServer {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: PortProtocol,
    pub port_name: String,
    /// `namespace/host` entries as written; a bare host means `*/host`.
    pub hosts: Vec<String>,
    pub bind: Option<IpAddr>,
    pub tls: Option<ServerTls>,
}

/// Istio's Gateway: the servers of the gateway proxies its `selector` matches.
#[derive(Clone, Debug, PartialEq)]
pub struct Gateway {
    pub namespace: String,
    pub name: String,
    pub selector: Labels,
    pub servers: Vec<GatewayServer>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    None,
    Static,
    Dns,
    DnsRoundRobin,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceEntryPort {
    pub number: u16,
    pub protocol: Option<PortProtocol>,
    pub name: String,
    pub target_port: Option<u16>,
    /// How meshd carries the port's traffic: by `protocol` (HTTP; HTTP2 and GRPC as
    /// HTTP/2; everything else as TCP), else by the name's prefix as for a Service port.
    pub mesh_protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceEntryEndpoint {
    /// An IP, a host name, or a `unix://` socket path.
    pub address: String,
    /// Port name → port number, overriding the entry's ports.
    pub ports: BTreeMap<String, u16>,
    pub labels: Labels,
    pub weight: Option<u32>,
    /// Where the endpoint runs (`locality`); empty when unknown.
    pub locality: locality::Locality,
}

/// Istio's ServiceEntry: hosts added to the mesh registry (see
/// `translate::service_entry`).
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceEntry {
    pub namespace: String,
    pub name: String,
    pub hosts: Vec<String>,
    /// IPs or CIDR ranges, as written.
    pub addresses: Vec<String>,
    pub ports: Vec<ServiceEntryPort>,
    /// True for `MESH_INTERNAL`.
    pub mesh_internal: bool,
    pub resolution: Resolution,
    pub endpoints: Vec<ServiceEntryEndpoint>,
    pub workload_selector: Option<Labels>,
}

/// Resolves a host as written in a rule of namespace `namespace` to a service FQDN:
/// `reviews` → `reviews.<namespace>.svc.cluster.local`, `reviews.other` →
/// `reviews.other.svc.cluster.local`, a name ending in the cluster domain unchanged.
pub fn resolve_host(host: &str, namespace: &str) -> String {
    if host.ends_with(DOMAIN_SUFFIX) || host.contains('*') {
        return host.to_owned();
    }
    match host.split('.').count() {
        1 => format!("{host}.{namespace}.{DOMAIN_SUFFIX}"),
        2 => format!("{host}.{DOMAIN_SUFFIX}"),
        3 if host.ends_with(".svc") => format!("{host}.cluster.local"),
        _ => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_resolve_relative_to_the_rule_namespace() {
        let cases = [
            ("reviews", "bookinfo", "reviews.bookinfo.svc.cluster.local"),
            ("reviews.other", "bookinfo", "reviews.other.svc.cluster.local"),
            ("reviews.other.svc", "bookinfo", "reviews.other.svc.cluster.local"),
            ("reviews.other.svc.cluster.local", "bookinfo", "reviews.other.svc.cluster.local"),
            ("www.example.com", "bookinfo", "www.example.com"),
        ];
        for (host, ns, want) in cases {
            assert_eq!(resolve_host(host, ns), want, "{host} in {ns}");
        }
    }
}
