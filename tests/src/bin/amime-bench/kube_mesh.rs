//! `--source kube`: the synthetic mesh created through a real kube-apiserver (the harness's
//! etcd + kube-apiserver + kube-controller-manager), the harness playing kubelet.
//!
//! Same shape as the YAML of `--source dir` (names, namespaces, labels, pod IPs in
//! 10.128.0.0/9, every n-th service with a DestinationRule and a VirtualService), except that
//! cluster IPs are allocated by kube-apiserver and the EndpointSlices are written by
//! kube-controller-manager. Pods are created bound to the harness's Node and made Ready before
//! the Services exist, so the EndpointSlice controller writes each slice once.

use amime_e2e::kube::{kubelet, KubeCluster};
use amime_e2e::{IpBlock, TestContext};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::*;

/// The namespace meshd runs in (its leader-election Lease lives there).
pub(crate) const MESHD_NAMESPACE: &str = "amime-system";

/// How long each step of building the cluster took.
#[derive(Default)]
pub(crate) struct SetupTimes {
    pub(crate) cluster: f64,
    pub(crate) pods: f64,
    pub(crate) services: f64,
    pub(crate) rules: f64,
    pub(crate) slices: f64,
    pub(crate) total: f64,
}

/// The cluster with the mesh in it; its processes are stopped when this is dropped.
pub(crate) struct KubeMesh {
    pub(crate) cluster: KubeCluster,
    pub(crate) mesh: SyntheticMesh,
    pub(crate) setup: SetupTimes,
    pub(crate) rules_every: usize,
    concurrency: usize,
    _ctx: TestContext,
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "networking.amime.dev".into(),
        version: "v1".into(),
        api_version: "networking.amime.dev/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The generated CRDs of our kinds.
fn crds() -> Result<String> {
    let path = amime_e2e::paths::workspace_root().join("manifests/crds/networking.amime.dev.yaml");
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

impl KubeMesh {
    pub(crate) async fn create(args: &Args) -> Result<KubeMesh> {
        let started = Instant::now();
        let ctx = TestContext::new("amime-bench")?;
        let cluster = KubeCluster::start(&ctx, IpBlock(args.block)).await?;
        let mut setup = SetupTimes { cluster: started.elapsed().as_secs_f64(), ..Default::default() };
        let mesh = SyntheticMesh {
            dir: ctx.dir().to_path_buf(),
            namespaces: (0..args.namespaces).map(|n| format!("bench-{n:02}")).collect(),
            services: args.services,
            endpoints: args.endpoints,
            with_rules: args.services.div_ceil(args.rules_every),
        };
        let km = KubeMesh {
            cluster,
            mesh,
            setup: SetupTimes::default(),
            rules_every: args.rules_every,
            concurrency: args.create_concurrency.max(1),
            _ctx: ctx,
        };
        let out = km.cluster.apply(&crds()?).await?;
        ensure!(out.status.success(), "kubectl apply of the CRDs: {}", String::from_utf8_lossy(&out.stderr));
        let out = km.cluster.kubectl(&["wait", "--for=condition=established", "--timeout=60s", "crd", "--all"]).await?;
        ensure!(out.status.success(), "waiting for the CRDs: {}", String::from_utf8_lossy(&out.stderr));
        progress("CRDs installed (manifests/crds/networking.amime.dev.yaml)");
        for ns in km.mesh.namespaces.iter().map(String::as_str).chain([MESHD_NAMESPACE]) {
            km.cluster.create_namespace(ns).await?;
        }
        kubelet::ensure_node(&km.cluster.client()).await?;

        let step = Instant::now();
        km.create_pods().await?;
        setup.pods = step.elapsed().as_secs_f64();
        let step = Instant::now();
        km.create_services().await?;
        setup.services = step.elapsed().as_secs_f64();
        let step = Instant::now();
        km.create_rules().await?;
        setup.rules = step.elapsed().as_secs_f64();
        let step = Instant::now();
        km.wait_endpoint_slices(Duration::from_secs(args.timeout)).await?;
        setup.slices = step.elapsed().as_secs_f64();
        setup.total = started.elapsed().as_secs_f64();
        Ok(KubeMesh { setup, ..km })
    }

    pub(crate) fn pods(&self) -> usize {
        self.mesh.services * self.mesh.endpoints
    }

    fn pod_ip(&self, service: usize, replica: usize) -> std::net::IpAddr {
        ten_net(128, service * self.mesh.endpoints + replica).parse().expect("ten_net gives an IPv4 address")
    }

    /// Runs `job` for 0..n with at most `concurrency` in flight, reporting progress.
    async fn each<F, Fut>(&self, what: &str, n: usize, job: F) -> Result<()>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let started = Instant::now();
        let mut done = 0;
        let mut results = futures::stream::iter((0..n).map(job)).buffer_unordered(self.concurrency);
        while let Some(result) = results.next().await {
            result?;
            done += 1;
            if done % 1000 == 0 || done == n {
                progress(format!("{what}: {done}/{n} in {:.1} s", started.elapsed().as_secs_f64()));
            }
        }
        Ok(())
    }

    /// Every pod, bound to the harness's Node at creation (no scheduler runs) and then made
    /// Running and Ready with its 10.128/9 address through the status subresource.
    async fn create_pods(&self) -> Result<()> {
        let client = self.cluster.client();
        self.each("pods created and Ready", self.pods(), |i| {
            let (s, p) = (i / self.mesh.endpoints, i % self.mesh.endpoints);
            let (ns, name) = (self.mesh.namespace_of(s).to_owned(), SyntheticMesh::service_name(s));
            let ip = self.pod_ip(s, p);
            let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &ns);
            async move {
                let version = format!("v{}", p % 2 + 1);
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("{name}-{p}"), "labels": {"app": name, "version": version}},
                    "spec": {
                        "nodeName": kubelet::NODE_NAME,
                        "containers": [{"name": "app", "image": format!("example/app:{version}"),
                            "ports": [{"name": "http-web", "containerPort": mesh::SERVICE_PORT}]}],
                    },
                }))?;
                let pod_name = format!("{name}-{p}");
                pods.create(&PostParams::default(), &pod)
                    .await
                    .with_context(|| format!("create Pod {ns}/{pod_name}"))?;
                pods.patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(kubelet::ready_status(ip)))
                    .await
                    .with_context(|| format!("set status of Pod {ns}/{pod_name} (podIP {ip}, Ready)"))?;
                Ok(())
            }
        })
        .await
    }

    async fn create_services(&self) -> Result<()> {
        let client = self.cluster.client();
        self.each("services created", self.mesh.services, |s| {
            let (ns, name) = (self.mesh.namespace_of(s).to_owned(), SyntheticMesh::service_name(s));
            let services: kube::Api<Service> = kube::Api::namespaced(client.clone(), &ns);
            async move {
                let service: Service = serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "spec": {"selector": {"app": name},
                        "ports": [{"name": "http", "port": mesh::SERVICE_PORT, "targetPort": "http-web"}]},
                }))?;
                services
                    .create(&PostParams::default(), &service)
                    .await
                    .with_context(|| format!("create Service {ns}/{name}"))?;
                Ok(())
            }
        })
        .await
    }

    /// A DestinationRule and a VirtualService for every n-th service (as `--source dir`).
    async fn create_rules(&self) -> Result<()> {
        let client = self.cluster.client();
        let ruled: Vec<usize> = (0..self.mesh.services).step_by(self.rules_every).collect();
        self.each("DestinationRules and VirtualServices created", ruled.len(), |r| {
            let s = ruled[r];
            let client = client.clone();
            async move {
                let (dr, vs) = self.rules(s, 90);
                for (object, plural) in [(dr, "destinationrules"), (vs, "virtualservices")] {
                    let api = self.rules_api(&client, s, &object, plural);
                    api.create(&PostParams::default(), &object).await.with_context(|| {
                        format!(
                            "create {plural} {}/{}",
                            self.mesh.namespace_of(s),
                            object.metadata.name.as_deref().unwrap_or("")
                        )
                    })?;
                }
                Ok(())
            }
        })
        .await
    }

    fn rules_api(
        &self,
        client: &kube::Client,
        s: usize,
        object: &DynamicObject,
        plural: &str,
    ) -> kube::Api<DynamicObject> {
        let kind = object.types.as_ref().map_or("", |t| t.kind.as_str());
        kube::Api::namespaced_with(client.clone(), self.mesh.namespace_of(s), &resource(kind, plural))
    }

    /// The DestinationRule and VirtualService of service `s` with the given v1 weight.
    pub(crate) fn rules(&self, s: usize, v1_weight: u32) -> (DynamicObject, DynamicObject) {
        let (name, ns) = (SyntheticMesh::service_name(s), self.mesh.namespace_of(s));
        let v2_weight = 100 - v1_weight;
        let dest = |subset: &str| json!({"host": name, "subset": subset});
        let dr = json!({
            "apiVersion": "networking.amime.dev/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"host": name, "subsets": [
                {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]},
        });
        let vs = json!({
            "apiVersion": "networking.amime.dev/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"hosts": [name], "http": [
                {"name": "canary", "match": [{"headers": {"x-canary": {"exact": "true"}}}],
                 "route": [{"destination": dest("v2")}]},
                {"name": "split", "route": [
                    {"destination": dest("v1"), "weight": v1_weight},
                    {"destination": dest("v2"), "weight": v2_weight}]},
            ]},
        });
        let parse = |v| serde_json::from_value::<DynamicObject>(v).expect("a well-formed object");
        (parse(dr), parse(vs))
    }

    /// The rule change: service 0's VirtualService split becomes `v1_weight`/rest (one merge
    /// patch of its spec through kube-apiserver).
    pub(crate) async fn set_split(&self, v1_weight: u32) -> Result<()> {
        let (_, vs) = self.rules(0, v1_weight);
        let api = self.rules_api(&self.cluster.client(), 0, &vs, "virtualservices");
        let name = SyntheticMesh::service_name(0);
        api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": vs.data["spec"]})))
            .await
            .with_context(|| format!("patch VirtualService {}/{name} spec.http", self.mesh.namespace_of(0)))?;
        Ok(())
    }

    /// The endpoint change: pod 0 of service `s` turns NotReady (kube-controller-manager then
    /// marks its endpoint not ready) or Ready again.
    pub(crate) async fn set_pod_ready(&self, s: usize, ready: bool) -> Result<()> {
        let (ns, name) = (self.mesh.namespace_of(s), format!("{}-0", SyntheticMesh::service_name(s)));
        let pods: kube::Api<Pod> = kube::Api::namespaced(self.cluster.client(), ns);
        let mut status = kubelet::ready_status(self.pod_ip(s, 0));
        if !ready {
            for condition in status["status"]["conditions"].as_array_mut().into_iter().flatten() {
                if condition["type"] == "Ready" || condition["type"] == "ContainersReady" {
                    condition["status"] = json!("False");
                }
            }
        }
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .with_context(|| format!("set Pod {ns}/{name} Ready={ready}"))?;
        Ok(())
    }

    /// Ready endpoints in the EndpointSlices of the bench's Services.
    pub(crate) async fn ready_endpoints(&self) -> Result<usize> {
        let slices: kube::Api<EndpointSlice> = kube::Api::all(self.cluster.client());
        let list = slices.list(&ListParams::default().labels("kubernetes.io/service-name")).await?;
        let ready = list
            .items
            .iter()
            .filter(|s| s.metadata.namespace.as_deref().is_some_and(|ns| ns.starts_with("bench-")))
            .flat_map(|s| s.endpoints.iter().flatten())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
            .count();
        Ok(ready)
    }

    /// Waits until kube-controller-manager's EndpointSlices hold every pod as a ready endpoint.
    pub(crate) async fn wait_endpoint_slices(&self, timeout: Duration) -> Result<()> {
        let (want, started) = (self.pods(), Instant::now());
        let mut last_report = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            self.cluster.ensure_running()?;
            let ready = self.ready_endpoints().await?;
            if ready == want {
                progress(format!(
                    "EndpointSlices hold all {want} ready endpoints after {:.1} s",
                    started.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                progress(format!("EndpointSlices: {ready}/{want} ready endpoints"));
                last_report = Instant::now();
            }
            ensure!(
                started.elapsed() < timeout,
                "EndpointSlices hold {ready}/{want} ready endpoints after {timeout:?}"
            );
        }
    }
}
