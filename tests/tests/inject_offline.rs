//! `meshctl inject` output against a real kube-apiserver (issue 8): the injected Pod,
//! Deployment and CronJob pass the API server's strict field validation (no unknown or
//! misspelt field in what injection adds), the Deployment's pods come back with the sidecar,
//! and injecting what the API server returns (defaults filled in) changes nothing.
//! Loopback block 233 belongs to this file.

use std::time::Duration;

use amime_e2e::kube::KubeCluster;
use amime_e2e::process::run_to_completion;
use amime_e2e::{await_condition, paths, run_test, IpBlock, TestContext};
use anyhow::{bail, ensure, Context as _, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

const NAMESPACE: &str = "shop";

const WORKLOADS: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  labels: {canary: \"y\"}
  annotations:
    traffic.amime.dev/excludeOutboundPorts: \"5432\"
spec:
  initContainers:
  - name: migrate
    image: example.invalid/migrate:1
  containers:
  - name: web
    image: example.invalid/web:1
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {port: http, path: /ready}, periodSeconds: 5}
    livenessProbe: {httpGet: {port: 8443, path: /live, scheme: HTTPS, httpHeaders: [{name: X-Probe, value: k}]}}
    env: [{name: VERBOSE, value: \"on\"}]
    volumeMounts: [{name: tls, mountPath: /tls}]
  volumes:
  # kubectl reads YAML 1.1: 0644 is octal (420), and \"on\"/\"y\" must stay strings.
  - {name: tls, secret: {secretName: web-tls, defaultMode: 0644}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: shop
spec:
  replicas: 1
  selector: {matchLabels: {app: api}}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
      - name: api
        image: example.invalid/api:1
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: report
  namespace: shop
spec:
  schedule: \"0 * * * *\"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: report
            image: example.invalid/report:1
";

async fn meshctl_inject(ctx: &TestContext, yaml: &str) -> Result<String> {
    let input = ctx.unique_path("inject-in", ".yaml");
    let output = ctx.unique_path("inject-out", ".yaml");
    std::fs::write(&input, yaml)?;
    let args =
        ["inject".to_string(), format!("--filename={}", input.display()), format!("--output={}", output.display())];
    run_to_completion(&paths::binary("meshctl")?, &args, Duration::from_secs(20)).await?;
    std::fs::read_to_string(&output).with_context(|| format!("read {}", output.display()))
}

fn init_names(pod: &Pod) -> Vec<String> {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.init_containers.as_ref())
        .map(|c| c.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_workloads_pass_api_server_validation() {
    run_test("injected_workloads_pass_api_server_validation", |ctx| async move {
        let cluster = KubeCluster::start(&ctx, IpBlock(233)).await?;
        cluster.create_namespace(NAMESPACE).await?;
        let injected = meshctl_inject(&ctx, WORKLOADS).await?;
        let file = ctx.unique_path("injected", ".yaml");
        std::fs::write(&file, &injected)?;
        // Strict field validation: any field the API does not know fails the apply.
        let out = cluster.kubectl(&["apply", "--validate=strict", "-f", &file.display().to_string()]).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!stderr.to_lowercase().contains("warning"), "the API server warned: {stderr}");

        let pods: Api<Pod> = Api::namespaced(cluster.client(), NAMESPACE);
        let web = pods.get("web-0").await?;
        ensure!(init_names(&web) == ["migrate", "amime-init", "amime-proxy"], "web-0: {:?}", init_names(&web));
        let spec = web.spec.as_ref().context("web-0 has no spec")?;
        let mode = spec.volumes.iter().flatten().find_map(|v| v.secret.as_ref()?.default_mode);
        ensure!(mode == Some(0o644), "web-0: the tls volume's defaultMode is {mode:?}, not 0644");
        let verbose = spec.containers[0].env.iter().flatten().find(|e| e.name == "VERBOSE");
        ensure!(verbose.and_then(|e| e.value.as_deref()) == Some("on"), "web-0: env VERBOSE is {verbose:?}");
        let canary = web.metadata.labels.as_ref().and_then(|l| l.get("canary"));
        ensure!(canary.map(String::as_str) == Some("y"), "web-0: label canary is {canary:?}");

        // kube-controller-manager creates the Deployment's pod from the injected template.
        let api_pod = await_condition("the api Deployment's pod", Duration::from_secs(30), || async {
            cluster.ensure_running()?;
            match pods.list(&ListParams::default().labels("app=api")).await?.items.pop() {
                Some(pod) => Ok(pod),
                None => bail!("no pod yet"),
            }
        })
        .await?;
        ensure!(init_names(&api_pod) == ["amime-init", "amime-proxy"], "api pod: {:?}", init_names(&api_pod));

        // What the API server returns (defaults filled in) is left alone.
        let out = cluster
            .kubectl(&["get", "-n", NAMESPACE, "pod/web-0", "deployment/api", "cronjob/report", "-o", "yaml"])
            .await?;
        let served = String::from_utf8(out.stdout)?;
        let again = meshctl_inject(&ctx, &served).await?;
        ensure!(again == served, "injecting served objects changed them:\n{again}");
        Ok(())
    })
    .await;
}
