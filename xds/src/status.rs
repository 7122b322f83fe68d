//! Per-connection xDS state that other parts of the control plane read
//! (proxy-status, metrics), and process-wide counters.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::resource::ResourceType;

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
    /// Last version the proxy acknowledged.
    pub acked_version: Option<String>,
    pub acked_at_ms: Option<u64>,
    /// The last NACK; cleared by a later ACK.
    pub last_nack: Option<Nack>,
    /// Version of the snapshot the control plane wants the proxy to have.
    pub desired_version: Option<String>,
}

impl TypeStatus {
    /// SYNCED, STALE (sent, not yet acknowledged, or behind the desired version),
    /// NACKED or NOT SENT: the proxy-status vocabulary.
    pub fn sync_state(&self) -> &'static str {
        if self.last_nack.is_some() {
            "NACKED"
        } else if self.sent_version.is_none() {
            "NOT SENT"
        } else if self.acked_version.is_some()
            && self.acked_version == self.sent_version
            && self.desired_version.as_ref().is_none_or(|d| Some(d) == self.sent_version.as_ref())
        {
            "SYNCED"
        } else {
            "STALE"
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
    types: Mutex<BTreeMap<ResourceType, TypeStatus>>,
}

impl ConnectionStatus {
    /// Applies `f` to the state of type `ty`. The lock is never held across an await.
    pub fn update<R>(&self, ty: ResourceType, f: impl FnOnce(&mut TypeStatus) -> R) -> R {
        let mut types = self.types.lock().unwrap_or_else(|e| e.into_inner());
        f(types.entry(ty).or_default())
    }

    pub fn types(&self) -> BTreeMap<ResourceType, TypeStatus> {
        self.types.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A serializable copy of everything known about this connection.
    pub fn report(&self) -> ConnectionReport {
        ConnectionReport {
            id: self.id,
            node_id: self.node_id.clone(),
            api: self.api,
            peer: self.peer.clone(),
            connected_at_ms: self.connected_at_ms,
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
    pub state: &'static str,
    #[serde(flatten)]
    pub status: TypeStatus,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConnectionReport {
    pub id: u64,
    pub node_id: String,
    pub api: XdsApi,
    pub peer: Option<String>,
    pub connected_at_ms: u64,
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
}

impl XdsStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
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
    connections: Mutex<BTreeMap<u64, Arc<ConnectionStatus>>>,
    stats: XdsStats,
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
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let status = Arc::new(ConnectionStatus {
            id,
            node_id,
            api,
            connected_at_ms: now_millis(),
            peer,
            types: Mutex::new(BTreeMap::new()),
        });
        self.inner.connections.lock().unwrap_or_else(|e| e.into_inner()).insert(id, status.clone());
        self.inner.stats.connected.fetch_add(1, Ordering::Relaxed);
        self.inner.stats.connections_total.fetch_add(1, Ordering::Relaxed);
        RegisteredConnection { registry: self.clone(), status }
    }

    /// All live connections, ordered by node id then connection id.
    pub fn connections(&self) -> Vec<Arc<ConnectionStatus>> {
        let mut all: Vec<_> =
            self.inner.connections.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
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
        let mut sets = self.inner.name_sets.lock().unwrap_or_else(|e| e.into_inner());
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

    pub fn reports(&self) -> Vec<ConnectionReport> {
        self.connections().iter().map(|c| c.report()).collect()
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
        inner.connections.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.status.id);
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
}
