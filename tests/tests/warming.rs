//! Changed clusters converge at once: editing a DestinationRule's `trafficPolicy.loadBalancer`
//! changes every reviews cluster but none of their endpoints. Envoy re-warms an updated EDS
//! cluster and waits for a fresh ClusterLoadAssignment; meshd must send it right after the
//! cluster update, or the clusters sit in `dynamic_warming_clusters` until Envoy's
//! `init_fetch_timeout` (15 s) while `/debug/proxies` would say SYNCED.
//!
//! Checked in real Envoy: the new policy is active within [`CONVERGENCE`], no cluster is left
//! warming, no `init_fetch_timeout` fired, no update was rejected, requests keep succeeding
//! throughout, and `/debug/proxies` says SYNCED only while Envoy really has nothing warming.
//!
//! Loopback blocks 71..=72 belong to this file.

use std::time::{Duration, Instant};

use amime_e2e::mesh::EXAMPLE_RULES_FILE;
use amime_e2e::{await_condition, fatal, run_test, Bookinfo, BookinfoOptions, IpBlock, MeshDir, TestContext, XdsApi};
use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;

/// The change must be active in Envoy within this time of the file being written.
const CONVERGENCE: Duration = Duration::from_secs(2);

const PRODUCTPAGE_NODE: &str = "productpage-v1.bookinfo";

/// Names of the clusters in one section of Envoy's clusters config dump, with their
/// `lb_policy` (`ROUND_ROBIN` when Envoy leaves the default out).
fn clusters_in(dump: &Value, section: &str) -> Vec<(String, String)> {
    let Some(configs) = dump["configs"].as_array() else { return Vec::new() };
    configs
        .iter()
        .filter(|c| c["@type"].as_str().is_some_and(|t| t.ends_with("ClustersConfigDump")))
        .flat_map(|c| c[section].as_array().cloned().unwrap_or_default())
        .map(|entry| {
            let cluster = &entry["cluster"];
            let name = cluster["name"].as_str().unwrap_or_default().to_owned();
            let lb = cluster["lb_policy"].as_str().unwrap_or("ROUND_ROBIN").to_owned();
            (name, lb)
        })
        .collect()
}

/// What Envoy has: the lb policy of every active reviews cluster, and the warming clusters.
struct EnvoyClusters {
    reviews: Vec<(String, String)>,
    warming: Vec<String>,
}

async fn envoy_clusters(bookinfo: &Bookinfo) -> Result<EnvoyClusters> {
    let dump = bookinfo.productpage.config_dump().await?;
    let reviews =
        clusters_in(&dump, "dynamic_active_clusters").into_iter().filter(|(n, _)| n.contains("reviews")).collect();
    let warming = clusters_in(&dump, "dynamic_warming_clusters").into_iter().map(|(n, _)| n).collect();
    Ok(EnvoyClusters { reviews, warming })
}

/// The sum of every `*init_fetch_timeout` stat: an xDS subscription that waited its whole
/// initial-fetch timeout (a cluster warming for endpoints that never came).
async fn init_fetch_timeouts(bookinfo: &Bookinfo) -> Result<u64> {
    let stats = bookinfo.productpage.stats().await?;
    Ok(stats.iter().filter(|(name, _)| name.ends_with("init_fetch_timeout")).map(|(_, v)| v).sum())
}

/// The productpage proxy's overall state in `/debug/proxies` (`SYNCED`, `STALE`, ...).
async fn proxy_state(bookinfo: &Bookinfo) -> Result<String> {
    let proxies = bookinfo.meshd.debug_proxies().await?;
    let entries: Vec<&Value> = proxies
        .as_array()
        .context("/debug/proxies is not a list")?
        .iter()
        .filter(|p| p["node_id"] == PRODUCTPAGE_NODE)
        .collect();
    let [entry] = entries.as_slice() else { bail!("{PRODUCTPAGE_NODE} listed {} times: {proxies}", entries.len()) };
    ensure!(entry["duplicate_node_id"] == false, "{PRODUCTPAGE_NODE} flagged as a duplicate node id: {entry}");
    ensure!(entry["peer"].as_str().is_some_and(|p| !p.is_empty()), "no peer address for {PRODUCTPAGE_NODE}: {entry}");
    entry["state"].as_str().map(str::to_owned).with_context(|| format!("no proxy state: {entry}"))
}

/// Whenever meshd says SYNCED, Envoy must have nothing warming (checked right after: a SYNCED
/// report means every response was acknowledged, so nothing can start warming before the next
/// change).
async fn check_synced_is_true(bookinfo: &Bookinfo) -> Result<bool> {
    if proxy_state(bookinfo).await? != "SYNCED" {
        return Ok(false);
    }
    let envoy = envoy_clusters(bookinfo).await?;
    if !envoy.warming.is_empty() {
        return Err(fatal(format!("/debug/proxies says SYNCED while Envoy warms {:?}", envoy.warming)));
    }
    Ok(true)
}

async fn load_balancer_edit_converges(ctx: TestContext, block: IpBlock, xds_api: XdsApi) -> Result<()> {
    let dir = MeshDir::new(&ctx)?;
    dir.copy_bookinfo_example(block)?;
    let rules = dir.read(EXAMPLE_RULES_FILE)?;
    ensure!(
        rules.contains("simple: ROUND_ROBIN"),
        "the bookinfo example's DestinationRule no longer sets loadBalancer ROUND_ROBIN"
    );
    let bookinfo = Bookinfo::start(&ctx, block, dir, BookinfoOptions { xds_api, ..Default::default() }).await?;
    await_condition("/debug/proxies to show productpage SYNCED", Duration::from_secs(10), || async {
        ensure!(check_synced_is_true(&bookinfo).await?, "not SYNCED yet");
        Ok(())
    })
    .await?;
    let before = envoy_clusters(&bookinfo).await?;
    ensure!(before.reviews.len() >= 4, "expected the reviews clusters (all + v1..v3), got {:?}", before.reviews);
    ensure!(before.reviews.iter().all(|(_, lb)| lb == "ROUND_ROBIN"), "{:?}", before.reviews);
    ensure!(before.warming.is_empty(), "warming before the edit: {:?}", before.warming);
    let timeouts_before = init_fetch_timeouts(&bookinfo).await?;

    // The edit: only the load balancer changes, so no endpoint does.
    let written =
        bookinfo.dir.write(EXAMPLE_RULES_FILE, &rules.replace("simple: ROUND_ROBIN", "simple: LEAST_REQUEST"))?;
    let failed_requests = std::sync::Mutex::new(Vec::new());
    let took =
        await_condition("every reviews cluster active with LEAST_REQUEST and none warming", CONVERGENCE * 5, || {
            let bookinfo = &bookinfo;
            let failed_requests = &failed_requests;
            async move {
                bookinfo.meshd.process().ensure_running()?;
                bookinfo.productpage.process().ensure_running()?;
                match bookinfo.productpage.request(Bookinfo::REVIEWS_URL, &[]).await {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => failed_requests.lock().unwrap_or_else(|e| e.into_inner()).push(r.summary()),
                    Err(e) => failed_requests.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{e:#}")),
                }
                check_synced_is_true(bookinfo).await?;
                let envoy = envoy_clusters(bookinfo).await?;
                ensure!(envoy.warming.is_empty(), "warming: {:?}", envoy.warming);
                ensure!(envoy.reviews.iter().all(|(_, lb)| lb == "LEAST_REQUEST"), "{:?}", envoy.reviews);
                Ok(written.elapsed())
            }
        })
        .await?;
    eprintln!("{xds_api:?}: load balancer change active in Envoy {took:.2?} after the write, nothing warming");
    ensure!(took <= CONVERGENCE, "the change took {took:.2?} to be active (limit {CONVERGENCE:?})");
    let failed_requests = failed_requests.into_inner().unwrap_or_else(|e| e.into_inner());
    ensure!(failed_requests.is_empty(), "requests failed during the change: {failed_requests:?}");

    // meshd reports it SYNCED, and that stays true.
    let synced_at = Instant::now();
    await_condition("/debug/proxies to show productpage SYNCED after the edit", Duration::from_secs(5), || async {
        ensure!(check_synced_is_true(&bookinfo).await?, "not SYNCED yet");
        Ok(())
    })
    .await?;
    eprintln!("{xds_api:?}: SYNCED {:.2?} after the change was seen active", synced_at.elapsed());
    let tally = bookinfo.productpage.tally(50, Bookinfo::REVIEWS_URL, &[]).await;
    ensure!(tally.total == 50 && tally.get("v1") + tally.get("v3") == 50, "traffic after the change: {tally}");
    let timeouts = init_fetch_timeouts(&bookinfo).await?;
    ensure!(timeouts == timeouts_before, "init_fetch_timeout stats went from {timeouts_before} to {timeouts}");
    let warming = bookinfo.productpage.stat("cluster_manager.warming_clusters").await?;
    ensure!(warming == Some(0), "cluster_manager.warming_clusters = {warming:?}");
    bookinfo.check_no_nacks().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_edit_leaves_no_cluster_warming_delta() {
    run_test("load_balancer_edit_leaves_no_cluster_warming_delta", |ctx| async move {
        load_balancer_edit_converges(ctx, IpBlock(71), XdsApi::Delta).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_edit_leaves_no_cluster_warming_sotw() {
    run_test("load_balancer_edit_leaves_no_cluster_warming_sotw", |ctx| async move {
        load_balancer_edit_converges(ctx, IpBlock(72), XdsApi::Sotw).await
    })
    .await;
}
