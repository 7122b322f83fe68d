//! Writes the `Accepted` condition ([`super::status`]) on CRD objects through their
//! `/status` subresource (a JSON merge patch), only while this replica holds the Lease,
//! and only where the object does not carry it already (compared with the status the
//! watch last delivered, so a restart writes nothing new).
//!
//! Wakes when the source's objects or the published translation change, or leadership
//! is gained; waits a moment so a burst is one pass. A write just made is not repeated
//! while the watch has not yet delivered it back ([`RECENT`]); a failed one is retried.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::model::Diagnostic;
use crate::push::Distributor;

use super::feed::FeedId;
use super::status::{self, Condition, StatusWrite};
use super::Shared;

/// A write is not repeated for this long while the watch catches up.
const RECENT: Duration = Duration::from_secs(10);
/// Changes within this window are handled in one pass.
const SETTLE: Duration = Duration::from_millis(200);
/// After a failed write, look again this much later.
const RETRY: Duration = Duration::from_secs(5);

/// (feed, namespace, name, uid): a write on an object deleted since says nothing about the
/// one created again by the same name.
type Key = (FeedId, String, String, String);

/// The `written` key of an object.
fn key_of(t: &super::feed::StatusTarget) -> Key {
    (t.feed, t.namespace.clone(), t.name.clone(), t.tracked.uid.clone())
}

/// Writes status while `leader` says so, until the task is dropped.
pub async fn run(
    client: Client,
    shared: Arc<Shared>,
    distributor: Arc<Distributor>,
    mut leader: watch::Receiver<bool>,
) {
    let mut changed = shared.status_changed.subscribe();
    let mut published = distributor.subscribe_published();
    let mut written: HashMap<Key, (Condition, Instant)> = HashMap::new();
    loop {
        if leader.wait_for(|l| *l).await.is_err() {
            return;
        }
        tokio::time::sleep(SETTLE).await;
        changed.borrow_and_update();
        published.borrow_and_update();
        let failed = pass(&client, &shared, &distributor, &leader, &mut written).await;
        let retry_at = (failed > 0).then(|| tokio::time::Instant::now() + RETRY);
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            r = published.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
            () = retry => {}
        }
    }
}

/// One pass over every CRD object; returns how many writes failed.
async fn pass(
    client: &Client,
    shared: &Shared,
    distributor: &Distributor,
    leader: &watch::Receiver<bool>,
    written: &mut HashMap<Key, (Condition, Instant)>,
) -> usize {
    let Some(mesh) = distributor.current() else {
        return 0; // nothing translated yet: translation problems unknown
    };
    let targets = crate::sync::lock(&shared.model).status_targets();
    let mut by_object: BTreeMap<(&str, &str, &str), Vec<&Diagnostic>> = BTreeMap::new();
    for p in &mesh.problems {
        if let (Some(kind), Some(ns), Some(name)) = (&p.kind, &p.namespace, &p.name) {
            by_object.entry((kind.as_str(), ns.as_str(), name.as_str())).or_default().push(p);
        }
    }
    let kinds: BTreeMap<FeedId, String> = targets.iter().map(|t| (t.feed, t.feed.kind.to_string())).collect();
    let now = now_rfc3339();
    written.retain(|_, (_, at)| at.elapsed() < RECENT);
    let recent = |t: &super::feed::StatusTarget| {
        let (condition, _) = written.get(&key_of(t))?;
        // Delivered back already: the watched one is current.
        (t.tracked.accepted.as_ref() != Some(condition)).then(|| condition.clone())
    };
    let translated = |o: &crate::model::MeshObject| mesh.model().holds(o);
    let writes = status::writes(
        &recent,
        &translated,
        targets,
        |t| {
            let kind = kinds[&t.feed].as_str();
            by_object.get(&(kind, t.namespace.as_str(), t.name.as_str())).cloned().unwrap_or_default()
        },
        &now,
    );
    let mut failed = 0;
    for write in writes {
        let key = key_of(&write.target);
        if written.get(&key).is_some_and(|(c, _)| same(c, &write.condition)) {
            continue;
        }
        if !*leader.borrow() {
            break; // the Lease is lost: the new leader writes from here on
        }
        match send(client, &write).await {
            Ok(()) => {
                shared.stats.status_writes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    resource = %write.target.feed,
                    namespace = %write.target.namespace,
                    name = %write.target.name,
                    accepted = %write.condition.status,
                    reason = %write.condition.reason,
                    "status written"
                );
                written.insert(key, (write.condition, Instant::now()));
            }
            Err(e) => {
                failed += 1;
                shared.stats.status_write_errors.fetch_add(1, Ordering::Relaxed);
                let code = match &e {
                    kube::Error::Api(status) => Some(status.code),
                    _ => None,
                };
                tracing::warn!(
                    resource = %write.target.feed,
                    namespace = %write.target.namespace,
                    name = %write.target.name,
                    field = "status.conditions",
                    error = %e,
                    hint = %failure_hint(code, write.target.feed.api_group(), &write.target.plural),
                    "cannot write status"
                );
            }
        }
    }
    failed
}

/// What a failed status write most likely means, for the log (it used to blame RBAC, with
/// a literal `<plural>`, whatever the failure).
fn failure_hint(code: Option<u16>, group: &str, plural: &str) -> String {
    match code {
        Some(403) => format!("meshd's ClusterRole needs `patch` on {plural}/status in API group {group}"),
        Some(404) => format!("the object is gone, or the {plural}.{group} CRD has no status subresource"),
        _ => format!("retried in {} s", RETRY.as_secs()),
    }
}

fn same(a: &Condition, b: &Condition) -> bool {
    (&a.status, &a.reason, &a.message, a.observed_generation)
        == (&b.status, &b.reason, &b.message, b.observed_generation)
}

async fn send(client: &Client, write: &StatusWrite) -> kube::Result<()> {
    let t = &write.target;
    let resource = kube::api::ApiResource {
        group: t.feed.api_group().to_owned(),
        version: t.version.clone(),
        api_version: format!("{}/{}", t.feed.api_group(), t.version),
        kind: t.feed.kind.to_string(),
        plural: t.plural.clone(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &t.namespace, &resource);
    let body = status::patch_body(&write.condition);
    api.patch_status(&t.name, &PatchParams::default(), &Patch::Merge(&body)).await.map(|_| ())
}

/// Now, as Kubernetes writes times (RFC 3339, seconds, UTC).
fn now_rfc3339() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::index::Index;
    use crate::source::kube::feed::{FeedId, Group, WatchEvent};
    use crate::translate::{MeshConfig, MeshSettings};

    /// `kubectl delete` then `apply` of the same rule within [`RECENT`]: the new object
    /// (another uid) gets its status although meshd wrote the same condition on the old one.
    #[tokio::test]
    async fn a_recreated_object_gets_status_although_its_predecessor_just_got_the_same() {
        let client = Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
        let shared = Shared::default();
        let feed = FeedId::new(crate::model::Kind::VirtualService, Group::Amime);
        let body = |uid: &str| {
            serde_json::json!({"apiVersion": "networking.amime.dev/v1", "kind": "VirtualService",
                "metadata": {"name": "r", "namespace": "ns", "generation": 1, "uid": uid}, "spec": {"hosts": ["r"]}})
        };
        let mut index = Index::default();
        crate::sync::lock(&shared.model).add_feed(feed, "v1", "virtualservices");
        crate::sync::lock(&shared.model).handle(feed, WatchEvent::InitApply(body("old")), &mut index);
        let distributor = Distributor::new();
        distributor.publish(Arc::new(MeshConfig::build(Arc::new(index.clone()), &MeshSettings::default())));
        let (_tx, leader) = watch::channel(true);
        // What a successful write on the old object left in `written`.
        let old = crate::sync::lock(&shared.model).status_targets().remove(0);
        let mesh = distributor.current().unwrap();
        let problems = |_: &super::super::feed::StatusTarget| {
            mesh.problems.iter().filter(|p| p.name.as_deref() == Some("r")).collect()
        };
        let wrote = status::writes(&|_| None, &|_| true, vec![old.clone()], problems, "2026-12-02T05:00:00Z");
        let mut written = HashMap::from([(key_of(&old), (wrote[0].condition.clone(), Instant::now()))]);
        assert_eq!(pass(&client, &shared, &distributor, &leader, &mut written).await, 0, "the old one carries it");
        // Deleted and created again (same spec, new uid) before the pass.
        crate::sync::lock(&shared.model).handle(feed, WatchEvent::Delete(body("old")), &mut index);
        crate::sync::lock(&shared.model).handle(feed, WatchEvent::Apply(body("new")), &mut index);
        assert_eq!(pass(&client, &shared, &distributor, &leader, &mut written).await, 1, "the new one is written");
    }

    #[test]
    fn a_failed_write_says_what_it_most_likely_means() {
        let g = "networking.istio.io";
        let cases = [
            (Some(403), "`patch` on virtualservices/status in API group networking.istio.io"),
            (Some(404), "virtualservices.networking.istio.io CRD has no status subresource"),
            (Some(500), "retried in 5 s"),
            (None, "retried in 5 s"),
        ];
        for (code, want) in cases {
            let hint = failure_hint(code, g, "virtualservices");
            assert!(hint.contains(want), "{code:?}: {hint}");
        }
    }

    /// A pass that finds leadership gone makes no more writes (the doc's "stops writing
    /// status at once"): with thousands of objects a pass outlives a lost Lease.
    #[tokio::test]
    async fn a_pass_writes_nothing_once_leadership_is_gone() {
        // Nobody listens on port 1: every write attempted fails at once and is counted.
        let client = Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
        let shared = Shared::default();
        let feed = FeedId::new(crate::model::Kind::VirtualService, Group::Amime);
        let mut index = Index::default();
        {
            let mut model = crate::sync::lock(&shared.model);
            model.add_feed(feed, "v1", "virtualservices");
            let body = serde_json::json!({"apiVersion": "networking.amime.dev/v1", "kind": "VirtualService",
                "metadata": {"name": "r", "namespace": "ns", "generation": 1}, "spec": {"hosts": ["r"]}});
            model.handle(feed, WatchEvent::InitApply(body), &mut index);
        }
        let distributor = Distributor::new();
        distributor.publish(Arc::new(MeshConfig::build(Arc::new(index), &MeshSettings::default())));
        let (tx, leader) = watch::channel(true);
        let mut written = HashMap::new();
        assert_eq!(pass(&client, &shared, &distributor, &leader, &mut written).await, 1, "the leader tries");
        tx.send(false).unwrap();
        assert_eq!(pass(&client, &shared, &distributor, &leader, &mut written).await, 0, "a follower does not");
    }
}
