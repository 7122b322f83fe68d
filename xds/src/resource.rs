//! Immutable, shared xDS resources and the snapshots that group them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

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

    const fn index(self) -> usize {
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
    /// Wraps an already packed resource. The version is a hash of the encoded bytes.
    pub fn new(name: impl Into<Arc<str>>, body: Any) -> Resource {
        let version = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&body.value));
        Resource { name: name.into(), version: version.into(), body }
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
}

/// All resources of one type that one group of proxies sees, with a version derived
/// from the names and versions it holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceSet {
    version: String,
    resources: BTreeMap<Arc<str>, Arc<Resource>>,
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
        ResourceSet { version, resources }
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
}

impl Default for Snapshot {
    fn default() -> Self {
        let empty = ResourceSet::empty();
        Snapshot { sets: std::array::from_fn(|_| empty.clone()) }
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
