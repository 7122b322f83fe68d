//! Gateway servers that do not terminate anything, end to end with a real Envoy started by
//! `meshctl bootstrap --gateway`: a `TLS` server in `PASSTHROUGH` mode sends each SNI name
//! to the upstream a VirtualService `tls` rule names (the upstream terminates TLS with its
//! own certificate), and a `TCP` server proxies connections by a `tcp` rule.

use std::time::Duration;

use amime_e2e::meshd::Meshd;
use amime_e2e::sidecar::{self, Sidecar, SidecarSpec};
use amime_e2e::tls_sites::{Site, TlsSites};
use amime_e2e::{await_condition, run_test, IpBlock, MeshDir};
use anyhow::{ensure, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Hosts in the test's block.
const MESHD: u8 = 1;
const GATEWAY: u8 = 30;
const SECURE_A: u8 = 21;
const SECURE_B: u8 = 22;
const DB: u8 = 23;
const TLS_PORT: u16 = 8443;
const TCP_PORT: u16 = 15432;
const UPSTREAM_TLS_PORT: u16 = 9443;
const UPSTREAM_DB_PORT: u16 = 5432;

/// Services secure-a, secure-b (TLS) and db (TCP), their pods on the block's loopback
/// addresses, the Gateway and the VirtualServices bound to it.
const MESH: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: edge}
---
apiVersion: v1
kind: Service
metadata: {name: secure-a, namespace: edge}
spec:
  clusterIP: 10.96.{N}.21
  selector: {app: secure-a}
  ports: [{name: tls, port: 443, targetPort: 9443}]
---
apiVersion: v1
kind: Service
metadata: {name: secure-b, namespace: edge}
spec:
  clusterIP: 10.96.{N}.22
  selector: {app: secure-b}
  ports: [{name: tls, port: 443, targetPort: 9443}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: edge}
spec:
  clusterIP: 10.96.{N}.23
  selector: {app: db}
  ports: [{name: tcp-postgres, port: 5432}]
---
apiVersion: v1
kind: Pod
metadata: {name: secure-a, namespace: edge, labels: {app: secure-a}}
spec: {containers: [{name: app, image: example/secure}]}
status: {podIP: 127.0.{N}.21}
---
apiVersion: v1
kind: Pod
metadata: {name: secure-b, namespace: edge, labels: {app: secure-b}}
spec: {containers: [{name: app, image: example/secure}]}
status: {podIP: 127.0.{N}.22}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: edge, labels: {app: db}}
spec: {containers: [{name: app, image: example/db}]}
status: {podIP: 127.0.{N}.23}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: tls, protocol: TLS}
    hosts: ['*.example.com']
    tls: {mode: PASSTHROUGH}
  - port: {number: 15432, name: tcp, protocol: TCP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sites, namespace: edge}
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [edge]
  tls:
  - match: [{sniHosts: [a.example.com], port: 8443}]
    route: [{destination: {host: secure-a, port: {number: 443}}}]
  - match: [{sniHosts: [b.example.com]}]
    route: [{destination: {host: secure-b, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: edge}
spec:
  hosts: ['*']
  gateways: [edge]
  tcp:
  - match: [{port: 15432}]
    route: [{destination: {host: db, port: {number: 5432}}}]
"#;

/// A TCP server that answers `db:` and echoes what it reads.
fn serve_echo(listener: TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                if let Ok(n) = stream.read(&mut buf).await {
                    let _ = stream.write_all(b"db:").await;
                    let _ = stream.write_all(&buf[..n]).await;
                }
            });
        }
    })
}

async fn echo_call(addr: std::net::SocketAddr, text: &str) -> Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(text.as_bytes()).await?;
    stream.shutdown().await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer)).await??;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_passes_tls_through_by_sni_and_proxies_tcp() {
    run_test("gateway_passes_tls_through_by_sni_and_proxies_tcp", |ctx| async move {
        let block = IpBlock(174);
        let dir = MeshDir::new(&ctx)?;
        dir.write("edge.yaml", &MESH.replace("{N}", &block.0.to_string()))?;
        let sites = TlsSites::serve(vec![
            Site {
                site: "a",
                name: "a.example.com",
                listener: TcpListener::bind(block.addr(SECURE_A, UPSTREAM_TLS_PORT)).await?,
            },
            Site {
                site: "b",
                name: "b.example.com",
                listener: TcpListener::bind(block.addr(SECURE_B, UPSTREAM_TLS_PORT)).await?,
            },
        ])?;
        let echo = serve_echo(TcpListener::bind(block.addr(DB, UPSTREAM_DB_PORT)).await?);
        let meshd = Meshd::start(&ctx, dir.path(), block.ip(MESHD), &[]).await?;
        let spec = SidecarSpec::new("ingressgateway", "istio-system", block.ip(GATEWAY))
            .label("istio", "ingressgateway")
            .gateway();
        let gateway = Sidecar::start(&ctx, &spec, meshd.xds_addr()).await?;

        let tls_addr = block.addr(GATEWAY, TLS_PORT);
        await_condition("the gateway to pass a.example.com through", Duration::from_secs(15), || async {
            let answer = sites.call(TcpStream::connect(tls_addr).await?, "a.example.com").await?;
            ensure!(answer == "secure-a", "answer {answer:?}");
            Ok(())
        })
        .await?;
        // Each name reaches its own upstream every time: the handshake verified the
        // upstream's certificate for that name, so the gateway did not terminate TLS.
        for _ in 0..10 {
            for (site, sni) in [("a", "a.example.com"), ("b", "b.example.com")] {
                let answer = sites.call(TcpStream::connect(tls_addr).await?, sni).await?;
                ensure!(answer == format!("secure-{site}"), "{sni} reached {answer:?}");
            }
        }
        // A name within the server's hosts that no rule routes, and one outside them: closed.
        for sni in ["c.example.com", "a.example.org"] {
            let other = sites.call(TcpStream::connect(tls_addr).await?, sni).await;
            ensure!(other.is_err(), "{sni} was answered: {other:?}");
        }

        let answer = echo_call(block.addr(GATEWAY, TCP_PORT), "hello").await?;
        ensure!(answer == "db:hello", "the TCP server's answer: {answer:?}");

        let stats = gateway.stats().await?;
        let cx = |cluster: &str| stats.get(&format!("cluster.{cluster}.upstream_cx_total")).copied().unwrap_or(0);
        let (a, b, db) = (
            cx("outbound|443||secure-a.edge.svc.cluster.local"),
            cx("outbound|443||secure-b.edge.svc.cluster.local"),
            cx("outbound|5432||db.edge.svc.cluster.local"),
        );
        ensure!(a >= 11 && b >= 10 && db >= 1, "the gateway's clusters counted a {a}, b {b}, db {db}");
        eprintln!("passthrough: a {a}, b {b} connections; tcp: db {db}");
        echo.abort();
        sidecar::ensure_no_rejected_updates(&stats)?;
        amime_e2e::meshd::ensure_no_nacks(meshd.metric(amime_e2e::meshd::NACKS_METRIC).await?)
    })
    .await;
}
