//! The I/O edge of the Kubernetes source: one kube-rs watcher per watched resource
//! (list, then watch; relist on `410 Gone` after the shortest delay; other errors retried
//! with [`WatchBackoff`]), each object turned into JSON and sent to the source loop. No
//! store of objects here.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, Client};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::feed::{FeedId, WatchEvent};
use super::stats::KubeStats;

/// Where an event comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A feed's watch; the number tells restarts apart (a late event of a stopped watch
    /// is dropped).
    Feed(FeedId, u64),
    /// The watch on one CRD, by name.
    Crd(String),
}

#[derive(Debug)]
pub struct Message {
    pub origin: Origin,
    pub event: WatchEvent,
}

/// What to watch and how.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    pub resource: ApiResource,
    pub config: watcher::Config,
    /// Name for logs and metrics (e.g. `Pod`, `VirtualService.networking.istio.io`).
    pub label: String,
    /// Only `metadata` is needed: list and watch as `PartialObjectMetadata` (the API server
    /// leaves out `spec` and `status`).
    pub metadata_only: bool,
    /// Watch in this namespace only (`None`: across namespaces).
    pub namespace: Option<String>,
}

type EventStream = futures::stream::BoxStream<'static, Result<Event<Value>, watcher::Error>>;

/// The watcher of `spec`, its objects as JSON.
fn events(client: Client, spec: &WatchSpec) -> EventStream {
    let resource = spec.resource.clone();
    if spec.metadata_only {
        let api: Api<PartialObjectMeta<DynamicObject>> = api(client, spec);
        watcher(api, spec.config.clone()).map_ok(move |e| json_event(e, &resource)).boxed()
    } else {
        let api: Api<DynamicObject> = api(client, spec);
        watcher(api, spec.config.clone()).map_ok(move |e| json_event(e, &resource)).boxed()
    }
}

/// The API of `spec`'s resource, in its namespace or across namespaces.
fn api<K: kube::Resource<DynamicType = ApiResource, Scope = kube::core::DynamicResourceScope>>(
    client: Client,
    spec: &WatchSpec,
) -> Api<K> {
    match &spec.namespace {
        Some(namespace) => Api::namespaced_with(client, namespace, &spec.resource),
        None => Api::all_with(client, &spec.resource),
    }
}

fn json_event<K: Serialize>(event: Event<K>, resource: &ApiResource) -> Event<Value> {
    match event {
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
        Event::InitApply(o) => Event::InitApply(to_json(o, resource)),
        Event::Apply(o) => Event::Apply(to_json(o, resource)),
        Event::Delete(o) => Event::Delete(to_json(o, resource)),
    }
}

/// Watches until the receiver goes away (or the task is aborted).
pub async fn run(client: Client, spec: WatchSpec, origin: Origin, tx: mpsc::Sender<Message>, stats: Arc<KubeStats>) {
    let mut stream = events(client, &spec);
    let mut backoff = WatchBackoff::default();
    let mut listed = false;
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(event) => {
                backoff.reset();
                event
            }
            Err(error) => {
                let expired = is_gone(&error);
                stats.count(&spec.label, |c| {
                    c.errors += 1;
                    c.expired += u64::from(expired);
                });
                tracing::warn!(resource = %spec.label, error = %error, "watch failed; retrying with backoff (served config stays)");
                if expired {
                    // The API server answered (a watch started): relist after the shortest
                    // delay, not after the backoff an outage built up (a resumed watch
                    // yields nothing, so nothing reset it).
                    backoff.reset();
                }
                tokio::time::sleep(backoff.next().unwrap_or(BACKOFF_MAX)).await;
                continue;
            }
        };
        let event = match event {
            Event::Init => {
                if listed {
                    stats.count(&spec.label, |c| c.relists += 1);
                    tracing::info!(resource = %spec.label, "relisting");
                }
                listed = true;
                WatchEvent::Init
            }
            Event::InitDone => WatchEvent::InitDone,
            Event::InitApply(o) => WatchEvent::InitApply(o),
            Event::Apply(o) => WatchEvent::Apply(o),
            Event::Delete(o) => WatchEvent::Delete(o),
        };
        stats.count(&spec.label, |c| c.events += 1);
        if tx.send(Message { origin: origin.clone(), event }).await.is_err() {
            return;
        }
    }
}

/// `410 Gone`: the watch's resource version is no longer served; the watcher relists.
fn is_gone(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::WatchError(status) if status.code == 410)
}

/// Retry delays after watch errors: 0.5 s doubling to at most 2 s (kube's default goes to
/// 30 s, for thousands of clients; meshd is a few replicas of ~15 watches, and after an
/// API-server outage it should be back within about 2 s), ±20 % jitter so
/// replicas spread out; back to the start after any event and after a `410 Gone`. (kube's
/// `StreamBackoff` resets only on events: a watch resumed after an outage yields none, so
/// the 410 that follows a restart waited another full step.)
#[derive(Clone, Debug)]
pub struct WatchBackoff {
    next: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff { next: BACKOFF_MIN }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let jitter = 0.8 + 0.4 * (f64::from(nanos % 1000) / 1000.0);
        Some(base.mul_f64(jitter))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// The object as JSON with its type set (list items come without it) and the parts
/// nobody reads dropped before they travel further.
pub fn to_json(object: impl Serialize, resource: &ApiResource) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(resource.api_version.clone()));
        map.insert("kind".into(), Value::String(resource.kind.clone()));
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
            if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
            }
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse::{parse_object, Parsed, RawObject};
    use crate::model::MeshObject;

    /// A metadata-only Namespace (as the API server sends `PartialObjectMetadata`) reads as
    /// the Namespace the parser wants.
    #[test]
    fn a_partial_namespace_parses_as_a_namespace() {
        let resource = ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "Namespace".into(),
            plural: "namespaces".into(),
        };
        let partial: PartialObjectMeta<DynamicObject> = serde_json::from_value(serde_json::json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "bookinfo", "labels": {"istio-injection": "enabled"},
                         "managedFields": [{"manager": "kubectl"}], "resourceVersion": "7"}}))
        .unwrap();
        let Event::Apply(value) = json_event(Event::Apply(partial), &resource) else { panic!("an Apply") };
        assert_eq!((value["apiVersion"].as_str(), value["kind"].as_str()), (Some("v1"), Some("Namespace")));
        assert!(value["metadata"].get("managedFields").is_none(), "{value}");
        let parsed = parse_object(&RawObject::from_value(value).unwrap()).unwrap();
        let Parsed::Object(MeshObject::Namespace(ns), warnings) = parsed else { panic!("{parsed:?}") };
        assert_eq!(ns.name, "bookinfo");
        assert_eq!(ns.labels.get("istio-injection").map(String::as_str), Some("enabled"));
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}
