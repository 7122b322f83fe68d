//! The monitoring HTTP endpoint (15014): `/healthz`, `/readyz`, Prometheus `/metrics`,
//! and `/debug/config_errors`, `/debug/proxies` (JSON), `/debug/webhook-ca` (PEM).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use xds::{ConnectionRegistry, XdsStats};

use crate::model::{ObjectError, Severity};
use crate::push::{Distributor, MeshState};

/// What the endpoints read.
#[derive(Clone)]
pub struct Monitored {
    pub state: Arc<MeshState>,
    pub distributor: Arc<Distributor>,
    pub registry: ConnectionRegistry,
    /// The Kubernetes source's counters, when it runs.
    pub kube: Option<Arc<crate::source::kube::stats::KubeStats>>,
    /// The webhook's counters and generated CA, when it runs.
    pub webhook: Option<Arc<crate::webhook::WebhookShared>>,
}

impl Monitored {
    /// Source problems and translation problems, errors first.
    pub fn config_errors(&self) -> Vec<ObjectError> {
        let mut all = self.state.source_problems();
        all.extend(self.state.unreadable());
        all.extend(self.state.mesh_config_problems());
        if let Some(mesh) = self.distributor.current() {
            all.extend(self.state.locate(mesh.problems.iter().cloned()));
        }
        all.sort();
        all
    }

    pub fn ready(&self) -> bool {
        self.state.is_synced() && self.distributor.current().is_some()
    }
}

pub fn router(m: Monitored) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/debug/config_errors", get(config_errors))
        .route("/debug/proxies", get(proxies))
        .route("/debug/webhook-ca", get(webhook_ca))
        .with_state(m)
}

async fn readyz(State(m): State<Monitored>) -> impl IntoResponse {
    let ready = m.ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut text = readiness_text(ready, &m.state.unreadable(), m.config_errors().len());
    if !ready {
        text.push_str(&waiting_text(&m.state.waiting_for()));
    }
    (status, text)
}

/// The body of `/readyz`. Once the initial sync is done meshd stays ready (200) while
/// part of its source cannot be read: it serves the last good configuration, which is
/// what proxies keep anyway, and a replica marked unready would only cut new sidecars
/// off. The body names every unreadable path so the cause is one `curl` away.
pub fn readiness_text(ready: bool, unreadable: &[ObjectError], config_errors: usize) -> String {
    let mut out = String::from(if ready { "ready" } else { "not ready: waiting for the initial config sync" });
    if !unreadable.is_empty() {
        let _ = write!(
            out,
            "\ndegraded: {} problem(s) reading the config source; what was last read stays in force:",
            unreadable.len()
        );
        for p in unreadable {
            let _ = write!(out, "\n  {}: {}", p.file.as_deref().unwrap_or("?"), p.message);
        }
    }
    if config_errors > 0 {
        let _ = write!(out, "\n{config_errors} configuration problem(s): see /debug/config_errors");
    }
    out.push('\n');
    out
}

/// What the initial sync still waits for (the Kubernetes source's watches), if anything.
pub fn waiting_text(waiting: &[String]) -> String {
    if waiting.is_empty() {
        String::new()
    } else {
        format!("waiting for the initial list of: {}\n", waiting.join(", "))
    }
}

async fn config_errors(State(m): State<Monitored>) -> Json<Vec<ObjectError>> {
    Json(m.config_errors())
}

/// The webhook's generated CA (PEM), to verify its TLS with.
async fn webhook_ca(State(m): State<Monitored>) -> impl IntoResponse {
    match m.webhook.as_ref().and_then(|w| w.ca_pem.load_full()) {
        Some(pem) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-pem-file")], pem.to_string()),
        None => {
            let why = match m.webhook {
                Some(_) => {
                    "no generated webhook CA: meshd serves --webhook-cert (or has not made its certificate yet)\n"
                }
                None => "the webhook is off (--webhook-addr off)\n",
            };
            (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], why.to_owned())
        }
    }
}

async fn proxies(State(m): State<Monitored>) -> Json<Vec<xds::status::ConnectionReport>> {
    Json(m.registry.reports())
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

/// Prometheus text exposition.
pub fn render_metrics(m: &Monitored) -> String {
    let s = m.registry.stats();
    let g = XdsStats::get;
    let mut out = String::new();
    let connections = m.registry.connections();
    let proxies = crate::xds_metrics::proxies_by_kind_and_mode(connections.iter().map(|c| &c.details));
    crate::xds_metrics::render_xds(&mut out, s, &proxies);
    metric(&mut out, "amime_xds_connections_total", "counter", "xDS streams opened.", g(&s.connections_total));
    metric(
        &mut out,
        "amime_xds_duplicate_node_ids_total",
        "counter",
        "Connections that claimed a node id another live connection already had.",
        g(&s.duplicate_node_ids),
    );
    metric(
        &mut out,
        "amime_xds_resources_sent_total",
        "counter",
        "Resources sent in xDS responses.",
        g(&s.resources_sent),
    );
    metric(&mut out, "amime_xds_bytes_sent_total", "counter", "Encoded bytes of xDS responses.", g(&s.bytes_sent));
    metric(&mut out, "amime_xds_acks_total", "counter", "Updates acknowledged by proxies.", g(&s.acks));
    metric(
        &mut out,
        "amime_xds_stale_nonces_total",
        "counter",
        "Requests ignored for a stale nonce.",
        g(&s.stale_nonces),
    );
    let p = &m.distributor.stats;
    let r = std::sync::atomic::Ordering::Relaxed;
    metric(&mut out, "amime_translations_total", "counter", "Whole-mesh translations.", p.translations.load(r));
    metric(
        &mut out,
        "amime_translation_last_duration_seconds",
        "gauge",
        "Duration of the last whole-mesh translation.",
        p.last_translation_micros.load(r) as f64 / 1e6,
    );
    metric(
        &mut out,
        "amime_last_publish_timestamp_seconds",
        "gauge",
        "When the last translation was handed to the proxies (Unix time).",
        p.last_publish_unix_ms.load(r) as f64 / 1e3,
    );
    metric(
        &mut out,
        "amime_snapshots_published_total",
        "counter",
        "Proxy-class snapshots published.",
        p.snapshots_published.load(r),
    );
    metric(
        &mut out,
        "amime_proxy_classes",
        "gauge",
        "Distinct proxy classes (proxies sharing one snapshot).",
        m.distributor.class_count(),
    );
    let src = &m.state.source_stats;
    metric(
        &mut out,
        "amime_config_reloads_total",
        "counter",
        "Changed source content applied to the model (an idle config directory adds none).",
        src.reloads.load(r),
    );
    metric(
        &mut out,
        "amime_config_files_read_total",
        "counter",
        "Config files read (only files whose inode, size or times changed are read).",
        src.files_read.load(r),
    );
    metric(
        &mut out,
        "amime_config_unreadable_paths",
        "gauge",
        "Source paths that cannot be read now (their last good content stays in force).",
        m.state.unreadable().len(),
    );
    let errors = m.config_errors();
    let count = |sev| errors.iter().filter(|e| e.severity == sev).count();
    let _ = writeln!(
        out,
        "# HELP amime_config_problems Current configuration problems, by severity.\n# TYPE amime_config_problems gauge\namime_config_problems{{severity=\"error\"}} {}\namime_config_problems{{severity=\"warning\"}} {}\namime_config_problems{{severity=\"info\"}} {}",
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info)
    );
    crate::xds_metrics::render_config_errors(&mut out, &crate::xds_metrics::errors_by_kind(&errors));
    metric(
        &mut out,
        "amime_ready",
        "gauge",
        "1 once the initial config sync is done and translated.",
        u8::from(m.ready()),
    );
    if let Some(kube) = &m.kube {
        kube.render(&mut out);
    }
    if let Some(webhook) = &m.webhook {
        webhook.stats.render(&mut out);
    }
    out
}

async fn metrics(State(m): State<Monitored>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render_metrics(&m))
}

/// Serves the monitoring endpoint until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, m: Monitored) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "monitoring listening");
    axum::serve(listener, router(m)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreadable(file: &str, message: &str) -> ObjectError {
        ObjectError::at_path(Severity::Error, std::path::Path::new(file), message)
    }

    #[test]
    fn readiness_names_the_watches_not_yet_listed() {
        assert_eq!(waiting_text(&[]), "");
        let waiting = ["Pod".to_owned(), "CustomResourceDefinition virtualservices.networking.istio.io".to_owned()];
        assert_eq!(
            waiting_text(&waiting),
            "waiting for the initial list of: Pod, CustomResourceDefinition virtualservices.networking.istio.io\n"
        );
    }

    #[test]
    fn readiness_names_what_cannot_be_read() {
        assert_eq!(readiness_text(true, &[], 0), "ready\n");
        assert_eq!(readiness_text(false, &[], 0), "not ready: waiting for the initial config sync\n");
        let problems = [
            unreadable("/etc/mesh/sub", "cannot list this directory: permission denied"),
            unreadable("/etc/mesh/x.yaml", "dangling symlink (to y.yaml)"),
        ];
        assert_eq!(
            readiness_text(true, &problems, 3),
            "ready\n\
             degraded: 2 problem(s) reading the config source; what was last read stays in force:\n\
             \x20 /etc/mesh/sub: cannot list this directory: permission denied\n\
             \x20 /etc/mesh/x.yaml: dangling symlink (to y.yaml)\n\
             3 configuration problem(s): see /debug/config_errors\n"
        );
    }
}
