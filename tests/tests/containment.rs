//! One rule Envoy would refuse must not freeze routing for the mesh (issue 5). Before,
//! weights summing over 4294967295, an empty header `prefix` or an empty `regex` passed
//! validation; Envoy refused the route configuration holding them, and since every
//! service's virtual host is in it, no proxy got route updates any more and a sidecar
//! started afterwards answered 404 for every service.
//!
//! Now meshd checks what it makes against Envoy's own constraints, reports the rule at
//! its field, keeps the rule's last good version, and pushes the rest. Each test edits
//! the reviews VirtualService into a broken one, then checks with real Envoy that the
//! running sidecar and a fresh one route every service (reviews with the last good
//! rule), with no rejected update anywhere.
//!
//! Blocks 151..=159 belong to this file.

use std::time::Duration;

use amime_e2e::mesh::{self, example_pod, APP_PORT, RATINGS_SERVICE};
use amime_e2e::rules::{documents, reviews_vs_jason_v2_else_split, REVIEWS_DESTINATION_RULE};
use amime_e2e::{
    await_condition, hosts, run_test, sidecar, Bookinfo, BookinfoOptions, ConfigError, IpBlock, MeshDir, Sidecar,
    SidecarSpec, TestContext, Upstream,
};
use anyhow::{anyhow, ensure, Result};

const RULES_FILE: &str = "reviews-rules.yaml";
const REVIEWS: &str = Bookinfo::REVIEWS_URL;
const RATINGS: &str = "http://ratings:9080/";
const JASON: &[(&str, &str)] = &[("end-user", "jason")];

/// A second service (ratings, one pod) and the pod of the sidecar started later (details).
fn ratings_and_details() -> String {
    documents(&[
        RATINGS_SERVICE,
        &example_pod("ratings", "v1", hosts::EXTRA_1),
        &example_pod("details", "v1", hosts::EXTRA_2),
    ])
}

/// The example's reviews rule (jason → v2, others 50/50 v1/v3) broken in one place.
fn broken_rule(from: &str, to: &str) -> String {
    let good = reviews_vs_jason_v2_else_split(50, 50);
    assert!(good.contains(from), "the reviews rule no longer contains {from:?}");
    good.replacen(from, to, 1)
}

/// Over 4294967295 in total: three destinations at the largest weight the parser takes.
fn weights_over_u32() -> String {
    let split = "        subset: v3\n      weight: 50\n";
    broken_rule(
        split,
        "        subset: v3\n      weight: 2147483647\n    - destination:\n        host: reviews\n        subset: v2\n      weight: 2147483647\n",
    )
    .replacen("weight: 50", "weight: 2147483647", 1)
}

/// Starts the mesh with the good rules, then writes `broken` over them and checks that
/// meshd contains it: reported at `field`, the rest (and the last good rule) still routed
/// by the running sidecar and by one started afterwards, nothing rejected.
async fn broken_rule_is_contained(ctx: TestContext, block: IpBlock, broken: String, field: &str) -> Result<()> {
    let dir = MeshDir::new(&ctx)?;
    dir.write("mesh.yaml", &mesh::bookinfo_mesh_yaml(block)?)?;
    dir.write("more.yaml", &block.render(&ratings_and_details()))?;
    let good = documents(&[REVIEWS_DESTINATION_RULE, &reviews_vs_jason_v2_else_split(50, 50)]);
    dir.write(RULES_FILE, &good)?;
    let _ratings = Upstream::start(block.addr(hosts::EXTRA_1, APP_PORT), "ratings", "v1", "ratings-v1").await?;
    let bookinfo = Bookinfo::start(&ctx, block, dir, BookinfoOptions::default()).await?;
    bookinfo.await_answer(RATINGS, Duration::from_secs(10)).await?;
    check_routing(&bookinfo.productpage).await?;

    bookinfo.dir.write(RULES_FILE, &documents(&[REVIEWS_DESTINATION_RULE, &broken]))?;
    // Reported where it is broken: by the parser, or once translated, by the checker.
    let error = await_refusal(&bookinfo, field).await?;
    eprintln!("reported: {error:?}");
    ensure!(error.namespace.as_deref() == Some("bookinfo"), "{error:?}");
    if error.message.contains("Envoy would refuse") {
        ensure!(error.message.contains("last accepted version"), "the message says what stays: {error:?}");
    }

    // The running sidecar still routes by the last good rule.
    check_routing(&bookinfo.productpage).await?;

    // A sidecar started now gets every service, reviews by the last good rule.
    let spec = SidecarSpec::new("details-v1", "bookinfo", block.ip(hosts::EXTRA_2)).label("app", "details");
    let fresh = Sidecar::start(&ctx, &spec, bookinfo.meshd.xds_addr()).await?;
    await_condition("the fresh sidecar to answer for reviews and ratings", Duration::from_secs(15), || async {
        fresh.process().ensure_running()?;
        for url in [REVIEWS, RATINGS] {
            let response = fresh.request(url, &[]).await?;
            ensure!(response.status == 200, "GET {url}: {}", response.summary());
        }
        Ok(())
    })
    .await?;
    check_routing(&fresh).await?;
    sidecar::ensure_no_rejected_updates(&fresh.stats().await?)?;
    bookinfo.check_no_nacks().await
}

/// jason always reaches reviews v2, others only v1/v3, ratings answers.
async fn check_routing(sidecar: &Sidecar) -> Result<()> {
    let jason = sidecar.tally(20, REVIEWS, JASON).await;
    ensure!(jason.all("v2"), "GET {REVIEWS} with end-user: jason should reach v2; got {jason}");
    let others = sidecar.tally(40, REVIEWS, &[]).await;
    ensure!(
        others.total == 40 && others.get("v1") + others.get("v3") == others.total,
        "GET {REVIEWS} without end-user should reach v1/v3; got {others}"
    );
    let ratings = sidecar.tally(10, RATINGS, &[]).await;
    ensure!(ratings.all("v1"), "GET {RATINGS} should reach ratings-v1; got {ratings}");
    Ok(())
}

/// Waits until `/debug/config_errors` names VirtualService reviews at `field`.
async fn await_refusal(bookinfo: &Bookinfo, field: &str) -> Result<ConfigError> {
    await_condition(
        &format!("/debug/config_errors to name VirtualService reviews at {field}"),
        Duration::from_secs(10),
        || async {
            let errors = bookinfo.meshd.config_errors().await?;
            errors
                .iter()
                .find(|e| {
                    e.kind.as_deref() == Some("VirtualService")
                        && e.name.as_deref() == Some("reviews")
                        && e.field.as_deref() == Some(field)
                })
                .cloned()
                .ok_or_else(|| anyhow!("config errors: {errors:?}"))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_over_u32_max_are_contained() {
    run_test("weights_over_u32_max_are_contained", |ctx| async move {
        broken_rule_is_contained(ctx, IpBlock(151), weights_over_u32(), "spec.http[1].route").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_header_prefix_is_contained() {
    run_test("empty_header_prefix_is_contained", |ctx| async move {
        let broken = broken_rule("exact: jason", "prefix: \"\"");
        broken_rule_is_contained(ctx, IpBlock(152), broken, "spec.http[0].match[0].headers.end-user.prefix").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_regex_is_contained() {
    run_test("empty_regex_is_contained", |ctx| async move {
        let broken = broken_rule("    - headers:\n", "    - uri:\n        regex: \"\"\n      headers:\n");
        broken_rule_is_contained(ctx, IpBlock(153), broken, "spec.http[0].match[0].uri.regex").await
    })
    .await;
}
