//! Wires meshd together: source → state → push loop → xDS server, plus monitoring.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use xds::{AdsServer, ConnectionRegistry};

use crate::config::MeshdConfig;
use crate::monitoring::{self, Monitored};
use crate::push::{self, Distributor, MeshState, ProxySnapshots};
use crate::source::dir_watch;

pub async fn run(config: MeshdConfig) -> anyhow::Result<()> {
    // Resource versions hash content read with Envoy's schemas, so map order never matters.
    // (The first use of a resource would settle the schemas: this must come first.)
    anyhow::ensure!(
        xds::set_descriptor_pool(crate::envoy_json::descriptor_pool().clone()),
        "internal error: resources were built before the Envoy schemas were set; their versions would not be canonical"
    );
    let dir = config.checked_config_dir()?;

    let state = MeshState::new();
    let distributor = Distributor::new();
    let registry = ConnectionRegistry::new();

    let xds_listener = tokio::net::TcpListener::bind(config.xds_addr)
        .await
        .with_context(|| format!("binding the xDS server to {}", config.xds_addr))?;
    let monitoring_listener = tokio::net::TcpListener::bind(config.monitoring_addr)
        .await
        .with_context(|| format!("binding the monitoring server to {}", config.monitoring_addr))?;
    let monitoring = monitoring::serve(
        monitoring_listener,
        Monitored { state: state.clone(), distributor: distributor.clone(), registry: registry.clone() },
    );

    let source = dir_watch::watch(dir, state.clone(), config.config_settle());
    let pusher = push::run(state.clone(), distributor.clone(), config.debounce(), config.mesh_settings());
    let ads = AdsServer::new(Arc::new(ProxySnapshots(distributor.clone())), registry.clone());
    let closer = ads.clone();
    let shutdown = async move {
        shutdown_signal().await;
        // Proxies keep their config and reconnect (to another replica, or to us later).
        closer.close_streams();
    };
    tracing::info!(addr = %config.xds_addr, "xDS server listening");
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(ads.into_service())
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(xds_listener), shutdown);

    tokio::select! {
        r = server => r.context("xDS server")?,
        r = monitoring => r.context("monitoring server")?,
        r = source => r.context("config directory source")?,
        () = pusher => {}
    }
    tracing::info!("meshd stopped");
    Ok(())
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
