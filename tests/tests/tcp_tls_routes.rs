//! VirtualService `tcp` and `tls` rules end to end under capture: a client pod injected by
//! meshd's injector (its init container's `amime-agent init` installs the capture, its native
//! sidecar's `amime-agent proxy` runs a real Envoy), meshd and the upstreams in a "node"
//! namespace next to it.
//!
//! ```text
//!  node namespace (amime-e2e-<pid>-l<N>-node)             client pod (amime-e2e-<pid>-l<N>-client)
//!  eth0 10.252.N.254 (meshd xDS :15010, monitoring :15014)  eth0 10.252.N.1, default via .254
//!       .11 mongo-v1 :27017, .12 mongo-v2 :27017  <── veth ──>  capture + Envoy (uid 1337)
//!       .21 secure-a :8443,  .22 secure-b :8443   (TLS, certificates for a.example / b.example)
//!  cluster IPs 10.98.N.x exist only in the YAML: only a sidecar that captured a connection
//!  can reach one.
//! ```
//!
//! Not root (or no `ip netns`): the tests print `SKIPPED: <reason>` and pass vacuously.

use std::net::SocketAddr;
use std::time::Duration;

use amime_e2e::injected::{self, RunningPod};
use amime_e2e::meshd::{ensure_no_nacks, parse_metric, NACKS_METRIC};
use amime_e2e::netns::{self, link_veth, AddressBlock, Netns, TcpEcho};
use amime_e2e::process::ManagedProcess;
use amime_e2e::sidecar::ensure_no_rejected_updates;
use amime_e2e::tls_sites::{Site, TlsSites};
use amime_e2e::{await_condition, run_test, MeshDir, TestContext};
use anyhow::{anyhow, ensure, Context as _, Result};
use injector::settings::InjectionSettings;
use serde_json::json;

const MONGO_PORT: u16 = 27017;
const TLS_PORT: u16 = 443;
const TLS_TARGET_PORT: u16 = 8443;
const XDS_PORT: u16 = 15010;
const MONITORING_PORT: u16 = 15014;
const ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// Host numbers in `10.252.N.0/24` (pods, node) and `10.98.N.0/24` (cluster IPs).
mod host {
    pub const CLIENT: u8 = 1;
    pub const MONGO_V1: u8 = 11;
    pub const MONGO_V2: u8 = 12;
    pub const SECURE_A: u8 = 21;
    pub const SECURE_B: u8 = 22;
    pub const NODE: u8 = 254;
    pub const MONGO_VIP: u8 = 1;
    pub const SECURE_VIP: u8 = 2;
}

fn block(n: u8) -> AddressBlock {
    AddressBlock { pods: 252, vips: 98, n }
}

/// The Namespace, Services and upstream Pods (the client pod is added injected).
fn mesh_yaml(b: AddressBlock) -> String {
    let service = |name: &str, vip: u8, port_name: &str, port: u16, target: u16| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: data}}\nspec:\n  clusterIP: {}\n  \
             selector: {{app: {name}}}\n  ports:\n  - {{name: {port_name}, port: {port}, targetPort: {target}}}\n",
            b.vip(vip)
        )
    };
    let pod = |name: &str, app: &str, label: &str, value: &str, h: u8| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: data, labels: {{app: {app}, {label}: \
             {value}}}}}\nspec:\n  containers: [{{name: {app}, image: example/{app}}}]\nstatus: {{podIP: {}}}\n",
            b.pod(h)
        )
    };
    let subsets = |host: &str, label: &str, names: [&str; 2]| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {host}, namespace: data}}\n\
             spec:\n  host: {host}\n  subsets:\n  - {{name: {0}, labels: {{{label}: {0}}}}}\n  - {{name: {1}, labels: \
             {{{label}: {1}}}}}\n",
            names[0], names[1]
        )
    };
    [
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: data}\n".to_string(),
        service("mongo", host::MONGO_VIP, "tcp-mongo", MONGO_PORT, MONGO_PORT),
        service("secure", host::SECURE_VIP, "https", TLS_PORT, TLS_TARGET_PORT),
        pod("mongo-v1", "mongo", "version", "v1", host::MONGO_V1),
        pod("mongo-v2", "mongo", "version", "v2", host::MONGO_V2),
        pod("secure-a", "secure", "site", "a", host::SECURE_A),
        pod("secure-b", "secure", "site", "b", host::SECURE_B),
        subsets("mongo", "version", ["v1", "v2"]),
        subsets("secure", "site", ["a", "b"]),
    ]
    .concat()
}

/// 80/20 over mongo's subsets; a first rule for a subnet the cluster IP is not in takes none
/// of this traffic.
const MONGO_RULES: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mongo, namespace: data}
spec:
  hosts: [mongo]
  tcp:
  - match:
    - destinationSubnets: [192.0.2.0/24]
    route:
    - destination: {host: mongo, subset: v2}
  - match:
    - port: 27017
    route:
    - destination: {host: mongo, subset: v1}
      weight: 80
    - destination: {host: mongo, subset: v2}
      weight: 20
"#;

/// TLS passthrough by SNI: a.example to site a, b.example to site b.
const SECURE_RULES: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure, namespace: data}
spec:
  hosts: [secure, a.example, b.example]
  tls:
  - match:
    - sniHosts: [a.example]
      port: 443
    route:
    - destination: {host: secure, subset: a}
  - match:
    - sniHosts: [b.example]
    route:
    - destination: {host: secure, subset: b}
"#;

/// meshd and an injected client pod, with `rules` in the config directory. Fields drop in
/// order: the pod (sidecar killed, namespace deleted), meshd, the node namespace.
struct Mesh {
    client: RunningPod,
    meshd: ManagedProcess,
    node: Netns,
    block: AddressBlock,
    _dir: MeshDir,
}

impl Mesh {
    async fn start(ctx: &TestContext, block: AddressBlock, rules: &str) -> Result<Self> {
        let n = block.n;
        let node_ip = block.pod(host::NODE);
        let node = Netns::create(&format!("l{n}-node")).await?;
        let client_ns = Netns::create(&format!("l{n}-client")).await?;
        let cidr = |h: u8| format!("{}/24", block.pod(h));
        link_veth(&client_ns, "eth0", &cidr(host::CLIENT), &node, "eth0", &cidr(host::NODE)).await?;
        client_ns.ip(["route", "add", "default", "via", &node_ip.to_string()]).await?;
        for h in [host::MONGO_V1, host::MONGO_V2, host::SECURE_A, host::SECURE_B] {
            node.ip(["addr", "add", &cidr(h), "dev", "eth0"]).await?;
        }

        let xds = SocketAddr::from((node_ip, XDS_PORT));
        let settings = InjectionSettings { xds_address: xds.to_string(), ..Default::default() };
        let user_pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "client", "namespace": "data", "labels": {"app": "client"}},
            "spec": {"containers": [{"name": "client", "image": "example/client"}]},
        });
        let mut pod = injected::inject_pod(&user_pod, &settings)?;
        let ip = block.pod(host::CLIENT).to_string();
        pod["status"] = json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]});
        let dir = MeshDir::new(ctx)?;
        dir.write("mesh.yaml", &format!("{}---\n{}", mesh_yaml(block), serde_yaml::to_string(&pod)?))?;
        dir.write("rules.yaml", rules)?;
        let monitoring = SocketAddr::from((node_ip, MONITORING_PORT));
        let meshd = node.start_meshd(ctx, dir.path(), xds, monitoring, &[]).await?;
        let client = RunningPod::start(ctx, client_ns, block.pod(host::CLIENT), pod, &node).await?;
        Ok(Self { client, meshd, node, block, _dir: dir })
    }

    fn ensure_running(&self) -> Result<()> {
        self.meshd.ensure_running()?;
        self.client.ensure_running()
    }

    /// The client's Envoy accepted listeners and clusters and rejected nothing; meshd
    /// counted no NACK and reported no problem with the rules.
    async fn check_no_nacks(&self) -> Result<()> {
        let stats = self.client.stats().await?;
        ensure_no_rejected_updates(&stats)?;
        for name in ["listener_manager.lds.update_success", "cluster_manager.cds.update_success"] {
            let n = stats.get(name).copied().unwrap_or(0);
            ensure!(n >= 1, "{name} = {n}: the client's Envoy never accepted an update");
        }
        let monitoring = SocketAddr::from((self.block.pod(host::NODE), MONITORING_PORT));
        let errors = self.node.get(monitoring, "/debug/config_errors").await?;
        ensure!(errors.status == 200 && !errors.body.contains("VirtualService"), "meshd reports {}", errors.body);
        let metrics = self.node.get(monitoring, "/metrics").await?;
        ensure_no_nacks(parse_metric(&metrics.body, NACKS_METRIC))
    }

    /// Cluster stat `stat` of `cluster` in the client's Envoy.
    async fn cluster_stat(&self, cluster: &str, stat: &str) -> Result<u64> {
        self.client.stat(&format!("cluster.outbound|{cluster}.data.svc.cluster.local.{stat}")).await
    }
}

async fn run<F>(name: &str, n: u8, rules: &'static str, body: F)
where
    F: for<'a> FnOnce(&'a Mesh) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>,
{
    if let Some(reason) = netns::unsupported_reason() {
        eprintln!("SKIPPED: {name}: {reason}");
        return;
    }
    run_test(name, |ctx| async move {
        let mesh = Mesh::start(&ctx, block(n), rules).await?;
        body(&mesh).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_tcp_route_splits_connections() {
    run("a_weighted_tcp_route_splits_connections", 172, MONGO_RULES, |mesh| {
        Box::pin(async move {
            let b = mesh.block;
            let _v1: TcpEcho = mesh.node.start_echo(b.pod_addr(host::MONGO_V1, MONGO_PORT), "mongo-v1:").await?;
            let _v2: TcpEcho = mesh.node.start_echo(b.pod_addr(host::MONGO_V2, MONGO_PORT), "mongo-v2:").await?;
            let vip = b.vip_addr(host::MONGO_VIP, MONGO_PORT);
            let exchange = || mesh.client.netns.tcp_exchange(vip, b"ping");
            await_condition(&format!("a TCP exchange with mongo at {vip}"), ROUTE_TIMEOUT, || async {
                mesh.ensure_running()?;
                let answer = exchange().await?;
                ensure!(answer.ends_with(b":ping"), "answer {:?}", String::from_utf8_lossy(&answer));
                Ok(())
            })
            .await?;
            let before = mesh.cluster_stat("27017|v1|mongo", "upstream_cx_total").await?
                + mesh.cluster_stat("27017|v2|mongo", "upstream_cx_total").await?;

            const CONNECTIONS: usize = 300;
            let (mut v1, mut v2) = (0, 0);
            for _ in 0..CONNECTIONS {
                let answer = exchange().await?;
                match answer.as_slice() {
                    b"mongo-v1:ping" => v1 += 1,
                    b"mongo-v2:ping" => v2 += 1,
                    other => return Err(anyhow!("mongo answered {:?}", String::from_utf8_lossy(other))),
                }
            }
            // 80% of 300 is 240; a binomial standard deviation is ~6.9, so ±30 is over 4 of them.
            eprintln!("{CONNECTIONS} connections: v1 {v1}, v2 {v2}");
            ensure!((210..=270).contains(&v1), "v1 got {v1} of {CONNECTIONS} connections, want 240 ± 30 (v2: {v2})");
            let counted =
                await_condition("Envoy to count the connections per subset", Duration::from_secs(5), || async {
                    let (a, b) = (
                        mesh.cluster_stat("27017|v1|mongo", "upstream_cx_total").await?,
                        mesh.cluster_stat("27017|v2|mongo", "upstream_cx_total").await?,
                    );
                    ensure!(a + b >= before + CONNECTIONS as u64, "v1 {a}, v2 {b}");
                    Ok((a, b))
                })
                .await?;
            eprintln!("Envoy's subset clusters: {counted:?} connections (before the run: {before} in all)");
            mesh.check_no_nacks().await
        })
    })
    .await;
}

/// A TLS connection from the client pod to `addr` for `sni`; what the site said.
async fn tls_call(mesh: &Mesh, tls: &TlsSites, addr: SocketAddr, sni: &str) -> Result<String> {
    let tcp = mesh.client.netns.connect(addr).await?;
    tls.call(tcp, sni).await.with_context(|| format!("TLS to {addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_route_sends_each_sni_to_its_destination() {
    run("a_tls_route_sends_each_sni_to_its_destination", 173, SECURE_RULES, |mesh| {
        Box::pin(async move {
            let b = mesh.block;
            let sites = [("a", "a.example"), ("b", "b.example")];
            let tls = TlsSites::serve(vec![
                Site {
                    site: "a",
                    name: "a.example",
                    listener: mesh.node.bind(b.pod_addr(host::SECURE_A, TLS_TARGET_PORT)).await?,
                },
                Site {
                    site: "b",
                    name: "b.example",
                    listener: mesh.node.bind(b.pod_addr(host::SECURE_B, TLS_TARGET_PORT)).await?,
                },
            ])?;
            let vip = b.vip_addr(host::SECURE_VIP, TLS_PORT);
            await_condition(&format!("TLS to secure at {vip} as a.example"), ROUTE_TIMEOUT, || async {
                mesh.ensure_running()?;
                let answer = tls_call(mesh, &tls, vip, "a.example").await?;
                ensure!(answer == "secure-a", "answer {answer:?}");
                Ok(())
            })
            .await?;
            // Each name reaches its own site, every time (the handshake checks the certificate
            // is for that name, so the upstream terminated this very connection).
            for _ in 0..10 {
                for (site, sni) in &sites {
                    let answer = tls_call(mesh, &tls, vip, sni).await?;
                    ensure!(answer == format!("secure-{site}"), "{sni} reached {answer:?}");
                }
            }
            // An SNI no rule names matches no filter chain: closed, as in Istio.
            let unknown = tls_call(mesh, &tls, vip, "c.example").await;
            ensure!(unknown.is_err(), "c.example was answered: {unknown:?}");
            let a = mesh.cluster_stat("443|a|secure", "upstream_cx_total").await?;
            let b_count = mesh.cluster_stat("443|b|secure", "upstream_cx_total").await?;
            ensure!(a >= 11 && b_count >= 10, "Envoy's site clusters counted a {a}, b {b_count}");
            let inspected = mesh.client.stat("tls_inspector.sni_found").await?;
            ensure!(inspected >= 21, "the TLS inspector found {inspected} SNIs, want >= 21");
            eprintln!("site a: {a} connections, site b: {b_count}; SNIs inspected: {inspected}");
            mesh.check_no_nacks().await
        })
    })
    .await;
}
