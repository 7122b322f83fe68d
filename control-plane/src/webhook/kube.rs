//! The webhook's Kubernetes edge: the generated certificates kept in a Secret (so replicas
//! and restarts share one CA), the MutatingWebhookConfiguration's `caBundle` kept equal to
//! that CA, and the labels of a namespace the model has not seen yet.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde_json::{json, Value};

use super::certs::{self, WebhookCerts};
use super::tls;

/// The Secret holding the generated CA, serving certificate and key (in meshd's namespace).
pub const TLS_SECRET: &str = "amime-webhook-tls";
/// The MutatingWebhookConfiguration whose `caBundle` meshd keeps.
pub const WEBHOOK_CONFIGURATION: &str = "amime-sidecar-injector";
/// How long a namespace lookup may take (the API server waits 10 s for the whole review).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

const CA_KEY: &str = "ca.crt";
const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";

/// The labels of namespace `name` as the API server has them now (`None`: no such namespace).
pub async fn namespace_labels(client: &Client, name: &str) -> Result<Option<BTreeMap<String, String>>, String> {
    let api: Api<Namespace> = Api::all(client.clone());
    match tokio::time::timeout(LOOKUP_TIMEOUT, api.get_metadata_opt(name)).await {
        Ok(Ok(found)) => Ok(found.map(|ns| ns.metadata.labels.unwrap_or_default())),
        Ok(Err(e)) => Err(format!("GET namespaces/{name}: {e}")),
        Err(_) => Err(format!("GET namespaces/{name}: no answer within {}s", LOOKUP_TIMEOUT.as_secs())),
    }
}

/// The certificates in `secret`, if it holds a usable set for Service `service` in
/// `namespace`: a key pair, and a serving certificate its `ca.crt` verifies, valid now for
/// the name the API server dials (`service.namespace.svc`).
pub fn from_secret(secret: &Secret, service: &str, namespace: &str) -> Result<WebhookCerts, String> {
    let data = secret.data.clone().unwrap_or_default();
    let field = |key: &str| {
        let bytes = data.get(key).map(|b| b.0.clone()).ok_or_else(|| format!("data.{key}: missing"))?;
        String::from_utf8(bytes).map_err(|_| format!("data.{key}: not text (PEM)"))
    };
    let certs = WebhookCerts { ca_pem: field(CA_KEY)?, cert_pem: field(CERT_KEY)?, key_pem: field(KEY_KEY)? };
    if !certs.ca_pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("data.{CA_KEY}: no PEM certificate"));
    }
    tls::certified_key(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes())
        .map_err(|e| format!("data.{CERT_KEY}/data.{KEY_KEY}: {e}"))?;
    let dialed = format!("{service}.{namespace}.svc");
    tls::verify_for(certs.ca_pem.as_bytes(), certs.cert_pem.as_bytes(), &dialed)
        .map_err(|e| format!("data.{CERT_KEY}: not valid for {dialed} with data.{CA_KEY} as the CA: {e}"))?;
    Ok(certs)
}

fn to_secret(certs: &WebhookCerts, namespace: &str, resource_version: Option<String>) -> Secret {
    let data = [(CA_KEY, &certs.ca_pem), (CERT_KEY, &certs.cert_pem), (KEY_KEY, &certs.key_pem)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.clone().into_bytes())))
        .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(TLS_SECRET.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([("app.kubernetes.io/part-of".to_owned(), "amime".to_owned())])),
            resource_version,
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Default::default()
    }
}

/// The certificates every replica serves: those in the Secret, else new ones stored there
/// (when two replicas race to create it, the loser reads the winner's). A Secret that does
/// not hold a usable set is replaced.
pub async fn shared_certs(client: &Client, namespace: &str, service: &str) -> Result<WebhookCerts, String> {
    shared_certs_or(client, namespace, service, None).await
}

/// [`shared_certs`], storing `ours` (the set this replica serves) rather than new ones when
/// the Secret is missing or unusable.
async fn shared_certs_or(
    client: &Client,
    namespace: &str,
    service: &str,
    ours: Option<&WebhookCerts>,
) -> Result<WebhookCerts, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let at = format!("Secret {namespace}/{TLS_SECRET}");
    for _ in 0..5 {
        let existing = api.get_opt(TLS_SECRET).await.map_err(|e| format!("GET {at}: {e}"))?;
        if let Some(secret) = &existing {
            match from_secret(secret, service, namespace) {
                Ok(certs) => return Ok(certs),
                Err(problem) => {
                    tracing::warn!(secret = %at, %problem, "the webhook certificate Secret is unusable; replacing it")
                }
            }
        }
        let certs = match ours {
            Some(ours) => ours.clone(),
            None => certs::generate(service, namespace).map_err(|e| format!("generating certificates: {e}"))?,
        };
        let resource_version = existing.as_ref().and_then(|s| s.metadata.resource_version.clone());
        let mut secret = to_secret(&certs, namespace, resource_version.clone());
        if let Some(existing) = existing {
            // A Secret's type cannot change.
            secret.type_ = existing.type_;
        }
        let written = match resource_version {
            Some(_) => api.replace(TLS_SECRET, &PostParams::default(), &secret).await,
            None => api.create(&PostParams::default(), &secret).await,
        };
        match written {
            Ok(_) => {
                tracing::info!(secret = %at, "stored new webhook certificates");
                return Ok(certs);
            }
            // Another replica wrote it first: read theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(format!("writing {at}: {e}")),
        }
    }
    Err(format!("{at}: kept changing under us"))
}

/// The JSON patch that sets every webhook's `clientConfig.caBundle` of `config` to `ca_pem`
/// (guarded by the object's resourceVersion), or `None` when all already carry it.
pub fn bundle_patch(config: &MutatingWebhookConfiguration, ca_pem: &str) -> Option<Value> {
    let want = ByteString(ca_pem.as_bytes().to_vec());
    let mut ops = Vec::new();
    for (i, webhook) in config.webhooks.iter().flatten().enumerate() {
        if webhook.client_config.ca_bundle.as_ref() != Some(&want) {
            ops.push(json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": want}));
        }
    }
    if ops.is_empty() {
        return None;
    }
    let guard = json!({"op": "test", "path": "/metadata/resourceVersion", "value": config.metadata.resource_version});
    ops.insert(0, guard);
    Some(Value::Array(ops))
}

/// Watches the MutatingWebhookConfiguration [`WEBHOOK_CONFIGURATION`] and patches its
/// `caBundle`s whenever they differ from the CA of `ours` (after an install, or a
/// `kubectl apply` of the manifest that emptied them). Runs until dropped.
///
/// Before patching, the Secret [`TLS_SECRET`] in `namespace` is read again: when it holds
/// another set (it was deleted or replaced and a restarted replica stored new certificates),
/// this replica `adopt`s that set rather than patching its own CA back. Otherwise two
/// replicas with different CAs would patch the bundle back and forth without end, and the
/// API server would trust only one of them at a time.
pub async fn keep_ca_bundle(
    client: Client,
    namespace: String,
    service: String,
    mut ours: WebhookCerts,
    adopt: impl Fn(&WebhookCerts),
) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let selector = format!("metadata.name={WEBHOOK_CONFIGURATION}");
    let mut events = watcher(api.clone(), watcher::Config::default().fields(&selector)).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let config = match event {
            Ok(Event::Apply(config) | Event::InitApply(config)) => config,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(webhook = WEBHOOK_CONFIGURATION, error = %e, "watching the MutatingWebhookConfiguration");
                continue;
            }
        };
        if bundle_patch(&config, &ours.ca_pem).is_none() {
            continue;
        }
        match shared_certs_or(&client, &namespace, &service, Some(&ours)).await {
            Ok(shared) if shared != ours => {
                tracing::info!(secret = TLS_SECRET, "the webhook certificate Secret holds another CA; serving it");
                adopt(&shared);
                ours = shared;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(secret = TLS_SECRET, error = %e, "cannot check the webhook certificate Secret"),
        }
        let Some(patch) = bundle_patch(&config, &ours.ca_pem) else { continue };
        let patch: json_patch::Patch = match serde_json::from_value(patch) {
            Ok(p) => p,
            Err(e) => return tracing::error!(error = %e, "internal error: the caBundle patch is not a JSON patch"),
        };
        match api.patch(WEBHOOK_CONFIGURATION, &PatchParams::default(), &Patch::Json::<()>(patch)).await {
            Ok(_) => tracing::info!(webhook = WEBHOOK_CONFIGURATION, "set the webhook caBundle to meshd's CA"),
            // A newer version arrived meanwhile (the test op failed): its event comes next.
            Err(kube::Error::Api(e)) if e.code == 422 || e.code == 409 => {
                tracing::debug!(webhook = WEBHOOK_CONFIGURATION, error = %e, "caBundle patch raced a change")
            }
            Err(e) => tracing::warn!(webhook = WEBHOOK_CONFIGURATION, error = %e, "cannot set the webhook caBundle"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bundles: &[Option<&str>]) -> MutatingWebhookConfiguration {
        let webhooks: Vec<Value> = bundles
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut client_config = json!({"service": {"name": "amime-meshd", "namespace": "amime-system"}});
                if let Some(b) = b {
                    client_config["caBundle"] = serde_json::to_value(ByteString(b.as_bytes().to_vec())).unwrap();
                }
                json!({"name": format!("w{i}.amime.dev"), "clientConfig": client_config, "sideEffects": "None",
                       "admissionReviewVersions": ["v1"]})
            })
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK_CONFIGURATION, "resourceVersion": "42"}, "webhooks": webhooks,
        }))
        .unwrap()
    }

    #[test]
    fn the_bundle_is_patched_only_where_it_differs() {
        let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(bundle_patch(&config(&[Some(ca), Some(ca)]), ca), None);
        let b64 = serde_json::to_value(ByteString(ca.as_bytes().to_vec())).unwrap();
        assert_eq!(
            bundle_patch(&config(&[Some(ca), None, Some("old")]), ca),
            Some(json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
                {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": b64},
                {"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": b64},
            ]))
        );
        assert_eq!(bundle_patch(&config(&[]), ca), None, "no webhooks: nothing to do");
    }

    #[test]
    fn a_secret_is_read_back_or_says_what_is_wrong() {
        let certs = certs::generate("amime-meshd", "amime-system").unwrap();
        let secret = to_secret(&certs, "amime-system", None);
        assert_eq!(from_secret(&secret, "amime-meshd", "amime-system").unwrap(), certs);
        let mut broken = secret.clone();
        broken.data.as_mut().unwrap().remove("tls.key");
        assert_eq!(from_secret(&broken, "amime-meshd", "amime-system").unwrap_err(), "data.tls.key: missing");
        let other = certs::generate("amime-meshd", "amime-system").unwrap();
        let mut mismatched = secret;
        mismatched.data.as_mut().unwrap().insert("tls.key".into(), ByteString(other.key_pem.into_bytes()));
        let err = from_secret(&mismatched, "amime-meshd", "amime-system").unwrap_err();
        assert!(err.starts_with("data.tls.crt/data.tls.key: the key does not match"), "{err}");
    }

    #[test]
    fn a_secret_for_another_service_or_ca_is_not_used() {
        // Certificates for another Service name (--webhook-service changed, or another install's).
        let other_name = certs::generate("injector", "amime-system").unwrap();
        let err =
            from_secret(&to_secret(&other_name, "amime-system", None), "amime-meshd", "amime-system").unwrap_err();
        assert!(err.starts_with("data.tls.crt: not valid for amime-meshd.amime-system.svc"), "{err}");
        // ca.crt of another CA than the one that signed tls.crt: the caBundle would not verify it.
        let (a, b) = (
            certs::generate("amime-meshd", "amime-system").unwrap(),
            certs::generate("amime-meshd", "amime-system").unwrap(),
        );
        let crossed = WebhookCerts { ca_pem: b.ca_pem, ..a };
        let err = from_secret(&to_secret(&crossed, "amime-system", None), "amime-meshd", "amime-system").unwrap_err();
        assert!(err.starts_with("data.tls.crt: not valid for amime-meshd.amime-system.svc"), "{err}");
        assert!(err.contains("data.ca.crt"), "{err}");
    }
}
