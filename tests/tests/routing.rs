//! Routing end to end: real `meshd`, `meshctl bootstrap` and Envoy (productpage's sidecar in
//! explicit-proxy mode) in front of in-process reviews v1/v2/v3 upstreams.
//!
//! Every test owns one loopback block (`127.0.N.x`, blocks 21..=29 belong to this file), so the
//! tests run in parallel. Each ends by checking that Envoy rejected no xDS update and meshd
//! counted no NACK.

use std::time::{Duration, Instant};

use amime_e2e::mesh::{self, example_pod, APP_PORT, RATINGS_SERVICE};
use amime_e2e::rules::{
    documents, reviews_vs_jason_v2_else_split, reviews_vs_split, REVIEWS_DESTINATION_RULE, REVIEWS_VS_ALL_V3,
};
use amime_e2e::{
    await_condition, hosts, run_test, Bookinfo, BookinfoOptions, ConfigError, IpBlock, MeshDir, TestContext, Upstream,
    XdsApi,
};
use anyhow::{anyhow, ensure, Result};

/// A rule change must reach Envoy within this time (measured from the file rename).
const CONVERGENCE: Duration = Duration::from_secs(2);

const REVIEWS: &str = Bookinfo::REVIEWS_URL;
const JASON: &[(&str, &str)] = &[("end-user", "jason")];

const DESTINATION_RULE_FILE: &str = "reviews-destinationrule.yaml";
const VIRTUAL_SERVICE_FILE: &str = "reviews-virtualservice.yaml";

/// The reviews rule with `match:` misspelled `mach:`: read as an unconditional rule it would
/// send every user to v2.
fn vs_mach_typo() -> String {
    reviews_vs_jason_v2_else_split(50, 50).replace("    match:", "    mach:")
}

/// The reviews rule with a first rule for admins only (a JWT claim match, which meshd
/// cannot evaluate yet): with the condition dropped, every user would go to v3.
fn vs_jwt_claim() -> String {
    let admins_to_v3 = "  http:\n  - match:\n    - headers:\n        '@request.auth.claims.group':\n          exact: admin\n    route:\n    - destination:\n        host: reviews\n        subset: v3\n";
    reviews_vs_jason_v2_else_split(50, 50).replace("  http:\n", admins_to_v3)
}

/// Invalid: a regex that does not compile.
const VS_BAD_REGEX: &str = r#"
apiVersion: networking.amime.dev/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts:
  - reviews
  http:
  - name: broken-match
    match:
    - uri:
        regex: "(("
    route:
    - destination:
        host: reviews
        subset: v1
  - route:
    - destination:
        host: reviews
        subset: v3
"#;

/// Not YAML at all (unclosed flow mapping).
const BROKEN_YAML: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: broken, namespace: bookinfo
spec:
  ports: [
"#;

/// Write the reviews rules: the DestinationRule, and the VirtualService of
/// `manifests/examples/bookinfo` (jason → v2, everyone else 50/50 v1/v3).
fn write_rules(dir: &MeshDir) -> Result<()> {
    dir.write(DESTINATION_RULE_FILE, REVIEWS_DESTINATION_RULE)?;
    dir.write(VIRTUAL_SERVICE_FILE, &reviews_vs_jason_v2_else_split(50, 50))?;
    Ok(())
}

/// Write the bookinfo mesh (moved into `block`) and the reviews rules ([`write_rules`]), then
/// start meshd, the upstreams and the productpage sidecar.
async fn start_bookinfo(ctx: &TestContext, block: IpBlock, xds_api: XdsApi) -> Result<Bookinfo> {
    let dir = MeshDir::new(ctx)?;
    dir.write("mesh.yaml", &mesh::bookinfo_mesh_yaml(block)?)?;
    write_rules(&dir)?;
    Bookinfo::start(ctx, block, dir, BookinfoOptions { xds_api, ..Default::default() }).await
}

/// jason always gets v2 (20 requests); without the header nobody gets v2 (100 requests).
async fn check_header_routing(bookinfo: &Bookinfo) -> Result<()> {
    let jason = bookinfo.productpage.tally(20, REVIEWS, JASON).await;
    ensure!(jason.all("v2"), "GET {REVIEWS} with end-user: jason should always reach reviews v2; got {jason}");
    let others = bookinfo.productpage.tally(100, REVIEWS, &[]).await;
    ensure!(
        others.get("v2") == 0 && others.get("v1") + others.get("v3") == others.total,
        "GET {REVIEWS} without end-user should reach only v1/v3; got {others}"
    );
    Ok(())
}

/// `n` requests without the header split 50/50 between v1 and v3 (see
/// [`Tally::ensure_even_split`](amime_e2e::Tally::ensure_even_split)), never v2.
async fn check_even_split(bookinfo: &Bookinfo, n: usize) -> Result<()> {
    let tally = bookinfo.productpage.tally(n, REVIEWS, &[]).await;
    ensure!(
        tally.get("v1") + tally.get("v3") == n,
        "every request should reach v1 or v3 (no v2, no errors); got {tally}"
    );
    tally.ensure_even_split("v1", "v3")
}

/// Wait until `/debug/config_errors` has an entry for `file` whose field contains `field_part`.
async fn await_config_error(
    bookinfo: &Bookinfo,
    file: &str,
    field_part: Option<&str>,
    since: Instant,
) -> Result<ConfigError> {
    let what = match field_part {
        Some(field) => {
            format!("/debug/config_errors to name {file} and a field containing `{field}`")
        }
        None => format!("/debug/config_errors to name {file}"),
    };
    let remaining = CONVERGENCE.saturating_sub(since.elapsed());
    await_condition(&what, remaining, || async {
        let errors = bookinfo.meshd.config_errors().await?;
        errors
            .iter()
            .find(|e| {
                e.file.ends_with(file)
                    && field_part.is_none_or(|part| e.field.as_deref().is_some_and(|f| f.contains(part)))
            })
            .cloned()
            .ok_or_else(|| anyhow!("config errors: {errors:?}"))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_routing_sends_jason_to_v2() {
    run_test("header_routing_sends_jason_to_v2", |ctx| async move {
        let bookinfo = start_bookinfo(&ctx, IpBlock(21), XdsApi::Delta).await?;
        check_header_routing(&bookinfo).await?;

        // The end-user header reaches the upstream untouched.
        let response = bookinfo.productpage.request(REVIEWS, JASON).await?;
        let body = response.json()?;
        ensure!(body["headers"]["end-user"] == "jason", "upstream saw {body}");

        let connected = bookinfo.meshd.metric("amime_xds_connected_proxies").await?;
        ensure!(connected == Some(1.0), "amime_xds_connected_proxies = {connected:?}, want 1");
        let pushes = bookinfo.meshd.metric("amime_xds_pushes_total").await?;
        ensure!(pushes.is_some_and(|p| p >= 1.0), "amime_xds_pushes_total = {pushes:?}, want >= 1");
        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_is_even() {
    run_test("weighted_split_is_even", |ctx| async move {
        let bookinfo = start_bookinfo(&ctx, IpBlock(22), XdsApi::Delta).await?;
        check_even_split(&bookinfo, 400).await?;
        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_edit_applies_without_restarts() {
    run_test("live_edit_applies_without_restarts", |ctx| async move {
        let bookinfo = start_bookinfo(&ctx, IpBlock(23), XdsApi::Delta).await?;
        check_header_routing(&bookinfo).await?;
        let (envoy_pid, meshd_pid) = (bookinfo.productpage.pid(), bookinfo.meshd.pid());

        let renamed = bookinfo.dir.write(VIRTUAL_SERVICE_FILE, REVIEWS_VS_ALL_V3)?;
        let took = bookinfo.await_all_to("v3", &[], renamed, CONVERGENCE).await?;
        eprintln!("100% v3 applied {took:?} after the rename");
        // The jason rule is gone too.
        let jason = bookinfo.productpage.tally(20, REVIEWS, JASON).await;
        ensure!(jason.all("v3"), "after the edit jason should reach v3 too; got {jason}");

        ensure!(
            bookinfo.productpage.pid() == envoy_pid && bookinfo.productpage.process().is_running(),
            "Envoy restarted"
        );
        ensure!(bookinfo.meshd.pid() == meshd_pid && bookinfo.meshd.process().is_running(), "meshd restarted");
        bookinfo.check_no_nacks().await
    })
    .await;
}

/// Write an invalid VirtualService over a good one: meshd reports it and keeps the old routing.
async fn invalid_edit_keeps_previous_routing(
    ctx: TestContext,
    block: IpBlock,
    invalid: &str,
    field: &str,
) -> Result<()> {
    let bookinfo = start_bookinfo(&ctx, block, XdsApi::Delta).await?;
    check_header_routing(&bookinfo).await?;

    let renamed = bookinfo.dir.write(VIRTUAL_SERVICE_FILE, invalid)?;
    let error = await_config_error(&bookinfo, VIRTUAL_SERVICE_FILE, Some(field), renamed).await?;
    eprintln!("reported {:?} after the rename: {error:?}", renamed.elapsed());
    ensure!(!error.message.is_empty(), "config error without a message: {error:?}");
    ensure!(error.kind.as_deref() == Some("VirtualService"), "config error kind: {error:?}");
    ensure!(error.name.as_deref() == Some("reviews") && error.namespace.as_deref() == Some("bookinfo"), "{error:?}");

    check_header_routing(&bookinfo).await?;
    check_even_split(&bookinfo, 200).await?;
    bookinfo.check_no_nacks().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_weight_is_reported_and_old_routing_kept() {
    run_test("invalid_weight_is_reported_and_old_routing_kept", |ctx| async move {
        invalid_edit_keeps_previous_routing(ctx, IpBlock(24), &reviews_vs_split(-5, 105), "weight").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_regex_is_reported_and_old_routing_kept() {
    run_test("invalid_regex_is_reported_and_old_routing_kept", |ctx| async move {
        invalid_edit_keeps_previous_routing(ctx, IpBlock(25), VS_BAD_REGEX, "regex").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misspelled_match_is_reported_and_old_routing_kept() {
    run_test("misspelled_match_is_reported_and_old_routing_kept", |ctx| async move {
        invalid_edit_keeps_previous_routing(ctx, IpBlock(61), &vs_mach_typo(), "http[0].mach").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_jwt_claim_match_is_refused_and_old_routing_kept() {
    run_test("unsupported_jwt_claim_match_is_refused_and_old_routing_kept", |ctx| async move {
        invalid_edit_keeps_previous_routing(ctx, IpBlock(62), &vs_jwt_claim(), "@request.auth.claims.group").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_yaml_file_does_not_block_good_files() {
    run_test("broken_yaml_file_does_not_block_good_files", |ctx| async move {
        let block = IpBlock(26);
        let dir = MeshDir::new(&ctx)?;
        // Sorted before and after the good files.
        dir.write("00-broken.yaml", BROKEN_YAML)?;
        dir.write("mesh.yaml", &mesh::bookinfo_mesh_yaml(block)?)?;
        write_rules(&dir)?;
        let bookinfo = Bookinfo::start(&ctx, block, dir, BookinfoOptions::default()).await?;
        await_config_error(&bookinfo, "00-broken.yaml", None, Instant::now()).await?;
        check_header_routing(&bookinfo).await?;
        check_even_split(&bookinfo, 200).await?;

        // A second broken file and a good edit at the same time: the edit applies.
        bookinfo.dir.write("zz-broken.yml", BROKEN_YAML)?;
        let renamed = bookinfo.dir.write(VIRTUAL_SERVICE_FILE, REVIEWS_VS_ALL_V3)?;
        bookinfo.await_all_to("v3", &[], renamed, CONVERGENCE).await?;
        await_config_error(&bookinfo, "zz-broken.yml", None, renamed).await?;
        await_config_error(&bookinfo, "00-broken.yaml", None, Instant::now()).await?;
        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_header_routing_split_and_edit() {
    run_test("sotw_header_routing_split_and_edit", |ctx| async move {
        let bookinfo = start_bookinfo(&ctx, IpBlock(27), XdsApi::Sotw).await?;
        check_header_routing(&bookinfo).await?;
        check_even_split(&bookinfo, 400).await?;
        let renamed = bookinfo.dir.write(VIRTUAL_SERVICE_FILE, REVIEWS_VS_ALL_V3)?;
        bookinfo.await_all_to("v3", JASON, renamed, CONVERGENCE).await?;
        bookinfo.check_no_nacks().await
    })
    .await;
}

/// A service with two pods and no rules at all, written for block 10 and moved into the test's.
fn ratings() -> String {
    documents(&[
        RATINGS_SERVICE,
        &example_pod("ratings", "v1", hosts::EXTRA_1),
        &example_pod("ratings", "v2", hosts::EXTRA_2),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_without_rules_round_robin() {
    run_test("services_without_rules_round_robin", |ctx| async move {
        let block = IpBlock(28);
        let dir = MeshDir::new(&ctx)?;
        // No DestinationRule, no VirtualService at all.
        dir.write("mesh.yaml", &mesh::bookinfo_mesh_yaml(block)?)?;
        dir.write("ratings.yaml", &block.render(&ratings()))?;
        let _ratings = [
            Upstream::start(block.addr(hosts::EXTRA_1, APP_PORT), "ratings", "v1", "ratings-v1").await?,
            Upstream::start(block.addr(hosts::EXTRA_2, APP_PORT), "ratings", "v2", "ratings-v2").await?,
        ];
        let bookinfo = Bookinfo::start(&ctx, block, dir, BookinfoOptions::default()).await?;
        let url = "http://ratings:9080/";
        bookinfo.await_answer(url, Duration::from_secs(5)).await?;

        // Round robin (per Envoy worker) gives each pod almost exactly its share; the bounds
        // leave room for a couple of workers interleaving, not for random balancing luck.
        let ratings = bookinfo.productpage.tally(100, url, &[]).await;
        ensure!(
            (40..=60).contains(&ratings.get("v1")) && (40..=60).contains(&ratings.get("v2")),
            "GET {url} should alternate between ratings-v1 and ratings-v2; got {ratings}"
        );
        let reviews = bookinfo.productpage.tally(90, REVIEWS, &[]).await;
        ensure!(
            ["v1", "v2", "v3"].iter().all(|v| (20..=40).contains(&reviews.get(v))),
            "GET {REVIEWS} without rules should rotate over reviews v1/v2/v3; got {reviews}"
        );
        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_passes_through() {
    run_test("unknown_host_passes_through", |ctx| async move {
        let block = IpBlock(29);
        let outside = Upstream::start(block.addr(hosts::OUTSIDE, APP_PORT), "outside", "none", "not-in-mesh").await?;
        let bookinfo = start_bookinfo(&ctx, block, XdsApi::Delta).await?;
        let url = format!("http://{}/passthrough?x=1", outside.addr());
        let response = bookinfo.productpage.request(&url, &[]).await?;
        ensure!(response.status == 200, "GET {url} through the sidecar: {}", response.summary());
        let body = response.json()?;
        ensure!(body["service"] == "outside" && body["path"] == "/passthrough?x=1", "GET {url}: {body}");
        ensure!(outside.hits() == 1, "the outside upstream saw {} requests", outside.hits());
        // Mesh routing still works next to it.
        check_header_routing(&bookinfo).await?;
        bookinfo.check_no_nacks().await
    })
    .await;
}
