//! Transparent mode end to end with *injected* pods (issue 8): every pod is the Pod a user
//! writes, injected by `injector::inject::inject` (meshd's webhook code), and started by the
//! harness playing kubelet (`amime_e2e::injected`): the init container's own command line
//! (`amime-agent init ...`) installs the capture as root, the native sidecar's own command
//! line (`amime-agent proxy`) starts a real Envoy as uid 1337 from the downward API.
//! Nothing of the data path is set up by test code.
//!
//! ```text
//!  node namespace (amime-e2e-<pid>-i<N>-node): bridge br0 10.251.N.254/24
//!    meshd --config-dir (xDS 10.251.N.254:15010, monitoring :15014), kubelet's prober,
//!    "outside" hosts .99 (in an excluded range) and .110 (not excluded)
//!      ├─ veth ─ productpage-v1  10.251.N.1   (client app: the test's sockets)
//!      ├─ veth ─ reviews-v1      10.251.N.11  :9080
//!      └─ veth ─ reviews-v2      10.251.N.12  :9080, :9090 (an excluded inbound port)
//!  cluster IPs 10.97.N.x exist only in the YAML; the node does not forward, so only a
//!  sidecar that captured a connection can answer one.
//! ```
//!
//! Not root (or no `ip netns`): the test prints `SKIPPED: <reason>` and passes vacuously.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use amime_e2e::injected::{self, RunningPod};
use amime_e2e::meshd::{ensure_no_nacks, parse_metric, NACKS_METRIC};
use amime_e2e::netns::{self, plug_into_bridge, AddressBlock, Netns};
use amime_e2e::process::ManagedProcess;
use amime_e2e::rules::{self, REVIEWS_DESTINATION_RULE};
use amime_e2e::{await_condition, run_test, MeshDir, Response, Tally, TestContext, Upstream};
use anyhow::{ensure, Result};
use injector::conventions::INIT_CONTAINER;
use injector::settings::InjectionSettings;
use serde_json::{json, Value};

const APP_PORT: u16 = 9080;
/// productpage's `excludeOutboundPorts`.
const EXCLUDED_OUTBOUND_PORT: u16 = 7070;
/// reviews-v2's `excludeInboundPorts`.
const EXCLUDED_INBOUND_PORT: u16 = 9090;
const XDS_PORT: u16 = 15010;
const MONITORING_PORT: u16 = 15014;
const ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
const JASON: &[(&str, &str)] = &[("end-user", "jason")];

/// Host numbers in `10.251.N.0/24` (pods, node) and `10.97.N.0/24` (cluster IPs).
mod host {
    pub const PRODUCTPAGE: u8 = 1;
    pub const REVIEWS_V1: u8 = 11;
    pub const REVIEWS_V2: u8 = 12;
    /// In productpage's excluded range (`.96/29`).
    pub const OUTSIDE_EXCLUDED: u8 = 99;
    pub const OUTSIDE: u8 = 110;
    pub const NODE: u8 = 254;
    pub const PRODUCTPAGE_VIP: u8 = 1;
    pub const REVIEWS_VIP: u8 = 2;
}

/// One test's addresses: pods in `10.251.N.0/24`, cluster IPs in `10.97.N.0/24`.
#[derive(Clone, Copy, Debug)]
struct Block(AddressBlock);

impl Block {
    fn new(n: u8) -> Self {
        Self(AddressBlock { pods: 251, vips: 97, n })
    }

    fn pod(self, host: u8) -> Ipv4Addr {
        self.0.pod(host)
    }

    fn addr(self, host: u8, port: u16) -> SocketAddr {
        self.0.pod_addr(host, port)
    }

    /// The pods as their owners write them (before injection).
    fn user_pod(self, name: &str, app: &str, version: &str, annotations: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "bookinfo",
                "labels": {"app": app, "version": version},
                "annotations": annotations,
            },
            "spec": {
                "serviceAccountName": format!("bookinfo-{app}"),
                "containers": [{
                    "name": app,
                    "image": format!("example/{app}:{version}"),
                    "ports": [{"name": "http-web", "containerPort": APP_PORT}],
                    "readinessProbe": {"httpGet": {"path": "/health", "port": APP_PORT}, "periodSeconds": 5},
                }],
            },
        })
    }

    fn pods(self) -> Vec<(u8, Value)> {
        let n = self.0.n;
        vec![
            (
                host::PRODUCTPAGE,
                self.user_pod(
                    "productpage-v1",
                    "productpage",
                    "v1",
                    json!({
                        "traffic.amime.dev/excludeOutboundPorts": EXCLUDED_OUTBOUND_PORT.to_string(),
                        "traffic.amime.dev/excludeOutboundIPRanges": format!("10.251.{n}.96/29"),
                    }),
                ),
            ),
            (host::REVIEWS_V1, self.user_pod("reviews-v1", "reviews", "v1", json!({}))),
            (
                host::REVIEWS_V2,
                self.user_pod(
                    "reviews-v2",
                    "reviews",
                    "v2",
                    json!({"traffic.amime.dev/excludeInboundPorts": EXCLUDED_INBOUND_PORT.to_string()}),
                ),
            ),
        ]
    }

    /// The Namespace and Services meshd reads (the injected pods are written beside them).
    fn services_yaml(self) -> String {
        let n = self.0.n;
        let service = |name: &str, vip: u8| {
            format!(
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: bookinfo\nspec:\n  \
                 clusterIP: 10.97.{n}.{vip}\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    \
                 port: {APP_PORT}\n    targetPort: http-web\n"
            )
        };
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bookinfo\n  labels:\n    amime-injection: enabled\n{}{}",
            service("productpage", host::PRODUCTPAGE_VIP),
            service("reviews", host::REVIEWS_VIP)
        )
    }
}

/// The mesh of injected pods. Fields drop in order: pods (sidecars killed, namespaces
/// deleted), upstreams, meshd, the node namespace.
struct Mesh {
    productpage: RunningPod,
    reviews_v1: RunningPod,
    reviews_v2: RunningPod,
    upstreams: Vec<Upstream>,
    meshd: ManagedProcess,
    node: Netns,
    block: Block,
    _dir: MeshDir,
}

impl Mesh {
    async fn start(ctx: &TestContext, block: Block) -> Result<Self> {
        let n = block.0.n;
        let node_ip = block.pod(host::NODE);
        let node = Netns::create(&format!("i{n}-node")).await?;
        node.ip(["link", "add", "br0", "type", "bridge"]).await?;
        for h in [host::NODE, host::OUTSIDE_EXCLUDED, host::OUTSIDE] {
            node.ip(["addr", "add", &format!("{}/24", block.pod(h)), "dev", "br0"]).await?;
        }
        node.ip(["link", "set", "br0", "up"]).await?;

        let settings =
            InjectionSettings { xds_address: SocketAddr::from((node_ip, XDS_PORT)).to_string(), ..Default::default() };
        let dir = MeshDir::new(ctx)?;
        let mut yaml = block.services_yaml();
        let mut injected = Vec::new();
        for (h, user_pod) in block.pods() {
            let mut pod = injected::inject_pod(&user_pod, &settings)?;
            let ip = block.pod(h).to_string();
            pod["status"] = json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]});
            yaml.push_str("---\n");
            yaml.push_str(&serde_yaml::to_string(&pod)?);
            injected.push((h, pod));
        }
        dir.write("mesh.yaml", &yaml)?;
        dir.write(
            "reviews-rules.yaml",
            &rules::documents(&[REVIEWS_DESTINATION_RULE, &rules::reviews_vs_jason_v2_else_split(100, 0)]),
        )?;
        let monitoring = SocketAddr::from((node_ip, MONITORING_PORT));
        let meshd = node.start_meshd(ctx, dir.path(), SocketAddr::from((node_ip, XDS_PORT)), monitoring, &[]).await?;

        // The apps listen before their pods start (kubelet starts app containers after the
        // sidecar, but a listening app changes nothing for the sidecar).
        let mut upstreams = Vec::new();
        let mut pods = Vec::new();
        for (h, pod) in injected {
            let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let ns = Netns::create(&format!("i{n}-{h}")).await?;
            plug_into_bridge(&node, &ns, &format!("veth{h}"), block.pod(h), node_ip).await?;
            if h != host::PRODUCTPAGE {
                let version = pod["metadata"]["labels"]["version"].as_str().unwrap_or_default().to_string();
                upstreams.push(ns.start_upstream(block.addr(h, APP_PORT), "reviews", &version, &name).await?);
            }
            pods.push(RunningPod::start(ctx, ns, block.pod(h), pod, &node).await?);
        }
        let reviews_v2 = pods.pop().expect("three pods");
        let reviews_v1 = pods.pop().expect("three pods");
        let productpage = pods.pop().expect("three pods");
        Ok(Self { productpage, reviews_v1, reviews_v2, upstreams, meshd, node, block, _dir: dir })
    }

    fn ensure_running(&self) -> Result<()> {
        self.meshd.ensure_running()?;
        for pod in [&self.productpage, &self.reviews_v1, &self.reviews_v2] {
            pod.ensure_running()?;
        }
        Ok(())
    }

    /// `GET /` with `Host: host` from the productpage app (an ordinary root socket).
    async fn call(&self, addr: SocketAddr, host: &str, headers: &[(&str, &str)]) -> Result<Response> {
        self.productpage.netns.request(addr, "GET", "/", host, headers).await
    }

    async fn tally(&self, n: usize, addr: SocketAddr, host: &str, headers: &[(&str, &str)]) -> Tally {
        self.productpage.netns.tally(n, addr, host, headers).await
    }

    async fn await_call(&self, addr: SocketAddr, host: &str) -> Result<Response> {
        self.productpage.netns.await_ok(addr, host, ROUTE_TIMEOUT, || self.ensure_running()).await
    }

    /// Every sidecar accepted listeners and clusters and rejected nothing; meshd counted no NACK.
    async fn check_no_nacks(&self) -> Result<()> {
        for pod in [&self.productpage, &self.reviews_v1, &self.reviews_v2] {
            pod.ensure_updates_accepted().await?;
        }
        let monitoring = SocketAddr::from((self.block.pod(host::NODE), MONITORING_PORT));
        let metrics = self.node.get(monitoring, "/metrics").await?;
        ensure_no_nacks(parse_metric(&metrics.body, NACKS_METRIC))
    }
}

/// What a pod's capture and sidecar counted so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counters {
    /// Connections iptables sent to 15001 / 15006.
    redirected_out: u64,
    redirected_in: u64,
    /// Connections Envoy's outbound listeners accepted: 15001 and the per-port listeners it
    /// hands connections to (`0.0.0.0_9080`), which count them.
    cx_outbound: u64,
    /// Connections the inbound listener (15006) accepted.
    cx_15006: u64,
    /// HTTP requests through the 9080 outbound / inbound listeners.
    rq_out_9080: u64,
    rq_in_9080: u64,
}

async fn counters(pod: &RunningPod) -> Result<Counters> {
    let stats = pod.stats().await?;
    let stat = |name: &str| stats.get(name).copied().unwrap_or(0);
    Ok(Counters {
        redirected_out: pod.redirected("AMIME_REDIRECT").await?,
        redirected_in: pod.redirected("AMIME_IN_REDIRECT").await?,
        cx_outbound: stats
            .iter()
            .filter(|(name, _)| {
                name.strip_prefix("listener.0.0.0.0_")
                    .and_then(|rest| rest.strip_suffix(".downstream_cx_total"))
                    .is_some_and(|port| port != "15006" && port.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|(_, n)| n)
            .sum(),
        cx_15006: stat("listener.0.0.0.0_15006.downstream_cx_total"),
        rq_out_9080: stat("http.outbound_9080.downstream_rq_total"),
        rq_in_9080: stat("http.inbound_9080.downstream_rq_total"),
    })
}

/// Wait until `pod`'s counters satisfy `check` (Envoy updates a closed connection's stats an
/// instant after the client saw the close).
async fn await_counters(pod: &RunningPod, what: &str, check: impl Fn(&Counters) -> bool) -> Result<Counters> {
    await_condition(&format!("pod {}: {what}", pod.name), Duration::from_secs(5), || async {
        let now = counters(pod).await?;
        ensure!(check(&now), "{now:?}");
        Ok(now)
    })
    .await
}

/// (a) productpage → reviews by cluster IP, no proxy settings: captured, routed by the
/// VirtualService, delivered through the destination's inbound listener.
async fn captured_and_routed(mesh: &Mesh) -> Result<()> {
    let vip = mesh.block.0.vip_addr(host::REVIEWS_VIP, APP_PORT);
    mesh.await_call(vip, "reviews:9080").await?;
    let (pp, v1, v2) =
        (counters(&mesh.productpage).await?, counters(&mesh.reviews_v1).await?, counters(&mesh.reviews_v2).await?);

    mesh.tally(10, vip, "reviews:9080", &[]).await.ensure_all("v1", "without end-user")?;
    mesh.tally(10, vip, "reviews:9080", JASON).await.ensure_all("v2", "end-user: jason")?;
    let body = mesh.call(vip, "reviews", JASON).await?.json()?;
    ensure!(body["pod"] == "reviews-v2" && body["headers"]["end-user"] == "jason", "answer {body}");
    ensure!(body["headers"].get("x-request-id").is_some(), "no x-request-id: not through Envoy's HTTP chain: {body}");

    let pp2 = await_counters(&mesh.productpage, "21 more captured outbound requests", |c| {
        c.redirected_out >= pp.redirected_out + 21 && c.rq_out_9080 >= pp.rq_out_9080 + 21
    })
    .await?;
    let v2_after = await_counters(&mesh.reviews_v2, "11 more inbound requests through 15006", |c| {
        c.rq_in_9080 >= v2.rq_in_9080 + 11 && c.cx_15006 > v2.cx_15006 && c.redirected_in > v2.redirected_in
    })
    .await?;
    let v1_after = await_counters(&mesh.reviews_v1, "10 more inbound requests through 15006", |c| {
        c.rq_in_9080 >= v1.rq_in_9080 + 10 && c.cx_15006 > v1.cx_15006
    })
    .await?;
    eprintln!("(a) productpage {pp:?} -> {pp2:?}\n    reviews-v1 {v1:?} -> {v1_after:?}\n    reviews-v2 {v2:?} -> {v2_after:?}");
    Ok(())
}

/// (b) excluded outbound port and range go direct; an excluded inbound port skips the
/// destination's sidecar.
async fn exclusions_bypass_the_sidecar(mesh: &Mesh) -> Result<()> {
    let b = mesh.block;
    let node = &mesh.node;
    let excluded_range =
        node.start_upstream(b.addr(host::OUTSIDE_EXCLUDED, APP_PORT), "outside", "none", "outside-99").await?;
    let excluded_port =
        node.start_upstream(b.addr(host::OUTSIDE, EXCLUDED_OUTBOUND_PORT), "outside", "none", "outside-7070").await?;
    let captured = node.start_upstream(b.addr(host::OUTSIDE, APP_PORT), "outside", "none", "outside-9080").await?;

    // The contrast first: an outside address that is not excluded goes through the sidecar.
    let before = counters(&mesh.productpage).await?;
    let response = mesh.await_call(b.addr(host::OUTSIDE, APP_PORT), "outside.example.com").await?;
    ensure!(response.json_str("pod").as_deref() == Some("outside-9080"), "{}", response.summary());
    let through = await_counters(&mesh.productpage, "the non-excluded call captured", |c| {
        c.redirected_out > before.redirected_out && c.cx_outbound > before.cx_outbound
    })
    .await?;
    ensure!(captured.hits() >= 1, "outside-9080 was not reached");

    for (addr, upstream, what) in [
        (b.addr(host::OUTSIDE_EXCLUDED, APP_PORT), &excluded_range, "an excludeOutboundIPRanges address"),
        (b.addr(host::OUTSIDE, EXCLUDED_OUTBOUND_PORT), &excluded_port, "an excludeOutboundPorts port"),
    ] {
        let before = counters(&mesh.productpage).await?;
        for _ in 0..3 {
            let response = mesh.call(addr, "outside.example.com", &[]).await?;
            ensure!(
                response.status == 200 && response.json_str("pod").as_deref() == Some(upstream.pod()),
                "{what}: {}",
                response.summary()
            );
            ensure!(response.json()?["headers"].get("x-request-id").is_none(), "{what}: the call went through Envoy");
        }
        let after = counters(&mesh.productpage).await?;
        ensure!(
            after.redirected_out == before.redirected_out && after.cx_outbound == before.cx_outbound,
            "{what} ({addr}) was captured: {before:?} -> {after:?}"
        );
        ensure!(upstream.hits() >= 3, "{what}: {} hits", upstream.hits());
    }

    // Inbound: reviews-v2's excluded port reaches the app without its sidecar; 9080 does not.
    let v2 = &mesh.reviews_v2;
    let app_9090 = v2
        .netns
        .start_upstream(b.addr(host::REVIEWS_V2, EXCLUDED_INBOUND_PORT), "reviews", "v2", "reviews-v2-9090")
        .await?;
    let before = counters(v2).await?;
    for _ in 0..3 {
        let response = node.get(b.addr(host::REVIEWS_V2, EXCLUDED_INBOUND_PORT), "/").await?;
        ensure!(response.json_str("pod").as_deref() == Some("reviews-v2-9090"), "{}", response.summary());
        ensure!(response.json()?["headers"].get("x-request-id").is_none(), "excluded inbound port went through Envoy");
    }
    let after = counters(v2).await?;
    ensure!(
        after.redirected_in == before.redirected_in && after.cx_15006 == before.cx_15006,
        "the excludeInboundPorts port was captured: {before:?} -> {after:?}"
    );
    ensure!(app_9090.hits() >= 3, "reviews-v2:9090 served {}", app_9090.hits());
    let response = node.get(b.addr(host::REVIEWS_V2, APP_PORT), "/").await?;
    ensure!(response.json()?["headers"].get("x-request-id").is_some(), "9080 on reviews-v2 skipped its sidecar");
    await_counters(v2, "the non-excluded inbound port captured", |c| c.cx_15006 > after.cx_15006).await?;
    eprintln!("(b) productpage through the sidecar: {through:?}; reviews-v2 excluded inbound: {after:?}");
    Ok(())
}

/// The pod's init container installed what its annotations asked for; kubelet's rewritten
/// readiness probe reaches the app through the sidecar.
async fn injection_took_effect(mesh: &Mesh) -> Result<()> {
    let n = mesh.block.0.n;
    let init = |pod: &RunningPod| pod.init_output.get(INIT_CONTAINER).cloned().unwrap_or_default();
    let pp = init(&mesh.productpage);
    for rule in [
        format!("-A AMIME_OUTPUT -p tcp --dport {EXCLUDED_OUTBOUND_PORT} -j RETURN"),
        format!("-A AMIME_OUTPUT -d 10.251.{n}.96/29 -j RETURN"),
    ] {
        ensure!(pp.contains(&rule), "productpage's init container did not install {rule:?}:\n{pp}");
    }
    let v2 = init(&mesh.reviews_v2);
    let rule = format!("-A AMIME_INBOUND -p tcp --dport {EXCLUDED_INBOUND_PORT} -j RETURN");
    ensure!(v2.contains(&rule), "reviews-v2's init container did not install {rule:?}:\n{v2}");

    for pod in [&mesh.reviews_v1, &mesh.reviews_v2] {
        let app = pod.pod["spec"]["containers"][0].clone();
        let probe = &app["readinessProbe"]["httpGet"];
        let port = probe["port"].as_u64().unwrap_or_default() as u16;
        let path = probe["path"].as_str().unwrap_or_default();
        ensure!(port == injector::bootstrap::HEALTH_PORT, "pod {}: probe not rewritten: {app}", pod.name);
        let response = mesh.node.get(SocketAddr::from((pod.ip, port)), path).await?;
        ensure!(
            response.status == 200 && response.json_str("path").as_deref() == Some("/health"),
            "pod {}: kubelet's readiness probe {path}: {}",
            pod.name,
            response.summary()
        );
    }
    Ok(())
}

/// A connection straight to a sidecar's own capture ports (15006 from the node, 15001 from
/// the node or from the app itself) is not passed on to its original destination, which is
/// the same listener: that would make Envoy connect to itself without end.
async fn capture_ports_do_not_loop(mesh: &Mesh) -> Result<()> {
    let cx = |stats: &std::collections::BTreeMap<String, u64>, port: u16| {
        stats.get(&format!("listener.0.0.0.0_{port}.downstream_cx_total")).copied().unwrap_or(0)
    };
    let pp = &mesh.productpage;
    let v1 = &mesh.reviews_v1;
    let request = b"GET / HTTP/1.1\r\nHost: loop\r\n\r\n";
    for (from, pod, addr, port) in [
        (&mesh.node, v1, SocketAddr::from((v1.ip, 15006)), 15006),
        (&mesh.node, v1, SocketAddr::from((v1.ip, 15001)), 15001),
        (&pp.netns, pp, SocketAddr::from((Ipv4Addr::LOCALHOST, 15001)), 15001),
        (&pp.netns, pp, SocketAddr::from((pp.ip, 15006)), 15006),
    ] {
        let before = cx(&pod.stats().await?, port);
        let answer = from.tcp_exchange(addr, request).await;
        let after = cx(&pod.stats().await?, port);
        ensure!(
            after <= before + 2,
            "pod {}: one connection to {addr} from {} made its Envoy accept {} connections on {port} \
             (a loop; the exchange: {answer:?})",
            pod.name,
            from.name(),
            after - before
        );
        // Dropped: closed or reset, with no answer, and at once.
        match answer {
            Ok(answer) => {
                ensure!(answer.is_empty(), "pod {}: {addr} answered {:?}", pod.name, String::from_utf8_lossy(&answer))
            }
            Err(e) => ensure!(
                !format!("{e:#}").contains("did not finish"),
                "pod {}: {addr} kept the connection: {e:#}",
                pod.name
            ),
        }
    }
    pp.ensure_running()?;
    v1.ensure_running()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_pods_capture_route_and_bypass() {
    let name = "injected_pods_capture_route_and_bypass";
    if let Some(reason) = netns::unsupported_reason() {
        eprintln!("SKIPPED: {name}: {reason}");
        return;
    }
    run_test(name, |ctx| async move {
        let mesh = Mesh::start(&ctx, Block::new(1)).await?;
        injection_took_effect(&mesh).await?;
        captured_and_routed(&mesh).await?;
        exclusions_bypass_the_sidecar(&mesh).await?;
        capture_ports_do_not_loop(&mesh).await?;
        let served: u64 = mesh.upstreams.iter().map(Upstream::hits).sum();
        ensure!(served >= 21, "the reviews apps served {served} requests");
        mesh.check_no_nacks().await
    })
    .await;
}
