//! The I/O edge of the Kubernetes source: one kube-rs watcher per watched resource
//! (list, then watch; relist on `410 Gone` after the shortest delay; other errors retried
//! with [`WatchBackoff`]), each object turned into JSON and sent to the source loop. No
//! store of objects here.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, Client};
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
}

/// Watches until the receiver goes away (or the task is aborted).
pub async fn run(client: Client, spec: WatchSpec, origin: Origin, tx: mpsc::Sender<Message>, stats: Arc<KubeStats>) {
    let api: Api<DynamicObject> = Api::all_with(client, &spec.resource);
    let mut stream = watcher(api, spec.config.clone()).boxed();
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
            Event::InitApply(o) => WatchEvent::InitApply(to_json(o, &spec.resource)),
            Event::Apply(o) => WatchEvent::Apply(to_json(o, &spec.resource)),
            Event::Delete(o) => WatchEvent::Delete(to_json(o, &spec.resource)),
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

/// Retry delays after watch errors: 0.5 s doubling to at most 4 s (kube's default goes to
/// 30 s; after an API-server outage meshd should be back within seconds), ±20 % jitter so
/// replicas spread out; back to the start after any event and after a `410 Gone`. (kube's
/// `StreamBackoff` resets only on events: a watch resumed after an outage yields none, so
/// the 410 that follows a restart waited another full step, up to 4.8 s.)
#[derive(Clone, Debug)]
pub struct WatchBackoff {
    next: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(4);

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
pub fn to_json(object: DynamicObject, resource: &ApiResource) -> Value {
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
