//! The sidecar-injection admission webhook (`POST /inject` over HTTPS, 15017).
//!
//! - [`review`]: the decision, pure (AdmissionReview in, answer out);
//! - [`server`]: the HTTPS server (accept loop, timeouts, body limit, routes);
//! - [`tls`]: the served certificate, swappable, and `--webhook-cert`/`--webhook-key` reload;
//! - [`certs`]: a generated CA and serving certificate when no files are given;
//! - [`kube`]: with the Kubernetes source, those kept in a Secret and the
//!   MutatingWebhookConfiguration's `caBundle` kept equal to the CA;
//! - [`stats`]: `/metrics` counters.

pub mod certs;
pub mod kube;
pub mod review;
pub mod server;
pub mod stats;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwapOption;
use injector::settings::InjectionSettings;

use self::stats::WebhookStats;
use self::tls::{CertFiles, SwappableCert};
use crate::push::MeshState;

/// How often `--webhook-cert`/`--webhook-key` are checked for new content.
pub const CERT_FILES_POLL: Duration = Duration::from_secs(1);

/// `--webhook-addr`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookAddr(pub Option<SocketAddr>);

impl std::str::FromStr for WebhookAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            return Ok(WebhookAddr(None));
        }
        s.parse().map(|a| WebhookAddr(Some(a))).map_err(|e| format!("{e}: expected IP:PORT or `off`"))
    }
}

/// What the webhook shares with the monitoring server.
#[derive(Debug, Default)]
pub struct WebhookShared {
    pub stats: WebhookStats,
    /// The generated CA (PEM), served at `/debug/webhook-ca`; none with `--webhook-cert`.
    pub ca_pem: ArcSwapOption<String>,
}

/// The webhook's view of the world.
pub struct Webhook {
    pub state: Arc<MeshState>,
    /// With the Kubernetes source: asked about namespaces the model has not seen yet.
    pub client: Option<::kube::Client>,
    pub settings: InjectionSettings,
    pub shared: Arc<WebhookShared>,
}

impl Webhook {
    /// Whether namespace `name` enables injection: from the model; with the Kubernetes
    /// source, a namespace the model does not have or has without the label is asked of
    /// the API server (the model may lag a label set just before the pod was created; the
    /// API server sends mostly pods of labelled namespaces, so this is rare). `Err` when
    /// that cannot be looked up now: the model's "no label" is then no answer, since the
    /// API server sends a pod that does not opt in only when its namespace has the label.
    pub async fn namespace_enabled(&self, name: &str) -> Result<bool, String> {
        let enabled = |labels: &crate::model::Labels| {
            review::namespace_enabled(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        };
        let known = self.state.namespace_labels(name).map(|labels| enabled(&labels));
        let Some(client) = &self.client else {
            // The config directory has no such Namespace object: no label.
            return Ok(known.unwrap_or(false));
        };
        if known == Some(true) {
            return Ok(true);
        }
        kube::namespace_labels(client, name).await.map(|found| found.is_some_and(|labels| enabled(&labels)))
    }
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    Files(CertFiles),
    /// Generated for Service `service` in `namespace` (kept in a Secret with a client).
    Generated {
        service: String,
        namespace: String,
    },
}

/// Serves the webhook on `listener` until dropped (or a startup error: unusable files).
pub async fn run(listener: tokio::net::TcpListener, certs: CertSource, webhook: Webhook) -> anyhow::Result<()> {
    let shared = webhook.shared.clone();
    let (cert, upkeep): (_, futures::future::BoxFuture<'static, ()>) = match certs {
        CertSource::Files(files) => {
            let cert = SwappableCert::new(files.load().map_err(anyhow::Error::msg)?);
            (cert.clone(), Box::pin(files.watch(cert, CERT_FILES_POLL)))
        }
        CertSource::Generated { service, namespace } => {
            let generated = match &webhook.client {
                Some(client) => shared_certs_retrying(client, &namespace, &service).await,
                None => certs::generate(&service, &namespace).context("generating the webhook certificates")?,
            };
            let key = tls::certified_key(generated.cert_pem.as_bytes(), generated.key_pem.as_bytes())
                .map_err(|e| anyhow::anyhow!("the generated webhook certificate: {e}"))?;
            shared.ca_pem.store(Some(Arc::new(generated.ca_pem.clone())));
            let cert = SwappableCert::new(key);
            let upkeep: futures::future::BoxFuture<'static, ()> = match webhook.client.clone() {
                Some(client) => {
                    let (serving, shared) = (cert.clone(), shared.clone());
                    let adopt = move |certs: &certs::WebhookCerts| adopt(&serving, &shared, certs);
                    Box::pin(kube::keep_ca_bundle(client, namespace, service, generated, adopt))
                }
                None => Box::pin(std::future::pending()),
            };
            (cert, upkeep)
        }
    };
    let acceptor = tls::acceptor(cert).context("webhook TLS configuration")?;
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "webhook listening");
    tokio::select! {
        r = server::serve(listener, acceptor, Arc::new(webhook)) => r,
        () = upkeep => Ok(()),
    }
}

/// Serves `certs` from now on (the shared Secret changed under this replica).
fn adopt(serving: &SwappableCert, shared: &WebhookShared, certs: &certs::WebhookCerts) {
    match tls::certified_key(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes()) {
        Ok(key) => {
            serving.set(key);
            shared.ca_pem.store(Some(Arc::new(certs.ca_pem.clone())));
        }
        Err(e) => tracing::warn!(error = %e, "the shared webhook certificate does not load; keeping ours"),
    }
}

/// [`kube::shared_certs`], retried until it works (the webhook serves nothing before).
async fn shared_certs_retrying(client: &::kube::Client, namespace: &str, service: &str) -> certs::WebhookCerts {
    let mut delay = Duration::from_millis(500);
    loop {
        match kube::shared_certs(client, namespace, service).await {
            Ok(certs) => return certs,
            Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "webhook certificates not available yet"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Labels, MeshObject, Namespace};

    /// A webhook whose model has namespace `plain` without the label, and whose API server
    /// cannot be reached.
    fn webhook_with_dead_api_server() -> Webhook {
        let state = MeshState::new();
        state.update(|index| {
            index.apply(MeshObject::Namespace(Namespace { name: "plain".into(), labels: Labels::new() }))
        });
        let config = ::kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = ::kube::Client::try_from(config).unwrap();
        Webhook { state, client: Some(client), settings: InjectionSettings::default(), shared: Default::default() }
    }

    #[tokio::test]
    async fn a_namespace_the_api_server_cannot_confirm_is_unknown_not_unlabelled() {
        let webhook = webhook_with_dead_api_server();
        // The API server sends a pod that does not opt in only for a labelled namespace: the
        // model's "no label" may just lag behind, so it must not admit the pod unmeshed.
        let enabled = webhook.namespace_enabled("plain").await;
        assert!(enabled.as_ref().is_err_and(|e| e.starts_with("GET namespaces/plain")), "{enabled:?}");
        assert!(webhook.namespace_enabled("nowhere").await.is_err());
    }
}
