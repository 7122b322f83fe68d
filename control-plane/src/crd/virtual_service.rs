//! VirtualService: how requests to a set of hosts are matched and routed (Istio's
//! `networking.istio.io/v1` VirtualService, field for field).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Destination, Headers, Percent, StringMatch};
use super::http_actions::{
    CorsPolicy, Delegate, HttpDirectResponse, HttpFaultInjection, HttpMirrorPolicy, HttpRedirect, HttpRetry,
    HttpRewrite,
};
use super::status::MeshStatus;

/// Routing rules for requests to a set of hosts: ordered HTTP routes, each with match
/// conditions and weighted destinations. Same fields and meaning as Istio's
/// VirtualService.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.amime.dev",
    version = "v1",
    kind = "VirtualService",
    namespaced,
    doc = "VirtualService of networking.amime.dev: the same fields and meaning as Istio's VirtualService (networking.istio.io/v1). meshd reports in status.conditions (type Accepted) whether it put the object in effect.",
    status = "MeshStatus",
    category = "amime",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status","description":"Whether meshd put the rules in effect"}"#,
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".spec.hosts","description":"The destination hosts these rules apply to"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    /// The destination hosts these rules apply to, as clients address them: a
    /// Kubernetes Service name (`reviews`, resolved in the rule's namespace), a full
    /// name (`reviews.default.svc.cluster.local`), a ServiceEntry host or a wildcard
    /// prefix (`*.example.com`).
    pub hosts: Option<Vec<String>>,
    /// Gateways and sidecars these rules apply to, as `<namespace>/<gateway name>`;
    /// the reserved word `mesh` means every sidecar. Default: `mesh` only.
    pub gateways: Option<Vec<String>>,
    /// Ordered HTTP routes (HTTP/1.1, HTTP/2, gRPC): the first route whose match
    /// conditions hold takes the request.
    pub http: Option<Vec<HttpRoute>>,
    /// Ordered routes for TLS traffic passed through without termination (matched by
    /// SNI), on TLS ports (`tls-*`, `https-*`); sidecars apply them under capture.
    pub tls: Option<Vec<TlsRoute>>,
    /// Ordered routes for opaque TCP traffic, on TCP ports (not HTTP or TLS);
    /// sidecars apply them under capture.
    pub tcp: Option<Vec<TcpRoute>>,
    /// Namespaces that can see these rules: `.` (this namespace), `*` (all) or
    /// namespace names. Default: all.
    pub export_to: Option<Vec<String>>,
}

/// One HTTP route: match conditions and what to do with the requests that match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// A name for the route, shown in access logs and debug output.
    pub name: Option<String>,
    /// Match conditions: the route takes a request that satisfies any one of them
    /// (conditions within one entry must all hold). No entry matches every request.
    #[serde(rename = "match")]
    pub match_: Option<Vec<HttpMatchRequest>>,
    /// Destinations, with weights, the requests are sent to.
    pub route: Option<Vec<HttpRouteDestination>>,
    /// Answer with a redirect instead of forwarding (instead of `route`).
    pub redirect: Option<HttpRedirect>,
    /// Answer with a fixed response instead of forwarding (instead of `route`).
    pub direct_response: Option<HttpDirectResponse>,
    /// Hand the requests to the routes of another VirtualService, one without hosts
    /// (instead of `route`); its matches are merged with this route's.
    pub delegate: Option<Delegate>,
    /// Rewrite the path or authority before forwarding.
    pub rewrite: Option<HttpRewrite>,
    /// Timeout for the whole request, as a duration (`5s`, `250ms`). Default: none
    /// (Envoy's own 15s default is turned off, as Istio does).
    pub timeout: Option<String>,
    /// Retry policy. Default (unset): Istio's, 2 retries on
    /// `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`
    /// (status 503), each to another host; `attempts: 0` turns retries off.
    pub retries: Option<HttpRetry>,
    /// Fault injection (delays and aborts), each for a percentage of the requests.
    pub fault: Option<HttpFaultInjection>,
    /// Mirror (shadow) the requests to another destination as well (its answers are
    /// dropped).
    pub mirror: Option<Destination>,
    /// Mirror the requests to several destinations (not with `mirror`).
    pub mirrors: Option<Vec<HttpMirrorPolicy>>,
    /// Deprecated: use `mirrorPercentage`. Percentage (integer) of requests mirrored.
    #[serde(rename = "mirror_percent")]
    pub mirror_percent_deprecated: Option<u32>,
    /// Deprecated: use `mirrorPercentage`. Percentage (integer) of requests mirrored.
    pub mirror_percent: Option<u32>,
    /// Percentage of requests mirrored to `mirror`. Default: 100.
    pub mirror_percentage: Option<Percent>,
    /// Cross-origin resource sharing (CORS) policy.
    pub cors_policy: Option<CorsPolicy>,
    /// Header edits (`set`, `add`, `remove`) for the requests of this route and their
    /// responses.
    pub headers: Option<Headers>,
    /// Istio's old switch for websocket upgrades: accepted and unneeded, they always
    /// work.
    pub websocket_upgrade: Option<bool>,
}

/// Conditions a request must satisfy, all of them, for the route to take it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatchRequest {
    /// A name for the condition, appended to the route's name in logs.
    pub name: Option<String>,
    /// The request path (without the query string).
    pub uri: Option<StringMatch>,
    /// The URI scheme (`http`, `https`). Not supported by meshd yet: the object is
    /// refused.
    pub scheme: Option<StringMatch>,
    /// The HTTP method (`GET`, `POST`, ...).
    pub method: Option<StringMatch>,
    /// The HTTP authority (`Host` header).
    pub authority: Option<StringMatch>,
    /// Request headers, by lower-case name, and how each must match. A header matched
    /// with an empty `prefix` only has to be present.
    pub headers: Option<BTreeMap<String, StringMatch>>,
    /// The port the request was addressed to (for services with several ports).
    #[schemars(range(max = 65535))]
    pub port: Option<u32>,
    /// Labels of the calling workload. Not supported by meshd yet: the object is
    /// refused.
    pub source_labels: Option<BTreeMap<String, String>>,
    /// Gateways this condition applies to, overriding the VirtualService's `gateways`.
    /// Not supported by meshd yet: the object is refused.
    pub gateways: Option<Vec<String>>,
    /// Query parameters, by name, and how each must match (`exact` or `regex`).
    pub query_params: Option<BTreeMap<String, StringMatch>>,
    /// Match `uri` ignoring case (only for `exact` and `prefix`). Default: false.
    pub ignore_uri_case: Option<bool>,
    /// Request headers that must NOT match, by lower-case name.
    pub without_headers: Option<BTreeMap<String, StringMatch>>,
    /// Namespace of the calling workload. Not supported by meshd yet: the object is
    /// refused.
    pub source_namespace: Option<String>,
    /// Prefix for the statistics of this match. Not implemented by meshd yet (ignored
    /// with a warning).
    pub stat_prefix: Option<String>,
}

/// A destination of an HTTP route, with its share of the requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteDestination {
    /// Where the requests go. Required.
    pub destination: Destination,
    /// Relative share of requests sent to this destination, 0-100; the weights of a
    /// route's destinations should add up to 100. Default: the whole share when the
    /// route has one destination.
    pub weight: Option<i32>,
    /// Header edits for requests to and responses from this destination.
    pub headers: Option<Headers>,
}

/// A route for TLS traffic passed through without termination.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsRoute {
    /// Match conditions (any one of them). Required.
    #[serde(rename = "match")]
    pub match_: Vec<TlsMatchAttributes>,
    /// Destinations, with weights, the connections are sent to.
    pub route: Option<Vec<RouteDestination>>,
}

/// Conditions on a TLS connection (all must hold).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsMatchAttributes {
    /// SNI names to match (wildcard prefixes allowed). Required.
    pub sni_hosts: Vec<String>,
    /// Destination IP ranges (`a.b.c.d/xx` or a single address).
    pub destination_subnets: Option<Vec<String>>,
    /// The port the connection was addressed to.
    #[schemars(range(max = 65535))]
    pub port: Option<u32>,
    /// Labels of the calling workload. Not supported by meshd yet: refused.
    pub source_labels: Option<BTreeMap<String, String>>,
    /// Gateways this condition applies to.
    pub gateways: Option<Vec<String>>,
    /// Namespace of the calling workload. Not supported by meshd yet: refused.
    pub source_namespace: Option<String>,
}

/// A route for opaque TCP traffic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    /// Match conditions (any one of them).
    #[serde(rename = "match")]
    pub match_: Option<Vec<L4MatchAttributes>>,
    /// Destinations, with weights, the connections are sent to.
    pub route: Option<Vec<RouteDestination>>,
}

/// Conditions on a TCP connection (all must hold).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct L4MatchAttributes {
    /// Destination IP ranges (`a.b.c.d/xx` or a single address).
    pub destination_subnets: Option<Vec<String>>,
    /// The port the connection was addressed to.
    #[schemars(range(max = 65535))]
    pub port: Option<u32>,
    /// Source IP range (`a.b.c.d/xx` or a single address). Not evaluated (by Istio
    /// either): warned about.
    pub source_subnet: Option<String>,
    /// Labels of the calling workload. Not supported by meshd yet: refused.
    pub source_labels: Option<BTreeMap<String, String>>,
    /// Gateways this condition applies to.
    pub gateways: Option<Vec<String>>,
    /// Namespace of the calling workload. Not supported by meshd yet: refused.
    pub source_namespace: Option<String>,
}

/// A destination of a TLS or TCP route, with its share of the connections.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RouteDestination {
    /// Where the connections go. Required.
    pub destination: Destination,
    /// Relative share of connections sent to this destination, 0-100.
    pub weight: Option<i32>,
}
