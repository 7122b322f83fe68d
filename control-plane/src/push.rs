//! The push loop: debounces model changes, translates, and hands each proxy class its
//! snapshot. Also the [`xds::SnapshotSource`] the xDS server asks for proxies' watches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::watch;
use xds::{Snapshot, SnapshotSource, SnapshotWatch, WatchError};

use crate::model::index::{Change, Index};
use crate::model::{ObjectError, Origins};
use crate::proxy::Proxy;
use crate::translate::{MeshConfig, MeshSettings, ProxyClass};

/// The model shared by sources and the push loop.
#[derive(Debug)]
pub struct MeshState {
    index: Mutex<Index>,
    generation: watch::Sender<u64>,
    /// Problems the sources found (parse and validation errors), replaced per report.
    source_problems: Mutex<Vec<ObjectError>>,
    /// What a source cannot read now (its directory gone, unreadable files, dangling
    /// symlinks); what it last read from there stays in force. Replaced per report.
    unreadable: Mutex<Vec<ObjectError>>,
    /// Where each object was read, so that problems found while translating name the
    /// file and document too.
    origins: Mutex<Arc<Origins>>,
    synced: AtomicBool,
    /// What the initial sync still waits for (e.g. `Pod`, a CRD's watch), for /readyz.
    waiting_for: Mutex<Vec<String>>,
    /// When the oldest change not yet taken by the push loop was applied (locked after
    /// `index`): where proxies' convergence is timed from.
    first_unpushed_change: Mutex<Option<Instant>>,
    /// Mesh-wide settings (flags and `--mesh-config`); a change wakes the push loop.
    settings: Mutex<MeshSettings>,
    /// What is wrong with the mesh-config file, replaced per read.
    mesh_config_problems: Mutex<Vec<ObjectError>>,
    pub source_stats: SourceStats,
}

/// Counters of the sources' work, for metrics.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Changed source content applied to the model.
    pub reloads: AtomicU64,
    /// Files read (a listing that finds nothing changed reads none).
    pub files_read: AtomicU64,
}

impl Default for MeshState {
    fn default() -> Self {
        MeshState {
            index: Mutex::new(Index::new()),
            generation: watch::channel(0).0,
            source_problems: Mutex::new(Vec::new()),
            unreadable: Mutex::new(Vec::new()),
            origins: Mutex::new(Arc::default()),
            synced: AtomicBool::new(false),
            waiting_for: Mutex::new(Vec::new()),
            first_unpushed_change: Mutex::new(None),
            settings: Mutex::new(MeshSettings::default()),
            mesh_config_problems: Mutex::new(Vec::new()),
            source_stats: SourceStats::default(),
        }
    }
}

impl MeshState {
    pub fn new() -> Arc<MeshState> {
        Arc::new(MeshState::default())
    }

    /// Applies `f` to the index; wakes the push loop if anything changed.
    pub fn update(&self, f: impl FnOnce(&mut Index) -> Change) {
        let mut index = crate::sync::lock(&self.index);
        let change = f(&mut index);
        if change == Change::Changed {
            crate::sync::lock(&self.first_unpushed_change).get_or_insert_with(Instant::now);
            drop(index);
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// A source reports its initial state is in the index. No push happens before.
    pub fn mark_synced(&self) {
        if !self.synced.swap(true, Ordering::SeqCst) {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    /// A source says what its initial sync still waits for.
    pub fn set_waiting_for(&self, pending: Vec<String>) {
        *crate::sync::lock(&self.waiting_for) = pending;
    }

    pub fn waiting_for(&self) -> Vec<String> {
        crate::sync::lock(&self.waiting_for).clone()
    }

    /// Replaces the mesh-wide settings; wakes the push loop (and returns true) if they changed.
    pub fn set_settings(&self, settings: MeshSettings) -> bool {
        let mut current = crate::sync::lock(&self.settings);
        if *current == settings {
            return false;
        }
        *current = settings;
        drop(current);
        self.generation.send_modify(|g| *g += 1);
        true
    }

    pub fn settings(&self) -> MeshSettings {
        crate::sync::lock(&self.settings).clone()
    }

    pub fn set_mesh_config_problems(&self, problems: Vec<ObjectError>) {
        *crate::sync::lock(&self.mesh_config_problems) = problems;
    }

    pub fn mesh_config_problems(&self) -> Vec<ObjectError> {
        crate::sync::lock(&self.mesh_config_problems).clone()
    }

    pub fn set_source_problems(&self, problems: Vec<ObjectError>) {
        *crate::sync::lock(&self.source_problems) = problems;
    }

    pub fn source_problems(&self) -> Vec<ObjectError> {
        crate::sync::lock(&self.source_problems).clone()
    }

    pub fn set_origins(&self, origins: Origins) {
        *crate::sync::lock(&self.origins) = Arc::new(origins);
    }

    /// `problems` with the file and document of their object filled in where the source
    /// knows them (the translator sees objects, not files).
    pub fn locate(&self, problems: impl IntoIterator<Item = ObjectError>) -> Vec<ObjectError> {
        let origins = crate::sync::lock(&self.origins).clone();
        crate::model::locate(&origins, problems)
    }

    pub fn set_unreadable(&self, problems: Vec<ObjectError>) {
        *crate::sync::lock(&self.unreadable) = problems;
    }

    pub fn unreadable(&self) -> Vec<ObjectError> {
        crate::sync::lock(&self.unreadable).clone()
    }

    /// The labels of Namespace `name`, if the source has it.
    pub fn namespace_labels(&self, name: &str) -> Option<crate::model::Labels> {
        crate::sync::lock(&self.index).namespaces.get(name).map(|ns| ns.labels.clone())
    }

    /// The model, and when the oldest change in it that no earlier call returned was
    /// applied (`None`: nothing changed since).
    fn snapshot_and_change(&self) -> (Arc<Index>, Option<Instant>) {
        let index = crate::sync::lock(&self.index);
        let changed_at = crate::sync::lock(&self.first_unpushed_change).take();
        (index.snapshot(), changed_at)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// How long to wait for a burst of changes to settle.
#[derive(Clone, Copy, Debug)]
pub struct Debounce {
    /// Push once no change has come for this long...
    pub quiet: Duration,
    /// ...or once the first unpushed change is this old.
    pub max_delay: Duration,
}

/// Where a proxy class's snapshots are published.
type ClassChannel = Arc<watch::Sender<Option<Arc<Snapshot>>>>;

struct ClassEntry {
    tx: ClassChannel,
    proxies: usize,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct PushStats {
    pub translations: AtomicU64,
    pub last_translation_micros: AtomicU64,
    pub snapshots_published: AtomicU64,
    /// When the last translation was handed to the proxies (milliseconds since the epoch).
    pub last_publish_unix_ms: AtomicU64,
}

/// Per-class snapshot channels: every proxy with the same [`ProxyClass`] shares one.
#[derive(Default)]
pub struct Distributor {
    current: ArcSwapOption<MeshConfig>,
    classes: Mutex<HashMap<ProxyClass, ClassEntry>>,
    /// Bumped after each publish (for those who act on translation results).
    published: watch::Sender<u64>,
    pub stats: PushStats,
}

impl std::fmt::Debug for Distributor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distributor").finish_non_exhaustive()
    }
}

struct ClassGuard {
    distributor: Arc<Distributor>,
    class: ProxyClass,
}

impl Drop for ClassGuard {
    fn drop(&mut self) {
        let mut classes = crate::sync::lock(&self.distributor.classes);
        if let Some(entry) = classes.get_mut(&self.class) {
            entry.proxies -= 1;
            if entry.proxies == 0 {
                classes.remove(&self.class);
            }
        }
    }
}

impl Distributor {
    pub fn new() -> Arc<Distributor> {
        Arc::new(Distributor::default())
    }

    /// The mesh config most recently published, if any.
    pub fn current(&self) -> Option<Arc<MeshConfig>> {
        self.current.load_full()
    }

    /// Makes `mesh` current and sends every class whose snapshot changed.
    pub fn publish(&self, mesh: Arc<MeshConfig>) {
        self.publish_change(mesh, None)
    }

    /// [`Distributor::publish`] of a translation that carries model changes, the oldest
    /// of them applied at `changed_at`: proxies' push latency and convergence are timed
    /// from it.
    pub fn publish_change(&self, mesh: Arc<MeshConfig>, changed_at: Option<Instant>) {
        self.current.store(Some(mesh.clone()));
        // Build snapshots outside the lock, so connecting proxies never wait on a push.
        let classes: Vec<(ProxyClass, ClassChannel)> =
            crate::sync::lock(&self.classes).iter().map(|(class, entry)| (class.clone(), entry.tx.clone())).collect();
        for (class, tx) in classes {
            let snapshot = match changed_at {
                Some(at) => mesh.proxy_snapshot(&class).changed_at(at),
                None => mesh.proxy_snapshot(&class),
            };
            let changed = tx.send_if_modified(|current| match current {
                Some(old) if old.same_content(&snapshot) => false,
                _ => {
                    *current = Some(Arc::new(snapshot));
                    true
                }
            });
            if changed {
                self.stats.snapshots_published.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.published.send_modify(|n| *n += 1);
    }

    /// Changes once per [`Distributor::publish`].
    pub fn subscribe_published(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Registers a proxy of `class`; the watch lives while the guard does.
    pub fn watch_class(self: &Arc<Self>, class: ProxyClass) -> SnapshotWatch {
        let mut classes = crate::sync::lock(&self.classes);
        let entry = classes.entry(class.clone()).or_insert_with(|| {
            let initial = self.current.load_full().map(|mesh| Arc::new(mesh.proxy_snapshot(&class)));
            ClassEntry { tx: Arc::new(watch::channel(initial).0), proxies: 0 }
        });
        entry.proxies += 1;
        SnapshotWatch {
            snapshots: entry.tx.subscribe(),
            guard: Some(Box::new(ClassGuard { distributor: self.clone(), class })),
            details: Default::default(),
        }
    }

    pub fn class_count(&self) -> usize {
        crate::sync::lock(&self.classes).len()
    }
}

/// The xDS server's view of the distributor.
#[derive(Clone, Debug)]
pub struct ProxySnapshots(pub Arc<Distributor>);

impl SnapshotSource for ProxySnapshots {
    fn watch(&self, node: &Node) -> Result<SnapshotWatch, WatchError> {
        let proxy = Proxy::from_node(node).map_err(|e| WatchError::InvalidNode(e.to_string()))?;
        tracing::debug!(node = %proxy.id, namespace = %proxy.namespace, mode = ?proxy.mode, "proxy identified");
        let mut class = proxy.class();
        if class.locality.is_empty() {
            // A sidecar whose bootstrap names no locality runs where its pod's Node is.
            if let Some(mesh) = self.0.current() {
                let found = crate::translate::locality::pod_ip_locality(mesh.model(), &proxy.namespace, &proxy.ips);
                class.locality = found.unwrap_or_default();
            }
        }
        let mut watch = self.0.watch_class(class);
        watch.details = proxy.details();
        Ok(watch)
    }
}

/// Runs until `state` is dropped: waits for changes, debounces, translates, publishes.
/// Mesh-wide settings come from `state` ([`MeshState::set_settings`]), so a changed mesh
/// config is pushed like a changed object.
pub async fn run(state: Arc<MeshState>, distributor: Arc<Distributor>, debounce: Debounce) {
    let mut changes = state.subscribe();
    let mut reported: std::collections::BTreeSet<ObjectError> = Default::default();
    // Whatever happened before we subscribed counts as a change.
    changes.mark_changed();
    loop {
        if changes.changed().await.is_err() {
            return;
        }
        if !state.is_synced() {
            continue;
        }
        // Debounce: wait until quiet, or until the first change is max_delay old.
        let first = Instant::now();
        loop {
            let deadline = (first + debounce.max_delay).min(Instant::now() + debounce.quiet);
            match tokio::time::timeout_at(deadline.into(), changes.changed()).await {
                Ok(Ok(())) if Instant::now() < first + debounce.max_delay => continue,
                Ok(Err(_)) => return,
                _ => break,
            }
        }
        changes.borrow_and_update();
        let (model, changed_at) = state.snapshot_and_change();
        let settings = state.settings();
        let started = Instant::now();
        // Built after the current config, so only what changed is checked again
        // and refused objects keep their last good version.
        let previous = distributor.current();
        let mesh = tokio::task::block_in_place(|| MeshConfig::build_after(model, &settings, previous.as_deref()));
        let took = started.elapsed();
        distributor.stats.translations.fetch_add(1, Ordering::Relaxed);
        distributor.stats.last_translation_micros.store(took.as_micros() as u64, Ordering::Relaxed);
        tracing::info!(
            clusters = mesh.clusters().len(),
            endpoints = mesh.endpoints().len(),
            problems = mesh.problems.len(),
            took = %crate::logging::Rounded(took),
            pieces_checked = mesh.checks.checked,
            pieces_refused = mesh.checks.refused,
            "translated mesh"
        );
        let current: std::collections::BTreeSet<ObjectError> =
            state.locate(mesh.problems.iter().cloned()).into_iter().collect();
        for p in current.difference(&reported) {
            crate::logging::log_problem(p);
        }
        reported = current;
        distributor.publish_change(Arc::new(mesh), changed_at);
        distributor.stats.last_publish_unix_ms.store(xds::status::now_millis(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MeshObject, Service, ServicePort, TargetPort};
    use crate::translate::InterceptionMode;

    fn mesh(port: u16) -> Arc<MeshConfig> {
        let mut index = Index::new();
        index.apply(MeshObject::Service(Service {
            namespace: "ns".into(),
            name: "svc".into(),
            cluster_ip: None,
            selector: None,
            ports: vec![ServicePort {
                name: "http".into(),
                port,
                target_port: TargetPort::Number(port),
                protocol: crate::model::Protocol::Http,
            }],
        }));
        Arc::new(MeshConfig::build(Arc::new(index), &MeshSettings::default()))
    }

    fn class(ip: &str) -> ProxyClass {
        ProxyClass {
            namespace: "ns".into(),
            mode: InterceptionMode::None,
            ip: Some(ip.parse().unwrap()),
            labels: Default::default(),
            kind: Default::default(),
            locality: Default::default(),
        }
    }

    #[test]
    fn proxies_of_one_class_share_one_snapshot_and_classes_go_away_with_their_proxies() {
        let d = Distributor::new();
        let a1 = d.watch_class(class("127.0.0.1"));
        assert!(a1.snapshots.borrow().is_none(), "nothing before the first publish");
        d.publish(mesh(80));
        let a2 = d.watch_class(class("127.0.0.1"));
        let b = d.watch_class(class("127.0.0.2"));
        assert_eq!(d.class_count(), 2);
        let s1 = a1.snapshots.borrow().clone().expect("published");
        let s2 = a2.snapshots.borrow().clone().expect("published");
        assert!(Arc::ptr_eq(&s1, &s2), "one snapshot object per class");
        let sb = b.snapshots.borrow().clone().expect("published");
        assert!(
            Arc::ptr_eq(s1.set(xds::ResourceType::Cluster), sb.set(xds::ResourceType::Cluster)),
            "clusters shared across classes"
        );
        drop(a1);
        assert_eq!(d.class_count(), 2);
        drop(a2);
        assert_eq!(d.class_count(), 1);
    }

    #[test]
    fn publish_wakes_a_class_only_when_its_content_changed() {
        let d = Distributor::new();
        d.publish(mesh(80));
        let mut w = d.watch_class(class("127.0.0.1"));
        w.snapshots.borrow_and_update();
        d.publish(mesh(80));
        assert!(!w.snapshots.has_changed().unwrap(), "same content: no wake-up");
        d.publish(mesh(81));
        assert!(w.snapshots.has_changed().unwrap());
    }
}
