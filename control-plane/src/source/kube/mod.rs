//! The Kubernetes source: watches the API server and feeds the one model.
//!
//! - [`feed`]: the pure state (events in, index changes and diagnostics out);
//! - [`crd`]: which CRD-served kinds to watch, from the CRDs in the cluster;
//! - [`watch`]: kube-rs watchers (the I/O edge);
//! - [`status`] (pure) and [`status_writer`]: the `Accepted` condition on CRD objects,
//!   written only by the holder of the [`lease`];
//! - [`stats`]: counters for `/metrics`.
//!
//! Watched: core/v1 Namespaces and Nodes (metadata only), Services, Pods (not Succeeded/Failed), discovery.k8s.io/v1
//! EndpointSlices (those of a Service), and VirtualService, DestinationRule, Gateway,
//! ServiceEntry of `networking.amime.dev` and `networking.istio.io`, RateLimit of
//! `networking.amime.dev`, and Telemetry of `telemetry.amime.dev` and `telemetry.istio.io`,
//! while their CRDs exist.
//! The first push and `/readyz` wait for every watch's initial list (and for the CRD
//! watches found at startup).

pub mod crd;
pub mod feed;
pub mod lease;
pub mod stats;
pub mod status;
pub mod status_writer;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::ApiResource;
use kube::runtime::watcher;
use kube::Client;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::model::{Diagnostic, Kind};
use crate::push::MeshState;

use self::crd::{Discovery, Served, WatchChange};
use self::feed::{FeedId, Model, Outcome, CORE_FEEDS};
use self::stats::KubeStats;
use self::watch::{Message, Origin, WatchSpec};

#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    #[error("--kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error(
        "no Kubernetes API configured: tried KUBECONFIG, ~/.kube/config and the in-cluster service account \
         ({message}); pass --kubeconfig PATH, or --config-dir DIR to serve a directory instead"
    )]
    NotConfigured { message: String },
    #[error("cannot reach the Kubernetes API at {url} (from {from}): {message}")]
    Unreachable { url: String, from: String, message: String },
}

/// How long startup waits for the API server to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for the cluster of `kubeconfig` (else kube's inference: KUBECONFIG,
/// ~/.kube/config, in-cluster), checked to answer.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client, KubeSourceError> {
    let (config, from) = match kubeconfig {
        Some(path) => {
            let failed = |e: &dyn std::fmt::Display| KubeSourceError::Kubeconfig {
                path: path.display().to_string(),
                message: e.to_string(),
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| failed(&e))?;
            let config =
                kube::Config::from_custom_kubeconfig(file, &Default::default()).await.map_err(|e| failed(&e))?;
            (config, format!("--kubeconfig {}", path.display()))
        }
        None => {
            let config =
                kube::Config::infer().await.map_err(|e| KubeSourceError::NotConfigured { message: format!("{e}") })?;
            (config, "KUBECONFIG, ~/.kube/config or in-cluster config".to_owned())
        }
    };
    let url = config.cluster_url.to_string();
    let unreachable = |message: String| KubeSourceError::Unreachable { url: url.clone(), from: from.clone(), message };
    let client = Client::try_from(config).map_err(|e| unreachable(e.to_string()))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(version)) => {
            tracing::info!(url = %url, version = %version.git_version, "connected to the Kubernetes API");
            Ok(client)
        }
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))),
    }
}

/// What the source loop shares with the status writer and monitoring.
#[derive(Debug, Default)]
pub struct Shared {
    pub model: Mutex<Model>,
    /// Bumped when something status writing compares changed.
    pub status_changed: tokio::sync::watch::Sender<u64>,
    pub stats: Arc<KubeStats>,
}

pub(crate) fn api_resource(feed: FeedId, version: &str, plural: &str) -> ApiResource {
    let group = feed.api_group();
    ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") },
        kind: feed.kind.to_string(),
        plural: plural.to_owned(),
    }
}

/// How each built-in kind is watched: only what the mesh needs.
fn core_spec(feed: FeedId) -> WatchSpec {
    let (version, plural, config) = match feed.kind {
        Kind::Namespace => ("v1", "namespaces", watcher::Config::default()),
        // Their topology labels: the locality of the pods on them.
        Kind::Node => ("v1", "nodes", watcher::Config::default()),
        Kind::Service => ("v1", "services", watcher::Config::default()),
        // A pod leaving the selector (finished) arrives as a delete.
        Kind::Pod => ("v1", "pods", watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed")),
        // Gateway certificates: TLS Secrets only (the API server filters by type).
        Kind::Secret => ("v1", "secrets", watcher::Config::default().fields("type=kubernetes.io/tls")),
        // Slices of a Service (those the EndpointSlice controller and mirroring write).
        _ => ("v1", "endpointslices", watcher::Config::default().labels("kubernetes.io/service-name")),
    };
    // Namespaces and Nodes: only name and labels are read.
    let metadata_only = feed.kind.is_cluster_scoped();
    WatchSpec {
        resource: api_resource(feed, version, plural),
        config,
        label: feed.to_string(),
        metadata_only,
        namespace: None,
    }
}

fn crd_spec(name: &str) -> WatchSpec {
    WatchSpec {
        resource: ApiResource {
            group: "apiextensions.k8s.io".into(),
            version: "v1".into(),
            api_version: "apiextensions.k8s.io/v1".into(),
            kind: "CustomResourceDefinition".into(),
            plural: "customresourcedefinitions".into(),
        },
        config: watcher::Config::default().fields(&format!("metadata.name={name}")),
        label: format!("CustomResourceDefinition/{name}"),
        metadata_only: false,
        namespace: None,
    }
}

/// The source loop's own state: the running watches.
struct Source {
    client: Client,
    state: Arc<MeshState>,
    shared: Arc<Shared>,
    discovery: Discovery,
    feeds: BTreeMap<FeedId, (u64, Served, JoinHandle<()>)>,
    tasks: Vec<JoinHandle<()>>,
    next_epoch: u64,
    tx: mpsc::Sender<Message>,
}

impl Drop for Source {
    fn drop(&mut self) {
        for (_, _, task) in self.feeds.values() {
            task.abort();
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Events taken from the channel at once (one index update, one wake-up of the push loop).
const BATCH: usize = 512;

impl Source {
    fn spawn(&mut self, spec: WatchSpec, origin: Origin) -> JoinHandle<()> {
        let task = watch::run(self.client.clone(), spec, origin, self.tx.clone(), self.shared.stats.clone());
        tokio::spawn(task)
    }

    fn start_feed(&mut self, feed: FeedId, served: Served) {
        if let Some((_, running, task)) = self.feeds.get(&feed) {
            if *running == served {
                return;
            }
            task.abort();
        }
        tracing::info!(resource = %feed, version = %served.version, "watching");
        crate::sync::lock(&self.shared.model).add_feed(feed, &served.version, &served.plural);
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        let spec = WatchSpec {
            resource: api_resource(feed, &served.version, &served.plural),
            config: watcher::Config::default(),
            label: feed.to_string(),
            metadata_only: false,
            namespace: None,
        };
        let task = self.spawn(spec, Origin::Feed(feed, epoch));
        self.feeds.insert(feed, (epoch, served, task));
    }

    fn stop_feed(&mut self, feed: FeedId) -> Outcome {
        if let Some((_, _, task)) = self.feeds.remove(&feed) {
            task.abort();
        }
        tracing::info!(resource = %feed, "CRD gone: stopped watching; its objects are dropped");
        let mut model = crate::sync::lock(&self.shared.model);
        let mut out = Outcome::default();
        self.state.update(|index| {
            out = model.remove_feed(feed, index);
            out.change()
        });
        out
    }

    fn start(&mut self) {
        for feed in CORE_FEEDS {
            let spec = core_spec(feed);
            let served = Served { version: spec.resource.version.clone(), plural: spec.resource.plural.clone() };
            crate::sync::lock(&self.shared.model).add_feed(feed, &served.version, &served.plural);
            let task = self.spawn(spec, Origin::Feed(feed, 0));
            self.feeds.insert(feed, (0, served, task));
        }
        let names: Vec<String> = self.discovery.names().map(str::to_owned).collect();
        for name in names {
            let task = self.spawn(crd_spec(&name), Origin::Crd(name.clone()));
            self.tasks.push(task);
        }
    }

    /// Applies one batch of events; returns what changed.
    fn apply(&mut self, batch: &mut Vec<Message>) -> Outcome {
        let mut changes = Vec::new();
        let mut out = Outcome::default();
        {
            let mut model = crate::sync::lock(&self.shared.model);
            let feeds = &self.feeds;
            let discovery = &mut self.discovery;
            self.state.update(|index| {
                for Message { origin, event } in batch.drain(..) {
                    match origin {
                        Origin::Crd(name) => changes.extend(discovery.handle(&name, event)),
                        Origin::Feed(feed, epoch) if feeds.get(&feed).is_some_and(|(e, _, _)| *e == epoch) => {
                            out.merge(model.handle(feed, event, index));
                        }
                        Origin::Feed(..) => {} // a stopped watch's late event
                    }
                }
                out.change()
            });
        }
        for change in changes {
            match change {
                WatchChange::Start(feed, served) => {
                    self.start_feed(feed, served);
                    out.status = true;
                }
                WatchChange::Stop(feed) => out.merge(self.stop_feed(feed)),
            }
        }
        out
    }

    /// Hands problems, readiness and status news on.
    fn publish(&self, out: Outcome, reported: &mut BTreeSet<Diagnostic>) {
        let (problems, pending) = {
            let model = crate::sync::lock(&self.shared.model);
            let problems = out.problems.then(|| model.problems());
            let mut pending: Vec<String> = model.pending().iter().map(FeedId::to_string).collect();
            pending.extend(self.discovery.pending().into_iter().map(|n| format!("CustomResourceDefinition {n}")));
            (problems, pending)
        };
        if let Some(problems) = problems {
            let now: BTreeSet<Diagnostic> = problems.iter().cloned().collect();
            for p in now.difference(reported) {
                crate::logging::log_problem(p);
            }
            *reported = now;
            self.state.set_source_problems(problems);
        }
        if out.status {
            self.shared.status_changed.send_modify(|g| *g += 1);
        }
        if !self.state.is_synced() {
            if pending.is_empty() {
                tracing::info!(objects = crate::sync::lock(&self.shared.model).len(), "Kubernetes API synced");
                self.state.set_waiting_for(Vec::new());
                self.state.mark_synced();
            } else {
                self.state.set_waiting_for(pending);
            }
        }
    }
}

/// Watches the cluster behind `client` and keeps `state` in step, until the task is dropped.
pub async fn run(client: Client, state: Arc<MeshState>, shared: Arc<Shared>) {
    let (tx, mut rx) = mpsc::channel(4 * BATCH);
    let mut source = Source {
        client,
        state,
        shared,
        discovery: Discovery::new(),
        feeds: BTreeMap::new(),
        tasks: Vec::new(),
        next_epoch: 0,
        tx,
    };
    source.start();
    let mut waiting: Vec<String> = CORE_FEEDS.iter().map(FeedId::to_string).collect();
    waiting.extend(source.discovery.pending().into_iter().map(|n| format!("CustomResourceDefinition {n}")));
    source.state.set_waiting_for(waiting);
    let mut reported = BTreeSet::new();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        let out = source.apply(&mut batch);
        source.publish(out, &mut reported);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn startup_errors_say_what_was_tried() {
        let dir = std::env::temp_dir().join(format!("amime-kube-connect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing");
        let err = connect(Some(&missing)).await.map(drop).unwrap_err().to_string();
        assert!(err.starts_with(&format!("--kubeconfig {}: ", missing.display())), "{err}");
        // A cluster nobody serves: the URL and the kubeconfig are named.
        let config = dir.join("config");
        std::fs::write(
            &config,
            "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\n\
             users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n\
             current-context: c\n",
        )
        .unwrap();
        let err = connect(Some(&config)).await.map(drop).unwrap_err().to_string();
        assert!(err.starts_with("cannot reach the Kubernetes API at https://127.0.0.1:1/"), "{err}");
        assert!(err.contains(&format!("--kubeconfig {}", config.display())), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
