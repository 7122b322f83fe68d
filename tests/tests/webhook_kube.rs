//! meshd's injection webhook behind a real kube-apiserver: the install manifests applied as
//! they ship (the MutatingWebhookConfiguration with no caBundle), meshd running with its
//! ServiceAccount's token fills the caBundle with the CA it keeps in a Secret, and the API
//! server (with `--enable-aggregator-routing`, so it dials the Service's endpoints: meshd's
//! pod address on this host) then returns pods injected exactly where the labels say; a
//! replaced configuration is repaired, with meshd stopped `failurePolicy: Fail` refuses
//! pods of meshed namespaces only, and a restarted meshd serves the same CA again.
//!
//! Blocks 241..=249 belong to the webhook tests (this file: 244, 245).

use std::time::Duration;

use amime_e2e::kube::{KubeCluster, PodNetwork};
use amime_e2e::process::ManagedProcess;
use amime_e2e::rbac::{MESHD_NAMESPACE, MESHD_SERVICE_ACCOUNT};
use amime_e2e::{await_condition, hosts, paths, run_test, IpBlock, TestContext};
use anyhow::{bail, ensure, Context as _, Result};
use control_plane::webhook::kube::{TLS_SECRET, WEBHOOK_CONFIGURATION};
use injector::conventions::{INIT_CONTAINER, PROXY_CONTAINER};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};

/// A Deployment of one `app` pod in `namespace`.
fn deployment(namespace: &str, app: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {app}\n  namespace: {namespace}\nspec:\n  replicas: 1\n  \
         selector:\n    matchLabels:\n      app: {app}\n  template:\n    metadata:\n      labels:\n        app: {app}\n    \
         spec:\n      containers:\n      - name: {app}\n        image: {app}:1\n        ports:\n        - containerPort: 9080\n"
    )
}

/// A bare Pod `name` in `namespace` with `labels` (YAML flow map).
fn bare_pod(namespace: &str, name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {labels}\nspec:\n  \
         containers:\n  - name: app\n    image: app:1\n"
    )
}

/// The init containers and containers of the pod labelled `app=<app>` in `namespace`, once
/// the ReplicaSet controller has created it.
async fn containers_of(client: &kube::Client, namespace: &str, app: &str) -> Result<Vec<String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = ListParams::default().labels(&format!("app={app}"));
    let what = format!("a pod of Deployment {namespace}/{app}");
    let pod = await_condition(&what, Duration::from_secs(30), || async {
        pods.list(&list).await?.items.into_iter().next().context("none yet")
    })
    .await?;
    Ok(names(&pod))
}

fn names(pod: &Pod) -> Vec<String> {
    let spec = pod.spec.clone().unwrap_or_default();
    spec.init_containers.iter().flatten().chain(&spec.containers).map(|c| c.name.clone()).collect()
}

fn injected(names: &[String]) -> bool {
    [INIT_CONTAINER, PROXY_CONTAINER].iter().all(|c| names.iter().any(|n| n == c))
}

/// Whether every webhook of the configuration trusts `ca` (PEM).
async fn await_bundle(client: &kube::Client, ca: &[u8], what: &str) -> Result<()> {
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    await_condition(what, Duration::from_secs(20), || async {
        let config = configs.get(WEBHOOK_CONFIGURATION).await?;
        let bundles: Vec<_> = config.webhooks.iter().flatten().map(|w| w.client_config.ca_bundle.clone()).collect();
        ensure!(bundles.len() == 2, "webhooks: {}", bundles.len());
        for bundle in bundles {
            ensure!(bundle.as_ref().map(|b| b.0.as_slice()) == Some(ca), "caBundle not meshd's CA yet");
        }
        Ok(())
    })
    .await
}

/// A cluster with the CRDs and install manifests applied, meshd's Deployment pod at the pod
/// address `.2`, and the flags of a meshd running with its ServiceAccount's token there.
async fn install(ctx: &TestContext, block: IpBlock) -> Result<(KubeCluster, PodNetwork, Vec<String>)> {
    let cluster = KubeCluster::start_with_apiserver_args(ctx, block, &["--enable-aggregator-routing=true"]).await?;
    let network = PodNetwork::claim(block)?;
    let (crds, install) = (manifests("crds"), manifests("install"));
    cluster.kubectl(&["apply", "-f", crds.to_str().unwrap(), "-f", install.to_str().unwrap()]).await?;
    amime_e2e::webhook::meshd_pod_at(&cluster, network.ip(hosts::MESHD).into()).await?;
    let token = cluster.token_for_service_account(MESHD_NAMESPACE, MESHD_SERVICE_ACCOUNT).await?;
    let kubeconfig = cluster.kubeconfig_for_token("meshd", &token)?;
    let args = [
        ("--kubeconfig", kubeconfig.display().to_string()),
        ("--namespace", MESHD_NAMESPACE.to_string()),
        ("--xds-addr", block.addr(hosts::MESHD, 15010).to_string()),
        ("--monitoring-addr", block.addr(hosts::MESHD, 15014).to_string()),
        ("--webhook-addr", network.addr(hosts::MESHD, 15017).to_string()),
    ];
    let args = args.into_iter().flat_map(|(flag, value)| [flag.to_string(), value]).collect();
    Ok((cluster, network, args))
}

fn manifests(dir: &str) -> std::path::PathBuf {
    paths::workspace_root().join("manifests").join(dir)
}

fn pods(client: &kube::Client, namespace: &str) -> Api<Pod> {
    Api::namespaced(client.clone(), namespace)
}

/// Deployments and pods in a labelled and an unlabelled namespace come back from the API
/// server injected exactly where the labels say.
async fn pods_are_injected_where_the_labels_say(cluster: &KubeCluster) -> Result<()> {
    cluster.create_namespace("meshed").await?;
    cluster.kubectl(&["label", "namespace", "meshed", "amime-injection=enabled"]).await?;
    cluster.create_namespace("plain").await?;
    for yaml in [
        deployment("meshed", "reviews"),
        deployment("plain", "ratings"),
        bare_pod("meshed", "opted-out", "{sidecar.amime.dev/inject: \"false\"}"),
        bare_pod("plain", "opted-in", "{sidecar.amime.dev/inject: \"true\"}"),
    ] {
        cluster.apply(&yaml).await?;
    }
    let client = cluster.client();
    let reviews = containers_of(&client, "meshed", "reviews").await?;
    ensure!(injected(&reviews), "the pod of a labelled namespace is not injected: {reviews:?}");
    let ratings = containers_of(&client, "plain", "ratings").await?;
    ensure!(ratings == ["ratings"], "the pod of an unlabelled namespace changed: {ratings:?}");
    let opted_out = names(&pods(&client, "meshed").get("opted-out").await?);
    ensure!(opted_out == ["app"], "a pod labelled inject=false was injected: {opted_out:?}");
    let opted_in = names(&pods(&client, "plain").get("opted-in").await?);
    ensure!(injected(&opted_in), "a pod labelled inject=true was not injected: {opted_in:?}");
    Ok(())
}

/// With meshd down, `failurePolicy: Fail` refuses pods of meshed namespaces, and only those.
async fn meshed_pods_are_refused_while_meshd_is_down(cluster: &KubeCluster) -> Result<()> {
    let refused = cluster.apply(&bare_pod("meshed", "while-down", "{app: x}")).await;
    let Err(refused) = refused else { bail!("a pod of a meshed namespace was admitted with meshd down") };
    ensure!(format!("{refused:#}").contains("failed calling webhook"), "refused for another reason: {refused:#}");
    cluster.apply(&bare_pod("plain", "while-down", "{app: x}")).await.context("a pod of an unlabelled namespace")?;
    // The control plane's and Kubernetes' own namespaces never wait for the webhook, even
    // labelled: meshd's own pods could not start without meshd (nor run with a sidecar that
    // waits for meshd's config).
    for namespace in [MESHD_NAMESPACE, "kube-system"] {
        cluster.kubectl(&["label", "namespace", namespace, "amime-injection=enabled"]).await?;
        let admitted = cluster.apply(&bare_pod(namespace, "while-down", "{app: x}")).await;
        cluster.kubectl(&["label", "namespace", namespace, "amime-injection-"]).await?;
        admitted.with_context(|| format!("a pod of {namespace} labelled amime-injection=enabled, meshd down"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_injects_pods_through_meshd() {
    run_test("the_api_server_injects_pods_through_meshd", |ctx| async move {
        let (cluster, _network, args) = install(&ctx, IpBlock(244)).await?;
        let meshd = ManagedProcess::spawn(&ctx, "meshd", &paths::binary("meshd")?, &args)?;

        // meshd keeps its CA in the Secret and writes it into both webhooks.
        let client = cluster.client();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), MESHD_NAMESPACE);
        let ca_of = || async { anyhow::Ok(secrets.get(TLS_SECRET).await?.data.and_then(|d| d.get("ca.crt").cloned())) };
        let ca = await_condition("meshd to store its webhook certificates", Duration::from_secs(20), || async {
            meshd.ensure_running()?;
            ca_of().await?.context("no ca.crt")
        })
        .await?;
        await_bundle(&client, &ca.0, "meshd to write its CA into the webhooks' caBundle").await?;

        pods_are_injected_where_the_labels_say(&cluster).await?;

        // `kubectl replace` of the manifest empties the caBundle: meshd puts it back.
        let manifest = manifests("install").join("60-mutatingwebhookconfiguration.yaml");
        cluster.kubectl(&["replace", "-f", manifest.to_str().unwrap()]).await?;
        await_bundle(&client, &ca.0, "meshd to repair the replaced webhook configuration").await?;

        drop(meshd);
        meshed_pods_are_refused_while_meshd_is_down(&cluster).await?;

        // meshd back (a restart, or another replica): the same CA from the Secret, pods admitted again.
        let _meshd = ManagedProcess::spawn(&ctx, "meshd-again", &paths::binary("meshd")?, &args)?;
        let after = await_condition("a meshed pod to be admitted again", Duration::from_secs(20), || async {
            cluster.apply(&bare_pod("meshed", "after-restart", "{app: back}")).await?;
            Ok(names(&pods(&client, "meshed").get("after-restart").await?))
        })
        .await?;
        ensure!(injected(&after), "not injected after the restart: {after:?}");
        ensure!(ca_of().await?.as_ref() == Some(&ca), "the restarted meshd changed the CA in {TLS_SECRET}");
        await_bundle(&client, &ca.0, "the caBundle to stay meshd's CA").await?;
        Ok(())
    })
    .await;
}

/// Whether meshd's webhook at `addr` serves a certificate of `ca` (PEM).
async fn serves_ca(addr: std::net::SocketAddr, ca: &[u8]) -> Result<()> {
    let response = amime_e2e::webhook::send(addr, std::str::from_utf8(ca)?, "GET", "/healthz", b"").await?;
    ensure!(response.status == 200, "{}", response.summary());
    Ok(())
}

/// The certificate Secret deleted, then a replica restarted (it stores a new CA): the replica
/// still running adopts the Secret's CA instead of patching its own back, so the caBundle
/// settles on one CA that every replica serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_converge_on_the_secret_after_it_changes() {
    run_test("replicas_converge_on_the_secret_after_it_changes", |ctx| async move {
        let block = IpBlock(245);
        let (cluster, network, args) = install(&ctx, block).await?;
        let first = ManagedProcess::spawn(&ctx, "meshd", &paths::binary("meshd")?, &args)?;
        let client = cluster.client();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), MESHD_NAMESPACE);
        let ca_of =
            || async { anyhow::Ok(secrets.get_opt(TLS_SECRET).await?.and_then(|s| s.data?.get("ca.crt").cloned())) };
        let old = await_condition("meshd to store its webhook certificates", Duration::from_secs(20), || async {
            first.ensure_running()?;
            ca_of().await?.context("no ca.crt")
        })
        .await?;
        await_bundle(&client, &old.0, "meshd to write its CA into the caBundle").await?;

        // Another replica starts after the Secret is gone: it stores a new CA and patches it in.
        cluster.kubectl(&["delete", "secret", TLS_SECRET, "-n", MESHD_NAMESPACE]).await?;
        let mut second_args = args.clone();
        for (flag, port) in [("--xds-addr", 15010), ("--monitoring-addr", 15014), ("--webhook-addr", 15017)] {
            let at = second_args.iter().position(|a| a == flag).context(flag)? + 1;
            second_args[at] = network.addr(hosts::EXTRA_1, port).to_string();
        }
        let second = ManagedProcess::spawn(&ctx, "meshd-second", &paths::binary("meshd")?, &second_args)?;
        let new = await_condition("the second meshd to store a new CA", Duration::from_secs(20), || async {
            second.ensure_running()?;
            ca_of().await?.filter(|ca| *ca != old).context("not yet")
        })
        .await?;

        // Both serve the Secret's CA, and the bundle is it.
        let (first_addr, second_addr) = (network.addr(hosts::MESHD, 15017), network.addr(hosts::EXTRA_1, 15017));
        await_condition("the first meshd to serve the new CA", Duration::from_secs(20), || {
            serves_ca(first_addr, &new.0)
        })
        .await?;
        serves_ca(second_addr, &new.0).await?;
        await_bundle(&client, &new.0, "the caBundle to be the Secret's CA").await?;
        let after = await_condition("a meshed pod to be admitted", Duration::from_secs(20), || async {
            cluster.apply(&bare_pod("default", "after-rotation", "{sidecar.amime.dev/inject: \"true\"}")).await?;
            Ok(names(&pods(&client, "default").get("after-rotation").await?))
        })
        .await?;
        ensure!(injected(&after), "not injected: {after:?}");

        // And it stays: no replica patches its own CA back (a patch storm would move it).
        let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let version = configs.get(WEBHOOK_CONFIGURATION).await?.metadata.resource_version;
        tokio::time::sleep(Duration::from_secs(3)).await; // an observation window, not a wait
        let now = configs.get(WEBHOOK_CONFIGURATION).await?.metadata.resource_version;
        ensure!(now == version, "the webhook configuration keeps changing ({version:?} -> {now:?})");
        ensure!(ca_of().await?.as_ref() == Some(&new), "the Secret's CA changed again");
        first.ensure_running()?;
        Ok(())
    })
    .await;
}
