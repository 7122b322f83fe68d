//! The Envoy bootstrap every Amime sidecar starts from.
//!
//! The bootstrap is deliberately small: it names the proxy (`node`), points
//! Envoy at meshd over ADS for everything else (`dynamic_resources`), and adds
//! the few static pieces a sidecar needs before it has talked to meshd:
//!
//! * cluster `xds-grpc`: meshd's gRPC endpoint, with HTTP/2 set explicitly
//!   (without it Envoy speaks HTTP/1.1 to a gRPC server and never gets config);
//! * cluster `admin`: Envoy's own admin endpoint;
//! * listener `health` on `<first instance ip>:15021`, answering
//!   `/healthz/ready` from the admin `/ready` endpoint, and the app's rewritten HTTP
//!   probes (`/app-health/...`) from the app itself ([`health`]);
//! * listener `prometheus` on `<first instance ip>:15090`, serving
//!   `/stats/prometheus` from the admin endpoint, its cluster stats labelled by
//!   destination ([`stats`]).
//!
//! Nothing binds to a fixed address: listeners use the first instance IP and
//! the admin endpoint uses [`BootstrapConfig::admin_address`], so several
//! sidecars can run side by side on one machine (e.g. on 127.0.0.2, 127.0.0.3…).
//!
//! Inputs are validated once, when a [`BootstrapConfig`] is built; rendering a
//! valid config cannot fail and is deterministic (maps are emitted with sorted
//! keys).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{json, Value};

use crate::probes::AppProbes;

pub mod health;
mod names;
pub mod stats;

pub use names::{validate_dns_label, validate_dns_subdomain, NameError};
use names::{validate_hostname, validate_label_name};

/// Port of the sidecar health listener (see MISSION §2).
pub const HEALTH_PORT: u16 = 15021;
/// The sidecar's readiness path on [`HEALTH_PORT`] (200 once Envoy is initialized).
pub const READY_PATH: &str = "/healthz/ready";
/// Port of the sidecar Prometheus stats listener (see MISSION §2).
pub const PROMETHEUS_PORT: u16 = 15090;
/// Name of the static cluster that points at meshd.
pub const XDS_CLUSTER: &str = "xds-grpc";
/// Name of the static cluster that points at Envoy's own admin endpoint.
pub const ADMIN_CLUSTER: &str = "admin";
/// Default meshd gRPC address.
pub const DEFAULT_XDS_ADDRESS: &str = "127.0.0.1:15010";
/// Default Kubernetes service account.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Default Envoy admin address.
pub const DEFAULT_ADMIN_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15000);

const HCM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Everything that can go wrong when building or rendering a bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("invalid node id {node_id:?}: expected POD_NAME.NAMESPACE, but it has no '.'")]
    NodeIdWithoutNamespace { node_id: String },
    #[error("invalid node id {node_id:?}: pod name {pod_name:?} is not a valid DNS subdomain: {reason}")]
    InvalidPodName { node_id: String, pod_name: String, reason: NameError },
    #[error("invalid node id {node_id:?}: namespace {namespace:?} is not a valid DNS label: {reason}")]
    InvalidNamespace { node_id: String, namespace: String, reason: NameError },
    #[error("at least one instance IP is required")]
    NoInstanceIps,
    #[error("invalid instance IP {ip}: {reason}")]
    InvalidInstanceIp { ip: IpAddr, reason: &'static str },
    #[error("invalid xDS address {address:?}: {reason}")]
    InvalidXdsAddress { address: String, reason: String },
    #[error("invalid label key {key:?}: {reason}")]
    InvalidLabelKey { key: String, reason: String },
    #[error("invalid value {value:?} for label {key:?}: {reason}")]
    InvalidLabelValue { key: String, value: String, reason: NameError },
    #[error("invalid service account {name:?}: not a valid DNS subdomain: {reason}")]
    InvalidServiceAccount { name: String, reason: NameError },
    #[error("invalid admin address {address}: {reason}")]
    InvalidAdminAddress { address: SocketAddr, reason: &'static str },
    #[error("invalid interception mode {value:?}: expected \"explicit\" or \"transparent\"")]
    InvalidInterceptionMode { value: String },
    #[error("invalid xDS API {value:?}: expected \"delta\" or \"sotw\"")]
    InvalidXdsApi { value: String },
    #[error("invalid app probe {path:?}: {reason}")]
    InvalidAppProbe { path: String, reason: String },
    #[error("cannot serialize bootstrap to YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

fn validate_label(key: &str, value: &str) -> Result<(), BootstrapError> {
    let key_err = |reason: String| BootstrapError::InvalidLabelKey { key: key.to_string(), reason };
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            validate_dns_subdomain(prefix)
                .map_err(|e| key_err(format!("prefix {prefix:?} is not a valid DNS subdomain: {e}")))?;
            name
        }
        None => key,
    };
    validate_label_name(name).map_err(|e| key_err(format!("name {name:?} is invalid: {e}")))?;
    if !value.is_empty() {
        validate_label_name(value).map_err(|reason| BootstrapError::InvalidLabelValue {
            key: key.to_string(),
            value: value.to_string(),
            reason,
        })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Proxy identity
// ---------------------------------------------------------------------------

/// Who a proxy is: Envoy's `node.id` is `<pod_name>.<namespace>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProxyIdentity {
    /// Kubernetes pod name (DNS subdomain; may contain dots).
    pub pod_name: String,
    /// Kubernetes namespace (DNS label).
    pub namespace: String,
}

impl ProxyIdentity {
    /// Parses a node id `NAME.NAMESPACE`, splitting at the last dot (pod
    /// names may contain dots, namespaces may not).
    pub fn parse(node_id: &str) -> Result<Self, BootstrapError> {
        let Some((pod_name, namespace)) = node_id.rsplit_once('.') else {
            return Err(BootstrapError::NodeIdWithoutNamespace { node_id: node_id.to_string() });
        };
        let identity = ProxyIdentity { pod_name: pod_name.to_string(), namespace: namespace.to_string() };
        identity.validate()?;
        Ok(identity)
    }

    /// Checks both parts; useful when the struct was built field by field.
    pub fn validate(&self) -> Result<(), BootstrapError> {
        validate_dns_subdomain(&self.pod_name).map_err(|reason| BootstrapError::InvalidPodName {
            node_id: self.node_id(),
            pod_name: self.pod_name.clone(),
            reason,
        })?;
        validate_dns_label(&self.namespace).map_err(|reason| BootstrapError::InvalidNamespace {
            node_id: self.node_id(),
            namespace: self.namespace.clone(),
            reason,
        })
    }

    /// The Envoy node id, `<pod_name>.<namespace>`.
    pub fn node_id(&self) -> String {
        format!("{}.{}", self.pod_name, self.namespace)
    }
}

impl fmt::Display for ProxyIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.pod_name, self.namespace)
    }
}

impl FromStr for ProxyIdentity {
    type Err = BootstrapError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// ---------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------

use crate::locality::Locality;
use crate::node_metadata as metadata;
pub use crate::node_metadata::{InterceptionMode, ProxyKind};

impl fmt::Display for InterceptionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for InterceptionMode {
    type Err = BootstrapError;
    /// Accepts `transparent`/`REDIRECT` and `explicit`/`NONE` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "transparent" | "redirect" => Ok(InterceptionMode::Redirect),
            "explicit" | "none" => Ok(InterceptionMode::None),
            _ => Err(BootstrapError::InvalidInterceptionMode { value: s.to_string() }),
        }
    }
}

/// Which ADS protocol variant the sidecar speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum XdsApi {
    /// Incremental xDS (`DELTA_GRPC`).
    #[default]
    Delta,
    /// State-of-the-world xDS (`GRPC`).
    Sotw,
}

impl XdsApi {
    /// The `ads_config.api_type` value.
    pub fn api_type(self) -> &'static str {
        match self {
            XdsApi::Delta => "DELTA_GRPC",
            XdsApi::Sotw => "GRPC",
        }
    }

    /// The user-facing name (`delta` / `sotw`).
    pub fn name(self) -> &'static str {
        match self {
            XdsApi::Delta => "delta",
            XdsApi::Sotw => "sotw",
        }
    }
}

impl fmt::Display for XdsApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for XdsApi {
    type Err = BootstrapError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "delta" | "delta_grpc" => Ok(XdsApi::Delta),
            "sotw" | "grpc" => Ok(XdsApi::Sotw),
            _ => Err(BootstrapError::InvalidXdsApi { value: s.to_string() }),
        }
    }
}

// ---------------------------------------------------------------------------
// xDS address
// ---------------------------------------------------------------------------

/// Host part of an [`XdsAddress`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum XdsHost {
    /// An IP literal: the cluster is `STATIC`.
    Ip(IpAddr),
    /// A DNS name: the cluster is `STRICT_DNS`.
    Dns(String),
}

/// meshd's gRPC address, `HOST:PORT` (IPv6 literals in brackets: `[::1]:15010`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct XdsAddress {
    host: XdsHost,
    port: u16,
}

impl XdsAddress {
    /// The host (IP literal or DNS name).
    pub fn host(&self) -> &XdsHost {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn host_string(&self) -> String {
        match &self.host {
            XdsHost::Ip(ip) => ip.to_string(),
            XdsHost::Dns(name) => name.clone(),
        }
    }
}

impl fmt::Display for XdsAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            XdsHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            XdsHost::Ip(IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
            XdsHost::Dns(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl FromStr for XdsAddress {
    type Err = BootstrapError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| BootstrapError::InvalidXdsAddress { address: s.to_string(), reason };
        if let Ok(sa) = s.parse::<SocketAddr>() {
            if sa.port() == 0 {
                return Err(err("port 0 is not allowed".into()));
            }
            return Ok(XdsAddress { host: XdsHost::Ip(sa.ip()), port: sa.port() });
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(err("expected HOST:PORT, but there is no ':PORT'".into()));
        };
        if host.contains(':') || host.starts_with('[') {
            return Err(err("an IPv6 host must be a valid address in brackets, e.g. [::1]:15010".into()));
        }
        let port: u16 = port.parse().map_err(|_| err(format!("port {port:?} is not a number between 1 and 65535")))?;
        if port == 0 {
            return Err(err("port 0 is not allowed".into()));
        }
        validate_hostname(host)
            .map_err(|e| err(format!("host {host:?} is neither an IP address nor a valid DNS name: {e}")))?;
        Ok(XdsAddress { host: XdsHost::Dns(host.to_string()), port })
    }
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

/// A validated bootstrap configuration; build one with [`BootstrapConfig::builder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapConfig {
    node: ProxyIdentity,
    ips: Vec<IpAddr>,
    xds_address: XdsAddress,
    mode: InterceptionMode,
    kind: ProxyKind,
    xds_api: XdsApi,
    labels: BTreeMap<String, String>,
    service_account: String,
    admin_address: SocketAddr,
    app_probes: AppProbes,
    locality: Locality,
}

impl BootstrapConfig {
    /// Starts a builder with the defaults: xDS at `127.0.0.1:15010`, transparent
    /// (`REDIRECT`) interception, delta xDS, no labels, service account
    /// `default`, admin at `127.0.0.1:15000`.
    pub fn builder(node: ProxyIdentity) -> BootstrapConfigBuilder {
        BootstrapConfigBuilder {
            node,
            ips: Vec::new(),
            xds_address: DEFAULT_XDS_ADDRESS.to_string(),
            mode: InterceptionMode::default(),
            kind: ProxyKind::default(),
            xds_api: XdsApi::default(),
            labels: BTreeMap::new(),
            service_account: DEFAULT_SERVICE_ACCOUNT.to_string(),
            admin_address: DEFAULT_ADMIN_ADDRESS,
            app_probes: AppProbes::new(),
            locality: Locality::default(),
        }
    }

    pub fn node(&self) -> &ProxyIdentity {
        &self.node
    }
    /// Instance IPs, never empty, in the order given (duplicates removed).
    pub fn ips(&self) -> &[IpAddr] {
        &self.ips
    }
    pub fn xds_address(&self) -> &XdsAddress {
        &self.xds_address
    }
    pub fn mode(&self) -> InterceptionMode {
        self.mode
    }
    /// Sidecar (the default) or gateway.
    pub fn kind(&self) -> ProxyKind {
        self.kind
    }
    pub fn xds_api(&self) -> XdsApi {
        self.xds_api
    }
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }
    /// The app's HTTP probes the health listener replays.
    pub fn app_probes(&self) -> &AppProbes {
        &self.app_probes
    }
    /// Where the proxy runs (Envoy's `node.locality`); empty when unknown.
    pub fn locality(&self) -> &Locality {
        &self.locality
    }

    /// The IP the health and Prometheus listeners bind to.
    pub fn primary_ip(&self) -> IpAddr {
        self.ips[0]
    }

    /// Envoy's `node.cluster`: `<app label or pod name>.<namespace>`.
    pub fn service_cluster(&self) -> String {
        let app = self.labels.get("app").filter(|v| !v.is_empty()).unwrap_or(&self.node.pod_name);
        format!("{app}.{}", self.node.namespace)
    }
}

/// Collects bootstrap inputs; [`build`](Self::build) validates them all.
#[derive(Debug, Clone)]
pub struct BootstrapConfigBuilder {
    node: ProxyIdentity,
    ips: Vec<IpAddr>,
    xds_address: String,
    mode: InterceptionMode,
    kind: ProxyKind,
    xds_api: XdsApi,
    labels: BTreeMap<String, String>,
    service_account: String,
    admin_address: SocketAddr,
    app_probes: AppProbes,
    locality: Locality,
}

impl BootstrapConfigBuilder {
    /// Adds an instance IP (at least one is required).
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ips.push(ip);
        self
    }
    /// Adds instance IPs.
    pub fn ips(mut self, ips: impl IntoIterator<Item = IpAddr>) -> Self {
        self.ips.extend(ips);
        self
    }
    /// meshd's gRPC address, `HOST:PORT`; host may be an IP or a DNS name.
    pub fn xds_address(mut self, address: impl Into<String>) -> Self {
        self.xds_address = address.into();
        self
    }
    pub fn mode(mut self, mode: InterceptionMode) -> Self {
        self.mode = mode;
        self
    }
    /// A gateway gets only the listeners of the Gateways that select its labels.
    pub fn kind(mut self, kind: ProxyKind) -> Self {
        self.kind = kind;
        self
    }
    pub fn xds_api(mut self, api: XdsApi) -> Self {
        self.xds_api = api;
        self
    }
    /// Sets one pod label (a later value for the same key wins).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
    /// Adds pod labels.
    pub fn labels(mut self, labels: impl IntoIterator<Item = (String, String)>) -> Self {
        self.labels.extend(labels);
        self
    }
    pub fn service_account(mut self, name: impl Into<String>) -> Self {
        self.service_account = name.into();
        self
    }
    /// Envoy's admin address; must be a loopback address with a non-zero port.
    pub fn admin_address(mut self, address: SocketAddr) -> Self {
        self.admin_address = address;
        self
    }
    /// The app's rewritten HTTP probes (`AMIME_APP_PROBES`): the health listener gets one
    /// route per probe, to the app's original port and path on the primary IP.
    pub fn app_probes(mut self, probes: AppProbes) -> Self {
        self.app_probes = probes;
        self
    }
    /// Where the proxy runs, written as Envoy's `node.locality`: meshd prefers
    /// endpoints near it when a DestinationRule's locality balancing applies.
    pub fn locality(mut self, locality: Locality) -> Self {
        self.locality = locality;
        self
    }

    /// Validates every input and returns the first problem found.
    pub fn build(self) -> Result<BootstrapConfig, BootstrapError> {
        self.node.validate()?;

        if self.ips.is_empty() {
            return Err(BootstrapError::NoInstanceIps);
        }
        let mut ips: Vec<IpAddr> = Vec::with_capacity(self.ips.len());
        for ip in self.ips {
            let reason = if ip.is_unspecified() {
                Some("the unspecified address cannot identify an instance")
            } else if ip.is_multicast() {
                Some("a multicast address cannot identify an instance")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(BootstrapError::InvalidInstanceIp { ip, reason });
            }
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }

        let xds_address: XdsAddress = self.xds_address.parse()?;

        for (key, value) in &self.labels {
            validate_label(key, value)?;
        }

        validate_dns_subdomain(&self.service_account)
            .map_err(|reason| BootstrapError::InvalidServiceAccount { name: self.service_account.clone(), reason })?;

        let admin = self.admin_address;
        if !admin.ip().is_loopback() {
            return Err(BootstrapError::InvalidAdminAddress {
                address: admin,
                reason: "Envoy's admin endpoint must listen on a loopback address only",
            });
        }
        if admin.port() == 0 {
            return Err(BootstrapError::InvalidAdminAddress {
                address: admin,
                reason: "port 0 is not allowed (the health and stats listeners must know the port)",
            });
        }

        health::validate(&self.app_probes)?;

        Ok(BootstrapConfig {
            node: self.node,
            ips,
            xds_address,
            mode: self.mode,
            kind: self.kind,
            xds_api: self.xds_api,
            labels: self.labels,
            service_account: self.service_account,
            admin_address: admin,
            app_probes: self.app_probes,
            locality: self.locality,
        })
    }
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

pub(crate) fn socket_address(ip: impl fmt::Display, port: u16) -> Value {
    json!({ "socket_address": { "address": ip.to_string(), "port_value": port } })
}

pub(crate) fn load_assignment(cluster: &str, address: Value) -> Value {
    json!({
        "cluster_name": cluster,
        "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": address } }] }],
    })
}

/// A listener with one HTTP connection manager serving `routes` (to the admin cluster,
/// and for health, to the app's probe ports).
fn admin_proxy_listener(name: &str, ip: IpAddr, port: u16, routes: Vec<Value>) -> Value {
    json!({
        "name": name,
        "address": socket_address(ip, port),
        "filter_chains": [{
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": HCM_TYPE,
                    "stat_prefix": name,
                    "codec_type": "AUTO",
                    "route_config": {
                        "name": name,
                        "virtual_hosts": [{
                            "name": name,
                            "domains": ["*"],
                            "routes": routes,
                        }],
                    },
                    "http_filters": [{
                        "name": "envoy.filters.http.router",
                        "typed_config": { "@type": ROUTER_TYPE },
                    }],
                },
            }],
        }],
    })
}

fn xds_cluster(config: &BootstrapConfig) -> Value {
    let xds = config.xds_address();
    let mut cluster = json!({
        "name": XDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": load_assignment(
            XDS_CLUSTER,
            socket_address(xds.host_string(), xds.port()),
        ),
        // gRPC needs HTTP/2; without this Envoy uses HTTP/1.1 and never gets config.
        "typed_extension_protocol_options": {
            HTTP_PROTOCOL_OPTIONS: {
                "@type": format!("type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"),
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": { "interval": "30s", "timeout": "10s" },
                    },
                },
            },
        },
    });
    if let XdsHost::Dns(_) = xds.host() {
        cluster["type"] = json!("STRICT_DNS");
        // Works on IPv4, dual-stack and IPv6-only clusters alike.
        cluster["dns_lookup_family"] = json!("V4_PREFERRED");
    }
    cluster
}

/// Renders the Envoy bootstrap as JSON. Deterministic for a given config.
pub fn render(config: &BootstrapConfig) -> Value {
    let node = config.node();
    let instance_ips = config.ips().iter().map(|ip| ip.to_string()).collect::<Vec<_>>().join(",");
    let admin = config.admin_address();
    let ip = config.primary_ip();
    let mut clusters = vec![
        xds_cluster(config),
        json!({
            "name": ADMIN_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": load_assignment(ADMIN_CLUSTER, socket_address(admin.ip(), admin.port())),
        }),
    ];
    clusters.extend(health::clusters(config));

    let mut bootstrap = json!({
        "node": {
            "id": node.node_id(),
            "cluster": config.service_cluster(),
            "metadata": {
                metadata::NAMESPACE: node.namespace,
                metadata::LABELS: config.labels(),
                metadata::INSTANCE_IPS: instance_ips,
                metadata::SERVICE_ACCOUNT: config.service_account(),
                metadata::INTERCEPTION_MODE: config.mode().metadata_value(),
            },
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": config.xds_api().api_type(),
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{ "envoy_grpc": { "cluster_name": XDS_CLUSTER } }],
            },
            "cds_config": { "ads": {}, "resource_api_version": "V3" },
            "lds_config": { "ads": {}, "resource_api_version": "V3" },
        },
        "static_resources": {
            "clusters": clusters,
            "listeners": [
                admin_proxy_listener("health", ip, HEALTH_PORT, health::routes(config)),
                admin_proxy_listener("prometheus", ip, PROMETHEUS_PORT, vec![json!({
                    "match": { "path": "/stats/prometheus" },
                    "route": { "cluster": ADMIN_CLUSTER },
                })]),
            ],
        },
        "admin": {
            "address": socket_address(admin.ip(), admin.port()),
        },
        // Labels on the stats of meshd's clusters (destination service, subset, port...).
        "stats_config": stats::stats_config(),
        // Envoy rejects a whole route configuration when one regex compiles to more
        // than 100 RE2 instructions (its default), which ordinary path patterns exceed;
        // meshd bounds regex size itself (see the control plane's validation).
        "layered_runtime": {
            "layers": [
                {
                    "name": "amime-defaults",
                    "static_layer": {
                        "re2.max_program_size.error_level": RE2_MAX_PROGRAM_SIZE,
                        "re2.max_program_size.warn_level": 1000,
                    },
                },
                { "name": "admin", "admin_layer": {} },
            ],
        },
    });
    // Written for gateways only: a sidecar's bootstrap stays as it was (unset means sidecar).
    if config.kind() == ProxyKind::Gateway {
        bootstrap["node"]["metadata"][metadata::PROXY_TYPE] = json!(config.kind().metadata_value());
    }
    // Written when known only: a bootstrap without a locality stays as it was.
    let locality = config.locality();
    if !locality.is_empty() {
        bootstrap["node"]["locality"] =
            json!({ "region": locality.region, "zone": locality.zone, "sub_zone": locality.subzone });
    }
    bootstrap
}

/// The largest RE2 program Envoy accepts in a regex; meshd's validation uses the same
/// bound.
pub const RE2_MAX_PROGRAM_SIZE: u32 = 32768;

/// Serializes a JSON value with object keys in sorted order, whatever
/// `serde_json`'s map ordering features are, so YAML output is byte-stable.
struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    out.serialize_entry(k, &Sorted(v))?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&Sorted(item))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// Renders the Envoy bootstrap as YAML. Deterministic for a given config.
pub fn render_yaml(config: &BootstrapConfig) -> Result<String, BootstrapError> {
    Ok(serde_yaml::to_string(&Sorted(&render(config)))?)
}

#[cfg(test)]
mod tests;
