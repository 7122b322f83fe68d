//! DestinationRule: subsets of a service's endpoints and how traffic to them is
//! handled (Istio's `networking.istio.io/v1` DestinationRule, field for field).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::PortSelector;
use super::status::MeshStatus;
use super::traffic_policy::{
    ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection, ProxyProtocol, RetryBudget,
    TunnelSettings,
};

/// Policies for traffic to one host after routing: named subsets of its endpoints (by
/// label) and their load balancing, connection pools and TLS. Same fields and meaning as
/// Istio's DestinationRule.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.amime.dev",
    version = "v1",
    kind = "DestinationRule",
    namespaced,
    doc = "DestinationRule of networking.amime.dev: the same fields and meaning as Istio's DestinationRule (networking.istio.io/v1). meshd reports in status.conditions (type Accepted) whether it put the object in effect.",
    status = "MeshStatus",
    category = "amime",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status","description":"Whether meshd put the rule in effect"}"#,
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".spec.host","description":"The host this rule applies to"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    /// The host this rule applies to: a Kubernetes Service name (`reviews`, resolved in
    /// the rule's namespace), its full name (`reviews.default.svc.cluster.local`) or a
    /// ServiceEntry host. Required.
    pub host: String,
    /// Policies for all traffic to the host (subsets may override them).
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named subsets of the host's endpoints (e.g. versions), selected by labels;
    /// VirtualService routes refer to them by name.
    pub subsets: Option<Vec<Subset>>,
    /// Namespaces whose proxies may use this rule: `.` (this namespace), `*` (all) or
    /// namespace names. Default: all. A proxy uses its own namespace's rule first, then
    /// the host's namespace's, then the root namespace's.
    pub export_to: Option<Vec<String>>,
    /// Apply the rule only to the client workloads with these labels in the rule's
    /// namespace (then `exportTo` may only be `.`).
    pub workload_selector: Option<WorkloadSelector>,
}

/// Client workloads, by label.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Labels the workload's pods must all have.
    pub match_labels: Option<BTreeMap<String, String>>,
}

/// How traffic to a host (or a subset, or a port) is handled.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    /// How endpoints are chosen.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Limits on connections and requests. Not implemented by meshd yet (ignored with a
    /// warning).
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of failing endpoints. Not implemented by meshd yet (ignored with a
    /// warning).
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS towards the host. Not implemented by meshd yet (ignored with a warning).
    pub tls: Option<ClientTlsSettings>,
    /// Policies for single ports, overriding the host's. Not implemented by meshd yet
    /// (ignored with a warning).
    pub port_level_settings: Option<Vec<PortTrafficPolicy>>,
    /// Send traffic through a tunnel (HTTP CONNECT). Not supported by meshd yet: the
    /// object is refused.
    pub tunnel: Option<TunnelSettings>,
    /// Send a PROXY protocol header to the host. Not implemented by meshd yet (ignored
    /// with a warning).
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Limit on concurrent retries. Not implemented by meshd yet (ignored with a
    /// warning).
    pub retry_budget: Option<RetryBudget>,
}

/// Policies for one port of the host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    /// The port these policies apply to.
    pub port: Option<PortSelector>,
    /// How endpoints are chosen.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Limits on connections and requests.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of failing endpoints.
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS towards the host on this port.
    pub tls: Option<ClientTlsSettings>,
}

/// A named subset of the host's endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    /// The subset's name, as routes refer to it (e.g. `v1`). Required.
    pub name: String,
    /// Labels the endpoints' pods must all have (e.g. `version: v1`).
    pub labels: Option<BTreeMap<String, String>>,
    /// Policies for this subset, overriding the host's.
    pub traffic_policy: Option<TrafficPolicy>,
}
