//! The harness plays kubelet: a Node object (no heartbeats), pods bound to it through the
//! `binding` subresource, and pod status (IP, phase Running, `Ready`) set through `status`.
//!
//! kube-controller-manager's EndpointSlice controller skips pods whose `spec.nodeName` names no
//! Node, and publishes an endpoint as ready from the pod's `Ready` condition.
//!
//! Pod addresses must not be loopback (127.0.0.0/8): EndpointSlice validation rejects them, and
//! the controller then writes no endpoint of the Service at all (event `FailedToUpdateEndpointSlices`).
//! Tests that send traffic use [`super::PodNetwork`] addresses (`10.244.N.x`, local to this host).

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ::kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use ::kube::runtime::{watcher, WatchStreamExt as _};
use anyhow::{Context as _, Result};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;

/// The Node every pod is bound to.
pub const NODE_NAME: &str = "amime-node";

/// Create the Node [`NODE_NAME`] unless it exists.
pub async fn ensure_node(client: &::kube::Client) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(NODE_NAME).await.with_context(|| format!("get Node {NODE_NAME}"))?.is_some() {
        return Ok(());
    }
    let node: Node = serde_json::from_value(json!({"metadata": {"name": NODE_NAME}}))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => Ok(()),
        Err(::kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("create Node {NODE_NAME}")),
    }
}

/// Bind pod `namespace/name` to [`NODE_NAME`] (if not bound yet) and make it Running and Ready
/// with `ip` as `status.podIP`/`podIPs`.
pub async fn make_pod_ready(client: &::kube::Client, namespace: &str, name: &str, ip: IpAddr) -> Result<()> {
    ensure_node(client).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = pods.get(name).await.with_context(|| format!("get Pod {namespace}/{name}"))?;
    if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_none() {
        bind(&pods, namespace, name).await?;
    }
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(ready_status(ip)))
        .await
        .with_context(|| format!("set status of Pod {namespace}/{name} (podIP {ip}, Ready)"))?;
    Ok(())
}

async fn bind(pods: &Api<Pod>, namespace: &str, name: &str) -> Result<()> {
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME},
    });
    let _: serde_json::Value = pods
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await
        .with_context(|| format!("bind Pod {namespace}/{name} to Node {NODE_NAME}"))?;
    Ok(())
}

/// The merge patch of a Running, Ready pod with address `ip`.
pub fn ready_status(ip: IpAddr) -> serde_json::Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now});
    json!({"status": {
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "startTime": now,
        "conditions": [condition("PodScheduled"), condition("Initialized"), condition("ContainersReady"), condition("Ready")],
    }})
}

/// A background kubelet for one namespace: every pod that appears without a `status.podIP` is
/// made Ready with the next address of its list, and every pod being deleted is removed at once
/// (what a kubelet does once the containers stopped). Stops when dropped.
pub struct AutoKubelet {
    task: tokio::task::JoinHandle<()>,
    assigned: Arc<Mutex<Vec<(String, IpAddr)>>>,
}

impl AutoKubelet {
    pub fn start(client: ::kube::Client, namespace: &str, ips: Vec<IpAddr>) -> AutoKubelet {
        let assigned = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(run(client, namespace.to_string(), ips.into(), assigned.clone()));
        AutoKubelet { task, assigned }
    }

    /// `(pod name, ip)` of every pod made Ready so far, in order (a name twice when a pod was
    /// created again under the same name).
    pub fn assigned(&self) -> Vec<(String, IpAddr)> {
        self.assigned.lock().unwrap().clone()
    }
}

impl Drop for AutoKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    client: ::kube::Client,
    namespace: String,
    mut ips: VecDeque<IpAddr>,
    assigned: Arc<Mutex<Vec<(String, IpAddr)>>>,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut events = watcher(pods.clone(), watcher::Config::default()).default_backoff().boxed();
    // By uid, not name: a pod deleted and created again under its name is a new pod.
    let mut handled: HashSet<String> = HashSet::new();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
            Ok(_) => continue,
            Err(e) => {
                eprintln!("[kubelet {namespace}] watch error (retrying): {e}");
                continue;
            }
        };
        let Some(name) = pod.metadata.name.clone() else { continue };
        if pod.metadata.deletion_timestamp.is_some() {
            match pods.delete(&name, &DeleteParams::default().grace_period(0)).await {
                Ok(_) => {}
                Err(::kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => eprintln!("[kubelet {namespace}] remove deleted pod {name}: {e}"),
            }
            continue;
        }
        let has_ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).is_some_and(|ip| !ip.is_empty());
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if has_ip || handled.contains(&uid) {
            continue;
        }
        let Some(ip) = ips.pop_front() else {
            eprintln!("[kubelet {namespace}] no address left for pod {name}");
            continue;
        };
        match make_pod_ready(&client, &namespace, &name, ip).await {
            Ok(()) => {
                handled.insert(uid);
                assigned.lock().unwrap().push((name, ip));
            }
            Err(e) => {
                eprintln!("[kubelet {namespace}] {e:#}");
                ips.push_front(ip);
            }
        }
    }
}
