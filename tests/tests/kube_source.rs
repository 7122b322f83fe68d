//! meshd on a real Kubernetes API (etcd + kube-apiserver + kube-controller-manager, the harness
//! playing kubelet) routing a real Envoy: objects applied with kubectl, EndpointSlices written
//! by kube-controller-manager, status written back on the CRD objects, API-server outages.
//!
//! Loopback blocks 181..=189 belong to this file.

use std::time::{Duration, Instant};

use amime_e2e::kube::{KubeCluster, PodNetwork};
use amime_e2e::mesh::{self, APP_PORT};
use amime_e2e::rules::{reviews_vs_jason_v2_else_split, reviews_vs_split, REVIEWS_DESTINATION_RULE, REVIEWS_VS_ALL_V3};
use amime_e2e::sidecar::SidecarSpec;
use amime_e2e::{await_condition, hosts, run_test, Bookinfo, IpBlock, MeshDir, Meshd, Sidecar, TestContext, Upstream};
use anyhow::{bail, ensure, Context as _, Result};

/// A rule change must reach Envoy within this time (from `kubectl apply` returning).
const CONVERGENCE: Duration = Duration::from_secs(2);
const REVIEWS: &str = Bookinfo::REVIEWS_URL;
const JASON: &[(&str, &str)] = &[("end-user", "jason")];

/// The generated CRDs of `networking.amime.dev` (and, with `istio`, the Istio-group fixture).
fn crds(istio: bool) -> Result<String> {
    let root = amime_e2e::paths::workspace_root();
    let mut files = vec![root.join("manifests/crds/networking.amime.dev.yaml")];
    if istio {
        files.push(root.join("tests/fixtures/istio-networking-crds.yaml"));
    }
    let mut out = String::new();
    for file in files {
        out.push_str(&std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?);
        out.push_str("\n---\n");
    }
    Ok(out)
}

/// The example mesh for the API server: no pod status (the harness sets it), and the
/// ServiceAccounts the pods name.
fn mesh_yaml(block: IpBlock) -> Result<String> {
    let text = mesh::bookinfo_mesh_yaml(block)?;
    let without_status: Vec<&str> =
        text.split("\n---\n").map(|doc| doc.split("\nstatus:").next().unwrap_or(doc)).collect();
    let accounts = ["bookinfo-productpage", "bookinfo-reviews"]
        .map(|sa| format!("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {sa}\n  namespace: bookinfo\n"));
    Ok(format!("{}\n---\n{}\n", accounts.join("---\n"), without_status.join("\n---\n")))
}

const PODS: [(&str, u8); 4] = [
    ("productpage-v1", hosts::PRODUCTPAGE),
    ("reviews-v1", hosts::REVIEWS_V1),
    ("reviews-v2", hosts::REVIEWS_V2),
    ("reviews-v3", hosts::REVIEWS_V3),
];

async fn apply(cluster: &KubeCluster, yaml: &str) -> Result<Instant> {
    let out = cluster.apply(yaml).await?;
    ensure!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
    Ok(Instant::now())
}

/// The cluster with the bookinfo mesh and the reviews rules (`rules`), meshd on it, the
/// upstreams and the productpage sidecar. Drop order: bookinfo (sidecar, meshd, upstreams),
/// then the cluster.
struct KubeBookinfo {
    bookinfo: Bookinfo,
    cluster: KubeCluster,
    /// Pod addresses `10.244.<block>.x` (kube-apiserver refuses loopback ones in EndpointSlices).
    pods: PodNetwork,
}

async fn start(ctx: &TestContext, block: IpBlock, istio_crds: bool, rules: &[&str]) -> Result<KubeBookinfo> {
    start_with(ctx, block, &[], istio_crds, rules).await
}

/// [`start`] with extra kube-apiserver flags.
async fn start_with(
    ctx: &TestContext,
    block: IpBlock,
    apiserver_args: &[&str],
    istio_crds: bool,
    rules: &[&str],
) -> Result<KubeBookinfo> {
    let pods = PodNetwork::claim(block)?;
    let cluster = KubeCluster::start_with_apiserver_args(ctx, block, apiserver_args).await?;
    apply(&cluster, &crds(istio_crds)?).await?;
    cluster.kubectl_ok(&["wait", "--for=condition=established", "--timeout=30s", "crd", "--all"]).await?;
    cluster.create_namespace("bookinfo").await?;
    apply(&cluster, &mesh_yaml(block)?).await?;
    for (pod, host) in PODS {
        cluster.make_pod_ready("bookinfo", pod, pods.ip(host).into()).await?;
    }
    apply(&cluster, &rules.join("---\n")).await?;
    let args = ["--namespace", "default", "--identity", "replica-1"];
    let meshd = Meshd::start_kube(ctx, cluster.kubeconfig(), block.ip(hosts::MESHD), &args).await?;
    let mut reviews = Vec::new();
    for (host, version) in [(hosts::REVIEWS_V1, "v1"), (hosts::REVIEWS_V2, "v2"), (hosts::REVIEWS_V3, "v3")] {
        reviews.push(
            Upstream::start((pods.ip(host), APP_PORT).into(), "reviews", version, &format!("reviews-{version}"))
                .await?,
        );
    }
    let spec = SidecarSpec::new("productpage-v1", "bookinfo", block.ip(hosts::PRODUCTPAGE))
        .label("app", "productpage")
        .label("version", "v1");
    let productpage = Sidecar::start(ctx, &spec, meshd.xds_addr()).await?;
    let bookinfo = Bookinfo { productpage, meshd, reviews, dir: MeshDir::new(ctx)?, block };
    bookinfo.await_answer(REVIEWS, Duration::from_secs(20)).await?;
    Ok(KubeBookinfo { bookinfo, cluster, pods })
}

/// Wait until `n` requests without the header reach exactly the versions `want` (each at
/// least once, no other answer).
async fn await_versions(b: &Bookinfo, want: &[&str], limit: Duration) -> Result<()> {
    await_condition(&format!("requests to {REVIEWS} to reach exactly {want:?}"), limit, || async {
        let tally = b.productpage.tally(60, REVIEWS, &[]).await;
        let reached: usize = want.iter().map(|v| tally.get(v)).sum();
        ensure!(reached == tally.total && want.iter().all(|v| tally.get(v) > 0), "{tally}");
        Ok(())
    })
    .await
}

/// `kind/name`'s Accepted condition as `(status, reason, message)`.
async fn accepted(cluster: &KubeCluster, resource: &str) -> Result<(String, String, String)> {
    let jsonpath = "-o=jsonpath={.status.conditions[?(@.type==\"Accepted\")].status}|{.status.conditions[?(@.type==\"Accepted\")].reason}|{.status.conditions[?(@.type==\"Accepted\")].message}|{.status.observedGeneration}";
    let out = cluster.kubectl_ok(&["-n", "bookinfo", "get", resource, jsonpath]).await?;
    let mut parts = out.splitn(4, '|').map(str::to_owned);
    let (status, reason, message) =
        (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    Ok((status, reason, message))
}

async fn await_accepted(
    cluster: &KubeCluster,
    resource: &str,
    status: &str,
    reason: &str,
    field: &str,
) -> Result<String> {
    await_condition(
        &format!("{resource} to be Accepted={status} ({reason}, naming {field:?})"),
        Duration::from_secs(10),
        || async {
            let (s, r, m) = accepted(cluster, resource).await?;
            ensure!(s == status && r == reason && m.contains(field), "Accepted={s} reason={r} message={m:?}");
            Ok(m)
        },
    )
    .await
}

fn metric_of(text: &str, name: &str) -> f64 {
    amime_e2e::meshd::parse_metric(text, name).unwrap_or(0.0)
}

/// The resources of the bookinfo mesh whose watches see objects.
const WATCHED: [&str; 5] = [
    "Pod",
    "Service",
    "EndpointSlice.discovery.k8s.io",
    "VirtualService.networking.amime.dev",
    "DestinationRule.networking.amime.dev",
];

/// Counter `name` of each of [`WATCHED`].
fn per_resource(metrics: &str, name: &str) -> [f64; 5] {
    WATCHED.map(|r| metric_of(metrics, &format!("{name}{{resource=\"{r}\"}}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_from_the_api_server_route_envoy() {
    run_test("kube_rules_route_envoy", |ctx| async move {
        let vs = reviews_vs_jason_v2_else_split(50, 50);
        let KubeBookinfo { bookinfo: b, cluster, pods } =
            start(&ctx, IpBlock(181), false, &[REVIEWS_DESTINATION_RULE, &vs]).await?;
        // Header rule and weighted split, from objects read through the API server.
        let jason = b.productpage.tally(20, REVIEWS, JASON).await;
        ensure!(jason.all("v2"), "end-user: jason should always reach v2; got {jason}");
        let others = b.productpage.tally(400, REVIEWS, &[]).await;
        ensure!(others.get("v1") + others.get("v3") == 400, "only v1/v3 without the header; got {others}");
        others.ensure_even_split("v1", "v3")?;
        await_accepted(&cluster, "virtualservices.networking.amime.dev/reviews", "True", "Accepted", "").await?;
        await_accepted(&cluster, "destinationrules.networking.amime.dev/reviews", "True", "Accepted", "").await?;

        // A rule change converges within 2 s.
        let since = apply(&cluster, REVIEWS_VS_ALL_V3).await?;
        let took = b.await_all_to("v3", JASON, since, CONVERGENCE).await?;
        println!("rule change converged in {took:?}");

        // Deleting the VirtualService removes its routes: round robin over every endpoint.
        cluster.kubectl_ok(&["-n", "bookinfo", "delete", "virtualservices.networking.amime.dev", "reviews"]).await?;
        await_versions(&b, &["v1", "v2", "v3"], CONVERGENCE * 2).await?;

        // Scaling: a pod gone leaves the EndpointSlice (kube-controller-manager) and the proxy.
        let since = Instant::now();
        cluster.kubectl_ok(&["-n", "bookinfo", "delete", "pod", "reviews-v2", "--grace-period=0", "--force"]).await?;
        await_versions(&b, &["v1", "v3"], Duration::from_secs(10)).await?;
        println!("pod removal reached Envoy in {:?}", since.elapsed());
        let pod = mesh_yaml(b.block)?
            .split("\n---\n")
            .find(|d| d.contains("name: reviews-v2"))
            .context("reviews-v2 in the mesh")?
            .to_owned();
        apply(&cluster, &pod).await?;
        cluster.make_pod_ready("bookinfo", "reviews-v2", pods.ip(hosts::REVIEWS_V2).into()).await?;
        await_versions(&b, &["v1", "v2", "v3"], Duration::from_secs(10)).await?;

        let metrics = b.meshd.metrics().await?;
        println!(
            "translations {} , pod events {}",
            metric_of(&metrics, "amime_translations_total"),
            metric_of(&metrics, "amime_kube_watch_events_total{resource=\"Pod\"}")
        );
        b.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_virtual_service_is_refused_in_its_status_and_the_rest_keeps_working() {
    run_test("kube_invalid_vs_status", |ctx| async move {
        let vs = reviews_vs_jason_v2_else_split(50, 50);
        let KubeBookinfo { bookinfo: b, cluster, pods: _pods } =
            start(&ctx, IpBlock(182), false, &[REVIEWS_DESTINATION_RULE, &vs]).await?;
        await_accepted(&cluster, "virtualservices.networking.amime.dev/reviews", "True", "Accepted", "").await?;
        // Invalid: a negative weight (the CRD schema lets it through; meshd must not).
        apply(&cluster, &reviews_vs_split(-5, 105)).await?;
        let message = await_accepted(
            &cluster,
            "virtualservices.networking.amime.dev/reviews",
            "False",
            "Invalid",
            "spec.http[0].route[0].weight",
        )
        .await?;
        println!("Accepted=False: {message}");
        // The last good version stays in force; the DestinationRule is still accepted.
        let jason = b.productpage.tally(20, REVIEWS, JASON).await;
        ensure!(jason.all("v2"), "the last good rule should still send jason to v2; got {jason}");
        await_accepted(&cluster, "destinationrules.networking.amime.dev/reviews", "True", "Accepted", "").await?;
        let errors = b.meshd.config_errors().await?;
        ensure!(
            errors.iter().any(|e| e.kind.as_deref() == Some("VirtualService")
                && e.field.as_deref() == Some("spec.http[0].route[0].weight")
                && e.file.is_empty()),
            "/debug/config_errors should name the object and field: {errors:?}"
        );
        // Fixed: accepted again, routed by it.
        let since = apply(&cluster, REVIEWS_VS_ALL_V3).await?;
        b.await_all_to("v3", JASON, since, CONVERGENCE).await?;
        await_accepted(&cluster, "virtualservices.networking.amime.dev/reviews", "True", "Accepted", "").await?;
        let metrics = b.meshd.metrics().await?;
        let writes = metric_of(&metrics, "amime_kube_status_writes_total");
        ensure!(writes >= 3.0 && metric_of(&metrics, "amime_kube_leader") == 1.0, "status writes: {writes}");
        // A second replica serves xDS, but only the Lease holder writes status: it writes
        // nothing (and, had it the Lease, nothing either: every object carries its verdict).
        let args = ["--namespace", "default", "--identity", "replica-2"];
        let second = Meshd::start_kube(&ctx, cluster.kubeconfig(), b.block.ip(hosts::EXTRA_1), &args).await?;
        let metrics = second.metrics().await?;
        ensure!(metric_of(&metrics, "amime_kube_leader") == 0.0, "the second replica must not hold the Lease");
        ensure!(metric_of(&metrics, "amime_kube_status_writes_total") == 0.0, "the second replica wrote status");
        let proxies = metric_of(&metrics, "amime_ready");
        ensure!(proxies == 1.0, "the second replica should be ready to serve xDS");
        b.check_no_nacks().await?;
        // The leader stopping (a rollout) hands the Lease over: the second replica leads
        // at its next try (2 s), not once the 15 s lease has expired.
        b.meshd.signal_and_wait("TERM", Duration::from_secs(5)).await?;
        let stopped = Instant::now();
        await_condition("the second replica to take the status Lease", Duration::from_secs(6), || async {
            let leader = metric_of(&second.metrics().await?, "amime_kube_leader");
            ensure!(leader == 1.0, "amime_kube_leader {leader}");
            Ok(())
        })
        .await?;
        println!("the second replica led {:?} after the first stopped", stopped.elapsed());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_istio_group_virtual_service_routes_the_same() {
    run_test("kube_istio_group", |ctx| async move {
        let to_istio = |yaml: &str| yaml.replace("networking.amime.dev/v1", "networking.istio.io/v1");
        let (dr, vs) = (to_istio(REVIEWS_DESTINATION_RULE), to_istio(&reviews_vs_jason_v2_else_split(50, 50)));
        let KubeBookinfo { bookinfo: b, cluster, pods: _pods } = start(&ctx, IpBlock(183), true, &[&dr, &vs]).await?;
        let jason = b.productpage.tally(20, REVIEWS, JASON).await;
        ensure!(jason.all("v2"), "end-user: jason should always reach v2; got {jason}");
        await_accepted(&cluster, "virtualservices.networking.istio.io/reviews", "True", "Accepted", "").await?;
        // The same name in networking.amime.dev wins; the Istio one is told so.
        let since = apply(&cluster, REVIEWS_VS_ALL_V3).await?;
        b.await_all_to("v3", JASON, since, CONVERGENCE).await?;
        await_accepted(
            &cluster,
            "virtualservices.networking.istio.io/reviews",
            "False",
            "Conflict",
            "networking.amime.dev",
        )
        .await?;
        // Gone from the amime group: the Istio one is back in force.
        cluster.kubectl_ok(&["-n", "bookinfo", "delete", "virtualservices.networking.amime.dev", "reviews"]).await?;
        b.await_all_to("v2", JASON, Instant::now(), CONVERGENCE).await?;
        // The Istio CRD deleted: its watch stops and its objects leave the mesh (no rule left:
        // round robin over every endpoint, for jason too).
        cluster.kubectl_ok(&["delete", "crd", "virtualservices.networking.istio.io"]).await?;
        await_condition("jason to reach every version once the rule is gone", Duration::from_secs(10), || async {
            let tally = b.productpage.tally(60, REVIEWS, JASON).await;
            ensure!(["v1", "v2", "v3"].iter().map(|v| tally.get(v)).all(|n| n > 0), "{tally}");
            Ok(())
        })
        .await?;
        b.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_outage_loses_no_request_and_the_relist_pushes_nothing() {
    run_test("kube_apiserver_outage", |ctx| async move {
        let vs = reviews_vs_jason_v2_else_split(50, 50);
        let KubeBookinfo { bookinfo: b, mut cluster, pods: _pods } =
            start(&ctx, IpBlock(184), false, &[REVIEWS_DESTINATION_RULE, &vs]).await?;
        await_accepted(&cluster, "virtualservices.networking.amime.dev/reviews", "True", "Accepted", "").await?;
        settled(&b, &cluster).await?;
        let before = b.meshd.metrics().await?;
        let translations = metric_of(&before, "amime_translations_total");

        cluster.stop_apiserver().await?;
        let down = Instant::now();
        let mut requests = 0;
        while down.elapsed() < Duration::from_secs(10) {
            let tally = b.productpage.tally(10, REVIEWS, JASON).await;
            ensure!(tally.all("v2"), "during the outage every request should still be routed; got {tally}");
            requests += tally.total;
        }
        let errors = metric_of(&b.meshd.metrics().await?, "amime_kube_watch_errors_total{resource=\"Pod\"}");
        println!("{requests} requests during a 10 s outage, none lost; Pod watch errors {errors}");
        cluster.start_apiserver().await?;
        let up = Instant::now();
        // The restarted kube-apiserver has a fresh watch cache: resuming is 410, so meshd relists.
        await_relists(&b, &cluster, &before, true).await?;
        println!("relisted {:?} after kube-apiserver came back", up.elapsed());
        let after = metric_of(&b.meshd.metrics().await?, "amime_translations_total");
        ensure!(after == translations, "a relist that finds nothing new must not translate: {translations} → {after}");
        // Changes after the return converge.
        let since = apply(&cluster, REVIEWS_VS_ALL_V3).await?;
        let took = b.await_all_to("v3", JASON, since, Duration::from_secs(15)).await?;
        println!("first change after the outage converged in {took:?}");
        if took > CONVERGENCE {
            bail!("change after the outage took {took:?}");
        }
        b.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_pod_changes_is_translated_a_few_times_not_once_per_event() {
    run_test("kube_pod_burst", |ctx| async move {
        let vs = reviews_vs_jason_v2_else_split(50, 50);
        let KubeBookinfo { bookinfo: b, cluster, pods: _pods } =
            start(&ctx, IpBlock(185), false, &[REVIEWS_DESTINATION_RULE, &vs]).await?;
        let pod_events = "amime_kube_watch_events_total{resource=\"Pod\"}";
        let before = b.meshd.metrics().await?;
        let (translations, events) = (metric_of(&before, "amime_translations_total"), metric_of(&before, pod_events));
        const N: usize = 300;
        let items: Vec<serde_json::Value> = (0..N)
            .map(|i| {
                serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("burst-{i}"), "namespace": "bookinfo", "labels": {"app": "burst"}},
                    "spec": {"containers": [{"name": "c", "image": "example/burst"}]}})
            })
            .collect();
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
        let started = Instant::now();
        apply(&cluster, &list).await?;
        println!("{N} pods created in {:?}", started.elapsed());
        await_condition(&format!("meshd to see {N} more Pod events"), Duration::from_secs(20), || async {
            let seen = metric_of(&b.meshd.metrics().await?, pod_events) - events;
            ensure!(seen >= N as f64, "{seen} Pod events");
            Ok(())
        })
        .await?;
        // Let the last debounce window close, then count.
        await_condition("the push loop to settle", Duration::from_secs(5), || async {
            let m = b.meshd.metrics().await?;
            let last = metric_of(&m, "amime_last_publish_timestamp_seconds");
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
            ensure!(now - last > 1.5, "published {:.1}s ago", now - last);
            Ok(())
        })
        .await?;
        let after = metric_of(&b.meshd.metrics().await?, "amime_translations_total") - translations;
        println!("{N} pod events → {after} translations");
        ensure!(after <= 8.0, "{N} pod events caused {after} translations: the burst was not coalesced");
        b.check_no_nacks().await
    })
    .await;
}

/// The objects each of [`WATCHED`] lists (with meshd's selectors).
async fn listed_objects(cluster: &KubeCluster) -> Result<[f64; 5]> {
    let lists: [&[&str]; 5] = [
        &["pods", "--field-selector=status.phase!=Succeeded,status.phase!=Failed"],
        &["services"],
        &["endpointslices.discovery.k8s.io", "-l", "kubernetes.io/service-name"],
        &["virtualservices.networking.amime.dev"],
        &["destinationrules.networking.amime.dev"],
    ];
    let mut counts = [0.0; 5];
    for (count, args) in counts.iter_mut().zip(lists) {
        let out = cluster.kubectl_ok(&[&["get", "-A", "-o", "name"], args].concat()).await?;
        *count = out.lines().filter(|l| !l.is_empty()).count() as f64;
    }
    Ok(counts)
}

/// Wait until kube-controller-manager wrote the EndpointSlices of productpage and reviews
/// (it can be slower than meshd's first sync; slices arriving during an outage would be a
/// real change, rightly pushed) and meshd's push for them is done, so that translations
/// counted from now on are caused by what the test does.
async fn settled(b: &Bookinfo, cluster: &KubeCluster) -> Result<()> {
    let addresses = r#"-o=jsonpath={range .items[*]}{range .endpoints[*]}{.addresses[0]}{"\n"}{end}{end}"#;
    await_condition("the EndpointSlices to hold the 4 pods", Duration::from_secs(30), || async {
        let out = cluster.kubectl_ok(&["-n", "bookinfo", "get", "endpointslices", addresses]).await?;
        ensure!(out.lines().filter(|l| !l.is_empty()).count() == PODS.len(), "EndpointSlice addresses: {out:?}");
        Ok(())
    })
    .await?;
    // No translation for 1.5 s (the debounce is at most 1 s).
    let last = std::sync::Mutex::new((-1.0, Instant::now()));
    await_condition("the push loop to settle", Duration::from_secs(10), || async {
        let now = metric_of(&b.meshd.metrics().await?, "amime_translations_total");
        let mut last = last.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        if last.0 != now {
            *last = (now, Instant::now());
        }
        ensure!(last.1.elapsed() > Duration::from_millis(1500), "translated {:?} ago", last.1.elapsed());
        Ok(())
    })
    .await
}

/// Wait until every one of [`WATCHED`] relisted completely since `before` (metrics then):
/// Init, one event per object listed, InitDone. With `expired`, each relist must follow a 410.
async fn await_relists(b: &Bookinfo, cluster: &KubeCluster, before: &str, expired: bool) -> Result<()> {
    let (relists, gone, events) = (
        per_resource(before, "amime_kube_relists_total"),
        per_resource(before, "amime_kube_watch_expired_total"),
        per_resource(before, "amime_kube_watch_events_total"),
    );
    let listed = listed_objects(cluster).await?;
    await_condition("meshd to relist every watched resource", Duration::from_secs(30), || async {
        let m = b.meshd.metrics().await?;
        let (r, x, e) = (
            per_resource(&m, "amime_kube_relists_total"),
            per_resource(&m, "amime_kube_watch_expired_total"),
            per_resource(&m, "amime_kube_watch_events_total"),
        );
        for i in 0..WATCHED.len() {
            ensure!(!expired || x[i] > gone[i], "{}: no 410 yet ({} → {})", WATCHED[i], gone[i], x[i]);
            ensure!(r[i] > relists[i], "{}: no relist yet", WATCHED[i]);
            let want = events[i] + listed[i] + 2.0;
            ensure!(e[i] >= want, "{}: relist not done ({} events of {want})", WATCHED[i], e[i]);
        }
        Ok(())
    })
    .await
}

/// The translations one rule change causes: apply `yaml`, wait until jason reaches `version`.
async fn translations_of_change(b: &Bookinfo, cluster: &KubeCluster, yaml: &str, version: &str) -> Result<f64> {
    let before = metric_of(&b.meshd.metrics().await?, "amime_translations_total");
    let since = apply(cluster, yaml).await?;
    let took = b.await_all_to(version, JASON, since, CONVERGENCE).await?;
    println!("rule change to {version} converged in {took:?}");
    Ok(metric_of(&b.meshd.metrics().await?, "amime_translations_total") - before)
}

/// Etcd compaction makes the watches 410 when they resume, meshd relists, and the relist
/// (finding nothing new) translates nothing.
///
/// A live watch never sees compaction: with the watch cache off kube-apiserver runs one
/// etcd watch per client watch, already past the compacted revision, and etcd only cancels
/// watches still catching up on history. The 410 comes when a watch resumes from its last
/// resource version, i.e. when it ends: kube-rs ends one every 290 s (its server-side
/// timeout), or the connection breaks. The test breaks it by restarting kube-apiserver;
/// with `--watch-cache=false` a restart alone resumes every watch from etcd without a 410
/// (there is no fresh watch cache to be too old for, unlike the outage test's), so the
/// 410s counted here are compaction's.
/// Watches read etcd; kube-apiserver leaves the `kubernetes` Service's endpoints alone (killed
/// and restarted it rewrites them, a real change meshd would rightly push).
const APISERVER_ARGS: &[&str] = &["--watch-cache=false", "--endpoint-reconciler-type=none"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_compaction_makes_meshd_relist_without_a_push() {
    run_test("kube_etcd_compaction", |ctx| async move {
        let vs = reviews_vs_jason_v2_else_split(50, 50);
        let KubeBookinfo { bookinfo: b, mut cluster, pods: _pods } =
            start_with(&ctx, IpBlock(186), APISERVER_ARGS, false, &[REVIEWS_DESTINATION_RULE, &vs]).await?;
        await_accepted(&cluster, "virtualservices.networking.amime.dev/reviews", "True", "Accepted", "").await?;
        settled(&b, &cluster).await?;
        // Two writes meshd does not watch: etcd's revision moves past every watched version
        // (a watch from version v starts at v + 1, compacted only when below the revision).
        cluster.kubectl_ok(&["-n", "default", "create", "configmap", "bump"]).await?;
        cluster.kubectl_ok(&["-n", "default", "label", "configmap", "bump", "again=yes"]).await?;
        let before = b.meshd.metrics().await?;
        let translations = metric_of(&before, "amime_translations_total");

        cluster.stop_apiserver().await?;
        let revision = cluster.compact_etcd().await?;
        cluster.start_apiserver().await?;
        let up = Instant::now();
        println!("etcd compacted to revision {revision} while kube-apiserver was down");
        await_relists(&b, &cluster, &before, true).await?;
        println!("410 and relist of every watched resource {:?} after kube-apiserver came back", up.elapsed());
        let after = metric_of(&b.meshd.metrics().await?, "amime_translations_total");
        ensure!(after == translations, "a relist that finds nothing new must not translate: {translations} → {after}");
        // A change after the relist converges with one translation (a push left pending by the
        // relist would show as a second: kubectl takes longer than the 100 ms debounce).
        let per_change = translations_of_change(&b, &cluster, REVIEWS_VS_ALL_V3, "v3").await?;
        ensure!(per_change == 1.0, "a change after the relist caused {per_change} translations, want 1");
        b.check_no_nacks().await
    })
    .await;
}
