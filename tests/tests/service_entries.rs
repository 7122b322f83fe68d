//! ServiceEntry hosts end to end (explicit-mode sidecar, real meshd and Envoy): a STATIC
//! entry split by a VirtualService between two endpoint subsets, DNS and DNS_ROUND_ROBIN
//! entries resolving `localhost`, REGISTRY_ONLY letting entry hosts through and blocking
//! the rest, and a DestinationRule originating TLS to an entry's endpoint. Each test ends
//! checking that Envoy rejected no update and meshd counted no NACK.
//!
//! Blocks 205..=209 and 217..=219 belong to this file.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use amime_e2e::mesh::{self, APP_PORT};
use amime_e2e::{await_condition, hosts, run_test, Bookinfo, BookinfoOptions, IpBlock, MeshDir, TestContext, Upstream};
use anyhow::{ensure, Context as _, Result};
use control_plane::webhook::{certs, server, tls};

const ENTRY_FILE: &str = "entries.yaml";

/// The bookinfo mesh in `block` (for its sidecar and meshd), plus `entries` YAML.
async fn start(ctx: &TestContext, block: IpBlock, entries: &str, meshd_args: &[&str]) -> Result<Bookinfo> {
    let dir = MeshDir::new(ctx)?;
    dir.write("mesh.yaml", &mesh::bookinfo_mesh_yaml(block)?)?;
    dir.write(ENTRY_FILE, entries)?;
    let options =
        BookinfoOptions { meshd_args: meshd_args.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    Bookinfo::start(ctx, block, dir, options).await
}

/// An app outside the mesh on 127.0.0.1 (what `localhost` resolves to), on a port the
/// kernel picks so that tests in parallel never meet.
async fn localhost_upstream(version: &str) -> Result<Upstream> {
    Upstream::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), "outside", version, version).await
}

fn entry(name: &str, spec: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: bookinfo}}\nspec:\n{spec}---\n")
}

/// Requests through the sidecar to cluster `cluster` so far (Envoy's counter).
async fn cluster_requests(bookinfo: &Bookinfo, cluster: &str) -> Result<u64> {
    Ok(bookinfo.productpage.stat(&format!("cluster.{cluster}.upstream_rq_total")).await?.unwrap_or(0))
}

fn split(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: api, namespace: bookinfo}}\nspec:\n  hosts: [api.example.com]\n  http:\n  - route:\n    - {{destination: {{host: api.example.com, subset: v1}}, weight: {v1}}}\n    - {{destination: {{host: api.example.com, subset: v2}}, weight: {v2}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_entry_is_split_between_endpoint_subsets() {
    run_test("a_static_entry_is_split_between_endpoint_subsets", |ctx| async move {
        let block = IpBlock(205);
        let _v1 = Upstream::start(block.addr(hosts::EXTRA_1, APP_PORT), "api", "v1", "api-1").await?;
        let _v2 = Upstream::start(block.addr(hosts::EXTRA_2, 8080), "api", "v2", "api-2").await?;
        // The entry's port 80 goes to targetPort 9080, except where an endpoint names its own.
        let (ip1, ip2) = (block.ip(hosts::EXTRA_1), block.ip(hosts::EXTRA_2));
        let se = entry(
            "api",
            &format!("  hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {APP_PORT}}}]\n  endpoints:\n  - {{address: {ip1}, labels: {{version: v1}}}}\n  - {{address: {ip2}, labels: {{version: v2}}, ports: {{http: 8080}}}}\n"),
        );
        let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api, namespace: bookinfo}\nspec:\n  host: api.example.com\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n---\n";
        let bookinfo = start(&ctx, block, &format!("{se}{dr}{}", split(50, 50)), &[]).await?;
        let url = "http://api.example.com/";
        bookinfo.await_answer(url, Duration::from_secs(10)).await?;
        let tally = bookinfo.productpage.tally(200, url, &[]).await;
        tally.ensure_even_split("v1", "v2")?;

        let since = bookinfo.dir.write(ENTRY_FILE, &format!("{se}{dr}{}", split(0, 100)))?;
        await_condition("every request to api.example.com to reach subset v2", Duration::from_secs(10), || async {
            bookinfo.productpage.tally(20, url, &[]).await.ensure_all("v2", "after the split moved to v2")
        })
        .await?;
        let tally = bookinfo.productpage.tally(50, url, &[]).await;
        tally.ensure_all("v2", &format!("{:?} after the change", since.elapsed()))?;
        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_entries_resolve_their_endpoints_or_their_host() {
    run_test("dns_entries_resolve_their_endpoints_or_their_host", |ctx| async move {
        let block = IpBlock(206);
        let (by_endpoint, by_host) = (localhost_upstream("by-endpoint").await?, localhost_upstream("by-host").await?);
        // DNS: the endpoint `localhost` is resolved (STRICT_DNS). DNS_ROUND_ROBIN without
        // endpoints: the host itself is (LOGICAL_DNS).
        let port = by_host.addr().port();
        let entries = entry(
            "by-endpoint",
            &format!(
                "  hosts: [local-api.example]\n  resolution: DNS\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: localhost, ports: {{http: {}}}}}]\n",
                by_endpoint.addr().port()
            ),
        ) + &entry(
            "by-host",
            &format!("  hosts: [localhost]\n  resolution: DNS_ROUND_ROBIN\n  ports: [{{number: {port}, name: http, protocol: HTTP}}]\n"),
        );
        let bookinfo = start(&ctx, block, &entries, &[]).await?;
        for (url, version, cluster) in [
            ("http://local-api.example/".to_owned(), "by-endpoint", "outbound|80||local-api.example".to_owned()),
            (format!("http://localhost:{port}/"), "by-host", format!("outbound|{port}||localhost")),
        ] {
            bookinfo.await_answer(&url, Duration::from_secs(10)).await?;
            bookinfo.productpage.tally(10, &url, &[]).await.ensure_all(version, &url)?;
            // Through the entry's cluster, not the passthrough.
            let sent = cluster_requests(&bookinfo, &cluster).await?;
            ensure!(sent >= 10, "{cluster} sent {sent} requests, want at least 10");
        }
        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_lets_entry_hosts_through_and_blocks_the_rest() {
    run_test("registry_only_lets_entry_hosts_through_and_blocks_the_rest", |ctx| async move {
        let block = IpBlock(207);
        let (allowed, other) = (localhost_upstream("allowed").await?, localhost_upstream("other").await?);
        let outside = Upstream::start(block.addr(hosts::OUTSIDE, APP_PORT), "outside", "none", "not-in-mesh").await?;
        // A NONE entry: its address goes through to wherever the request was sent.
        let passed = Upstream::start(block.addr(hosts::EXTRA_1, APP_PORT), "passed", "none", "none-entry").await?;
        let se = entry(
            "allowed",
            &format!(
                "  hosts: [allowed.example]\n  resolution: DNS\n  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {}}}]\n  endpoints: [{{address: localhost}}]\n",
                allowed.addr().port()
            ),
        ) + &entry(
            "passed",
            &format!(
                "  hosts: [passed.example]\n  addresses: [{}]\n  resolution: NONE\n  ports: [{{number: {APP_PORT}, name: http, protocol: HTTP}}]\n",
                block.ip(hosts::EXTRA_1)
            ),
        );
        let bookinfo = start(&ctx, block, &se, &["--outbound-traffic-policy", "REGISTRY_ONLY"]).await?;
        bookinfo.await_answer("http://allowed.example/", Duration::from_secs(10)).await?;
        bookinfo.productpage.tally(10, "http://allowed.example/", &[]).await.ensure_all("allowed", "the entry host")?;

        for url in [format!("http://localhost:{}/", other.addr().port()), format!("http://{}/", outside.addr())] {
            let response = bookinfo.productpage.request(&url, &[]).await?;
            ensure!(response.status == 502, "GET {url} should be blocked with 502; got {}", response.summary());
            ensure!(response.body.contains("REGISTRY_ONLY"), "the 502 for {url} names the policy: {:?}", response.body);
        }
        let url = format!("http://{}/", passed.addr());
        bookinfo.productpage.tally(5, &url, &[]).await.ensure_all("none", "the NONE entry's address")?;
        ensure!(other.hits() == 0 && outside.hits() == 0, "a destination outside the registry was reached");
        ensure!(passed.hits() >= 5, "the NONE entry's address saw {} requests", passed.hits());
        ensure!(allowed.hits() >= 10, "the entry's endpoint saw {} requests", allowed.hits());
        bookinfo.check_no_nacks().await
    })
    .await;
}

/// A TLS-only app on `addr` answering `{"version": "tls"}`, with a certificate for
/// `secure.example` (and a few other names) signed by a fresh CA. Returns the CA's PEM.
async fn start_tls_app(addr: SocketAddr) -> Result<(tokio::task::JoinHandle<()>, String)> {
    let generated = certs::generate("secure", "example").context("generate certificates")?;
    let key = tls::certified_key(generated.cert_pem.as_bytes(), generated.key_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the generated key: {e}"))?;
    let acceptor = tls::acceptor(tls::SwappableCert::new(key))?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?;
    let app = axum::Router::new()
        .fallback(|| async { axum::Json(serde_json::json!({"service": "secure", "version": "tls"})) });
    let task = tokio::spawn(async move {
        let _ = server::serve_app(listener, acceptor, app, 64).await;
    });
    Ok((task, generated.ca_pem))
}

fn tls_rule(ca: Option<&std::path::Path>) -> String {
    let ca = ca.map(|p| format!(", caCertificates: {}", p.display())).unwrap_or_default();
    format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: secure, namespace: bookinfo}}\nspec:\n  host: secure.example\n  trafficPolicy:\n    tls: {{mode: SIMPLE, sni: secure.example{ca}}}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_tls_is_originated_to_an_entry_endpoint() {
    run_test("simple_tls_is_originated_to_an_entry_endpoint", |ctx| async move {
        let block = IpBlock(208);
        let addr = block.addr(hosts::EXTRA_1, 8443);
        let (server, ca_pem) = start_tls_app(addr).await?;
        let _server = AbortOnDrop(server);
        let ca = ctx.unique_path("entry-ca", ".pem");
        std::fs::write(&ca, ca_pem)?;
        let se = entry(
            "secure",
            &format!("  hosts: [secure.example]\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: 8443}}]\n  endpoints: [{{address: {}}}]\n", addr.ip()),
        );
        let bookinfo = start(&ctx, block, &format!("{se}{}", tls_rule(Some(&ca))), &[]).await?;
        let url = "http://secure.example/hello";
        bookinfo.await_answer(url, Duration::from_secs(10)).await?;
        bookinfo.productpage.tally(10, url, &[]).await.ensure_all("tls", "plain HTTP in, TLS to the endpoint")?;

        // The server's certificate is checked: the system's CAs do not know ours.
        bookinfo.dir.write(ENTRY_FILE, &format!("{se}{}", tls_rule(None)))?;
        await_condition("a CA that did not sign the certificate to fail the requests", Duration::from_secs(10), || async {
            let r = bookinfo.productpage.request(url, &[]).await?;
            ensure!(r.status == 503, "{}", r.summary());
            Ok(())
        })
        .await?;
        bookinfo.check_no_nacks().await
    })
    .await;
}

/// Stops a spawned server when the test ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
