//! Finding meshd in a cluster: list its pods through the Kubernetes API (the install
//! manifests' pod label), choose a Ready one ([`choose_pod`], pure) and dial its pod IP on
//! the gRPC port. No port-forward: that needs a kubelet on the pod's node; a pod IP this
//! machine cannot reach is an error saying how to port-forward instead.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig as KubeconfigFile};

use crate::target::Kubeconfig;

/// The namespace the install manifests put meshd in.
pub const DEFAULT_NAMESPACE: &str = "amime-system";
/// The label of meshd's pods (manifests/install/40-deployment.yaml, the template's labels).
pub const POD_SELECTOR: &str = "app.kubernetes.io/name=meshd";
/// The Deployment that owns them.
pub const DEPLOYMENT: &str = "meshd";
/// The container port name of meshd's gRPC port (ADS and the admin API).
pub const GRPC_PORT_NAME: &str = "grpc-xds";
/// The gRPC port when the pod does not name one.
pub const GRPC_PORT: u16 = 15010;

/// How long listing pods may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`choose_pod`] needs of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    /// The `Ready` condition is True.
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `status.podIP`.
    pub ip: Option<String>,
    /// The container port named [`GRPC_PORT_NAME`].
    pub grpc_port: Option<u16>,
}

impl PodView {
    pub fn of(pod: &Pod) -> PodView {
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let grpc_port = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(GRPC_PORT_NAME))
            .and_then(|p| u16::try_from(p.container_port).ok());
        PodView {
            name: pod.metadata.name.clone().unwrap_or_default(),
            ready,
            deleting: pod.metadata.deletion_timestamp.is_some(),
            ip: status.and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty()),
            grpc_port,
        }
    }
}

/// The pod meshctl dials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub pod: String,
    pub addr: SocketAddr,
}

/// The first pod (by name) that is Ready, not being deleted and has an IP; otherwise why
/// none is, one reason per pod.
pub fn choose_pod(pods: &[PodView]) -> Result<Chosen, String> {
    let mut sorted: Vec<&PodView> = pods.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut reasons = Vec::new();
    for pod in sorted {
        let reason = match (&pod.ip, pod.ready, pod.deleting) {
            (_, _, true) => "being deleted".to_owned(),
            (_, false, _) => "not Ready".to_owned(),
            (None, true, _) => "Ready but no pod IP".to_owned(),
            (Some(ip), true, false) => match ip.parse::<IpAddr>() {
                Ok(ip) => {
                    let addr = SocketAddr::new(ip, pod.grpc_port.unwrap_or(GRPC_PORT));
                    return Ok(Chosen { pod: pod.name.clone(), addr });
                }
                Err(_) => format!("pod IP {ip:?} is not an IP address"),
            },
        };
        reasons.push(format!("{} {reason}", pod.name));
    }
    if reasons.is_empty() {
        return Err("no pod".to_owned());
    }
    Err(format!("no Ready pod ({})", reasons.join(", ")))
}

/// The cluster as messages name it: `context <name> (<server>)`.
pub struct Cluster {
    pub client: kube::Client,
    pub name: String,
}

/// A client of the cluster `kubeconfig` (and `context`) points at.
pub async fn connect(kubeconfig: &Kubeconfig, context: Option<&str>) -> anyhow::Result<Cluster> {
    let what = kubeconfig.describe();
    let file = match kubeconfig {
        Kubeconfig::Flag(path) | Kubeconfig::Home(path) => {
            Some(KubeconfigFile::read_from(path).with_context(|| format!("reading {what}"))?)
        }
        Kubeconfig::Env(_) => {
            let file = KubeconfigFile::from_env().with_context(|| format!("reading {what}"))?;
            Some(file.with_context(|| format!("{what} names no file"))?)
        }
        Kubeconfig::InCluster => None,
    };
    let (mut config, context_name) = match file {
        Some(file) => {
            let name = context.map(str::to_owned).or_else(|| file.current_context.clone());
            let options = KubeConfigOptions { context: context.map(str::to_owned), ..Default::default() };
            let config = kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .with_context(|| format!("{what}{}", context.map(|c| format!(", context {c}")).unwrap_or_default()))?;
            (config, name.map(|n| format!("context {n}")).unwrap_or_else(|| "current context".to_owned()))
        }
        None => (kube::Config::incluster().context("reading the in-cluster ServiceAccount")?, "in-cluster".to_owned()),
    };
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(API_TIMEOUT);
    let name = format!("{context_name} ({})", config.cluster_url);
    let client = kube::Client::try_from(config).with_context(|| format!("a client for {name} from {what}"))?;
    Ok(Cluster { client, name })
}

/// meshd's Ready pod in `namespace` of `cluster`, or an error naming the cluster, the
/// namespace and the pods.
pub async fn find_meshd(cluster: &Cluster, namespace: &str) -> anyhow::Result<Chosen> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
    let listed = tokio::time::timeout(API_TIMEOUT, pods.list(&ListParams::default().labels(POD_SELECTOR))).await;
    let list = match listed {
        Ok(Ok(list)) => list,
        Ok(Err(e)) => bail!(
            "listing meshd's pods ({POD_SELECTOR}) in namespace {namespace} of {}: {}{LOCAL}",
            cluster.name,
            api_error(&e)
        ),
        Err(_) => {
            bail!("listing meshd's pods in namespace {namespace} of {}: no answer in {API_TIMEOUT:?}", cluster.name)
        }
    };
    let views: Vec<PodView> = list.items.iter().map(PodView::of).collect();
    choose_pod(&views).map_err(|why| {
        // A meshd that is not Ready (still syncing, or stuck) serves its admin API all the same.
        let live = views.iter().filter(|p| !p.deleting).map(|p| p.name.as_str()).min();
        let next = match live {
            Some(pod) => format!(
                "to ask one that is not Ready: `kubectl -n {namespace} port-forward pod/{pod} 15010` \
                 and --meshd 127.0.0.1:15010"
            ),
            None => {
                "is Amime installed there (--meshd-namespace NS), or is meshd elsewhere (--meshd HOST:PORT)?".to_owned()
            }
        };
        anyhow::anyhow!(
            "no meshd to talk to in namespace {namespace} of {}: {why} with label {POD_SELECTOR}; {next}",
            cluster.name
        )
    })
}

/// For a person whose kubeconfig was found while meshd runs on this machine.
const LOCAL: &str = " (for a meshd on this machine: --meshd 127.0.0.1:15010)";

/// An API error's message, or a transport error's innermost cause.
fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => format!("{other}: {}", crate::meshd::cause(other)),
    }
}

/// What to do when the chosen pod's IP cannot be reached from this machine.
pub fn port_forward_hint(namespace: &str) -> String {
    format!(
        "pod IPs are often not reachable from outside the cluster: run \
         `kubectl -n {namespace} port-forward deploy/{DEPLOYMENT} 15010` and give meshctl --meshd 127.0.0.1:15010"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool, deleting: bool, ip: Option<&str>, port: Option<u16>) -> PodView {
        PodView { name: name.into(), ready, deleting, ip: ip.map(Into::into), grpc_port: port }
    }

    #[test]
    fn a_ready_live_pod_with_an_ip_is_chosen_first_by_name() {
        let ok = |pods: &[PodView]| choose_pod(pods).map(|c| format!("{} {}", c.pod, c.addr));
        let cases: Vec<(&str, Vec<PodView>, Result<String, String>)> = vec![
            (
                "one ready pod",
                vec![pod("meshd-a", true, false, Some("10.0.0.5"), Some(15010))],
                Ok("meshd-a 10.0.0.5:15010".into()),
            ),
            (
                "the named port wins over the default",
                vec![pod("meshd-a", true, false, Some("10.0.0.5"), Some(16010))],
                Ok("meshd-a 10.0.0.5:16010".into()),
            ),
            (
                "no named port: 15010",
                vec![pod("meshd-a", true, false, Some("10.0.0.5"), None)],
                Ok("meshd-a 10.0.0.5:15010".into()),
            ),
            ("IPv6", vec![pod("meshd-a", true, false, Some("fd00::5"), None)], Ok("meshd-a [fd00::5]:15010".into())),
            (
                "skips not ready, deleting and IP-less pods",
                vec![
                    pod("meshd-d", true, false, Some("10.0.0.4"), None),
                    pod("meshd-a", false, false, Some("10.0.0.1"), None),
                    pod("meshd-b", true, true, Some("10.0.0.2"), None),
                    pod("meshd-c", true, false, None, None),
                ],
                Ok("meshd-d 10.0.0.4:15010".into()),
            ),
            (
                "first by name among ready ones",
                vec![
                    pod("meshd-z", true, false, Some("10.0.0.9"), None),
                    pod("meshd-m", true, false, Some("10.0.0.8"), None),
                ],
                Ok("meshd-m 10.0.0.8:15010".into()),
            ),
            ("no pods", vec![], Err("no pod".into())),
            (
                "none usable: each says why",
                vec![
                    pod("meshd-b", false, false, None, None),
                    pod("meshd-a", true, true, Some("10.0.0.1"), None),
                    pod("meshd-c", true, false, None, None),
                    pod("meshd-d", true, false, Some("ten"), None),
                ],
                Err("no Ready pod (meshd-a being deleted, meshd-b not Ready, meshd-c Ready but no pod IP, \
                     meshd-d pod IP \"ten\" is not an IP address)"
                    .into()),
            ),
        ];
        for (name, pods, want) in cases {
            assert_eq!(ok(&pods), want, "{name}");
        }
    }

    /// The selector, port name and Deployment name are those of the install manifests.
    #[test]
    fn constants_match_the_install_manifests() {
        let text = include_str!("../../manifests/install/40-deployment.yaml");
        let deployment: k8s_openapi::api::apps::v1::Deployment = serde_yaml::from_str(text).unwrap();
        assert_eq!(deployment.metadata.name.as_deref(), Some(DEPLOYMENT));
        assert_eq!(deployment.metadata.namespace.as_deref(), Some(DEFAULT_NAMESPACE));
        let template = deployment.spec.template;
        let (key, value) = POD_SELECTOR.split_once('=').unwrap();
        assert_eq!(template.metadata.unwrap().labels.unwrap().get(key).map(String::as_str), Some(value));
        let pod = Pod { spec: template.spec, ..Default::default() };
        assert_eq!(PodView::of(&pod).grpc_port, Some(GRPC_PORT));
    }
}
