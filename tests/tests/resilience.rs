//! Resilience end to end: what happens to real Envoy sidecars when meshd crashes (SIGKILL) and
//! when a new meshd comes back on the same xDS address with the same config directory.
//!
//! Every test owns one loopback block (`127.0.N.x`, blocks 31..=39 belong to this file), so the
//! tests run in parallel with the other files.

use std::time::{Duration, Instant};

use amime_e2e::mesh::EXAMPLE_RULES_FILE;
use amime_e2e::rules::REVIEWS_VS_ALL_V3;
use amime_e2e::{
    await_condition, hosts, run_test, Bookinfo, BookinfoOptions, IpBlock, MeshDir, Meshd, Tally, TestContext, XdsApi,
};
use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;

/// A rule change must reach Envoy within this time (measured from the file rename).
const CONVERGENCE: Duration = Duration::from_secs(2);

/// How long Envoy may take to reconnect to a restarted meshd. Envoy retries a broken xDS
/// stream with a jittered exponential backoff (base ~0.5–1 s, growing on every failed attempt
/// while meshd is down), so after a few seconds of downtime the next attempt can be several
/// seconds away; 15 s covers that with room to spare on a loaded machine.
const RECONNECT: Duration = Duration::from_secs(15);

/// How long the sidecar must keep serving with meshd dead (and the minimum number of
/// request rounds sent in that time).
const OUTAGE: Duration = Duration::from_secs(2);
const OUTAGE_MIN_ROUNDS: usize = 100;

const REVIEWS: &str = Bookinfo::REVIEWS_URL;
const JASON: &[(&str, &str)] = &[("end-user", "jason")];

/// The xDS node id of the productpage sidecar (`<pod>.<namespace>`).
const PRODUCTPAGE_NODE: &str = "productpage-v1.bookinfo";

/// The bookinfo example (mesh + reviews rules: jason → v2, others 50/50 v1/v3) moved into
/// `block`, with meshd, the reviews upstreams and the productpage sidecar speaking `xds_api`.
async fn start_example(ctx: &TestContext, block: IpBlock, xds_api: XdsApi) -> Result<Bookinfo> {
    let dir = MeshDir::new(ctx)?;
    dir.copy_bookinfo_example(block)?;
    ensure!(
        dir.read(EXAMPLE_RULES_FILE)?.contains("kind: VirtualService"),
        "the bookinfo example no longer has its VirtualService in {EXAMPLE_RULES_FILE}"
    );
    Bookinfo::start(ctx, block, dir, BookinfoOptions { xds_api, ..Default::default() }).await
}

/// One request with `end-user: jason` must reach v2, one without must reach v1 or v3.
async fn routing_round(bookinfo: &Bookinfo, jason: &mut Tally, others: &mut Tally) {
    jason.record(bookinfo.productpage.request(REVIEWS, JASON).await);
    others.record(bookinfo.productpage.request(REVIEWS, &[]).await);
}

/// The example's routing holds for the answers in `jason` / `others`: jason always v2; everyone
/// else only v1/v3, split 50/50 (see [`Tally::ensure_even_split`]).
fn check_example_routing(jason: &Tally, others: &Tally) -> Result<()> {
    ensure!(jason.all("v2"), "GET {REVIEWS} with end-user: jason should always reach reviews v2; got {jason}");
    ensure!(
        others.total > 0 && others.get("v1") + others.get("v3") == others.total,
        "GET {REVIEWS} without end-user should reach only v1/v3; got {others}"
    );
    others.ensure_even_split("v1", "v3")
}

/// `rounds` rounds of [`routing_round`], then [`check_example_routing`].
async fn check_example_routing_now(bookinfo: &Bookinfo, rounds: usize) -> Result<()> {
    let (mut jason, mut others) = (Tally::default(), Tally::default());
    for _ in 0..rounds {
        routing_round(bookinfo, &mut jason, &mut others).await;
    }
    check_example_routing(&jason, &others)
}

/// Envoy's view of its ADS stream: the `control_plane.connected_state` gauge.
async fn envoy_connected(bookinfo: &Bookinfo) -> Result<Option<u64>> {
    bookinfo.productpage.stat("control_plane.connected_state").await
}

/// Wait until Envoy has noticed that meshd is gone (its ADS stream broke).
async fn await_envoy_disconnected(bookinfo: &Bookinfo) -> Result<()> {
    await_condition(
        "Envoy to report control_plane.connected_state = 0 after meshd died",
        Duration::from_secs(5),
        || async {
            bookinfo.productpage.process().ensure_running()?;
            let state = envoy_connected(bookinfo).await?;
            ensure!(state == Some(0), "control_plane.connected_state = {state:?}");
            Ok(())
        },
    )
    .await
}

/// Kill meshd the way a crash happens (SIGKILL) and wait until Envoy notices.
async fn crash_meshd(bookinfo: &Bookinfo) -> Result<()> {
    bookinfo.meshd.kill().await?;
    ensure!(!bookinfo.meshd.process().is_running(), "meshd survived SIGKILL");
    await_envoy_disconnected(bookinfo).await
}

/// With meshd down, the sidecar keeps routing exactly as before: rounds of requests for at
/// least [`OUTAGE`] (and at least [`OUTAGE_MIN_ROUNDS`] rounds), checked as a whole at the end.
async fn check_routing_while_down(bookinfo: &Bookinfo) -> Result<()> {
    let started = Instant::now();
    let (mut jason, mut others) = (Tally::default(), Tally::default());
    while started.elapsed() < OUTAGE || jason.total < OUTAGE_MIN_ROUNDS {
        routing_round(bookinfo, &mut jason, &mut others).await;
        // Fail early (and readably) on the first wrong answer.
        ensure!(
            jason.all("v2") && others.get("v1") + others.get("v3") == others.total,
            "after {:.2?} with meshd down: jason {jason}; others {others}",
            started.elapsed()
        );
    }
    check_example_routing(&jason, &others)
        .with_context(|| format!("during {:.2?} with meshd down", started.elapsed()))?;
    eprintln!("meshd down for {:.2?}: {} rounds; jason: {jason}; others: {others}", started.elapsed(), jason.total);
    // meshd stayed down the whole time (the check above ran without a control plane).
    ensure!(!bookinfo.meshd.process().is_running(), "meshd is running again");
    let state = envoy_connected(bookinfo).await?;
    ensure!(state == Some(0), "Envoy should still be disconnected; control_plane.connected_state = {state:?}");
    Ok(())
}

/// The route configuration Envoy holds: every weighted-clusters list in its config dump.
async fn weighted_routes(bookinfo: &Bookinfo) -> Result<Vec<Vec<(String, u64)>>> {
    let dump = bookinfo.productpage.config_dump().await?;
    Ok(amime_e2e::sidecar::weighted_clusters(&dump))
}

/// Check that Envoy is still the process started with the mesh.
fn ensure_same_envoy(bookinfo: &Bookinfo, envoy_pid: u32) -> Result<()> {
    bookinfo.productpage.process().ensure_running()?;
    ensure!(
        bookinfo.productpage.pid() == envoy_pid,
        "Envoy changed: pid {} (was {envoy_pid})",
        bookinfo.productpage.pid()
    );
    Ok(())
}

/// The entries of `/debug/proxies` for `node`.
fn proxies_of<'a>(proxies: &'a Value, node: &str) -> Result<Vec<&'a Value>> {
    let list = proxies.as_array().with_context(|| format!("/debug/proxies is not a JSON array: {proxies}"))?;
    Ok(list.iter().filter(|p| p["node_id"].as_str() == Some(node)).collect())
}

/// meshd lists exactly one stream for `node`, speaking `api`, with every resource type Envoy
/// uses (CDS, EDS, LDS, RDS) SYNCED.
fn ensure_synced(proxies: &Value, node: &str, api: XdsApi) -> Result<()> {
    let entries = proxies_of(proxies, node)?;
    let [entry] = entries.as_slice() else {
        bail!("/debug/proxies should list {node} once; found {} entries: {proxies}", entries.len());
    };
    ensure!(
        entry["api"].as_str() == Some(api.as_str()),
        "{node} connected with api {} (want {}): {entry}",
        entry["api"],
        api.as_str()
    );
    let types = entry["types"].as_object().with_context(|| format!("{node} has no `types`: {entry}"))?;
    let states: Vec<String> =
        types.iter().map(|(ty, status)| format!("{ty}={}", status["state"].as_str().unwrap_or("?"))).collect();
    for ty in ["CDS", "EDS", "LDS", "RDS"] {
        ensure!(types.contains_key(ty), "{node} has no {ty} status: {entry}");
    }
    ensure!(
        types.values().all(|t| t["state"] == "SYNCED"),
        "{node} is not SYNCED on every type ({}): {entry}",
        states.join(" ")
    );
    Ok(())
}

/// After a restart: wait until Envoy has reconnected to the new meshd (Envoy says its ADS
/// stream is up, meshd lists exactly one stream for the node and counts one connected proxy).
async fn await_reconnected(bookinfo: &Bookinfo, api: XdsApi) -> Result<Duration> {
    let started = Instant::now();
    // See RECONNECT: Envoy's xDS retry backoff decides when it comes back, not meshd.
    await_condition(&format!("Envoy ({PRODUCTPAGE_NODE}) to reconnect to the new meshd"), RECONNECT, || async {
        bookinfo.meshd.process().ensure_running()?;
        bookinfo.productpage.process().ensure_running()?;
        let state = envoy_connected(bookinfo).await?;
        ensure!(state == Some(1), "Envoy control_plane.connected_state = {state:?}");
        let proxies = bookinfo.meshd.debug_proxies().await?;
        let entries = proxies_of(&proxies, PRODUCTPAGE_NODE)?;
        ensure!(entries.len() == 1, "/debug/proxies should list {PRODUCTPAGE_NODE} once: {proxies}");
        ensure!(
            entries[0]["api"].as_str() == Some(api.as_str()),
            "{PRODUCTPAGE_NODE} should use {}: {proxies}",
            api.as_str()
        );
        let connected = bookinfo.meshd.metric("amime_xds_connected_proxies").await?;
        ensure!(connected == Some(1.0), "amime_xds_connected_proxies = {connected:?}");
        Ok(())
    })
    .await?;
    Ok(started.elapsed())
}

/// Wait until meshd's `/debug/proxies` shows the node SYNCED on every type (see
/// [`ensure_synced`]). Once the stream is up this takes one round trip per type.
async fn await_synced(bookinfo: &Bookinfo, api: XdsApi, timeout: Duration) -> Result<()> {
    await_condition(&format!("/debug/proxies to show {PRODUCTPAGE_NODE} SYNCED on every type"), timeout, || async {
        bookinfo.meshd.process().ensure_running()?;
        ensure_synced(&bookinfo.meshd.debug_proxies().await?, PRODUCTPAGE_NODE, api)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_keep_their_config_while_meshd_is_down() {
    run_test("proxies_keep_their_config_while_meshd_is_down", |ctx| async move {
        let bookinfo = start_example(&ctx, IpBlock(31), XdsApi::Delta).await?;
        check_example_routing_now(&bookinfo, 200).await?;
        let envoy_pid = bookinfo.productpage.pid();
        let routes_before = weighted_routes(&bookinfo).await?;
        ensure!(!routes_before.is_empty(), "Envoy's config dump has no weighted clusters (the 50/50 split)");
        bookinfo.check_no_nacks().await?;

        crash_meshd(&bookinfo).await?;
        check_routing_while_down(&bookinfo).await?;

        ensure_same_envoy(&bookinfo, envoy_pid)?;
        let routes_after = weighted_routes(&bookinfo).await?;
        ensure!(
            routes_after == routes_before,
            "Envoy's routes changed while meshd was down: {routes_before:?} -> {routes_after:?}"
        );
        let rejected = bookinfo.productpage.rejected_updates().await?;
        ensure!(rejected == 0, "Envoy rejected {rejected} xDS updates");
        Ok(())
    })
    .await;
}

/// Crash meshd, keep serving, start a new meshd on the same addresses and config directory:
/// Envoy reconnects, resyncs without a NACK, meshd reports it SYNCED, and a later edit applies
/// within [`CONVERGENCE`].
async fn meshd_restart_resyncs_without_nack(ctx: TestContext, block: IpBlock, api: XdsApi) -> Result<()> {
    let mut bookinfo = start_example(&ctx, block, api).await?;
    check_example_routing_now(&bookinfo, 100).await?;
    await_synced(&bookinfo, api, Duration::from_secs(5)).await.context("before the crash")?;
    let envoy_pid = bookinfo.productpage.pid();
    let old_meshd_pid = bookinfo.meshd.pid();
    let xds_addr = bookinfo.meshd.xds_addr();

    crash_meshd(&bookinfo).await?;
    check_example_routing_now(&bookinfo, 100).await.context("with meshd down")?;

    // A new meshd on the same IP (so the same xDS address Envoy's bootstrap points at) and the
    // same config directory. Assigning drops the old, already dead, process.
    let config_dir = bookinfo.dir.path().to_path_buf();
    bookinfo.meshd = Meshd::start(&ctx, &config_dir, block.ip(hosts::MESHD), &[]).await?;
    ensure!(
        bookinfo.meshd.xds_addr() == xds_addr && bookinfo.meshd.pid() != old_meshd_pid,
        "the new meshd should be a new process on {xds_addr}"
    );
    let took = await_reconnected(&bookinfo, api).await?;
    eprintln!("Envoy ({}) reconnected {took:?} after the new meshd was ready", api.as_str());
    // meshd must know the proxy is in sync (what `/debug/proxies` is for). A failure here is
    // reported at the end, after checking that the traffic side of the resync works.
    let synced = await_synced(&bookinfo, api, Duration::from_secs(2)).await.context("after the reconnection");
    ensure_same_envoy(&bookinfo, envoy_pid)?;
    check_example_routing_now(&bookinfo, 100).await.context("after the reconnection")?;
    bookinfo.check_no_nacks().await.context("after the reconnection")?;

    // The new meshd really drives Envoy: an edit applies within CONVERGENCE.
    // The example's rules file with its VirtualService replaced (the DestinationRule stays).
    let renamed = bookinfo.dir.replace_virtual_service(EXAMPLE_RULES_FILE, REVIEWS_VS_ALL_V3)?;
    let took = bookinfo.await_all_to("v3", &[], renamed, CONVERGENCE).await?;
    eprintln!("100% v3 applied {took:?} after the rename");
    bookinfo.await_all_to("v3", JASON, renamed, CONVERGENCE).await?;
    ensure_same_envoy(&bookinfo, envoy_pid)?;
    let acks = bookinfo.meshd.metric("amime_xds_acks_total").await?;
    ensure!(acks.is_some_and(|a| a > 0.0), "amime_xds_acks_total = {acks:?} after the edit, want > 0");
    bookinfo.check_no_nacks().await.context("after the edit")?;
    synced?;
    await_synced(&bookinfo, api, CONVERGENCE).await.context("after the edit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshd_restart_resyncs_without_nack_delta() {
    run_test("meshd_restart_resyncs_without_nack_delta", |ctx| async move {
        meshd_restart_resyncs_without_nack(ctx, IpBlock(32), XdsApi::Delta).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshd_restart_resyncs_without_nack_sotw() {
    run_test("meshd_restart_resyncs_without_nack_sotw", |ctx| async move {
        meshd_restart_resyncs_without_nack(ctx, IpBlock(33), XdsApi::Sotw).await
    })
    .await;
}

/// SIGTERM (what Kubernetes sends first): meshd ends every ADS stream and exits
/// promptly, even with proxies connected; the proxies keep routing on their config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshd_stops_on_sigterm_and_proxies_keep_their_config() {
    run_test("meshd_stops_on_sigterm_and_proxies_keep_their_config", |ctx| async move {
        let bookinfo = start_example(&ctx, IpBlock(34), XdsApi::Delta).await?;
        check_example_routing_now(&bookinfo, 50).await?;
        bookinfo.meshd.signal_and_wait("TERM", Duration::from_secs(5)).await?;
        let status = bookinfo.meshd.process().exit_status();
        ensure!(status.is_some_and(|s| s.success()), "meshd should exit 0 after SIGTERM; got {status:?}");
        await_envoy_disconnected(&bookinfo).await?;
        check_routing_while_down(&bookinfo).await?;
        let rejected = bookinfo.productpage.rejected_updates().await?;
        ensure!(rejected == 0, "Envoy rejected {rejected} xDS updates");
        Ok(())
    })
    .await;
}
