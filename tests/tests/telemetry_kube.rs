//! Telemetry from the cluster: meshd on a real kube-apiserver with nothing but its
//! ServiceAccount's RBAC as shipped (manifests/install/), real Envoy sidecars (explicit mode)
//! of pods that live in the cluster. The mesh config comes from the ConfigMap `amime-mesh`
//! (access logs on, then JSON, live; a bad version reported and the last good one kept); a
//! Telemetry of Istio's group turns one workload's access log off and back on, live; a
//! Telemetry of Amime's group with a bad field is refused in its status, naming the field,
//! and stops nothing else.
//!
//! Blocks 76..=79 belong to this file. The test ends by checking that Envoy rejected no xDS
//! update and meshd counted no NACK.

use std::time::Duration;

use amime_e2e::kube::{KubeCluster, PodNetwork};
use amime_e2e::mesh::{self, hosts, APP_PORT};
use amime_e2e::meshd::{self, Meshd};
use amime_e2e::rbac::{self, MESHD_NAMESPACE, MESHD_SERVICE_ACCOUNT};
use amime_e2e::sidecar::{self, Sidecar, SidecarSpec};
use amime_e2e::{await_condition, paths, run_test, Bookinfo, IpBlock, TestContext, Upstream};
use anyhow::{ensure, Context as _, Result};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(20);
const REVIEWS: &str = Bookinfo::REVIEWS_URL;

/// The bookinfo mesh for the API server: its pods without status (the test reports them
/// ready, as a kubelet would) and the ServiceAccounts they name.
fn mesh_yaml(block: IpBlock) -> Result<String> {
    let text = mesh::bookinfo_mesh_yaml(block)?;
    let mut docs: Vec<String> = ["bookinfo-productpage", "bookinfo-reviews"]
        .iter()
        .map(|sa| format!("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {sa}\n  namespace: bookinfo\n"))
        .collect();
    docs.extend(text.split("\n---\n").map(|doc| doc.split("\nstatus:").next().unwrap_or(doc).to_owned()));
    Ok(docs.join("\n---\n") + "\n")
}

/// The ConfigMap meshd reads its mesh config from, holding `mesh`.
fn mesh_config_map(mesh: &str) -> String {
    let indented: String = mesh.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: amime-mesh\n  namespace: {MESHD_NAMESPACE}\ndata:\n  \
         mesh: |\n{indented}"
    )
}

const QUIET_PRODUCTPAGE: &str = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: quiet\n  namespace: bookinfo\nspec:\n  selector:\n    matchLabels:\n      app: productpage\n  accessLogging:\n  - disabled: true\n";
const BAD_FILTER: &str = "apiVersion: telemetry.amime.dev/v1\nkind: Telemetry\nmetadata:\n  name: bad-filter\n  namespace: bookinfo\nspec:\n  selector:\n    matchLabels:\n      app: reviews\n  accessLogging:\n  - filter:\n      expression: request.path == '/health'\n";

/// The cluster, meshd under its ServiceAccount, and two caller sidecars of pods in the
/// cluster: productpage-v1 and reviews-v2 (both call reviews).
struct Cluster {
    productpage: Sidecar,
    reviews_v2: Sidecar,
    meshd: Meshd,
    _upstreams: Vec<Upstream>,
    cluster: KubeCluster,
    _pods: PodNetwork,
}

impl Cluster {
    async fn start(ctx: &TestContext, block: IpBlock) -> Result<Cluster> {
        let pods = PodNetwork::claim(block)?;
        let cluster = KubeCluster::start(ctx, block).await?;
        // The CRDs, Istio's Telemetry CRD (the stand-in) and the install manifests but the
        // injection webhook's configuration (this meshd serves no webhook; its pods here
        // are the test's).
        let root = paths::workspace_root();
        let mut files = vec![root.join("manifests/crds"), root.join("tests/fixtures/istio-telemetry-crds.yaml")];
        files.extend(
            rbac::install_files()?.into_iter().filter(|f| !f.ends_with("60-mutatingwebhookconfiguration.yaml")),
        );
        for file in files {
            cluster.kubectl_ok(&["apply", "-f", file.to_str().context("utf-8 path")?]).await?;
        }
        cluster.kubectl_ok(&["wait", "--for=condition=established", "--timeout=30s", "crd", "--all"]).await?;
        cluster.create_namespace("bookinfo").await?;
        apply(&cluster, &mesh_yaml(block)?).await?;
        let in_cluster = [
            ("productpage-v1", hosts::PRODUCTPAGE),
            ("reviews-v1", hosts::REVIEWS_V1),
            ("reviews-v2", hosts::REVIEWS_V2),
            ("reviews-v3", hosts::REVIEWS_V3),
        ];
        for (pod, host) in in_cluster {
            cluster.make_pod_ready("bookinfo", pod, pods.ip(host).into()).await?;
        }
        let token = cluster.token_for_service_account(MESHD_NAMESPACE, MESHD_SERVICE_ACCOUNT).await?;
        let kubeconfig = cluster.kubeconfig_for_token("meshd", &token)?;
        let args = ["--namespace", MESHD_NAMESPACE, "--identity", "telemetry-kube", "--webhook-addr", "off"];
        let meshd = Meshd::start_kube(ctx, &kubeconfig, block.ip(hosts::MESHD), &args).await?;
        let mut upstreams = Vec::new();
        for (host, version) in [(hosts::REVIEWS_V1, "v1"), (hosts::REVIEWS_V2, "v2"), (hosts::REVIEWS_V3, "v3")] {
            let pod = format!("reviews-{version}");
            upstreams.push(Upstream::start((pods.ip(host), APP_PORT).into(), "reviews", version, &pod).await?);
        }
        let spec = |pod: &str, app: &str, version: &str, host: u8| {
            SidecarSpec::new(pod, "bookinfo", block.ip(host)).label("app", app).label("version", version)
        };
        let productpage =
            Sidecar::start(ctx, &spec("productpage-v1", "productpage", "v1", hosts::PRODUCTPAGE), meshd.xds_addr())
                .await?;
        let reviews_v2 =
            Sidecar::start(ctx, &spec("reviews-v2", "reviews", "v2", hosts::REVIEWS_V2), meshd.xds_addr()).await?;
        let c = Cluster { productpage, reviews_v2, meshd, _upstreams: upstreams, cluster, _pods: pods };
        for s in [&c.productpage, &c.reviews_v2] {
            await_condition("both sidecars to reach reviews", CONVERGE, || async { call(s).await.map(drop) }).await?;
        }
        Ok(c)
    }

    /// meshd's `/debug/config_errors` lines that name the mesh config's ConfigMap.
    async fn configmap_errors(&self) -> Result<Vec<String>> {
        let errors = self.meshd.config_errors().await?;
        let named = errors.into_iter().filter(|e| e.file.contains("ConfigMap amime-system/amime-mesh"));
        Ok(named.map(|e| format!("{}: {}: {}", e.file, e.field.unwrap_or_default(), e.message)).collect())
    }

    async fn check_no_nacks(&self) -> Result<()> {
        for s in [&self.productpage, &self.reviews_v2] {
            sidecar::ensure_no_rejected_updates(&s.stats().await?)?;
        }
        meshd::ensure_no_nacks(self.meshd.metric(meshd::NACKS_METRIC).await?)
    }
}

async fn apply(cluster: &KubeCluster, yaml: &str) -> Result<()> {
    let out = cluster.apply(yaml).await?;
    ensure!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// A request to reviews through `sidecar`; the request id reviews saw.
async fn call(sidecar: &Sidecar) -> Result<String> {
    let r = sidecar.request(REVIEWS, &[]).await?;
    ensure!(r.status == 200, "{}", r.summary());
    let body = r.json()?;
    Ok(body["headers"]["x-request-id"].as_str().context("reviews saw no x-request-id")?.to_owned())
}

/// `sidecar`'s access-log line for request `id` (Envoy logs to /dev/stdout), if any.
fn line_of(sidecar: &Sidecar, id: &str) -> Option<String> {
    let text = std::fs::read_to_string(sidecar.process().stdout_log()).unwrap_or_default();
    text.lines().find(|l| l.contains(id)).map(str::to_owned)
}

/// Sends requests through `sidecar` until one is logged as `want` says (`json`: a JSON line);
/// returns the line.
async fn await_logged(sidecar: &Sidecar, what: &str, json: bool) -> Result<String> {
    await_condition(what, CONVERGE, || async {
        let id = call(sidecar).await?;
        let line = line_of(sidecar, &id).with_context(|| format!("no line for {id}"))?;
        ensure!(line.starts_with('{') == json, "not the encoding asked for yet: {line}");
        Ok(line)
    })
    .await
}

/// Whether `sidecar`'s active listeners log requests (a file access logger).
async fn logs_requests(sidecar: &Sidecar) -> Result<bool> {
    Ok(sidecar.active_listeners().await?.to_string().contains("envoy.access_loggers.file"))
}

/// `resource`'s Accepted condition in bookinfo as `status|reason|message`.
async fn accepted(cluster: &KubeCluster, resource: &str) -> Result<String> {
    let path = "-o=jsonpath={.status.conditions[?(@.type==\"Accepted\")].status}|{.status.conditions[?(@.type==\"Accepted\")].reason}|{.status.conditions[?(@.type==\"Accepted\")].message}";
    cluster.kubectl_ok(&["-n", "bookinfo", "get", resource, path]).await
}

async fn await_accepted(cluster: &KubeCluster, resource: &str, want: &str) -> Result<String> {
    await_condition(&format!("{resource} to be {want}"), CONVERGE, || async {
        let got = accepted(cluster, resource).await?;
        ensure!(got.starts_with(want), "{got:?}");
        Ok(got)
    })
    .await
}

/// (a) The ConfigMap turns access logs on, then JSON, live; a bad version is reported
/// naming the ConfigMap and the field, and the last good one stays in force.
async fn mesh_config_from_the_configmap(c: &Cluster) -> Result<()> {
    let id = call(&c.productpage).await?;
    ensure!(line_of(&c.productpage, &id).is_none(), "an access-log line before any mesh config");
    apply(&c.cluster, &mesh_config_map("accessLogFile: /dev/stdout")).await?;
    let text = await_logged(&c.productpage, "productpage to log requests (ConfigMap created)", false).await?;
    ensure!(text.contains("GET") && text.contains("reviews"), "the default TEXT line: {text}");
    await_logged(&c.reviews_v2, "reviews-v2 to log requests", false).await?;

    apply(&c.cluster, &mesh_config_map("accessLogFile: /dev/stdout\naccessLogEncoding: JSON")).await?;
    let line = await_logged(&c.productpage, "JSON access-log lines (ConfigMap changed)", true).await?;
    let json: Value = serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
    ensure!(json["method"] == "GET" && json["authority"] == "reviews:9080", "{json}");

    apply(&c.cluster, &mesh_config_map("accessLogFile: /dev/stdout\naccessLogEncoding: XML")).await?;
    let errors = await_condition("the bad ConfigMap to be reported", CONVERGE, || async {
        let errors = c.configmap_errors().await?;
        ensure!(errors.iter().any(|e| e.contains("accessLogEncoding")), "{errors:?}");
        Ok(errors)
    })
    .await?;
    eprintln!("bad ConfigMap reported: {errors:?}");
    await_logged(&c.productpage, "JSON lines still (the last good mesh config)", true).await?;
    apply(&c.cluster, &mesh_config_map("accessLogFile: /dev/stdout\naccessLogEncoding: JSON")).await?;
    await_condition("the ConfigMap error to clear", CONVERGE, || async {
        let errors = c.configmap_errors().await?;
        ensure!(errors.is_empty(), "{errors:?}");
        Ok(())
    })
    .await
}

/// (c) then (b): a Telemetry with a bad field is refused naming it; an Istio-group
/// Telemetry turns productpage's access log off (reviews-v2 keeps logging) and, deleted,
/// back on.
async fn telemetry_objects(c: &Cluster) -> Result<()> {
    apply(&c.cluster, BAD_FILTER).await?;
    let status = await_accepted(&c.cluster, "telemetries.telemetry.amime.dev/bad-filter", "False|Invalid").await?;
    ensure!(status.contains("spec.accessLogging[0].filter.expression"), "the field is not named: {status}");

    apply(&c.cluster, QUIET_PRODUCTPAGE).await?;
    await_condition("productpage's listeners without an access log", CONVERGE, || async {
        ensure!(!logs_requests(&c.productpage).await?, "still logging");
        Ok(())
    })
    .await?;
    await_accepted(&c.cluster, "telemetries.telemetry.istio.io/quiet", "True|Accepted").await?;
    let quiet = call(&c.productpage).await?;
    let other = call(&c.reviews_v2).await?;
    ensure!(line_of(&c.productpage, &quiet).is_none(), "productpage logged {quiet} with logging off");
    await_condition("reviews-v2 to keep logging", CONVERGE, || async {
        line_of(&c.reviews_v2, &other).context("no line yet").map(drop)
    })
    .await?;

    c.cluster.kubectl_ok(&["-n", "bookinfo", "delete", "telemetries.telemetry.istio.io", "quiet"]).await?;
    await_logged(&c.productpage, "productpage to log again (Telemetry deleted)", true).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_logs_follow_the_configmap_and_telemetry_objects() {
    run_test("access_logs_follow_the_configmap_and_telemetry_objects", |ctx| async move {
        let c = Cluster::start(&ctx, IpBlock(76)).await?;
        mesh_config_from_the_configmap(&c).await?;
        telemetry_objects(&c).await?;
        // The ServiceAccount's RBAC as shipped was enough: the API server refused meshd nothing.
        let mut refused = Vec::new();
        for log in [c.meshd.process().stderr_log(), c.meshd.process().stdout_log()] {
            let text = std::fs::read_to_string(log).with_context(|| format!("read {}", log.display()))?;
            refused.extend(text.lines().filter(|l| l.to_lowercase().contains("forbidden")).map(str::to_owned));
        }
        ensure!(refused.is_empty(), "the API server refused meshd:\n{}", refused.join("\n"));
        c.check_no_nacks().await
    })
    .await;
}
