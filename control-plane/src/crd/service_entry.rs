//! ServiceEntry: a service the mesh does not discover by itself (an external API, VMs)
//! added to its registry (Istio's `networking.istio.io/v1` ServiceEntry, field for
//! field).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::MeshStatus;

/// A service added to the mesh's registry: its hosts, ports and endpoints (listed, or
/// resolved by DNS, or the pods a selector picks). Same fields and meaning as Istio's
/// ServiceEntry.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.amime.dev",
    version = "v1",
    kind = "ServiceEntry",
    namespaced,
    doc = "ServiceEntry of networking.amime.dev: the same fields and meaning as Istio's ServiceEntry (networking.istio.io/v1). meshd reports in status.conditions (type Accepted) whether it put the object in effect.",
    status = "MeshStatus",
    category = "amime",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status","description":"Whether meshd put the entry in effect"}"#,
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".spec.hosts","description":"The hosts of the service"}"#,
    printcolumn = r#"{"name":"Location","type":"string","jsonPath":".spec.location","description":"Whether the service is inside the mesh"}"#,
    printcolumn = r#"{"name":"Resolution","type":"string","jsonPath":".spec.resolution","description":"How endpoints are found"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    /// The hosts of the service, as clients address them (`api.example.com`,
    /// `*.example.com`). Required: at least one.
    #[schemars(length(min = 1))]
    pub hosts: Vec<String>,
    /// Virtual IP addresses or CIDR ranges of the service, for TCP traffic without a
    /// host name.
    pub addresses: Option<Vec<String>>,
    /// The ports of the service.
    pub ports: Option<Vec<ServicePort>>,
    /// `MESH_EXTERNAL` (outside the mesh: no mTLS) or `MESH_INTERNAL`. Default:
    /// `MESH_EXTERNAL`.
    #[schemars(extend("enum" = ["MESH_EXTERNAL", "MESH_INTERNAL"]))]
    pub location: Option<String>,
    /// How endpoints are found: `NONE` (the address the client asked for), `STATIC`
    /// (`endpoints` or `workloadSelector`), `DNS` or `DNS_ROUND_ROBIN` (resolve the
    /// hosts or the endpoints' addresses). Default: `NONE`. Istio's `DYNAMIC_DNS`
    /// (resolve each wildcard host on demand) is not supported by meshd yet: the
    /// object is refused.
    #[schemars(extend("enum" = ["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"]))]
    pub resolution: Option<String>,
    /// The service's endpoints (not with `workloadSelector`).
    pub endpoints: Option<Vec<WorkloadEntry>>,
    /// The pods (or WorkloadEntries) that are the service's endpoints, by label (not
    /// with `endpoints`).
    pub workload_selector: Option<EntryWorkloadSelector>,
    /// Namespaces that can see this entry: `.` (this namespace), `*` (all) or
    /// namespace names. Default: all.
    pub export_to: Option<Vec<String>>,
    /// Subject alternative names accepted in the endpoints' certificates.
    pub subject_alt_names: Option<Vec<String>>,
}

/// A port of the service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// The port number (1-65535). Required.
    #[schemars(range(max = 65535))]
    pub number: u32,
    /// `HTTP`, `HTTPS`, `GRPC`, `GRPC-WEB`, `HTTP2`, `MONGO`, `TCP` or `TLS`. Default:
    /// guessed from the name's prefix (`http-web` is HTTP), else TCP.
    pub protocol: Option<String>,
    /// A name for the port (e.g. `http`, `https-web`), unique in the entry. Required.
    pub name: String,
    /// The port the endpoints listen on, if it differs from `number`.
    #[schemars(range(max = 65535))]
    pub target_port: Option<u32>,
}

/// Workloads selected by label.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EntryWorkloadSelector {
    /// Labels the workloads must all have.
    pub labels: Option<BTreeMap<String, String>>,
}

/// One endpoint of a ServiceEntry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntry {
    /// IP address or host name (DNS resolution) or `unix://` socket of the endpoint.
    pub address: Option<String>,
    /// Port of the endpoint for each service port name, where it differs.
    pub ports: Option<BTreeMap<String, u32>>,
    /// Labels of the endpoint, as subsets select them.
    pub labels: Option<BTreeMap<String, String>>,
    /// The network the endpoint is in (multi-network meshes).
    pub network: Option<String>,
    /// The endpoint's locality, `region/zone/sub-zone`.
    pub locality: Option<String>,
    /// The endpoint's load-balancing weight.
    pub weight: Option<u32>,
    /// The endpoint's service account (for its identity).
    pub service_account: Option<String>,
}
