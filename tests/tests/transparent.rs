//! Transparent mode (`INTERCEPTION_MODE=REDIRECT`) end to end: real `meshd`, a real Envoy
//! sidecar and real iptables capture, inside network namespaces.
//!
//! Each test builds its own two namespaces (see `amime_e2e::netns`), joined by a veth pair:
//!
//! ```text
//!  client pod  (amime-e2e-<pid>-t<N>-client)        server pods (amime-e2e-<pid>-t<N>-server)
//!  eth0 10.250.N.1 = productpage-v1  <── veth ──>   eth0 10.250.N.2 (gateway), and
//!  iptables capture (nat)                              .11/.12/.13 reviews-v1/v2/v3 :9080
//!  Envoy as uid 1337 (15001, 15006,                    .21 ratings-v1 :5432 (TCP)
//!        admin 127.0.0.1:15000)                        .99 not in the mesh
//!  meshd on 127.0.0.1:15010 / :15014
//! ```
//!
//! Cluster IPs (`10.96.N.x`) exist only in the YAML: no route leads there (the client's
//! default route points at the server namespace, which drops them), so an answer from a
//! cluster IP proves the sidecar captured and routed the connection. The client namespace gets
//! its capture from the product's init step, the built `amime-agent init` (as an injected
//! pod's init container runs it): outbound TCP from everyone but uid 1337 (and not to
//! 127.0.0.1) to 15001, inbound TCP (except to the sidecar's own ports) to 15006.
//!
//! The test process itself plays the applications: it opens sockets inside a namespace by
//! entering it on a short-lived thread, so captured traffic comes from an ordinary (root,
//! not 1337) process, as an app's would. Tests skip (printing `SKIPPED: <reason>`) only when
//! not run as root or when `ip netns` cannot create namespaces.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use amime_e2e::meshd::{ensure_no_nacks, parse_metric, NACKS_METRIC};
use amime_e2e::netns::{self, link_veth, AddressBlock, Netns, TcpEcho, PROXY_UID};
use amime_e2e::process::{run_to_completion, ManagedProcess};
use amime_e2e::rules::{self, REVIEWS_DESTINATION_RULE};
use amime_e2e::sidecar::{ensure_no_rejected_updates, envoy_args, parse_stats};
use amime_e2e::{await_condition, paths, run_test, MeshDir, Response, Tally, TestContext, Upstream, XdsApi};
use anyhow::{ensure, Context as _, Result};
use injector::capture::CaptureSpec;
use serde_json::Value;

const APP_PORT: u16 = 9080;
const RATINGS_PORT: u16 = 5432;
const MESHD_XDS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 15010);
const MESHD_MONITORING: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 15014);
const ENVOY_ADMIN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 15000);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// Host numbers in `10.250.N.0/24` (pods) and `10.96.N.0/24` (cluster IPs).
mod host {
    pub const PRODUCTPAGE: u8 = 1;
    pub const GATEWAY: u8 = 2;
    pub const REVIEWS_V1: u8 = 11;
    pub const REVIEWS_V2: u8 = 12;
    pub const REVIEWS_V3: u8 = 13;
    pub const RATINGS_V1: u8 = 21;
    pub const OUTSIDE: u8 = 99;
    /// Cluster IPs.
    pub const PRODUCTPAGE_VIP: u8 = 1;
    pub const REVIEWS_VIP: u8 = 2;
    pub const RATINGS_VIP: u8 = 3;
}

/// One test's address block: pods in `10.250.N.0/24`, cluster IPs in `10.96.N.0/24`.
fn block(n: u8) -> AddressBlock {
    AddressBlock { pods: 250, vips: 96, n }
}

/// Namespace, Services and Pods of the test mesh.
fn mesh_yaml(block: AddressBlock) -> String {
    let n = block.n;
    let pod = |name: &str, app: &str, version: &str, ip: u8, port_name: &str, port: u16| {
        format!(
            r#"---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: bookinfo
  labels:
    app: {app}
    version: {version}
spec:
  serviceAccountName: bookinfo-{app}
  containers:
  - name: {app}
    image: example/{app}:{version}
    ports:
    - name: {port_name}
      containerPort: {port}
status:
  podIP: 10.250.{n}.{ip}
"#
        )
    };
    let mut yaml = format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: bookinfo
---
apiVersion: v1
kind: Service
metadata:
  name: productpage
  namespace: bookinfo
spec:
  clusterIP: 10.96.{n}.{pp}
  selector:
    app: productpage
  ports:
  - name: http
    port: {APP_PORT}
    targetPort: http-web
---
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: bookinfo
spec:
  clusterIP: 10.96.{n}.{rv}
  selector:
    app: reviews
  ports:
  - name: http
    port: {APP_PORT}
    targetPort: http-web
---
apiVersion: v1
kind: Service
metadata:
  name: ratings
  namespace: bookinfo
spec:
  clusterIP: 10.96.{n}.{rt}
  selector:
    app: ratings
  ports:
  - name: tcp-db
    port: {RATINGS_PORT}
    targetPort: {RATINGS_PORT}
"#,
        pp = host::PRODUCTPAGE_VIP,
        rv = host::REVIEWS_VIP,
        rt = host::RATINGS_VIP,
    );
    yaml.push_str(&pod("productpage-v1", "productpage", "v1", host::PRODUCTPAGE, "http-web", APP_PORT));
    for (name, version, ip) in [
        ("reviews-v1", "v1", host::REVIEWS_V1),
        ("reviews-v2", "v2", host::REVIEWS_V2),
        ("reviews-v3", "v3", host::REVIEWS_V3),
    ] {
        yaml.push_str(&pod(name, "reviews", version, ip, "http-web", APP_PORT));
    }
    yaml.push_str(&pod("ratings-v1", "ratings", "v1", host::RATINGS_V1, "tcp-db", RATINGS_PORT));
    yaml
}

const JASON: &[(&str, &str)] = &[("end-user", "jason")];

/// The test mesh: both namespaces, meshd and the productpage sidecar (in the client namespace)
/// and the reviews upstreams (in the server namespace).
///
/// Fields drop in order: Envoy and meshd are killed first, then the upstreams stop, then the
/// namespaces are deleted (killing anything left inside).
struct TransparentMesh {
    envoy: ManagedProcess,
    meshd: ManagedProcess,
    reviews: Vec<Upstream>,
    /// The productpage pod: the sidecar, meshd, the capture rules.
    client: Netns,
    /// Every other pod (reviews, ratings, the non-mesh host).
    server: Netns,
    dir: MeshDir,
    block: AddressBlock,
    ctx: TestContext,
}

impl TransparentMesh {
    async fn start(ctx: &TestContext, block: AddressBlock, xds_api: XdsApi, meshd_args: &[&str]) -> Result<Self> {
        let n = block.n;
        let client = Netns::create(&format!("t{n}-client")).await?;
        let server = Netns::create(&format!("t{n}-server")).await?;
        link_veth(
            &client,
            "eth0",
            &format!("{}/24", block.pod(host::PRODUCTPAGE)),
            &server,
            "eth0",
            &format!("{}/24", block.pod(host::GATEWAY)),
        )
        .await?;
        // A route for the cluster IPs to exist at all (connect() needs one before the capture
        // rewrites the destination); the server namespace does not forward, so without capture
        // these connections go nowhere.
        let gateway = block.pod(host::GATEWAY).to_string();
        client.ip(["route", "add", "default", "via", gateway.as_str()]).await?;
        for h in [host::REVIEWS_V1, host::REVIEWS_V2, host::REVIEWS_V3, host::RATINGS_V1, host::OUTSIDE] {
            let cidr = format!("{}/24", block.pod(h));
            server.ip(["addr", "add", cidr.as_str(), "dev", "eth0"]).await?;
        }
        // The product's init step installs the capture, as the injected init container does.
        client.agent_init(CaptureSpec::default().to_args()).await?;

        let dir = MeshDir::new(ctx)?;
        dir.write("mesh.yaml", &mesh_yaml(block))?;
        dir.write(
            "reviews-rules.yaml",
            // jason → v2, everyone else → v1 (a 100/0 split: the zero-weight side gets nothing).
            &rules::documents(&[REVIEWS_DESTINATION_RULE, &rules::reviews_vs_jason_v2_else_split(100, 0)]),
        )?;

        let mut reviews = Vec::new();
        for (h, version) in [(host::REVIEWS_V1, "v1"), (host::REVIEWS_V2, "v2"), (host::REVIEWS_V3, "v3")] {
            reviews.push(
                server
                    .start_upstream(block.pod_addr(h, APP_PORT), "reviews", version, &format!("reviews-{version}"))
                    .await?,
            );
        }

        let meshd = client.start_meshd(ctx, dir.path(), MESHD_XDS, MESHD_MONITORING, meshd_args).await?;

        let bootstrap = ctx.unique_path("bootstrap-productpage-v1", ".yaml");
        run_to_completion(
            &paths::binary("meshctl")?,
            [
                "bootstrap".to_string(),
                "--node".into(),
                "productpage-v1.bookinfo".into(),
                "--ip".into(),
                block.pod(host::PRODUCTPAGE).to_string(),
                "--mode".into(),
                "transparent".into(),
                "--xds".into(),
                MESHD_XDS.to_string(),
                "--admin-addr".into(),
                ENVOY_ADMIN.to_string(),
                "--xds-api".into(),
                xds_api.as_str().into(),
                "--label".into(),
                "app=productpage".into(),
                "--label".into(),
                "version=v1".into(),
                "--service-account".into(),
                "bookinfo-productpage".into(),
                "-o".into(),
                bootstrap.display().to_string(),
            ],
            Duration::from_secs(20),
        )
        .await?;
        let text = std::fs::read_to_string(&bootstrap).with_context(|| format!("read {}", bootstrap.display()))?;
        ensure!(
            text.contains("INTERCEPTION_MODE: REDIRECT"),
            "`meshctl bootstrap --mode transparent` did not set INTERCEPTION_MODE: REDIRECT:\n{text}"
        );
        ctx.register_log("envoy bootstrap", bootstrap.clone());

        let envoy = client.spawn_as(ctx, "envoy-productpage", PROXY_UID, &paths::envoy()?, envoy_args(&bootstrap))?;
        let mesh = Self { envoy, meshd, reviews, client, server, dir, block, ctx: ctx.clone() };
        await_condition("Envoy admin to answer 200 on /ready", READY_TIMEOUT, || async {
            mesh.ensure_running()?;
            let response = mesh.admin_get("/ready").await?;
            ensure!(response.status == 200, "/ready: {}", response.summary());
            Ok(())
        })
        .await?;
        Ok(mesh)
    }

    fn ensure_running(&self) -> Result<()> {
        self.envoy.ensure_running()?;
        self.meshd.ensure_running()
    }

    async fn admin_get(&self, path: &str) -> Result<Response> {
        self.client.get(ENVOY_ADMIN, path).await.with_context(|| format!("envoy admin GET {path}"))
    }

    async fn stats(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let response = self.admin_get("/stats").await?;
        ensure!(response.status == 200, "envoy /stats: {}", response.summary());
        Ok(parse_stats(&response.body))
    }

    async fn stat(&self, name: &str) -> Result<u64> {
        Ok(self.stats().await?.get(name).copied().unwrap_or(0))
    }

    /// Wait until stat `name` is at least `min` (counters of a connection that just closed may
    /// be updated an instant after the client saw the close).
    async fn await_stat(&self, name: &str, min: u64) -> Result<u64> {
        await_condition(&format!("Envoy stat {name} >= {min}"), Duration::from_secs(5), || async {
            let value = self.stat(name).await?;
            ensure!(value >= min, "{name} = {value}");
            Ok(value)
        })
        .await
    }

    async fn meshd_metric(&self, name: &str) -> Result<Option<f64>> {
        let response = self.client.get(MESHD_MONITORING, "/metrics").await?;
        ensure!(response.status == 200, "meshd /metrics: {}", response.summary());
        Ok(parse_metric(&response.body, name))
    }

    /// Envoy rejected no xDS update, accepted listeners and clusters at least once, and meshd
    /// counted no NACK.
    async fn check_no_nacks(&self) -> Result<()> {
        let stats = self.stats().await?;
        ensure_no_rejected_updates(&stats)?;
        for name in ["listener_manager.lds.update_success", "cluster_manager.cds.update_success"] {
            let n = stats.get(name).copied().unwrap_or(0);
            ensure!(n >= 1, "{name} = {n}: Envoy never accepted an update");
        }
        ensure_no_nacks(self.meshd_metric(NACKS_METRIC).await?)
    }

    /// `GET /` from the productpage pod (captured) to `addr` with `Host: host`.
    async fn outbound(&self, addr: SocketAddr, host: &str, headers: &[(&str, &str)]) -> Result<Response> {
        self.client.request(addr, "GET", "/", host, headers).await
    }

    async fn tally(&self, n: usize, addr: SocketAddr, host: &str, headers: &[(&str, &str)]) -> Tally {
        self.client.tally(n, addr, host, headers).await
    }

    /// Wait until `GET /` to `addr` (`Host: host`) from the productpage pod answers 200.
    async fn await_outbound(&self, addr: SocketAddr, host: &str) -> Result<Response> {
        self.client.await_ok(addr, host, ROUTE_TIMEOUT, || self.ensure_running()).await
    }

    /// Packets that went through a capture chain's REDIRECT rule.
    async fn redirected_packets(&self, chain: &str) -> Result<u64> {
        self.client.nat_packets(chain, "REDIRECT").await
    }

    /// Evidence for a failed test: nat counters, Envoy's listeners, its non-zero traffic
    /// stats, and the full config dump written to the test directory.
    async fn print_diagnostics(&self) {
        let mut out = String::new();
        match self.client.nat_rules().await {
            Ok(rules) => out.push_str(&format!("--- iptables -t nat (client namespace) ---\n{rules}\n")),
            Err(e) => out.push_str(&format!("(iptables listing failed: {e:#})\n")),
        }
        match self.admin_get("/listeners").await {
            Ok(r) => out.push_str(&format!("--- envoy /listeners ---\n{}\n", r.body)),
            Err(e) => out.push_str(&format!("(envoy /listeners failed: {e:#})\n")),
        }
        match self.stats().await {
            Ok(stats) => {
                out.push_str("--- envoy stats (non-zero traffic / xDS counters) ---\n");
                for (name, value) in stats {
                    let traffic = ["listener.", "http.", "tcp.", "cluster."].iter().any(|p| name.starts_with(p))
                        && [
                            "downstream_cx_total",
                            "downstream_rq_total",
                            "upstream_cx_total",
                            "upstream_rq_total",
                            "upstream_cx_connect_fail",
                            "no_route",
                            "no_filter_chain_match",
                        ]
                        .iter()
                        .any(|s| name.ends_with(s));
                    let xds = name.ends_with(".update_rejected") || name.ends_with(".update_success");
                    if (traffic || xds) && value > 0 && !name.contains("admin") {
                        out.push_str(&format!("{name}: {value}\n"));
                    }
                }
            }
            Err(e) => out.push_str(&format!("(envoy /stats failed: {e:#})\n")),
        }
        match self.admin_get("/config_dump").await {
            Ok(r) => {
                let path = self.ctx.unique_path("envoy-config-dump", ".json");
                if std::fs::write(&path, &r.body).is_ok() {
                    out.push_str(&format!("(Envoy config dump written to {})\n", path.display()));
                }
            }
            Err(e) => out.push_str(&format!("(envoy /config_dump failed: {e:#})\n")),
        }
        eprintln!("===== {} diagnostics (config dir {}) =====\n{out}", self.ctx.name(), self.dir.path().display());
    }
}

/// Run a transparent-mode test: skip unless namespaces can be created; start the mesh in
/// `block`; on failure print the capture/Envoy evidence before the process logs.
async fn run_transparent<F>(name: &str, block: AddressBlock, xds_api: XdsApi, body: F)
where
    F: for<'a> FnOnce(&'a TransparentMesh) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>,
{
    run_transparent_with(name, block, xds_api, &[], body).await
}

/// [`run_transparent`] with extra meshd arguments.
async fn run_transparent_with<F>(name: &str, block: AddressBlock, xds_api: XdsApi, meshd_args: &[&str], body: F)
where
    F: for<'a> FnOnce(&'a TransparentMesh) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>,
{
    if let Some(reason) = netns::unsupported_reason() {
        eprintln!("SKIPPED: {name}: {reason}");
        return;
    }
    run_test(name, |ctx| async move {
        let mesh = TransparentMesh::start(&ctx, block, xds_api, meshd_args).await?;
        let result = body(&mesh).await;
        if result.is_err() {
            mesh.print_diagnostics().await;
        }
        result
    })
    .await;
}

/// The path of `program` on `PATH`, if any.
fn find_program(program: &str) -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file()).map(|p| p.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_to_cluster_ip_is_routed_by_host() {
    run_transparent("outbound_http_to_cluster_ip_is_routed_by_host", block(41), XdsApi::Delta, |mesh| {
        Box::pin(async move {
            let vip = mesh.block.vip_addr(host::REVIEWS_VIP, APP_PORT);
            mesh.await_outbound(vip, "reviews:9080").await?;
            let redirected_before = mesh.redirected_packets("AMIME_REDIRECT").await?;
            let rq_before = mesh.stat("http.outbound_9080.downstream_rq_total").await?;

            // The VirtualService applies to captured traffic: jason → v2, everyone else → v1.
            let others = mesh.tally(20, vip, "reviews:9080", &[]).await;
            others.ensure_all("v1", "without end-user")?;
            let jason = mesh.tally(20, vip, "reviews:9080", JASON).await;
            jason.ensure_all("v2", "end-user: jason")?;

            // Every name of the service routes the same way (Host decides, not the IP).
            let vip_host = format!("{vip}");
            for host in ["reviews", "reviews.bookinfo", "reviews.bookinfo.svc.cluster.local:9080", vip_host.as_str()] {
                let t = mesh.tally(3, vip, host, JASON).await;
                t.ensure_all("v2", &format!("Host: {host} with end-user: jason"))?;
            }

            // The request went through Envoy's HTTP connection manager, headers intact.
            let response = mesh.outbound(vip, "reviews", JASON).await?;
            let body = response.json()?;
            ensure!(body["service"] == "reviews", "answer from {body}");
            ensure!(body["headers"]["end-user"] == "jason", "upstream saw {body}");
            ensure!(
                body["headers"].get("x-request-id").is_some(),
                "no x-request-id: the request did not pass Envoy's HTTP connection manager: {body}"
            );

            // A separate application process (curl, as root) is captured the same way.
            if let Some(curl) = find_program("curl") {
                let resolve = format!("reviews:{APP_PORT}:{}", vip.ip());
                let body = mesh
                    .client
                    .exec(
                        &curl,
                        [
                            "-sS",
                            "--fail",
                            "--max-time",
                            "10",
                            "--resolve",
                            resolve.as_str(),
                            "-H",
                            "end-user: jason",
                            "http://reviews:9080/",
                        ],
                    )
                    .await?;
                let answer: Value =
                    serde_json::from_str(&body).with_context(|| format!("curl got a non-JSON answer: {body}"))?;
                ensure!(answer["service"] == "reviews" && answer["version"] == "v2", "curl as jason got {answer}");
            } else {
                eprintln!("(curl not installed: the extra curl check is left out)");
            }

            let served: u64 = mesh.reviews.iter().map(Upstream::hits).sum();
            ensure!(served >= 53, "reviews upstreams served {served} requests, want >= 53");
            let rq = mesh.await_stat("http.outbound_9080.downstream_rq_total", rq_before + 53).await?;
            let redirected = mesh.redirected_packets("AMIME_REDIRECT").await?;
            ensure!(
                redirected >= redirected_before + 53,
                "iptables redirected {redirected} packets to 15001 (before: {redirected_before}), \
                 want one per connection (>= 53 more)"
            );
            eprintln!("outbound_9080 requests: {rq}; connections redirected to 15001: {redirected}");
            mesh.check_no_nacks().await
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_destinations_pass_through() {
    run_transparent("unknown_destinations_pass_through", block(42), XdsApi::Delta, |mesh| {
        Box::pin(async move {
            let b = mesh.block;
            let outside_http = mesh
                .server
                .start_upstream(b.pod_addr(host::OUTSIDE, APP_PORT), "outside", "none", "outside-9080")
                .await?;
            let outside_other_port =
                mesh.server.start_upstream(b.pod_addr(host::OUTSIDE, 7070), "outside", "none", "outside-7070").await?;
            let echo: TcpEcho = mesh.server.start_echo(b.pod_addr(host::OUTSIDE, 7071), "outside-echo:").await?;

            // HTTP on a mesh HTTP port (9080) to an address that is no service: the per-port
            // listener's catch-all virtual host → PassthroughCluster (original destination).
            let addr = b.pod_addr(host::OUTSIDE, APP_PORT);
            for host in [addr.to_string(), "outside.example.com".to_string()] {
                let response = mesh.await_outbound(addr, &host).await?;
                ensure!(
                    response.json_str("pod").as_deref() == Some("outside-9080"),
                    "Host {host}: answer {}",
                    response.summary()
                );
            }
            ensure!(outside_http.hits() >= 2, "outside:9080 served {}", outside_http.hits());
            mesh.await_stat("cluster.PassthroughCluster.upstream_rq_total", 2).await?;

            // HTTP on a port no service uses: virtualOutbound's default chain (TCP proxy to
            // PassthroughCluster).
            let addr = b.pod_addr(host::OUTSIDE, 7070);
            let response = mesh.await_outbound(addr, &addr.to_string()).await?;
            ensure!(response.json_str("pod").as_deref() == Some("outside-7070"), "answer {}", response.summary());
            mesh.await_stat("tcp.PassthroughCluster.downstream_cx_total", 1).await?;

            // Opaque TCP (not HTTP) passes through byte for byte.
            let tcp_before = mesh.stat("tcp.PassthroughCluster.downstream_cx_total").await?;
            let payload = b"\x00\x01binary, not HTTP\r\n\r\n";
            let answer = mesh.client.tcp_exchange(echo.addr(), payload).await?;
            let mut want = b"outside-echo:".to_vec();
            want.extend_from_slice(payload);
            ensure!(
                answer == want,
                "echo through the sidecar answered {:?}, want {:?}",
                String::from_utf8_lossy(&answer),
                String::from_utf8_lossy(&want)
            );
            let tcp = mesh.await_stat("tcp.PassthroughCluster.downstream_cx_total", tcp_before + 1).await?;
            let http = mesh.stat("cluster.PassthroughCluster.upstream_rq_total").await?;
            eprintln!("PassthroughCluster: {http} HTTP requests, {tcp} TCP-proxied connections");
            ensure!(outside_other_port.hits() >= 1, "outside:7070 was never reached");
            ensure!(
                mesh.redirected_packets("AMIME_REDIRECT").await? >= 4,
                "the passthrough connections were not redirected to 15001"
            );
            mesh.check_no_nacks().await
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_blocks_unknown_destinations() {
    let args = ["--outbound-traffic-policy", "REGISTRY_ONLY"];
    run_transparent_with("registry_only_blocks_unknown_destinations", block(47), XdsApi::Delta, &args, |mesh| {
        Box::pin(async move {
            let b = mesh.block;
            let outside_http =
                mesh.server.start_upstream(b.pod_addr(host::OUTSIDE, APP_PORT), "outside", "none", "outside").await?;
            let echo: TcpEcho = mesh.server.start_echo(b.pod_addr(host::OUTSIDE, 7071), "outside-echo:").await?;

            // The mesh first: routing by Host on the cluster IP is unchanged.
            let reviews = b.vip_addr(host::REVIEWS_VIP, APP_PORT);
            let response = mesh.await_outbound(reviews, "reviews").await?;
            ensure!(response.status == 200, "reviews through the sidecar: {}", response.summary());

            // HTTP on a mesh HTTP port to an address that is no service: a 502 that says why.
            let addr = b.pod_addr(host::OUTSIDE, APP_PORT);
            let response = mesh.outbound(addr, "outside.example.com", &[]).await?;
            ensure!(
                response.status == 502
                    && response.body.contains("outside.example.com")
                    && response.body.contains("REGISTRY_ONLY"),
                "HTTP to {addr} should be refused with a 502 naming host and policy; got {}",
                response.summary()
            );

            // Anything else (here opaque TCP on a port no service uses) is closed unanswered.
            let answer = mesh.client.tcp_exchange(echo.addr(), b"hello").await;
            ensure!(
                answer.as_ref().map_or(true, |a| a.is_empty()),
                "TCP to {} should get nothing back; got {answer:?}",
                echo.addr()
            );
            mesh.await_stat("tcp.BlackHoleCluster.downstream_cx_total", 1).await?;
            ensure!(outside_http.hits() == 0, "a blocked destination was reached");
            mesh.check_no_nacks().await
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_is_captured_by_the_15006_listener() {
    run_transparent("inbound_is_captured_by_the_15006_listener", block(43), XdsApi::Delta, |mesh| {
        Box::pin(async move {
            let b = mesh.block;
            let app_addr = b.pod_addr(host::PRODUCTPAGE, APP_PORT);
            let app = mesh.client.start_upstream(app_addr, "productpage", "v1", "productpage-v1").await?;
            let other_port = b.pod_addr(host::PRODUCTPAGE, 7070);
            let echo = mesh.client.start_echo(other_port, "productpage-echo:").await?;

            // A request from another pod to productpage's pod IP and service port.
            let response = await_condition(
                "GET http://productpage:9080/ from the server namespace to answer 200",
                ROUTE_TIMEOUT,
                || async {
                    mesh.ensure_running()?;
                    let r =
                        mesh.server.request(app_addr, "GET", "/", "productpage:9080", &[("end-user", "jason")]).await?;
                    ensure!(r.status == 200, "{}", r.summary());
                    Ok(r)
                },
            )
            .await?;
            let body: Value = response.json()?;
            ensure!(body["pod"] == "productpage-v1", "answer from {body}");
            ensure!(body["headers"]["end-user"] == "jason", "app saw {body}");
            ensure!(
                body["headers"].get("x-request-id").is_some(),
                "no x-request-id: the request did not pass the sidecar's inbound HTTP chain: {body}"
            );
            ensure!(app.hits() >= 1, "the app was not reached");
            let inbound_rq = mesh.await_stat("http.inbound_9080.downstream_rq_total", 1).await?;
            mesh.await_stat("cluster.InboundPassthroughCluster.upstream_rq_total", 1).await?;
            let cx_15006 = mesh.await_stat("listener.0.0.0.0_15006.downstream_cx_total", 1).await?;
            let redirected = mesh.redirected_packets("AMIME_IN_REDIRECT").await?;
            ensure!(redirected >= 1, "iptables redirected no inbound packet to 15006");
            eprintln!(
                "inbound_9080 requests: {inbound_rq}; 15006 connections: {cx_15006}; \
                 packets redirected to 15006: {redirected}"
            );

            // A port no service of this workload declares: TCP passthrough to the app.
            let payload = b"hello inbound";
            let answer = mesh.server.tcp_exchange(other_port, payload).await?;
            ensure!(
                answer == [b"productpage-echo:".as_slice(), payload].concat(),
                "inbound TCP answered {:?}",
                String::from_utf8_lossy(&answer)
            );
            mesh.await_stat("tcp.InboundPassthroughCluster.downstream_cx_total", 1).await?;

            // The sidecar's own ports are excluded from capture: the health listener answers
            // on the pod IP directly.
            let health = mesh.server.get(b.pod_addr(host::PRODUCTPAGE, 15021), "/healthz/ready").await?;
            ensure!(health.status == 200, "15021 /healthz/ready: {}", health.summary());
            drop(echo);
            mesh.check_no_nacks().await
        })
    })
    .await;
}

/// A TCP service's cluster IP gets its own `<vip>_<port>` listener (TCP proxy to the service's
/// cluster). This sidecar uses state-of-the-world xDS (the others use delta).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_service_cluster_ip_reaches_its_endpoints() {
    run_transparent("tcp_service_cluster_ip_reaches_its_endpoints", block(44), XdsApi::Sotw, |mesh| {
        Box::pin(async move {
            let b = mesh.block;
            let _ratings = mesh.server.start_echo(b.pod_addr(host::RATINGS_V1, RATINGS_PORT), "ratings-v1:").await?;
            let vip = b.vip_addr(host::RATINGS_VIP, RATINGS_PORT);
            let answer = await_condition(
                &format!("a TCP exchange with ratings at {vip} from the productpage pod"),
                ROUTE_TIMEOUT,
                || async {
                    mesh.ensure_running()?;
                    mesh.client.tcp_exchange(vip, b"SELECT 1;").await
                },
            )
            .await?;
            ensure!(answer == b"ratings-v1:SELECT 1;", "ratings answered {:?}", String::from_utf8_lossy(&answer));
            let cluster = "outbound|5432||ratings.bookinfo.svc.cluster.local";
            mesh.await_stat(&format!("cluster.{cluster}.upstream_cx_total"), 1).await?;
            mesh.check_no_nacks().await
        })
    })
    .await;
}
