//! The parts of a DestinationRule's traffic policy: load balancing, connection pools,
//! outlier detection, client TLS, tunnels (Istio's messages of the same names). meshd
//! implements `loadBalancer.simple`; it ignores the others with a warning, except
//! `tunnel`, which it refuses, for now.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::common::at_most_one_of;

/// How endpoints are chosen: set at most one of `simple`, `consistentHash` or
/// `backendUtilization`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = load_balancer_one_of)]
pub struct LoadBalancerSettings {
    /// A standard policy: `ROUND_ROBIN`, `LEAST_REQUEST`, `RANDOM`, `PASSTHROUGH` (to
    /// the address the client asked for) or `UNSPECIFIED`. `LEAST_CONN` is the
    /// deprecated name of `LEAST_REQUEST`. Default: `LEAST_REQUEST`.
    #[schemars(extend("enum" = ["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"]))]
    pub simple: Option<String>,
    /// Session affinity by hashing a request property. Not implemented by meshd yet
    /// (ignored with a warning: requests are balanced by the simple policy).
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality-aware balancing and failover: endpoints near the caller's locality
    /// first (failover, with outlierDetection), or weighted by locality (distribute).
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// Deprecated: use `warmup`. Slow-start window for new endpoints, as a duration
    /// (`60s`). Not implemented by meshd yet (ignored with a warning).
    pub warmup_duration_secs: Option<String>,
    /// Slow start for new endpoints. Not implemented by meshd yet (ignored with a
    /// warning).
    pub warmup: Option<WarmupConfiguration>,
    /// Weight endpoints by the utilization they report (ORCA load reports) instead
    /// of a simple policy. Not implemented by meshd yet (ignored with a warning:
    /// requests are balanced by the simple policy).
    pub backend_utilization: Option<BackendUtilizationLbConfig>,
    /// Zone-aware balancing: prefer endpoints in the client's zone while that zone
    /// has enough of them. Not implemented by meshd yet (ignored with a warning).
    pub zone_aware_lb_setting: Option<ZoneAwareLbSetting>,
}

fn load_balancer_one_of(schema: &mut schemars::Schema) {
    at_most_one_of(schema, &["simple", "consistentHash", "backendUtilization"]);
}

/// Balancing by the utilization endpoints report in ORCA load reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendUtilizationLbConfig {
    /// Time an endpoint's first reports are held before its weight counts, as a
    /// duration.
    pub weight_stabilization_period: Option<String>,
    /// Time after which an endpoint that stopped reporting goes back to the default
    /// (equal) weight, as a duration.
    pub weight_expiration_period: Option<String>,
    /// How often weights are computed again from the latest reports, as a duration.
    pub weight_update_period: Option<String>,
    /// Extra utilization charged for errors, in percent of the error rate per
    /// request rate.
    pub error_utilization_penalty_percent: Option<u32>,
    /// Names of the ORCA metrics that give the utilization (instead of CPU).
    pub metric_names_for_computing_utilization: Option<Vec<String>>,
}

/// Zone-aware balancing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZoneAwareLbSetting {
    /// Turn zone-aware balancing on or off here.
    pub enabled: Option<bool>,
    /// Where traffic goes when a region's endpoints are unhealthy.
    pub failover: Option<Vec<LocalityFailover>>,
    /// Labels ordering failover targets by priority. Not supported by meshd (refused).
    pub failover_priority: Option<Vec<String>>,
    /// Endpoints the client's region must have for zone-aware balancing to apply.
    #[schemars(range(min = 1))]
    pub min_cluster_size: Option<u32>,
}

/// Consistent hashing: one hash key (`httpHeaderName`, `httpCookie`, `useSourceIp` or
/// `httpQueryParameterName`) and at most one algorithm (`ringHash` or `maglev`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = consistent_hash_one_of)]
pub struct ConsistentHashLb {
    /// Hash this request header.
    pub http_header_name: Option<String>,
    /// Hash this cookie (generated if absent).
    pub http_cookie: Option<HttpCookie>,
    /// Hash the client's IP address.
    pub use_source_ip: Option<bool>,
    /// Hash this query parameter.
    pub http_query_parameter_name: Option<String>,
    /// Use a ring hash.
    pub ring_hash: Option<RingHash>,
    /// Use Maglev.
    pub maglev: Option<MagLev>,
    /// Deprecated: use `ringHash.minimumRingSize`.
    pub minimum_ring_size: Option<u64>,
}

fn consistent_hash_one_of(schema: &mut schemars::Schema) {
    let mut key = schemars::Schema::default();
    at_most_one_of(&mut key, &["httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName"]);
    let mut algorithm = schemars::Schema::default();
    at_most_one_of(&mut algorithm, &["ringHash", "maglev"]);
    schema.insert("allOf".to_owned(), json!([key, algorithm]));
}

/// The cookie hashed for session affinity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HttpCookie {
    /// Name of the cookie. Required.
    pub name: String,
    /// Path of the cookie.
    pub path: Option<String>,
    /// Lifetime of a generated cookie, as a duration (`3600s`).
    pub ttl: Option<String>,
    /// Further attributes of a generated cookie.
    pub attributes: Option<Vec<CookieAttribute>>,
}

/// One attribute of a generated cookie.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CookieAttribute {
    /// The attribute's name. Required.
    pub name: String,
    /// The attribute's value.
    pub value: Option<String>,
}

/// Ring hash settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RingHash {
    /// Minimum number of virtual nodes on the ring. Default: 1024.
    pub minimum_ring_size: Option<u64>,
}

/// Maglev settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MagLev {
    /// Size of the lookup table (a prime). Default: 65537.
    pub table_size: Option<u64>,
}

/// Locality-aware load balancing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalityLbSetting {
    /// How traffic from each locality is spread over localities (weights).
    pub distribute: Option<Vec<LocalityDistribute>>,
    /// Where traffic goes when a region's endpoints are unhealthy.
    pub failover: Option<Vec<LocalityFailover>>,
    /// Labels ordering failover targets by priority. Not supported by meshd (refused).
    pub failover_priority: Option<Vec<String>>,
    /// Turn locality balancing on or off here, overriding the mesh setting.
    pub enabled: Option<bool>,
}

/// Weights of destination localities for clients in one locality.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LocalityDistribute {
    /// Client locality, `region/zone/sub-zone` (wildcards allowed).
    pub from: Option<String>,
    /// Destination locality to weight (percent, adding up to 100).
    pub to: Option<BTreeMap<String, u32>>,
}

/// A failover from one region to another.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LocalityFailover {
    /// The region whose traffic fails over.
    pub from: Option<String>,
    /// The region it fails over to.
    pub to: Option<String>,
}

/// Slow start for new endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmupConfiguration {
    /// Length of the warm-up window, as a duration (`60s`). Required.
    pub duration: String,
    /// Share of its full traffic a new endpoint starts with, in percent. Default: 10.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub minimum_percent: Option<f64>,
    /// How fast traffic grows during the window (1.0 = linear; larger values ramp up
    /// faster at first). Default: 1.0.
    #[schemars(range(min = 0.0))]
    pub aggression: Option<f64>,
}

/// Limits on connections and requests to each endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConnectionPoolSettings {
    /// Limits common to TCP and HTTP.
    pub tcp: Option<TcpSettings>,
    /// HTTP limits.
    pub http: Option<HttpSettings>,
}

/// TCP connection limits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpSettings {
    /// Maximum connections to the host. Default: 2^32-1.
    pub max_connections: Option<i32>,
    /// Connect timeout, as a duration (`10s`). Default: 10s.
    pub connect_timeout: Option<String>,
    /// TCP keepalive probes on the connections.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Maximum lifetime of a connection, as a duration.
    pub max_connection_duration: Option<String>,
    /// Idle time after which a connection is closed, as a duration. Default: 1h.
    pub idle_timeout: Option<String>,
}

/// TCP keepalive settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dropped.
    pub probes: Option<u32>,
    /// Idle time before probes start, as a duration.
    pub time: Option<String>,
    /// Time between probes, as a duration.
    pub interval: Option<String>,
}

/// HTTP connection limits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpSettings {
    /// Maximum requests queued waiting for a connection. Default: 2^32-1.
    pub http1_max_pending_requests: Option<i32>,
    /// Maximum active requests to the host. Default: 2^32-1.
    pub http2_max_requests: Option<i32>,
    /// Maximum requests per connection (1 disables keep-alive). Default: unlimited.
    pub max_requests_per_connection: Option<i32>,
    /// Maximum outstanding retries to the host. Default: 2^32-1.
    pub max_retries: Option<i32>,
    /// Idle time after which a connection is closed, as a duration. Default: 1h.
    pub idle_timeout: Option<String>,
    /// Upgrade HTTP/1.1 connections to HTTP/2: `DEFAULT`, `DO_NOT_UPGRADE` or `UPGRADE`.
    #[schemars(extend("enum" = ["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"]))]
    pub h2_upgrade_policy: Option<String>,
    /// Use the client's HTTP version towards the host.
    pub use_client_protocol: Option<bool>,
    /// Maximum concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: Option<i32>,
    /// HTTP/2 PING frames sent on connections to the host, to detect dead ones.
    #[serde(rename = "http2KeepAlive")]
    pub http2_keep_alive: Option<Http2KeepAlive>,
}

/// HTTP/2 PING frames on connections to the host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Http2KeepAlive {
    /// Time between PINGs, as a duration (at least `1ms`).
    pub interval: Option<String>,
    /// Time to wait for a PING's answer before closing the connection, as a duration
    /// (at least `1ms`).
    pub timeout: Option<String>,
}

/// Ejection of endpoints that keep failing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Count local-origin failures (connect errors, timeouts) apart from upstream ones.
    pub split_external_local_origin_errors: Option<bool>,
    /// Local-origin failures in a row before ejection. Default: 5.
    pub consecutive_local_origin_failures: Option<u32>,
    /// Gateway errors (502, 503, 504) in a row before ejection.
    pub consecutive_gateway_errors: Option<u32>,
    /// 5xx errors in a row before ejection. Default: 5.
    pub consecutive_5xx_errors: Option<u32>,
    /// Deprecated: use `consecutive5xxErrors`.
    pub consecutive_errors: Option<i32>,
    /// Time between ejection sweeps, as a duration. Default: 10s.
    pub interval: Option<String>,
    /// Minimum ejection time, as a duration. Default: 30s.
    pub base_ejection_time: Option<String>,
    /// Maximum percentage of endpoints ejected at once. Default: 10.
    pub max_ejection_percent: Option<i32>,
    /// Ejection stops while fewer than this percentage of endpoints are healthy.
    /// Default: 0.
    pub min_health_percent: Option<i32>,
    /// Failure percentage (0-100) above which an endpoint is ejected, judged over
    /// each interval. Default: off.
    #[schemars(range(min = 0, max = 100))]
    pub failure_percentage_threshold: Option<u32>,
    /// HTTP statuses (100-599) counted as failures. Default: 5xx.
    pub outlier_detection_http_error_codes: Option<Vec<HttpStatusCode>>,
}

/// An HTTP status code, 100-599.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct HttpStatusCode(#[schemars(range(min = 100, max = 599))] pub u32);

/// TLS from the sidecar to the host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientTlsSettings {
    /// `DISABLE`, `SIMPLE` (TLS), `MUTUAL` (mTLS with the given certificates) or
    /// `ISTIO_MUTUAL` (mTLS with mesh certificates).
    #[schemars(extend("enum" = ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]))]
    pub mode: Option<String>,
    /// Path of the client certificate file (`MUTUAL`).
    pub client_certificate: Option<String>,
    /// Path of the client private key file (`MUTUAL`).
    pub private_key: Option<String>,
    /// Path of the CA certificates file that verifies the server.
    pub ca_certificates: Option<String>,
    /// Name of the Secret holding the client certificate, key and CA.
    pub credential_name: Option<String>,
    /// Name of the Secret (or ConfigMap) holding only the CA certificates that
    /// verify the server.
    pub ca_cert_credential_name: Option<String>,
    /// Subject alternative names the server certificate must carry (one of).
    pub subject_alt_names: Option<Vec<String>>,
    /// SNI sent to the host.
    pub sni: Option<String>,
    /// Skip verifying the server certificate.
    pub insecure_skip_verify: Option<bool>,
    /// Path of the certificate revocation list file.
    pub ca_crl: Option<String>,
}

/// An HTTP CONNECT tunnel to the host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TunnelSettings {
    /// `CONNECT` (HTTP/1.1) or `POST` (HTTP/2). Default: `CONNECT`.
    pub protocol: Option<String>,
    /// Host the tunnel connects to. Required.
    pub target_host: String,
    /// Port the tunnel connects to. Required.
    #[schemars(range(max = 65535))]
    pub target_port: u32,
}

/// The PROXY protocol header sent to the host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProxyProtocol {
    /// `V1` (text) or `V2` (binary).
    #[schemars(extend("enum" = ["V1", "V2"]))]
    pub version: Option<String>,
}

/// A limit on concurrent retries, relative to active requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    /// Retries allowed as a percentage of active requests. Default: 20.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub percent: Option<f64>,
    /// Retries always allowed, whatever the percentage. Default: 3.
    pub min_retry_concurrency: Option<u32>,
    /// Window over which active requests are counted for the budget, as a
    /// duration.
    pub budget_interval: Option<String>,
}
