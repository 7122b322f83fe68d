//! Self-test of the Kubernetes harness (`amime_e2e::kube`): two control planes start side by
//! side; kube-controller-manager turns Services + pods made Ready by the harness into
//! EndpointSlices; kube-apiserver restarts keep objects; etcd compaction makes old watches 410.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use amime_e2e::kube::{AutoKubelet, KubeCluster};
use amime_e2e::{await_condition, run_test, IpBlock, TestContext};
use anyhow::{bail, ensure, Context as _, Result};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

const SLICE_TIMEOUT: Duration = Duration::from_secs(30);

fn service(namespace: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {app}\n  namespace: {namespace}\nspec:\n  selector:\n    \
         app: {app}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n"
    )
}

fn pod(namespace: &str, name: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    app: {app}\n\
         spec:\n  containers:\n  - name: app\n    image: example.invalid/app:1\n    ports:\n    - containerPort: 8080\n"
    )
}

fn deployment(namespace: &str, app: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {app}\n  namespace: {namespace}\nspec:\n  \
         replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {app}\n  template:\n    metadata:\n      \
         labels:\n        app: {app}\n    spec:\n      containers:\n      - name: app\n        \
         image: example.invalid/app:1\n"
    )
}

/// The ready endpoint addresses of Service `namespace/service` over all its EndpointSlices.
async fn ready_addresses(cluster: &KubeCluster, namespace: &str, service: &str) -> Result<BTreeSet<String>> {
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.client(), namespace);
    let selector = format!("kubernetes.io/service-name={service}");
    let list = slices.list(&ListParams::default().labels(&selector)).await?;
    let mut ready = BTreeSet::new();
    for slice in list.items {
        for endpoint in slice.endpoints.unwrap_or_default() {
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(true) {
                ready.extend(endpoint.addresses);
            }
        }
    }
    Ok(ready)
}

async fn await_ready_addresses(cluster: &KubeCluster, namespace: &str, service: &str, want: &[IpAddr]) -> Result<()> {
    let want: BTreeSet<String> = want.iter().map(ToString::to_string).collect();
    await_condition(&format!("EndpointSlices of {namespace}/{service} = {want:?}"), SLICE_TIMEOUT, || async {
        cluster.ensure_running()?;
        let ready = ready_addresses(cluster, namespace, service).await?;
        if ready == want {
            Ok(())
        } else {
            bail!("ready addresses {ready:?}")
        }
    })
    .await
}

async fn start_timed(ctx: &TestContext, block: IpBlock) -> Result<KubeCluster> {
    let started = Instant::now();
    let cluster = KubeCluster::start(ctx, block).await?;
    println!("cluster on block {} started in {:.2?}", block.0, started.elapsed());
    Ok(cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_follow_ready_pods_and_scaling() {
    run_test("kube-endpoints", |ctx| async move {
        let block = IpBlock(161);
        let cluster = start_timed(&ctx, block).await?;
        cluster.kubectl(&["get", "--raw", "/readyz"]).await?;

        cluster.create_namespace("web").await?;
        cluster.apply(&service("web", "web")).await?;
        cluster.apply(&format!("{}---\n{}", pod("web", "web-1", "web"), pod("web", "web-2", "web"))).await?;
        let ips: Vec<IpAddr> = vec!["10.244.161.1".parse()?, "10.244.161.2".parse()?];
        cluster.make_pod_ready("web", "web-1", ips[0]).await?;
        cluster.make_pod_ready("web", "web-2", ips[1]).await?;
        await_ready_addresses(&cluster, "web", "web", &ips).await?;

        // A Deployment scaled by kube-controller-manager; the background kubelet makes its pods Ready.
        cluster.create_namespace("api").await?;
        let pool: Vec<IpAddr> = (11..=20).map(|n| format!("10.244.161.{n}").parse()).collect::<Result<_, _>>()?;
        let kubelet = cluster.auto_kubelet("api", pool);
        cluster.apply(&format!("{}---\n{}", service("api", "api"), deployment("api", "api", 2))).await?;
        await_condition("2 api pods made Ready", SLICE_TIMEOUT, || async {
            ensure!(kubelet.assigned().len() == 2, "assigned {:?}", kubelet.assigned());
            Ok(())
        })
        .await?;
        let first: Vec<IpAddr> = kubelet.assigned().iter().map(|(_, ip)| *ip).collect();
        await_ready_addresses(&cluster, "api", "api", &first).await?;
        cluster.kubectl(&["-n", "api", "scale", "deployment/api", "--replicas=3"]).await?;
        await_condition("3 api pods made Ready", SLICE_TIMEOUT, || async {
            ensure!(kubelet.assigned().len() == 3, "assigned {:?}", kubelet.assigned());
            Ok(())
        })
        .await?;
        let all: Vec<IpAddr> = kubelet.assigned().iter().map(|(_, ip)| *ip).collect();
        await_ready_addresses(&cluster, "api", "api", &all).await?;
        cluster.kubectl(&["-n", "api", "scale", "deployment/api", "--replicas=0"]).await?;
        await_ready_addresses(&cluster, "api", "api", &[]).await?;
        // The background kubelet finishes the deletion kube-controller-manager started.
        let pods: Api<Pod> = Api::namespaced(cluster.client(), "api");
        await_condition("api pods gone", SLICE_TIMEOUT, || async {
            let left = pods.list(&ListParams::default()).await?.items.len();
            ensure!(left == 0, "{left} pods left");
            Ok(())
        })
        .await?;
        pod_created_again_is_made_ready_again(&cluster, &kubelet).await
    })
    .await;
}

/// A pod deleted and created again under the same name is a new pod: the background kubelet
/// makes it Ready too.
async fn pod_created_again_is_made_ready_again(cluster: &KubeCluster, kubelet: &AutoKubelet) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "api");
    let times_ready = || kubelet.assigned().iter().filter(|(name, _)| name == "solo").count();
    for round in 1..=2 {
        cluster.apply(&pod("api", "solo", "solo")).await?;
        await_condition(&format!("pod solo made Ready (round {round})"), SLICE_TIMEOUT, || async {
            let ip = pods.get("solo").await?.status.and_then(|s| s.pod_ip);
            ensure!(times_ready() == round && ip.is_some(), "made Ready {} times, podIP {ip:?}", times_ready());
            Ok(())
        })
        .await?;
        cluster.delete(&["-n", "api", "pod", "solo"]).await?;
        await_condition("pod solo gone", SLICE_TIMEOUT, || async {
            ensure!(pods.get_opt("solo").await?.is_none(), "pod solo still there");
            Ok(())
        })
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_restart_keeps_objects_and_expires_old_watches() {
    run_test("kube-restart", |ctx| async move {
        let mut cluster = start_timed(&ctx, IpBlock(162)).await?;
        let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
        let old_version = create_and_update(&config_maps).await?;

        let stopped = Instant::now();
        cluster.stop_apiserver().await?;
        ensure!(config_maps.get("kept").await.is_err(), "kube-apiserver still answers after stop_apiserver");
        cluster.start_apiserver().await?;
        println!("kube-apiserver restarted in {:.2?}", stopped.elapsed());
        let kept = config_maps.get("kept").await.context("ConfigMap kept after the restart")?;
        ensure!(kept.data.and_then(|d| d.get("a").cloned()).as_deref() == Some("4"), "ConfigMap kept lost its data");
        // The restarted kube-apiserver has a fresh watch cache: resuming from before the restart is 410.
        let status = first_watch_status(&config_maps, &old_version).await?;
        ensure!(status == 410, "watch from resourceVersion {old_version} after a restart: status {status}, want 410");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_compaction_expires_watches_without_watch_cache() {
    run_test("kube-compact", |ctx| async move {
        let started = Instant::now();
        let cluster = KubeCluster::start_with_apiserver_args(&ctx, IpBlock(163), &["--watch-cache=false"]).await?;
        println!("cluster on block 163 (no watch cache) started in {:.2?}", started.elapsed());
        let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
        let old_version = create_and_update(&config_maps).await?;
        let status = first_watch_status(&config_maps, &old_version).await?;
        ensure!(status == 200, "watch from resourceVersion {old_version} before compaction: status {status}");
        let revision = cluster.compact_etcd().await?;
        println!("etcd compacted to revision {revision}");
        let status = first_watch_status(&config_maps, &old_version).await?;
        ensure!(status == 410, "watch from compacted resourceVersion {old_version}: status {status}, want 410");

        let metrics = cluster.apiserver_metrics().await?;
        ensure!(
            metrics.contains("apiserver_request_total{"),
            "kube-apiserver /metrics without apiserver_request_total"
        );
        service_account_tokens_carry_rbac(&cluster).await
    })
    .await;
}

/// A ServiceAccount's token (TokenRequest) authenticates as that account: no rights by default.
async fn service_account_tokens_carry_rbac(cluster: &KubeCluster) -> Result<()> {
    let sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: reader\n  namespace: default\n";
    cluster.apply(sa).await?;
    let token = cluster.token_for_service_account("default", "reader").await?;
    let kubeconfig = cluster.kubeconfig_for_token("reader", &token)?;
    let client = amime_e2e::kube::client_for(&kubeconfig).await?;
    match Api::<ConfigMap>::namespaced(client, "default").list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(()),
        other => bail!("list ConfigMaps as default/reader without a role: {other:?}, want 403"),
    }
}

/// Create ConfigMap `kept` (data a=1) and update it three times; returns the version it was
/// created at.
async fn create_and_update(config_maps: &Api<ConfigMap>) -> Result<String> {
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "kept"}, "data": {"a": "1"}}))?;
    let created = config_maps.create(&PostParams::default(), &cm).await?;
    let version = created.metadata.resource_version.context("resourceVersion of kept")?;
    for n in 2..5 {
        let patch = serde_json::json!({"data": {"a": n.to_string()}});
        config_maps.patch("kept", &Default::default(), &kube::api::Patch::Merge(patch)).await?;
    }
    Ok(version)
}

/// The HTTP status a watch from `version` ends with (200 when it delivers an object first).
async fn first_watch_status(config_maps: &Api<ConfigMap>, version: &str) -> Result<u16> {
    await_condition(&format!("a watch from resourceVersion {version}"), SLICE_TIMEOUT, || async {
        let params = WatchParams::default().timeout(5);
        let mut stream = match config_maps.watch(&params, version).await {
            Ok(stream) => stream.boxed(),
            Err(kube::Error::Api(e)) => return Ok(e.code),
            Err(e) => return Err(e.into()),
        };
        match stream.next().await {
            Some(Ok(WatchEvent::Error(e))) => Ok(e.code),
            Some(Ok(_)) => Ok(200),
            Some(Err(kube::Error::Api(e))) => Ok(e.code),
            Some(Err(e)) => Err(e.into()),
            None => bail!("watch ended without an event"),
        }
    })
    .await
}
