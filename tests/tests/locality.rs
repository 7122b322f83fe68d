//! Locality-aware load balancing end to end (real meshd and Envoy, explicit-mode
//! sidecars started with `meshctl bootstrap --locality`): a STATIC ServiceEntry with one
//! endpoint in r1/z1 and one in r1/z2. With outlier detection, each caller stays in its
//! own zone, and a caller in z1 fails over to z2 once z1's endpoint fails and is ejected;
//! with `distribute`, a caller in z1 splits 80/20; and Kubernetes pods take the locality of
//! their Nodes (config-directory objects). Each test ends checking that Envoy
//! rejected no update and meshd counted no NACK.
//!
//! Blocks 246..=249 belong to this file.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amime_e2e::mesh::APP_PORT;
use amime_e2e::meshd;
use amime_e2e::sidecar::ensure_no_rejected_updates;
use amime_e2e::{await_condition, hosts, run_test, IpBlock, MeshDir, Meshd, Sidecar, SidecarSpec, TestContext};
use anyhow::{ensure, Context as _, Result};
use axum::http::StatusCode;
use serde_json::json;

const URL: &str = "http://api.example.com/";

/// An app answering `{"version": <zone>}`, or 500 once told to fail.
struct ZoneApp {
    failing: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl ZoneApp {
    async fn start(addr: SocketAddr, zone: &str) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?;
        let failing = Arc::new(AtomicBool::new(false));
        let (flag, zone) = (failing.clone(), zone.to_owned());
        let app = axum::Router::new().fallback(move || {
            let (flag, zone) = (flag.clone(), zone.clone());
            async move {
                let status =
                    if flag.load(Ordering::SeqCst) { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
                (status, axum::Json(json!({"service": "api", "version": zone})))
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { failing, task })
    }

    fn fail(&self) {
        self.failing.store(true, Ordering::SeqCst);
    }
}

impl Drop for ZoneApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The entry (z1 and z2 endpoints) and a DestinationRule with `traffic_policy`.
fn mesh_yaml(block: IpBlock, traffic_policy: &str) -> String {
    let (z1, z2) = (block.ip(hosts::EXTRA_1), block.ip(hosts::EXTRA_2));
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: api, namespace: shop}}\nspec:\n  hosts: [api.example.com]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {APP_PORT}}}]\n  endpoints:\n  - {{address: {z1}, locality: r1/z1}}\n  - {{address: {z2}, locality: r1/z2}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: api, namespace: shop}}\nspec:\n  host: api.example.com\n  trafficPolicy:\n{traffic_policy}"
    )
}

/// meshd on `yaml`, the two zone apps, and a sidecar per locality in `callers`.
struct Setup {
    callers: Vec<Sidecar>,
    meshd: Meshd,
    z1: ZoneApp,
    _z2: ZoneApp,
    _dir: MeshDir,
}

async fn start(ctx: &TestContext, block: IpBlock, traffic_policy: &str, callers: &[&str]) -> Result<Setup> {
    start_on(ctx, block, &mesh_yaml(block, traffic_policy), URL, callers).await
}

async fn start_on(ctx: &TestContext, block: IpBlock, yaml: &str, url: &str, callers: &[&str]) -> Result<Setup> {
    let dir = MeshDir::new(ctx)?;
    dir.write("api.yaml", yaml)?;
    let z1 = ZoneApp::start(block.addr(hosts::EXTRA_1, APP_PORT), "z1").await?;
    let z2 = ZoneApp::start(block.addr(hosts::EXTRA_2, APP_PORT), "z2").await?;
    let meshd = Meshd::start(ctx, dir.path(), block.ip(hosts::MESHD), &[]).await?;
    let mut sidecars = Vec::new();
    for (i, locality) in callers.iter().enumerate() {
        let ip = block.ip(hosts::PRODUCTPAGE + 30 + u8::try_from(i)?);
        let spec = SidecarSpec::new(&format!("caller-{i}"), "shop", ip).label("app", "caller").locality(locality);
        let sidecar = Sidecar::start(ctx, &spec, meshd.xds_addr()).await?;
        await_condition(
            &format!("{url} to answer through the sidecar in {locality}"),
            Duration::from_secs(10),
            || async {
                let r = sidecar.request(url, &[]).await?;
                ensure!(r.status == 200, "{}", r.summary());
                Ok(())
            },
        )
        .await?;
        sidecars.push(sidecar);
    }
    Ok(Setup { callers: sidecars, meshd, z1, _z2: z2, _dir: dir })
}

impl Setup {
    async fn check_no_nacks(&self) -> Result<()> {
        for caller in &self.callers {
            ensure_no_rejected_updates(&caller.stats().await?)?;
        }
        meshd::ensure_no_nacks(self.meshd.metric(meshd::NACKS_METRIC).await?)
    }
}

const OUTLIER: &str = "    outlierDetection:\n      consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: 3m\n      maxEjectionPercent: 100\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_stay_in_their_zone_and_fail_over_when_it_fails() {
    run_test("callers_stay_in_their_zone_and_fail_over_when_it_fails", |ctx| async move {
        let block = IpBlock(246);
        // No localityLbSetting: Istio's mesh default (enabled) fails over with outlier detection.
        let setup = start(&ctx, block, OUTLIER, &["r1/z1", "r1/z2"]).await?;
        let (in_z1, in_z2) = (&setup.callers[0], &setup.callers[1]);
        in_z1.tally(40, URL, &[]).await.ensure_all("z1", "a caller in r1/z1")?;
        in_z2.tally(40, URL, &[]).await.ensure_all("z2", "a caller in r1/z2")?;

        // z1's endpoint fails: ejected after one 500, its caller moves to z2.
        setup.z1.fail();
        await_condition("the caller in r1/z1 to fail over to z2", Duration::from_secs(10), || async {
            in_z1.tally(20, URL, &[]).await.ensure_all("z2", "after z1 failed")
        })
        .await?;
        in_z1.tally(40, URL, &[]).await.ensure_all("z2", "after failing over")?;
        let stat = "cluster.outbound|80||api.example.com.outlier_detection.ejections_enforced_consecutive_5xx";
        let ejections = in_z1.stat(stat).await?.unwrap_or(0);
        ensure!(ejections >= 1, "{stat} = {ejections}");
        setup.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribute_splits_a_zones_traffic_by_weight() {
    run_test("distribute_splits_a_zones_traffic_by_weight", |ctx| async move {
        let block = IpBlock(247);
        let policy = "    loadBalancer:\n      localityLbSetting:\n        distribute:\n        - from: r1/z1/*\n          to: {'r1/z1/*': 80, 'r1/z2/*': 20}\n";
        let setup = start(&ctx, block, policy, &["r1/z1", "r1/z2"]).await?;
        let n = 200;
        let tally = setup.callers[0].tally(n, URL, &[]).await;
        ensure!(tally.get("z1") + tally.get("z2") == n, "every request should be answered: {tally}");
        // Envoy picks localities by weighted round robin: 160/40, give or take a few.
        let z1 = tally.get("z1");
        ensure!((150..=170).contains(&z1), "want about 80% in z1 (160 of {n}); got {tally}");
        // A caller no `from` matches balances both endpoints alike (weights 1:1).
        let other = setup.callers[1].tally(100, URL, &[]).await;
        ensure!((35..=65).contains(&other.get("z1")), "want about half in z1 from z2; got {other}");
        setup.check_no_nacks().await
    })
    .await;
}

/// Kubernetes objects as the config directory holds them: a Service whose pods run on two
/// Nodes labelled with their zones; the pods carry no locality of their own.
fn kubernetes_yaml(block: IpBlock) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: api, namespace: shop}}\nspec:\n  selector: {{app: api}}\n  ports: [{{name: http, port: {APP_PORT}, targetPort: {APP_PORT}}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: api, namespace: shop}}\nspec:\n  host: api\n  trafficPolicy:\n{OUTLIER}"
    );
    for (i, (host, zone)) in [(hosts::EXTRA_1, "z1"), (hosts::EXTRA_2, "z2")].into_iter().enumerate() {
        yaml += &format!(
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: node-{zone}\n  labels: {{topology.kubernetes.io/region: r1, topology.kubernetes.io/zone: {zone}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: api-{i}, namespace: shop, labels: {{app: api}}}}\nspec: {{nodeName: node-{zone}, containers: [{{name: api, image: api}}]}}\nstatus: {{podIP: {}}}\n",
            block.ip(host)
        );
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_endpoints_take_their_nodes_locality() {
    run_test("kubernetes_endpoints_take_their_nodes_locality", |ctx| async move {
        let block = IpBlock(248);
        let url = format!("http://api:{APP_PORT}/");
        let setup = start_on(&ctx, block, &kubernetes_yaml(block), &url, &["r1/z1", "r1/z2"]).await?;
        setup.callers[0].tally(40, &url, &[]).await.ensure_all("z1", "a caller in r1/z1")?;
        setup.callers[1].tally(40, &url, &[]).await.ensure_all("z2", "a caller in r1/z2")?;
        setup.check_no_nacks().await
    })
    .await;
}
