//! Outbound traffic policy end to end (explicit mode): destinations that are not services of
//! the mesh pass through under `ALLOW_ANY`, by IP or by name (the sidecar resolves the name
//! itself), and are refused with a 502 that says why under `REGISTRY_ONLY`; mesh routing is
//! the same under both. Real meshd, `meshctl bootstrap` and Envoy.
//!
//! Blocks 51..=53 belong to this file.

use std::net::{Ipv4Addr, SocketAddr};

use amime_e2e::mesh::APP_PORT;
use amime_e2e::{hosts, run_test, Bookinfo, BookinfoOptions, IpBlock, MeshDir, TestContext, Upstream};
use anyhow::{ensure, Result};

async fn start_bookinfo(ctx: &TestContext, block: IpBlock, meshd_args: &[&str]) -> Result<Bookinfo> {
    let dir = MeshDir::new(ctx)?;
    dir.copy_bookinfo_example(block)?;
    let options =
        BookinfoOptions { meshd_args: meshd_args.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    Bookinfo::start(ctx, block, dir, options).await
}

/// An upstream outside the mesh on 127.0.0.1 (which `localhost` resolves to), on a port the
/// kernel picks so that tests in parallel do not meet.
async fn localhost_upstream() -> Result<Upstream> {
    Upstream::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), "outside", "none", "localhost-app").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_any_passes_unknown_names_through_resolving_them() {
    run_test("allow_any_passes_unknown_names_through_resolving_them", |ctx| async move {
        let block = IpBlock(51);
        let outside = localhost_upstream().await?;
        let bookinfo = start_bookinfo(&ctx, block, &[]).await?;

        // By name: no service is called `localhost`; the sidecar resolves it itself.
        let url = format!("http://localhost:{}/by-name?q=1", outside.addr().port());
        let response = bookinfo.productpage.request(&url, &[]).await?;
        ensure!(response.status == 200, "GET {url} through the sidecar: {}", response.summary());
        let body = response.json()?;
        ensure!(body["pod"] == "localhost-app" && body["path"] == "/by-name?q=1", "GET {url}: {body}");

        // By IP, as before.
        let url = format!("http://{}/by-ip", outside.addr());
        let response = bookinfo.productpage.request(&url, &[]).await?;
        ensure!(response.status == 200, "GET {url} through the sidecar: {}", response.summary());
        ensure!(outside.hits() == 2, "the outside app saw {} requests, want 2", outside.hits());

        // Mesh services are still routed by the rules, not passed through.
        let tally = bookinfo.productpage.tally(20, Bookinfo::REVIEWS_URL, &[("end-user", "jason")]).await;
        ensure!(tally.all("v2"), "jason → v2 next to passthrough: {tally}");
        check_operator_view(&bookinfo).await?;
        bookinfo.check_no_nacks().await
    })
    .await;
}

/// `/debug/proxies` shows the sidecar with its peer address and instance IPs, and meshd's
/// log of its connection is plain text (no `Some(..)`, no colour escapes in a file).
async fn check_operator_view(bookinfo: &Bookinfo) -> Result<()> {
    let proxies = bookinfo.meshd.debug_proxies().await?;
    let proxy = proxies
        .as_array()
        .and_then(|all| all.iter().find(|p| p["node_id"] == "productpage-v1.bookinfo"))
        .ok_or_else(|| anyhow::anyhow!("productpage-v1.bookinfo is not in /debug/proxies: {proxies}"))?;
    let ip = bookinfo.block.ip(hosts::PRODUCTPAGE).to_string();
    ensure!(proxy["details"]["instance_ips"] == ip.as_str(), "instance IPs in /debug/proxies: {proxy}");
    ensure!(proxy["peer"].as_str().is_some_and(|p| p.contains(':')), "peer address in /debug/proxies: {proxy}");
    ensure!(proxy["state"] == "SYNCED", "the sidecar should be SYNCED: {proxy}");
    let log = std::fs::read_to_string(bookinfo.meshd.process().stdout_log())?;
    let connected = log.lines().find(|l| l.contains("proxy connected") && l.contains("productpage-v1.bookinfo"));
    let line = connected.ok_or_else(|| anyhow::anyhow!("meshd did not log the connection:\n{log}"))?;
    ensure!(!line.contains("Some(") && !line.contains('\u{1b}'), "meshd's log line is not plain: {line:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_blocks_unknown_destinations_with_a_502_saying_why() {
    run_test("registry_only_blocks_unknown_destinations_with_a_502_saying_why", |ctx| async move {
        let block = IpBlock(52);
        let by_ip = Upstream::start(block.addr(hosts::OUTSIDE, APP_PORT), "outside", "none", "not-in-mesh").await?;
        let by_name = localhost_upstream().await?;
        let bookinfo = start_bookinfo(&ctx, block, &["--outbound-traffic-policy", "REGISTRY_ONLY"]).await?;

        for url in [format!("http://{}/", by_ip.addr()), format!("http://localhost:{}/", by_name.addr().port())] {
            let response = bookinfo.productpage.request(&url, &[]).await?;
            ensure!(response.status == 502, "GET {url} should be blocked with 502; got {}", response.summary());
            let body = &response.body;
            let host = url.trim_start_matches("http://").trim_end_matches('/');
            ensure!(
                body.contains(host) && body.contains("REGISTRY_ONLY"),
                "the 502 for {url} should name the host and the policy; body: {body:?}"
            );
        }
        ensure!(by_ip.hits() == 0 && by_name.hits() == 0, "a blocked destination was reached");

        // The mesh itself is untouched: header rule and the split still apply.
        let tally = bookinfo.productpage.tally(20, Bookinfo::REVIEWS_URL, &[("end-user", "jason")]).await;
        ensure!(tally.all("v2"), "jason → v2 under REGISTRY_ONLY: {tally}");
        let response = bookinfo.productpage.request("http://reviews.bookinfo.svc.cluster.local:9080/", &[]).await?;
        ensure!(response.status == 200, "a mesh service by FQDN: {}", response.summary());
        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_policy_name_is_refused_at_startup() {
    run_test("a_wrong_policy_name_is_refused_at_startup", |ctx| async move {
        let output = tokio::process::Command::new(amime_e2e::paths::binary("meshd")?)
            .args(["--config-dir", &ctx.dir().display().to_string(), "--outbound-traffic-policy", "REGISTRY"])
            .output()
            .await?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(!output.status.success(), "meshd accepted --outbound-traffic-policy REGISTRY");
        ensure!(
            stderr.contains("ALLOW_ANY") && stderr.contains("REGISTRY_ONLY"),
            "the error should list the valid policies: {stderr}"
        );
        Ok(())
    })
    .await;
}
