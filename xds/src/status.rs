//! Per-connection xDS state that other parts of the control plane read
//! (proxy-status, metrics), and process-wide counters.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::histogram::Histogram;
use crate::resource::{Resource, ResourceSet, ResourceType};

/// Which ADS flavour a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum XdsApi {
    #[serde(rename = "sotw")]
    StateOfTheWorld,
    #[serde(rename = "delta")]
    Delta,
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A rejected update, as Envoy reported it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Nack {
    /// The version Envoy rejected (the one we sent with `nonce`).
    pub rejected_version: String,
    pub nonce: String,
    pub message: String,
    pub at_ms: u64,
}

/// The protocol state of one resource type on one connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TypeStatus {
    /// Version of the last response sent, and its nonce.
    pub sent_version: Option<String>,
    pub sent_nonce: Option<String>,
    pub sent_at_ms: Option<u64>,
    /// Number of resources the proxy has of this type, as far as we know.
    pub resource_count: usize,
    /// Last version the proxy acknowledged, and the nonce it acknowledged it with
    /// (the same content may be sent twice, say to make Envoy re-warm a cluster: only
    /// the ACK of the latest response means the proxy has what it was last sent).
    pub acked_version: Option<String>,
    pub acked_nonce: Option<String>,
    pub acked_at_ms: Option<u64>,
    /// The last NACK; cleared by a later ACK.
    pub last_nack: Option<Nack>,
    /// Version of the snapshot the control plane wants the proxy to have.
    pub desired_version: Option<String>,
    /// The set the last response brought the proxy to, shared with every proxy that
    /// holds it (the proxy has the part its subscription covers): what a config dump
    /// shows, at the cost of a pointer.
    #[serde(skip)]
    pub sent_set: Option<Arc<ResourceSet>>,
    /// What the proxy subscribes to (the name set is shared between proxies).
    #[serde(skip)]
    pub subscription: Subscribed,
}

/// What a proxy subscribes to of one type: everything, named resources, or both.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Subscribed {
    pub wildcard: bool,
    pub names: Arc<BTreeSet<String>>,
}

impl Subscribed {
    pub fn contains(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// Where one type stands on one connection: the proxy-status vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum SyncState {
    /// The proxy acknowledged the latest response, which holds the desired version.
    #[serde(rename = "SYNCED")]
    Synced,
    /// Nothing sent yet.
    #[serde(rename = "NOT SENT")]
    NotSent,
    /// Sent and not yet acknowledged, or behind the desired version.
    #[serde(rename = "STALE")]
    Stale,
    /// The proxy rejected an update and has not yet acknowledged a complete one since:
    /// what it holds of this type is not known.
    #[serde(rename = "NACKED")]
    Nacked,
}

/// Where a whole proxy stands: the worst of its types, and not synced while any of
/// its EDS clusters waits for endpoints it has not subscribed to or not received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ProxyState {
    #[serde(rename = "SYNCED")]
    Synced,
    /// Every type is acknowledged but some clusters still wait for their endpoints.
    #[serde(rename = "WARMING")]
    Warming,
    #[serde(rename = "STALE")]
    Stale,
    #[serde(rename = "NACKED")]
    Nacked,
}

impl TypeStatus {
    /// The resources the proxy was last sent and still subscribes to, ordered by name
    /// (after a NACK: what was sent, not what Envoy kept).
    pub fn sent_resources(&self) -> impl Iterator<Item = &Arc<Resource>> {
        self.sent_set.iter().flat_map(|set| set.iter()).filter(|r| self.subscription.contains(r.name()))
    }

    /// How many of [`TypeStatus::sent_resources`] there are, without walking a wildcard
    /// set: O(names subscribed).
    pub fn held_count(&self) -> usize {
        let Some(set) = &self.sent_set else { return 0 };
        if self.subscription.wildcard {
            set.len()
        } else {
            self.subscription.names.iter().filter(|n| set.get(n).is_some()).count()
        }
    }

    pub fn sync_state(&self) -> SyncState {
        if self.last_nack.is_some() {
            SyncState::Nacked
        } else if self.sent_version.is_none() {
            SyncState::NotSent
        } else if self.acked_version.is_some()
            && self.acked_version == self.sent_version
            && self.acked_nonce == self.sent_nonce
            && self.desired_version.as_ref().is_none_or(|d| Some(d) == self.sent_version.as_ref())
        {
            SyncState::Synced
        } else {
            SyncState::Stale
        }
    }
}

/// What the proxy's clusters need from EDS against what it subscribed to, kept as
/// shared pointers so recording it costs nothing; compared only when a report is made.
#[derive(Clone, Debug, Default)]
pub(crate) struct EndpointDependencies {
    /// ClusterLoadAssignment names the clusters last sent wait for.
    pub(crate) needed: Option<Arc<BTreeSet<Arc<str>>>>,
    /// The EDS subscription: wildcard, and the names asked for.
    pub(crate) subscribed_wildcard: bool,
    pub(crate) subscribed: Option<Arc<BTreeSet<String>>>,
}

impl EndpointDependencies {
    /// How many needed assignments the proxy has not subscribed to.
    fn unsubscribed(&self) -> usize {
        let Some(needed) = &self.needed else { return 0 };
        if self.subscribed_wildcard {
            return 0;
        }
        match &self.subscribed {
            None => needed.len(),
            Some(names) => needed.iter().filter(|n| !names.contains(&***n)).count(),
        }
    }
}

/// One live xDS stream.
#[derive(Debug)]
pub struct ConnectionStatus {
    pub id: u64,
    pub node_id: String,
    pub api: XdsApi,
    pub connected_at_ms: u64,
    pub peer: Option<String>,
    /// What the snapshot source said of this proxy ([`crate::SnapshotWatch::details`]).
    pub details: BTreeMap<String, String>,
    types: Mutex<BTreeMap<ResourceType, TypeStatus>>,
    endpoints: Mutex<EndpointDependencies>,
}

impl ConnectionStatus {
    /// Applies `f` to the state of type `ty`. The lock is never held across an await.
    pub fn update<R>(&self, ty: ResourceType, f: impl FnOnce(&mut TypeStatus) -> R) -> R {
        let mut types = crate::sync::lock(&self.types);
        f(types.entry(ty).or_default())
    }

    pub fn types(&self) -> BTreeMap<ResourceType, TypeStatus> {
        crate::sync::lock(&self.types).clone()
    }

    pub(crate) fn update_endpoints(&self, f: impl FnOnce(&mut EndpointDependencies)) {
        f(&mut crate::sync::lock(&self.endpoints))
    }

    /// How many ClusterLoadAssignments the proxy's clusters wait for and it has not
    /// subscribed to (each is a cluster Envoy keeps warming).
    pub fn unsubscribed_endpoints(&self) -> usize {
        crate::sync::lock(&self.endpoints).unsubscribed()
    }

    /// The proxy's overall state: SYNCED only when every type it asked for is
    /// acknowledged at the desired version and no cluster waits for endpoints.
    pub fn proxy_state(&self) -> ProxyState {
        let types = self.types();
        let worst = types.values().map(TypeStatus::sync_state).max().unwrap_or(SyncState::NotSent);
        match worst {
            SyncState::Nacked => ProxyState::Nacked,
            SyncState::Stale | SyncState::NotSent => ProxyState::Stale,
            SyncState::Synced if self.unsubscribed_endpoints() > 0 => ProxyState::Warming,
            SyncState::Synced => ProxyState::Synced,
        }
    }

    /// A serializable copy of everything known about this connection.
    pub fn report(&self) -> ConnectionReport {
        ConnectionReport {
            id: self.id,
            node_id: self.node_id.clone(),
            api: self.api,
            peer: self.peer.clone(),
            details: self.details.clone(),
            connected_at_ms: self.connected_at_ms,
            state: self.proxy_state(),
            endpoints_not_subscribed: self.unsubscribed_endpoints(),
            duplicate_node_id: false,
            types: self
                .types()
                .into_iter()
                .map(|(ty, status)| (ty.short_name().to_owned(), TypeReport { state: status.sync_state(), status }))
                .collect(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TypeReport {
    pub state: SyncState,
    #[serde(flatten)]
    pub status: TypeStatus,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConnectionReport {
    pub id: u64,
    pub node_id: String,
    pub api: XdsApi,
    /// The proxy's address as seen by this server.
    pub peer: Option<String>,
    /// What the control plane knows of the proxy (meshd: instance IPs, namespace,
    /// interception mode).
    pub details: BTreeMap<String, String>,
    pub connected_at_ms: u64,
    pub state: ProxyState,
    /// EDS resources the proxy's clusters need and it has not asked for (clusters
    /// that stay warming until it does).
    pub endpoints_not_subscribed: usize,
    /// Another live connection claims the same node id: two proxies with one identity
    /// (a copied bootstrap, a pod restarted while the old one lingers).
    pub duplicate_node_id: bool,
    pub types: BTreeMap<String, TypeReport>,
}

/// Process-wide counters, exported by the control plane as metrics.
#[derive(Debug, Default)]
pub struct XdsStats {
    pub connected: AtomicU64,
    pub connections_total: AtomicU64,
    /// Responses sent (each one a push of one type to one proxy).
    pub responses_sent: AtomicU64,
    pub resources_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub acks: AtomicU64,
    pub nacks: AtomicU64,
    pub stale_nonces: AtomicU64,
    /// Connections that arrived with a node id another live connection already had.
    pub duplicate_node_ids: AtomicU64,
    /// `responses_sent` and `nacks` per type (indexed by [`ResourceType::index`]).
    pub pushes_by_type: [AtomicU64; 5],
    pub nacks_by_type: [AtomicU64; 5],
    /// Per type: from the detection of the change a snapshot carries
    /// ([`crate::Snapshot::change_detected_at`]) to each response sent to a proxy while it
    /// takes that change in.
    pub push_latency: [Histogram; 5],
    /// From the detection of a change to a proxy's ACK of everything it was sent for it
    /// (one sample per proxy that was sent something).
    pub convergence: Histogram,
}

impl XdsStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Responses of type `ty` sent.
    pub fn pushes(&self, ty: ResourceType) -> u64 {
        Self::get(&self.pushes_by_type[ty.index()])
    }

    /// NACKs of type `ty` received.
    pub fn nacks_of(&self, ty: ResourceType) -> u64 {
        Self::get(&self.nacks_by_type[ty.index()])
    }
}

/// Interned subscription name sets, by content hash.
#[derive(Debug, Default)]
struct NameSets {
    by_hash: std::collections::HashMap<u64, Vec<Weak<BTreeSet<String>>>>,
    calls: u64,
}

/// The set of live connections. Cloneable; all clones share state.
#[derive(Clone, Debug, Default)]
pub struct ConnectionRegistry {
    inner: Arc<RegistryInner>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    next_id: AtomicU64,
    name_sets: Mutex<NameSets>,
    diff_cache: crate::session::DiffCache,
    connections: Mutex<Connections>,
    stats: XdsStats,
}

/// The live connections, by id and by node id (so that a connect finds another
/// claiming its node id without scanning them all).
#[derive(Debug, Default)]
struct Connections {
    by_id: BTreeMap<u64, Arc<ConnectionStatus>>,
    by_node: std::collections::HashMap<String, Vec<u64>>,
}

impl ConnectionRegistry {
    pub fn new() -> ConnectionRegistry {
        ConnectionRegistry::default()
    }

    pub fn stats(&self) -> &XdsStats {
        &self.inner.stats
    }

    pub(crate) fn diff_cache(&self) -> &crate::session::DiffCache {
        &self.inner.diff_cache
    }

    /// Registers a connection; it is removed when the returned handle is dropped.
    pub fn register(&self, node_id: String, api: XdsApi, peer: Option<String>) -> RegisteredConnection {
        self.register_with(node_id, api, peer, BTreeMap::new())
    }

    /// [`ConnectionRegistry::register`] with what the source knows of the proxy.
    pub fn register_with(
        &self,
        node_id: String,
        api: XdsApi,
        peer: Option<String>,
        details: BTreeMap<String, String>,
    ) -> RegisteredConnection {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let status = Arc::new(ConnectionStatus {
            id,
            node_id,
            api,
            connected_at_ms: now_millis(),
            peer,
            details,
            types: Mutex::new(BTreeMap::new()),
            endpoints: Mutex::new(EndpointDependencies::default()),
        });
        {
            let mut guard = crate::sync::lock(&self.inner.connections);
            let connections = &mut *guard;
            let same_node = connections.by_node.entry(status.node_id.clone()).or_default();
            same_node.push(id);
            if same_node.len() > 1 {
                let others: Vec<String> = same_node
                    .iter()
                    .filter(|other| **other != id)
                    .filter_map(|other| connections.by_id.get(other))
                    .map(|c| c.peer.clone().unwrap_or_else(|| "unknown".to_owned()))
                    .collect();
                self.inner.stats.duplicate_node_ids.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %status.node_id, peer = status.peer.as_deref(), other_peers = %others.join(", "),
                    "a second proxy connected with a node id already in use; both are served, but status and \
                     per-proxy state for this id are ambiguous");
            }
            connections.by_id.insert(id, status.clone());
        }
        self.inner.stats.connected.fetch_add(1, Ordering::Relaxed);
        self.inner.stats.connections_total.fetch_add(1, Ordering::Relaxed);
        RegisteredConnection { registry: self.clone(), status }
    }

    /// All live connections, ordered by node id then connection id.
    pub fn connections(&self) -> Vec<Arc<ConnectionStatus>> {
        let mut all: Vec<_> = crate::sync::lock(&self.inner.connections).by_id.values().cloned().collect();
        all.sort_by(|a, b| a.node_id.cmp(&b.node_id).then(a.id.cmp(&b.id)));
        all
    }

    /// The shared copy of `names`: connections subscribing to the same resource names
    /// (say, the endpoints of every cluster) keep one set between them.
    pub fn intern_names(&self, names: Arc<BTreeSet<String>>) -> Arc<BTreeSet<String>> {
        if names.is_empty() {
            return names;
        }
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for n in names.iter() {
            hasher.update(n.as_bytes());
            hasher.update(&[0]);
        }
        let hash = hasher.digest();
        let mut sets = crate::sync::lock(&self.inner.name_sets);
        sets.calls += 1;
        if sets.calls.is_multiple_of(1024) {
            sets.by_hash.retain(|_, bucket| {
                bucket.retain(|w| w.strong_count() > 0);
                !bucket.is_empty()
            });
        }
        let bucket = sets.by_hash.entry(hash).or_default();
        bucket.retain(|w| w.strong_count() > 0);
        if let Some(existing) = bucket.iter().filter_map(Weak::upgrade).find(|s| **s == *names) {
            return existing;
        }
        bucket.push(Arc::downgrade(&names));
        names
    }

    /// Reports of every live connection, ordered by node id; connections sharing a
    /// node id with another are flagged.
    pub fn reports(&self) -> Vec<ConnectionReport> {
        let mut reports: Vec<ConnectionReport> = self.connections().iter().map(|c| c.report()).collect();
        for i in 1..reports.len() {
            if reports[i].node_id == reports[i - 1].node_id {
                reports[i].duplicate_node_id = true;
                reports[i - 1].duplicate_node_id = true;
            }
        }
        reports
    }
}

/// A connection's entry in the registry; dropping it unregisters the connection.
#[derive(Debug)]
pub struct RegisteredConnection {
    registry: ConnectionRegistry,
    pub status: Arc<ConnectionStatus>,
}

impl Drop for RegisteredConnection {
    fn drop(&mut self) {
        let inner = &self.registry.inner;
        let mut connections = crate::sync::lock(&inner.connections);
        connections.by_id.remove(&self.status.id);
        if let Some(ids) = connections.by_node.get_mut(&self.status.node_id) {
            ids.retain(|id| *id != self.status.id);
            if ids.is_empty() {
                connections.by_node.remove(&self.status.node_id);
            }
        }
        drop(connections);
        inner.stats.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> Arc<BTreeSet<String>> {
        Arc::new(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn equal_name_sets_are_shared_and_released_with_their_last_user() {
        let registry = ConnectionRegistry::new();
        let a = registry.intern_names(set(&["x", "y"]));
        let b = registry.intern_names(set(&["x", "y"]));
        assert!(Arc::ptr_eq(&a, &b));
        let c = registry.intern_names(set(&["x"]));
        assert!(!Arc::ptr_eq(&a, &c));
        drop((a, b));
        let d = registry.intern_names(set(&["x", "y"]));
        assert_eq!(Arc::strong_count(&d), 1, "the dropped set is not kept alive");
    }

    #[test]
    fn two_connections_with_one_node_id_are_flagged() {
        let registry = ConnectionRegistry::new();
        let _a = registry.register("dup".into(), XdsApi::Delta, Some("127.0.0.1:1000".into()));
        let _b = registry.register("dup".into(), XdsApi::Delta, Some("127.0.0.2:2000".into()));
        let _c = registry.register("single".into(), XdsApi::Delta, Some("127.0.0.3:3000".into()));
        let reports = registry.reports();
        let flags: Vec<_> = reports.iter().map(|r| (r.node_id.as_str(), r.duplicate_node_id)).collect();
        assert_eq!(flags, [("dup", true), ("dup", true), ("single", false)]);
        assert_eq!(reports[1].peer.as_deref(), Some("127.0.0.2:2000"));
        assert_eq!(XdsStats::get(&registry.stats().duplicate_node_ids), 1);
    }

    #[test]
    fn proxy_state_is_the_worst_type_and_warming_while_endpoints_are_unsubscribed() {
        let registry = ConnectionRegistry::new();
        let conn = registry.register("n".into(), XdsApi::Delta, None);
        let synced = |s: &mut TypeStatus| {
            s.sent_version = Some("v".into());
            s.sent_nonce = Some("1".into());
            s.acked_version = Some("v".into());
            s.acked_nonce = Some("1".into());
        };
        conn.status.update(ResourceType::Cluster, synced);
        assert_eq!(conn.status.proxy_state(), ProxyState::Synced);
        conn.status.update_endpoints(|e| e.needed = Some(Arc::new(["a".into()].into())));
        assert_eq!(conn.status.proxy_state(), ProxyState::Warming);
        conn.status.update_endpoints(|e| e.subscribed = Some(set(&["a"])));
        assert_eq!(conn.status.proxy_state(), ProxyState::Synced);
        // The same version sent again under a new nonce is not acknowledged yet.
        conn.status.update(ResourceType::Cluster, |s| s.sent_nonce = Some("2".into()));
        assert_eq!(conn.status.proxy_state(), ProxyState::Stale);
        conn.status.update(ResourceType::Cluster, |s| {
            s.last_nack = Some(Nack { rejected_version: "w".into(), nonce: "2".into(), message: "m".into(), at_ms: 0 })
        });
        assert_eq!(conn.status.proxy_state(), ProxyState::Nacked);
    }
}
