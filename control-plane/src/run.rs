//! Wires meshd together: source → state → push loop → xDS server, plus monitoring and the
//! injection webhook.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use xds::{AdsServer, ConnectionRegistry};

use crate::admin::{AdminApi, SourceInfo};
use crate::config::MeshdConfig;
use crate::mesh_config;
use crate::monitoring::{self, Monitored};
use crate::push::{self, Distributor, MeshState, ProxySnapshots};
use crate::source::{dir_watch, kube};
use crate::webhook::{self, Webhook, WebhookShared};

/// Where meshd's objects come from.
enum Source {
    Dir(std::path::PathBuf),
    /// The API server, and the Lease electing the replica that writes CRD status.
    Kube(::kube::Client, kube::lease::LeaseConfig),
}

pub async fn run(config: MeshdConfig) -> anyhow::Result<()> {
    // Resource versions hash content read with Envoy's schemas, so map order never matters.
    // (The first use of a resource would settle the schemas: this must come first.)
    anyhow::ensure!(
        xds::set_descriptor_pool(crate::envoy_json::descriptor_pool().clone()),
        "internal error: resources were built before the Envoy schemas were set; their versions would not be canonical"
    );
    let source = match config.config_dir {
        Some(_) => Source::Dir(config.checked_config_dir()?),
        None => Source::Kube(
            kube::connect(config.kubeconfig.as_deref()).await?,
            kube::lease::LeaseConfig::new(&config.namespace, &config.identity()),
        ),
    };

    let state = MeshState::new();
    state.set_settings(config.mesh_settings());
    if let Some(file) = &config.mesh_config {
        let look =
            mesh_config::watch::look(file, config.outbound_traffic_policy, &config.namespace, config.config_settle())
                .await;
        mesh_config::watch::apply(&state, &file.display().to_string(), look);
    }
    let shared = Arc::new(kube::Shared::default());
    let mesh_config_map = match (&source, &config.mesh_config) {
        (Source::Kube(client, _), None) => {
            let map = mesh_config::configmap::MeshConfigMap::new(
                &config.namespace,
                &config.mesh_config_map,
                config.outbound_traffic_policy,
            );
            mesh_config::configmap::initial(client.clone(), &map, &state).await;
            Some((client.clone(), map))
        }
        _ => None,
    };
    let mesh_config_watch = run_mesh_config(&config, state.clone(), mesh_config_map, shared.stats.clone());
    let distributor = Distributor::new();
    let registry = ConnectionRegistry::new();

    let xds_listener = tokio::net::TcpListener::bind(config.xds_addr)
        .await
        .with_context(|| format!("binding the xDS server to {}", config.xds_addr))?;
    let monitoring_listener = tokio::net::TcpListener::bind(config.monitoring_addr)
        .await
        .with_context(|| format!("binding the monitoring server to {}", config.monitoring_addr))?;
    let webhook_listener = match config.webhook_addr.0 {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the webhook server to {addr}"))?,
        ),
        None => None,
    };
    let webhook_shared = webhook_listener.as_ref().map(|_| Arc::new(WebhookShared::default()));
    let monitored = Monitored {
        state: state.clone(),
        distributor: distributor.clone(),
        registry: registry.clone(),
        kube: matches!(source, Source::Kube(..)).then(|| shared.stats.clone()),
        webhook: webhook_shared.clone(),
    };
    let admin = AdminApi::new(monitored.clone(), source_info(&source));
    let monitoring = monitoring::serve(monitoring_listener, monitored);
    let webhook = run_webhook(webhook_listener, webhook_shared, &config, client_of(&source), state.clone());

    let lease = match &source {
        Source::Kube(client, lease) => Some((client.clone(), lease.clone())),
        Source::Dir(_) => None,
    };
    let source = run_source(source, &config, state.clone(), distributor.clone(), shared);
    let pusher = push::run(state.clone(), distributor.clone(), config.debounce());
    let ads = AdsServer::new(Arc::new(ProxySnapshots(distributor.clone())), registry.clone());
    let closer = ads.clone();
    let shutdown = async move {
        shutdown_signal().await;
        // Proxies keep their config and reconnect (to another replica, or to us later).
        closer.close_streams();
    };
    tracing::info!(addr = %config.xds_addr, "xDS and admin API server listening");
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(ads.into_service())
        .add_service(admin.into_service())
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(xds_listener), shutdown);

    let result = tokio::select! {
        r = server => r.context("xDS server"),
        r = monitoring => r.context("monitoring server"),
        r = source => r,
        r = webhook => r.context("webhook server"),
        r = mesh_config_watch => r.context("mesh config watch"),
        () = pusher => Ok(()),
    };
    // The source (and its lease campaign) is stopped now: nothing renews the Lease again.
    if let Some((client, lease)) = lease {
        release_lease(client, &lease).await;
    }
    tracing::info!("meshd stopped");
    result
}

fn source_info(source: &Source) -> SourceInfo {
    match source {
        Source::Dir(dir) => SourceInfo { kind: "config-dir", detail: dir.display().to_string() },
        Source::Kube(..) => SourceInfo { kind: "kubernetes", detail: String::new() },
    }
}

fn client_of(source: &Source) -> Option<::kube::Client> {
    match source {
        Source::Kube(client, _) => Some(client.clone()),
        Source::Dir(_) => None,
    }
}

/// Watches `--mesh-config`, or else the mesh config's ConfigMap (`map`), if either is in
/// use (else never returns).
async fn run_mesh_config(
    config: &MeshdConfig,
    state: Arc<MeshState>,
    map: Option<(::kube::Client, mesh_config::configmap::MeshConfigMap)>,
    stats: Arc<kube::stats::KubeStats>,
) -> anyhow::Result<()> {
    if let Some((client, map)) = map {
        mesh_config::configmap::run(client, map, state, stats).await;
        anyhow::bail!("the mesh config's ConfigMap watch stopped");
    }
    let Some(file) = config.mesh_config.clone() else { return std::future::pending().await };
    let (policy, namespace, settle) =
        (config.outbound_traffic_policy, config.namespace.clone(), config.config_settle());
    mesh_config::watch::run(file, state, policy, namespace, settle).await
}

/// The injection webhook, if it is on (else never returns).
async fn run_webhook(
    listener: Option<tokio::net::TcpListener>,
    shared: Option<Arc<WebhookShared>>,
    config: &MeshdConfig,
    client: Option<::kube::Client>,
    state: Arc<MeshState>,
) -> anyhow::Result<()> {
    let (Some(listener), Some(shared)) = (listener, shared) else {
        return std::future::pending().await;
    };
    let settings = config.injection.settings();
    webhook::run(listener, config.webhook_certs(), Webhook { state, client, settings, shared }).await
}

/// Hands the status Lease over on the way out, if this replica holds it (a rollout then
/// does not leave status unwritten until the lease expires).
async fn release_lease(client: ::kube::Client, lease: &kube::lease::LeaseConfig) {
    match tokio::time::timeout(Duration::from_secs(2), kube::lease::release(client, lease)).await {
        Ok(Ok(true)) => tracing::info!(lease = %lease.name, namespace = %lease.namespace, "released the status Lease"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::warn!(lease = %lease.name, error = %e, "could not release the status Lease"),
        Err(_) => tracing::warn!(lease = %lease.name, "could not release the status Lease within 2s"),
    }
}

/// Runs the source (for Kubernetes also leader election and status writing) until it fails.
async fn run_source(
    source: Source,
    config: &MeshdConfig,
    state: Arc<MeshState>,
    distributor: Arc<Distributor>,
    shared: Arc<kube::Shared>,
) -> anyhow::Result<()> {
    match source {
        Source::Dir(dir) => {
            dir_watch::watch(dir, state, config.config_settle()).await.context("config directory source")
        }
        Source::Kube(client, lease) => {
            let (leader_tx, leader) = tokio::sync::watch::channel(false);
            let stats = shared.stats.clone();
            let mut leading = leader.clone();
            let gauge = async move {
                while leading.changed().await.is_ok() {
                    stats.leader.store(*leading.borrow(), std::sync::atomic::Ordering::Relaxed);
                }
            };
            tokio::join!(
                kube::run(client.clone(), state, shared.clone()),
                kube::lease::campaign(client.clone(), lease, leader_tx),
                kube::status_writer::run(client, shared, distributor, leader),
                gauge,
            );
            anyhow::bail!("the Kubernetes source stopped")
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
