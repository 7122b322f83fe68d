//! The install manifests (`manifests/install/`) against a real kube-apiserver: they pass the
//! server's validation and admission (`kubectl apply --dry-run=server`) and apply; meshd's
//! ServiceAccount may do exactly what meshd needs and nothing more (the API server's own RBAC
//! authorizer answers a table of allowed and denied requests); and meshd, running with that
//! ServiceAccount's token, syncs, serves config and writes status without one `forbidden`.
//!
//! Without a cluster: the ClusterRole grants exactly what meshd's Kubernetes source reads and
//! writes, and the Deployment keeps the hardening the issue asks for.
//!
//! Every test owns one loopback block (`127.0.N.x`, blocks 191..=199 belong to this file).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use amime_e2e::kube::{KubeCluster, PodNetwork};
use amime_e2e::mesh::APP_PORT;
use amime_e2e::process::ManagedProcess;
use amime_e2e::rbac::{self, Access, MESHD_NAMESPACE, MESHD_SERVICE_ACCOUNT, STATUS_LEASE};
use amime_e2e::{
    await_condition, hosts, paths, run_test, Bookinfo, IpBlock, Sidecar, SidecarSpec, TestContext, Upstream,
};
use anyhow::{ensure, Context as _, Result};
use control_plane::model::Kind;
use control_plane::source::kube::crd::crd_names;
use control_plane::source::kube::feed::{FeedId, CORE_FEEDS};
use control_plane::source::kube::lease::LeaseConfig;
use control_plane::webhook::kube::{TLS_SECRET, WEBHOOK_CONFIGURATION};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Probe, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};

const WATCH: &[&str] = &["list", "watch"];

/// A (group, resource, verb, resource names) meshd's ClusterRole grants.
type Grant = (String, String, String, Vec<String>);

/// The resource (plural) behind each built-in kind the source watches (its `core_spec`).
fn core_resource(feed: FeedId) -> (&'static str, &'static str) {
    match feed.kind {
        Kind::Namespace => ("", "namespaces"),
        Kind::Node => ("", "nodes"),
        Kind::Service => ("", "services"),
        Kind::Pod => ("", "pods"),
        Kind::EndpointSlice => ("discovery.k8s.io", "endpointslices"),
        Kind::Secret => ("", "secrets"),
        other => panic!("the source watches {other:?} (group {:?}): add it to the ClusterRole and here", feed.group),
    }
}

/// What meshd's Kubernetes source (control-plane/src/source/kube/) does cluster-wide, read
/// from its own lists: its watchers list and watch the built-in kinds ([`CORE_FEEDS`]) and
/// the rule kinds ([`crd_names`]), watch each rule CRD by name (a `metadata.name` field
/// selector, so RBAC can limit them by name) to learn whether it is installed, and write the
/// `Accepted` condition as a merge patch of the status subresource.
fn meshd_needs() -> BTreeSet<Grant> {
    let mut needs = BTreeSet::new();
    let mut add = |group: &str, resource: &str, verbs: &[&str], names: &[String]| {
        for verb in verbs {
            needs.insert((group.to_string(), resource.to_string(), verb.to_string(), names.to_vec()));
        }
    };
    for feed in CORE_FEEDS {
        let (group, resource) = core_resource(feed);
        add(group, resource, WATCH, &[]);
    }
    let crds = crd_names();
    let names: Vec<String> = crds.iter().map(|(name, _)| name.clone()).collect();
    add("apiextensions.k8s.io", "customresourcedefinitions", WATCH, &names);
    for (name, feed) in &crds {
        let plural = name.split('.').next().expect("a CRD name is <plural>.<group>");
        add(feed.api_group(), plural, WATCH, &[]);
        if feed.has_status() {
            add(feed.api_group(), &format!("{plural}/status"), &["patch"], &[]);
        }
    }
    // The injection webhook: a namespace not seen yet, and its configuration's caBundle.
    add("", "namespaces", &["get"], &[]);
    let webhook_configuration = [WEBHOOK_CONFIGURATION.to_string()];
    add(
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        &["list", "watch", "patch"],
        &webhook_configuration,
    );
    needs
}

#[test]
fn the_webhook_role_names_the_secret_meshd_keeps() {
    let role = rbac::meshd_webhook_role().unwrap();
    let named: Vec<_> = role.rules.iter().flatten().flat_map(|r| r.resource_names.iter().flatten()).collect();
    assert_eq!(named, [TLS_SECRET], "32-role-webhook.yaml");
    let grants: BTreeSet<_> = rbac::grants(&role.rules.unwrap()).into_iter().map(|(_, r, v, n)| (r, v, n)).collect();
    let secret = |verb: &str, names: &[&str]| {
        ("secrets".to_string(), verb.to_string(), names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
    };
    assert_eq!(
        grants,
        BTreeSet::from([secret("create", &[]), secret("get", &[TLS_SECRET]), secret("update", &[TLS_SECRET])])
    );
}

/// The mesh config's Role: get, list and watch of the one ConfigMap meshd reads by default
/// (it lists and watches it with a `metadata.name` field selector), nothing else.
#[test]
fn the_mesh_config_role_names_the_configmap_meshd_reads() {
    use control_plane::mesh_config::configmap::DEFAULT_NAME;
    let role = rbac::meshd_mesh_config_role().unwrap();
    let grants: BTreeSet<_> = rbac::grants(&role.rules.unwrap()).into_iter().collect();
    let want: BTreeSet<_> = ["get", "list", "watch"]
        .map(|verb| (String::new(), "configmaps".to_owned(), verb.to_owned(), vec![DEFAULT_NAME.to_owned()]))
        .into();
    assert_eq!(grants, want, "34-role-mesh-config.yaml");
}

#[test]
fn the_lease_role_names_the_lease_meshd_holds() {
    assert_eq!(LeaseConfig::new(MESHD_NAMESPACE, "any").name, STATUS_LEASE);
    let role = rbac::meshd_lease_role().unwrap();
    let named: Vec<_> = role.rules.iter().flatten().flat_map(|r| r.resource_names.iter().flatten()).collect();
    assert_eq!(named, [STATUS_LEASE], "30-role-leases.yaml");
}

/// Requests meshd's ServiceAccount must be allowed (`true`) or denied (`false`).
fn access_table() -> Vec<(Access, bool)> {
    let vs = Access::new("get", "networking.amime.dev", "virtualservices");
    let istio_dr = Access::new("get", "networking.istio.io", "destinationrules");
    let lease = Access::new("get", "coordination.k8s.io", "leases").namespace(MESHD_NAMESPACE);
    let pods = Access::new("get", "", "pods");
    let crds = Access::new("watch", "apiextensions.k8s.io", "customresourcedefinitions");
    let secret = Access::new("get", "", "secrets").namespace(MESHD_NAMESPACE);
    let mwc = Access::new("get", "admissionregistration.k8s.io", "mutatingwebhookconfigurations");
    vec![
        // What it watches, cluster-wide and in one namespace.
        (Access { verb: "list", ..pods }, true),
        (Access { verb: "watch", ..pods }, true),
        (Access { verb: "list", ..pods }.namespace("bookinfo"), true),
        (Access::new("watch", "", "services"), true),
        (Access::new("list", "", "namespaces"), true),
        (Access::new("watch", "", "nodes"), true),
        (Access::new("watch", "discovery.k8s.io", "endpointslices"), true),
        (Access { verb: "watch", ..vs }, true),
        (Access { verb: "list", ..istio_dr }, true),
        (Access::new("watch", "networking.istio.io", "serviceentries"), true),
        // Only the rule CRDs, by name.
        (crds.name("virtualservices.networking.amime.dev"), true),
        (Access { verb: "list", ..crds }.name("serviceentries.networking.istio.io"), true),
        (crds, false),
        (crds.name("certificates.cert-manager.io"), false),
        (Access { verb: "patch", ..crds }.name("virtualservices.networking.amime.dev"), false),
        // Status of the rules, and only status.
        (Access { verb: "patch", ..vs }.status().namespace("bookinfo").name("reviews"), true),
        (Access { verb: "patch", ..istio_dr }.status().namespace("bookinfo").name("reviews"), true),
        (Access { verb: "update", ..vs }.namespace("bookinfo").name("reviews"), false),
        (Access { verb: "patch", ..vs }.namespace("bookinfo").name("reviews"), false),
        (Access { verb: "create", ..vs }.namespace("bookinfo"), false),
        (Access { verb: "delete", ..istio_dr }.namespace("bookinfo").name("reviews"), false),
        // Its own Lease in its own namespace.
        (Access { verb: "create", ..lease }, true),
        (lease.name(STATUS_LEASE), true),
        (Access { verb: "update", ..lease }.name(STATUS_LEASE), true),
        (Access { verb: "update", ..lease }.name("kube-controller-manager"), false),
        (lease.name("other"), false),
        (Access { verb: "delete", ..lease }.name(STATUS_LEASE), false),
        (Access { verb: "list", ..lease }, false),
        (Access { verb: "create", ..lease }.namespace("default"), false),
        (Access { verb: "update", ..lease }.namespace("kube-system").name(STATUS_LEASE), false),
        // The webhook's certificate Secret, and no other.
        (secret.name(TLS_SECRET), true),
        (Access { verb: "update", ..secret }.name(TLS_SECRET), true),
        (Access { verb: "create", ..secret }, true),
        (Access { verb: "delete", ..secret }.name(TLS_SECRET), false),
        (secret.name("other"), false),
        (Access { verb: "create", ..secret }.namespace("default"), false),
        (secret.namespace("kube-system").name(TLS_SECRET), false),
        // The webhook's configuration (its caBundle), and no other; namespaces by name.
        (Access { verb: "patch", ..mwc }.name(WEBHOOK_CONFIGURATION), true),
        (Access { verb: "watch", ..mwc }.name(WEBHOOK_CONFIGURATION), true),
        (Access { verb: "patch", ..mwc }.name("istio-sidecar-injector"), false),
        (Access { verb: "delete", ..mwc }.name(WEBHOOK_CONFIGURATION), false),
        (Access { verb: "create", ..mwc }, false),
        (Access { verb: "list", ..mwc }, false),
        (Access::new("patch", "admissionregistration.k8s.io", "validatingwebhookconfigurations").name("x"), false),
        (Access::new("get", "", "namespaces").name("bookinfo"), true),
        (Access::new("patch", "", "namespaces").name("bookinfo"), false),
        // Gateway certificates: list and watch (meshd asks for type kubernetes.io/tls only;
        // RBAC cannot limit by type), never get, create or change one.
        (Access::new("list", "", "secrets"), true),
        (Access::new("watch", "", "secrets").namespace("bookinfo"), true),
        (Access::new("update", "", "secrets").namespace("bookinfo").name("bookinfo-cert"), false),
        // Nothing else: no other secrets, no writes to workloads, no way to more rights.
        (secret, false),
        (Access::new("get", "", "configmaps").namespace("bookinfo"), false),
        // The mesh config's ConfigMap, by name, in meshd's namespace only; Telemetry and its status.
        (Access::new("watch", "", "configmaps").namespace(MESHD_NAMESPACE).name("amime-mesh"), true),
        (Access::new("get", "", "configmaps").namespace(MESHD_NAMESPACE).name("other"), false),
        (Access::new("watch", "telemetry.istio.io", "telemetries"), true),
        (Access::new("patch", "telemetry.amime.dev", "telemetries").status().namespace("bookinfo").name("t"), true),
        (pods.namespace("bookinfo").name("reviews-v1"), false),
        (Access { verb: "delete", ..pods }.namespace("bookinfo").name("reviews-v1"), false),
        (Access { verb: "create", ..pods }.namespace("bookinfo"), false),
        (Access { verb: "patch", ..pods }.status().namespace("bookinfo").name("reviews-v1"), false),
        (Access::new("update", "", "services").namespace("bookinfo").name("reviews"), false),
        (Access::new("create", "", "serviceaccounts").subresource("token").namespace(MESHD_NAMESPACE), false),
        (Access::new("create", "security.amime.dev", "authorizationpolicies").namespace("bookinfo"), false),
        (Access::new("impersonate", "", "users"), false),
        (Access::new("create", "rbac.authorization.k8s.io", "clusterrolebindings"), false),
    ]
}

#[test]
fn cluster_role_grants_exactly_what_meshd_uses() {
    let role = rbac::meshd_cluster_role().unwrap();
    let mut granted = BTreeSet::new();
    for (group, resource, verb, mut names) in rbac::grants(&role.rules.unwrap_or_default()) {
        for part in [&group, &resource, &verb] {
            assert!(!part.contains('*'), "20-clusterrole.yaml: wildcard {part:?} in a rule for {resource}");
        }
        names.sort();
        granted.insert((group, resource, verb, names));
    }
    let needs: BTreeSet<Grant> = meshd_needs()
        .into_iter()
        .map(|(g, r, v, mut names)| {
            names.sort();
            (g, r, v, names)
        })
        .collect();
    let missing: Vec<_> = needs.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&needs).collect();
    assert!(missing.is_empty(), "20-clusterrole.yaml lacks what meshd uses: {missing:#?}");
    assert!(extra.is_empty(), "20-clusterrole.yaml grants what meshd does not use: {extra:#?}");
}

fn load<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = rbac::install_dir().join(name);
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn deployment_is_hardened_and_probed_on_monitoring() {
    let deployment: Deployment = load("40-deployment.yaml");
    let spec = deployment.spec;
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(MESHD_SERVICE_ACCOUNT));
    let pod_security = pod.security_context.unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.seccomp_profile.unwrap().type_, "RuntimeDefault");
    assert!(pod.affinity.unwrap().pod_anti_affinity.is_some(), "replicas are spread");
    let [meshd] = pod.containers.as_slice() else { panic!("one container") };
    let security = meshd.security_context.clone().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    // (path, container port) of an HTTP probe that names its port.
    let probe_path = |probe: Option<&Probe>| {
        let get = probe.and_then(|p| p.http_get.clone()).expect("an HTTP probe");
        let IntOrString::String(port) = get.port else { panic!("probes name their port") };
        let port = meshd.ports.iter().flatten().find(|p| p.name.as_ref() == Some(&port)).map(|p| p.container_port);
        (get.path.unwrap_or_default(), port)
    };
    assert_eq!(probe_path(meshd.liveness_probe.as_ref()), ("/healthz".into(), Some(15014)));
    assert_eq!(probe_path(meshd.readiness_probe.as_ref()), ("/readyz".into(), Some(15014)));
    let env: BTreeSet<_> =
        meshd.env.iter().flatten().filter(|e| e.value_from.is_some()).map(|e| e.name.as_str()).collect();
    assert_eq!(env, BTreeSet::from(["POD_NAME", "POD_NAMESPACE"]));
    let resources = meshd.resources.clone().unwrap();
    assert!(resources.requests.is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory")));
    assert!(resources.limits.is_some_and(|l| l.contains_key("memory")));

    let pdb: PodDisruptionBudget = load("41-poddisruptionbudget.yaml");
    assert_eq!(pdb.spec.unwrap().min_available, Some(IntOrString::Int(1)));
    let service: Service = load("50-service.yaml");
    let ports: Vec<_> =
        service.spec.unwrap().ports.unwrap().into_iter().map(|p| (p.name.unwrap_or_default(), p.port)).collect();
    let want = [("grpc-xds", 15010), ("grpc-xds-tls", 15012), ("http-monitoring", 15014), ("https-webhook", 15017)];
    assert_eq!(ports, want.map(|(n, p)| (n.to_string(), p)));
}

fn manifests(dir: &str) -> PathBuf {
    paths::workspace_root().join("manifests").join(dir)
}

/// The API server's verdict on `access` for meshd's ServiceAccount, with the groups its token
/// carries.
async fn api_server_allows(client: &kube::Client, access: &Access) -> Result<bool> {
    let user = format!("system:serviceaccount:{MESHD_NAMESPACE}:{MESHD_SERVICE_ACCOUNT}");
    let groups =
        ["system:serviceaccounts", &format!("system:serviceaccounts:{MESHD_NAMESPACE}"), "system:authenticated"];
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user),
            groups: Some(groups.iter().map(|g| g.to_string()).collect()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(access.verb.into()),
                group: Some(access.group.into()),
                resource: Some(access.resource.into()),
                subresource: Some(access.subresource.into()),
                namespace: access.namespace.map(Into::into),
                name: access.name.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = reviews.create(&PostParams::default(), &review).await.with_context(|| format!("review {access}"))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// `kubectl apply --dry-run=server` accepts the CRDs and every install manifest (once the
/// namespace exists: a dry run creates nothing, so the namespaced objects need it first), the
/// real apply of both directories works on a fresh cluster in one command, and the API
/// server's RBAC authorizer answers the access table as the manifests say.
#[tokio::test(flavor = "multi_thread")]
async fn install_manifests_apply_and_grant_exactly_the_table() {
    run_test("install_manifests_apply_and_grant_exactly_the_table", |ctx| async move {
        let cluster = KubeCluster::start(&ctx, IpBlock(191)).await?;
        let (crds, install) = (manifests("crds"), manifests("install"));
        let (crds, install) = (crds.to_str().unwrap(), install.to_str().unwrap());
        let namespace = rbac::install_dir().join("00-namespace.yaml");
        cluster.kubectl(&["apply", "-f", namespace.to_str().unwrap()]).await?;
        let dry_run = cluster.kubectl(&["apply", "--dry-run=server", "-f", crds, "-f", install]).await?;
        let dry_run = String::from_utf8_lossy(&dry_run.stdout);
        for object in [
            "serviceaccount/meshd",
            "clusterrole.rbac.authorization.k8s.io/amime-meshd",
            "clusterrolebinding.rbac.authorization.k8s.io/amime-meshd",
            "role.rbac.authorization.k8s.io/amime-meshd-leader-election",
            "rolebinding.rbac.authorization.k8s.io/amime-meshd-leader-election",
            "role.rbac.authorization.k8s.io/amime-meshd-webhook",
            "rolebinding.rbac.authorization.k8s.io/amime-meshd-webhook",
            "role.rbac.authorization.k8s.io/amime-meshd-mesh-config",
            "rolebinding.rbac.authorization.k8s.io/amime-meshd-mesh-config",
            "deployment.apps/meshd",
            "poddisruptionbudget.policy/meshd",
            "service/amime-meshd",
            "mutatingwebhookconfiguration.admissionregistration.k8s.io/amime-sidecar-injector",
            "customresourcedefinition.apiextensions.k8s.io/virtualservices.networking.amime.dev",
        ] {
            ensure!(
                dry_run.lines().any(|l| l.starts_with(object) && l.ends_with("(server dry run)")),
                "the server dry run does not list {object}:\n{dry_run}"
            );
        }
        cluster.kubectl(&["apply", "-f", crds, "-f", install]).await?;

        let client = cluster.client();
        let mut wrong = Vec::new();
        for (access, want) in access_table() {
            if api_server_allows(&client, &access).await? != want {
                wrong.push(format!("{access}: want {}", if want { "allowed" } else { "denied" }));
            }
        }
        ensure!(wrong.is_empty(), "the API server disagrees with the access table:\n{}", wrong.join("\n"));
        Ok(())
    })
    .await;
}

/// This replica's identity in the status Lease.
const IDENTITY: &str = "meshd-install-test";

/// meshd on `block` (xDS on `.2:15010`, monitoring on `.2:15014`) with `kubeconfig`, its
/// Lease in amime-system, its webhook on `webhook`; waits for `/readyz`.
async fn start_meshd(
    ctx: &TestContext,
    kubeconfig: &Path,
    block: IpBlock,
    webhook: SocketAddr,
) -> Result<(ManagedProcess, SocketAddr)> {
    let xds = block.addr(hosts::MESHD, 15010);
    let monitoring = block.addr(hosts::MESHD, 15014);
    let kubeconfig = kubeconfig.display().to_string();
    let args = [
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        MESHD_NAMESPACE,
        "--identity",
        IDENTITY,
        "--xds-addr",
        &xds.to_string(),
        "--monitoring-addr",
        &monitoring.to_string(),
        "--webhook-addr",
        &webhook.to_string(),
    ];
    let meshd = ManagedProcess::spawn(ctx, "meshd", &paths::binary("meshd")?, args)?;
    await_condition("meshd /readyz to answer 200", Duration::from_secs(30), || async {
        meshd.ensure_running()?;
        let response = amime_e2e::http::get(monitoring, "/readyz").await?;
        ensure!(response.status == 200, "/readyz: {}", response.summary());
        Ok(())
    })
    .await?;
    Ok((meshd, xds))
}

/// The `Accepted` condition of VirtualService bookinfo/reviews once it is True for the
/// object's current generation.
async fn await_accepted(client: &kube::Client) -> Result<serde_json::Value> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.amime.dev", "v1", "VirtualService"),
        "virtualservices",
    );
    let rules: Api<DynamicObject> = Api::namespaced_with(client.clone(), "bookinfo", &resource);
    await_condition("VirtualService bookinfo/reviews to be Accepted", Duration::from_secs(20), || async {
        let vs = rules.get("reviews").await?;
        let generation = vs.metadata.generation.context("no metadata.generation")?;
        let conditions = vs.data.pointer("/status/conditions").and_then(|c| c.as_array()).cloned().unwrap_or_default();
        let accepted = conditions.iter().find(|c| c["type"] == "Accepted").cloned();
        match accepted {
            Some(c) if c["status"] == "True" && c["observedGeneration"] == generation => Ok(c),
            other => anyhow::bail!("generation {generation}, Accepted condition {other:?}"),
        }
    })
    .await
}

/// Lines of meshd's logs that say the API server refused it something.
fn refusals(meshd: &ManagedProcess) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for log in [meshd.stderr_log(), meshd.stdout_log()] {
        let text = std::fs::read_to_string(log).with_context(|| format!("read {}", log.display()))?;
        let refused = |l: &&str| l.to_lowercase().contains("forbidden") || l.contains(" 403");
        lines.extend(text.lines().filter(refused).map(String::from));
    }
    Ok(lines)
}

/// meshd with nothing but its ServiceAccount's token, on a cluster set up as the README says
/// (CRDs, install manifests, the bookinfo example with its pods' status reported as a
/// kubelet would): it becomes ready, holds the status Lease, routes a real Envoy by the
/// example's rules and marks the VirtualService Accepted, and the API server refused it
/// nothing on the way: the role is enough.
#[tokio::test(flavor = "multi_thread")]
async fn meshd_runs_under_its_service_account() {
    run_test("meshd_runs_under_its_service_account", |ctx| async move {
        let block = IpBlock(192);
        // The API server dials the injection webhook at the Service's endpoints (meshd's pod).
        let cluster =
            KubeCluster::start_with_apiserver_args(&ctx, block, &["--enable-aggregator-routing=true"]).await?;
        let network = PodNetwork::claim(block)?;
        let istio_crds = paths::workspace_root().join("tests/fixtures/istio-networking-crds.yaml");
        let (crds, install) = (manifests("crds"), manifests("install"));
        for dir in [&crds, &istio_crds, &install] {
            cluster.kubectl(&["apply", "-f", dir.to_str().unwrap()]).await?;
        }
        amime_e2e::webhook::meshd_pod_at(&cluster, network.ip(hosts::MESHD).into()).await?;
        let token = cluster.token_for_service_account(MESHD_NAMESPACE, MESHD_SERVICE_ACCOUNT).await?;
        let kubeconfig = cluster.kubeconfig_for_token("meshd", &token)?;
        let (meshd, xds) = start_meshd(&ctx, &kubeconfig, block, network.addr(hosts::MESHD, 15017)).await?;

        // The example for a cluster (bookinfo-cluster/), moved into this test's addresses. Its
        // namespace enables injection: its pods go through meshd's webhook (failurePolicy
        // Fail), which serves once meshd has written its CA into the webhook configuration.
        let example = manifests("examples/bookinfo-cluster/mesh.yaml");
        let text = std::fs::read_to_string(&example).with_context(|| format!("read {}", example.display()))?;
        let mesh = ctx.dir().join("bookinfo-cluster.yaml");
        std::fs::write(&mesh, text.replace("10.244.10.", &format!("10.244.{}.", block.0)))?;
        let (mesh, rules) = (mesh.to_str().unwrap(), manifests("examples/bookinfo/reviews-rules.yaml"));
        await_condition("the example to apply, its pods admitted by the webhook", Duration::from_secs(30), || async {
            cluster.kubectl(&["apply", "-f", mesh, "-f", rules.to_str().unwrap()]).await.map(drop)
        })
        .await?;
        cluster.kubectl(&["apply", "--server-side", "--subresource=status", "-l", "app", "-f", mesh]).await?;

        let mut reviews = Vec::new();
        for (host, version) in [(hosts::REVIEWS_V1, "v1"), (hosts::REVIEWS_V2, "v2"), (hosts::REVIEWS_V3, "v3")] {
            let pod = format!("reviews-{version}");
            reviews.push(Upstream::start(network.addr(host, APP_PORT), "reviews", version, &pod).await?);
        }
        let spec = SidecarSpec::new("productpage-v1", "bookinfo", block.ip(hosts::PRODUCTPAGE))
            .label("app", "productpage")
            .label("version", "v1");
        let productpage = Sidecar::start(&ctx, &spec, xds).await?;
        let jason = [("end-user", "jason")];
        await_condition("jason's requests to reach reviews v2", Duration::from_secs(20), || async {
            meshd.ensure_running()?;
            let tally = productpage.tally(20, Bookinfo::REVIEWS_URL, &jason).await;
            ensure!(tally.all("v2"), "{tally}");
            Ok(())
        })
        .await?;
        let tally = productpage.tally(40, Bookinfo::REVIEWS_URL, &[]).await;
        ensure!(tally.get("v1") + tally.get("v3") == 40, "everyone else goes to v1 or v3: {tally}");

        let client = cluster.client();
        let accepted = await_accepted(&client).await?;
        ensure!(accepted["reason"] == "Accepted", "{accepted}");
        let leases: Api<Lease> = Api::namespaced(client.clone(), MESHD_NAMESPACE);
        let holder = leases.get(STATUS_LEASE).await?.spec.and_then(|s| s.holder_identity);
        ensure!(holder.as_deref() == Some(IDENTITY), "Lease {STATUS_LEASE} is held by {holder:?}");
        let refused = refusals(&meshd)?;
        ensure!(refused.is_empty(), "the API server refused meshd:\n{}", refused.join("\n"));
        Ok(())
    })
    .await;
}
