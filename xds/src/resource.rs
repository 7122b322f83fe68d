//! Immutable, shared xDS resources and the snapshots that group them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::google::protobuf::Any;

/// The resource types this engine serves, in the order a push sends them
/// (make-before-break: secrets before the clusters that use them, clusters and their
/// endpoints before the listeners and routes that point at them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum ResourceType {
    Secret,
    Cluster,
    ClusterLoadAssignment,
    Listener,
    RouteConfiguration,
}

impl ResourceType {
    /// All types, in push order.
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Secret,
        ResourceType::Cluster,
        ResourceType::ClusterLoadAssignment,
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
    ];

    pub const fn type_url(self) -> &'static str {
        match self {
            ResourceType::Secret => "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::ClusterLoadAssignment => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::RouteConfiguration => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short name used in logs, metrics and status (`CDS`, `EDS`, ...).
    pub const fn short_name(self) -> &'static str {
        match self {
            ResourceType::Secret => "SDS",
            ResourceType::Cluster => "CDS",
            ResourceType::ClusterLoadAssignment => "EDS",
            ResourceType::Listener => "LDS",
            ResourceType::RouteConfiguration => "RDS",
        }
    }

    /// Whether Envoy subscribes to this type as a wildcard (all resources) rather
    /// than by name.
    pub const fn is_wildcard_type(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }

    /// Position in [`ResourceType::ALL`] (for per-type arrays).
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// One named resource, encoded once. Its version is derived from its content, so the
/// same content always has the same version, across translations and restarts.
#[derive(Clone, PartialEq)]
pub struct Resource {
    name: Arc<str>,
    version: Arc<str>,
    body: Any,
    /// For a cluster whose endpoints come from EDS: the name of its
    /// ClusterLoadAssignment (see [`Resource::endpoints_name`]).
    endpoints_name: Option<Arc<str>>,
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resource")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("type_url", &self.body.type_url)
            .field("bytes", &self.body.value.len())
            .finish()
    }
}

impl Resource {
    /// Wraps an already packed resource. The version is a canonical hash of its content
    /// (see [`crate::canonical`]): equal content, equal version, however its maps encoded.
    pub fn new(name: impl Into<Arc<str>>, body: Any) -> Resource {
        let version = format!("{:016x}", crate::canonical::any_hash(&body.type_url, &body.value));
        let name = name.into();
        let endpoints_name = eds_service_name(&name, &body);
        Resource { name, version: version.into(), body, endpoints_name }
    }

    /// Encodes `message` and wraps it.
    pub fn from_message<M: prost::Message + prost::Name>(name: impl Into<Arc<str>>, message: &M) -> Resource {
        let body = Any { type_url: M::type_url(), value: message.encode_to_vec() };
        Resource::new(name, body)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn body(&self) -> &Any {
        &self.body
    }

    pub fn encoded_len(&self) -> usize {
        self.body.value.len()
    }

    /// For a Cluster resource of discovery type EDS, the name of the
    /// ClusterLoadAssignment it waits for: `eds_cluster_config.service_name`, or the
    /// cluster's own name when that is empty. A protocol fact, not a mesh one: Envoy
    /// warms a new or changed EDS cluster until that assignment arrives.
    pub fn endpoints_name(&self) -> Option<&Arc<str>> {
        self.endpoints_name.as_ref()
    }
}

/// The two fields of `envoy.config.cluster.v3.Cluster` that say where its endpoints
/// come from. Decoding just these (prost skips every other field) costs a fraction of
/// decoding the whole cluster, and it happens once per resource, not per proxy.
#[derive(Clone, PartialEq, prost::Message)]
struct ClusterEndpointSource {
    /// `type` (the `cluster_discovery_type` oneof): `Cluster.DiscoveryType`.
    #[prost(int32, optional, tag = "2")]
    discovery_type: Option<i32>,
    #[prost(message, optional, tag = "3")]
    eds_cluster_config: Option<EdsClusterConfigName>,
}

/// `envoy.config.cluster.v3.Cluster.EdsClusterConfig`, its `service_name` only.
#[derive(Clone, PartialEq, prost::Message)]
struct EdsClusterConfigName {
    #[prost(string, tag = "2")]
    service_name: String,
}

/// `Cluster.DiscoveryType.EDS`.
const DISCOVERY_TYPE_EDS: i32 = 3;

fn eds_service_name(cluster_name: &Arc<str>, body: &Any) -> Option<Arc<str>> {
    if body.type_url != ResourceType::Cluster.type_url() {
        return None;
    }
    let source = <ClusterEndpointSource as prost::Message>::decode(body.value.as_slice()).ok()?;
    if source.discovery_type != Some(DISCOVERY_TYPE_EDS) {
        return None;
    }
    match source.eds_cluster_config {
        Some(config) if !config.service_name.is_empty() => Some(config.service_name.into()),
        _ => Some(cluster_name.clone()),
    }
}

/// All resources of one type that one group of proxies sees, with a version derived
/// from the names and versions it holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceSet {
    version: String,
    resources: BTreeMap<Arc<str>, Arc<Resource>>,
    /// The ClusterLoadAssignments the clusters of this set wait for (empty for other
    /// types). Computed once per set and shared by every proxy that holds it.
    endpoint_names: Arc<BTreeSet<Arc<str>>>,
}

impl ResourceSet {
    pub fn new(resources: impl IntoIterator<Item = Arc<Resource>>) -> ResourceSet {
        let resources: BTreeMap<Arc<str>, Arc<Resource>> = resources.into_iter().map(|r| (r.name.clone(), r)).collect();
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for (name, resource) in &resources {
            hasher.update(name.as_bytes());
            hasher.update(&[0]);
            hasher.update(resource.version.as_bytes());
            hasher.update(&[0]);
        }
        let version = if resources.is_empty() { "empty".to_owned() } else { format!("{:016x}", hasher.digest()) };
        let endpoint_names = Arc::new(resources.values().filter_map(|r| r.endpoints_name.clone()).collect());
        ResourceSet { version, resources, endpoint_names }
    }

    /// The ClusterLoadAssignments this set's EDS clusters need (see
    /// [`Resource::endpoints_name`]).
    pub fn endpoint_names(&self) -> &Arc<BTreeSet<Arc<str>>> {
        &self.endpoint_names
    }

    pub fn empty() -> Arc<ResourceSet> {
        Arc::new(ResourceSet::new([]))
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Resource>> {
        self.resources.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Resource>> {
        self.resources.values()
    }

    pub fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.resources.keys()
    }

    pub fn len(&self) -> usize {
        self.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }
}

/// Everything one proxy should have: one [`ResourceSet`] per type. Cheap to clone and
/// to build, since the sets are shared.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    sets: [Arc<ResourceSet>; 5],
    /// When the control plane detected the earliest change this snapshot is the first to
    /// carry; `None` for a snapshot that answers no change (a proxy's first one). Proxies
    /// are timed from it to their ACK (convergence metrics).
    changed_at: Option<Instant>,
}

impl Default for Snapshot {
    fn default() -> Self {
        let empty = ResourceSet::empty();
        Snapshot { sets: std::array::from_fn(|_| empty.clone()), changed_at: None }
    }
}

impl Snapshot {
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    pub fn with(mut self, ty: ResourceType, set: Arc<ResourceSet>) -> Snapshot {
        self.sets[ty.index()] = set;
        self
    }

    pub fn set(&self, ty: ResourceType) -> &Arc<ResourceSet> {
        &self.sets[ty.index()]
    }

    /// The same snapshot, saying it carries a change detected at `at`.
    pub fn changed_at(mut self, at: Instant) -> Snapshot {
        self.changed_at = Some(at);
        self
    }

    /// When the change this snapshot carries was detected, if it carries one.
    pub fn change_detected_at(&self) -> Option<Instant> {
        self.changed_at
    }

    /// True when both snapshots hold the same content for every type.
    pub fn same_content(&self, other: &Snapshot) -> bool {
        self.sets.iter().zip(other.sets.iter()).all(|(a, b)| Arc::ptr_eq(a, b) || a.version == b.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str, bytes: &[u8]) -> Arc<Resource> {
        Arc::new(Resource::new(name, Any { type_url: "t".into(), value: bytes.to_vec() }))
    }

    #[test]
    fn versions_are_content_derived() {
        assert_eq!(res("a", b"x").version(), res("b", b"x").version());
        assert_ne!(res("a", b"x").version(), res("a", b"y").version());
        let s1 = ResourceSet::new([res("a", b"x"), res("b", b"y")]);
        let s2 = ResourceSet::new([res("b", b"y"), res("a", b"x")]);
        assert_eq!(s1.version(), s2.version());
        let s3 = ResourceSet::new([res("a", b"x")]);
        assert_ne!(s1.version(), s3.version());
    }

    #[test]
    fn type_urls_round_trip() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
        }
        assert_eq!(ResourceType::from_type_url("type.googleapis.com/unknown"), None);
    }
}
