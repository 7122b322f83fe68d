//! `meshctl analyze` and `meshctl install` against a real kube-apiserver: analyze reads the
//! cluster's routing rules (both groups), Services and Namespaces and reports what meshd
//! would, naming each object; `meshctl install --namespace other-ns | kubectl apply -f -`
//! applies without an error and puts every namespaced object and reference there.
//!
//! Every test owns one loopback block (blocks 220..=229 belong to this file).

use std::process::Output;
use std::time::Duration;

use amime_e2e::kube::KubeCluster;
use amime_e2e::{paths, run_test, IpBlock};
use anyhow::{ensure, Context as _, Result};

const MESHCTL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs meshctl; its exit status is the caller's to check.
async fn meshctl(args: &[&str]) -> Result<Output> {
    let child = tokio::process::Command::new(paths::binary("meshctl")?)
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(MESHCTL_TIMEOUT, child).await.context("meshctl did not finish")?.context("run meshctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn install(cluster: &KubeCluster, args: &[&str]) -> Result<()> {
    let out = meshctl(&[&["install"][..], args].concat()).await?;
    ensure!(out.status.success(), "meshctl install {args:?}: {}", text(&out.stderr));
    cluster.apply(&text(&out.stdout)).await.with_context(|| format!("kubectl apply of meshctl install {args:?}"))?;
    Ok(())
}

const OBJECTS: &str = "\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.amime.dev/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.amime.dev/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v3}, weight: 50}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: bookinfo}
spec:
  hosts: [productpage]
  http:
  - route:
    - destination: {host: productpage}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_reads_the_cluster_as_meshd_does() {
    run_test("meshctl-analyze-kube", |ctx| async move {
        let cluster = KubeCluster::start(&ctx, IpBlock(220)).await?;
        install(&cluster, &["--crds-only"]).await?;
        let istio = std::fs::read_to_string(paths::workspace_root().join("tests/fixtures/istio-networking-crds.yaml"))?;
        cluster.apply(&istio).await?;
        cluster.kubectl(&["wait", "--for=condition=established", "--timeout=30s", "crd", "--all"]).await?;
        cluster.create_namespace("bookinfo").await?;
        cluster.apply(OBJECTS).await?;
        let kubeconfig = cluster.kubeconfig().to_string_lossy().into_owned();

        let out = meshctl(&["analyze", "--kubeconfig", &kubeconfig]).await?;
        let stdout = text(&out.stdout);
        ensure!(out.status.code() == Some(1), "exit {:?}: {stdout}{}", out.status, text(&out.stderr));
        let want = "\
SEVERITY  OBJECT                               FIELD                                     MESSAGE
warning   VirtualService bookinfo/productpage  spec.hosts[0]                             host productpage.bookinfo.svc.cluster.local is not a known service; the rule has no effect
error     VirtualService bookinfo/reviews      metadata.name                             VirtualService bookinfo/reviews exists in both networking.istio.io/v1 and networking.amime.dev/v1; the networking.amime.dev one is used and this networking.istio.io one is ignored (rename or delete one of them)
warning   VirtualService bookinfo/reviews      spec.http[0].route[1].destination.subset  no DestinationRule defines subset \"v3\" for host reviews.bookinfo.svc.cluster.local; requests to it will fail (503)
1 error, 2 warnings in the cluster (";
        ensure!(stdout.starts_with(want), "meshctl analyze printed:\n{stdout}\nwanted (then the object count):\n{want}");

        // Only another namespace's findings: none, exit 0.
        let out = meshctl(&["analyze", "--kubeconfig", &kubeconfig, "-n", "default", "-o", "json"]).await?;
        ensure!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        ensure!(json["diagnostics"].as_array().is_some_and(Vec::is_empty), "{json}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_applies_to_another_namespace() {
    run_test("meshctl-install-kube", |ctx| async move {
        let cluster = KubeCluster::start(&ctx, IpBlock(221)).await?;
        install(&cluster, &["--namespace", "other-ns", "--image", "registry.example/meshd:dev"]).await?;
        let get = |args: &'static [&'static str]| {
            let cluster = &cluster;
            async move { Ok::<_, anyhow::Error>(text(&cluster.kubectl(args).await?.stdout)) }
        };
        let objects = get(&[
            "get",
            "-n",
            "other-ns",
            "serviceaccount/meshd",
            "deployment/meshd",
            "service/amime-meshd",
            "poddisruptionbudget/meshd",
            "role/amime-meshd-leader-election",
            "role/amime-meshd-webhook",
            "rolebinding/amime-meshd-leader-election",
            "rolebinding/amime-meshd-webhook",
            "-o",
            "name",
        ])
        .await?;
        ensure!(objects.lines().count() >= 8, "objects in other-ns:\n{objects}");
        let subjects =
            get(&["get", "clusterrolebinding", "amime-meshd", "-o", "jsonpath={.subjects[*].namespace}"]).await?;
        ensure!(subjects == "other-ns", "ClusterRoleBinding subjects in {subjects:?}");
        let webhooks = get(&[
            "get",
            "mutatingwebhookconfiguration",
            "amime-sidecar-injector",
            "-o",
            "jsonpath={.webhooks[*].clientConfig.service.namespace}",
        ])
        .await?;
        ensure!(webhooks == "other-ns other-ns", "webhook services in {webhooks:?}");
        let image = get(&[
            "get",
            "-n",
            "other-ns",
            "deployment/meshd",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .await?;
        ensure!(image == "registry.example/meshd:dev", "image {image:?}");
        // The RBAC follows: meshd's ServiceAccount in other-ns may do its namespaced work there.
        for (verb, resource) in [("create", "leases"), ("get", "secrets/amime-webhook-tls"), ("list", "services")] {
            let args = ["auth", "can-i", "--as=system:serviceaccount:other-ns:meshd", "-n", "other-ns", verb, resource];
            let answer = cluster.kubectl(&args).await.with_context(|| format!("may meshd {verb} {resource}?"))?;
            ensure!(text(&answer.stdout).trim() == "yes", "{verb} {resource}: {}", text(&answer.stdout));
        }
        let all = get(&["get", "namespaces", "-o", "name"]).await?;
        ensure!(!all.contains("amime-system"), "amime-system was created:\n{all}");
        Ok(())
    })
    .await;
}
