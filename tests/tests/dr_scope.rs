//! DestinationRules that depend on the caller, end to end: real `meshd`, `meshctl
//! bootstrap` and Envoy sidecars (explicit mode) in two namespaces and with different
//! labels, calling the same reviews host through one VirtualService that sends every
//! caller to subset `v2`. Which pods `v2` means is up to the DestinationRule each caller
//! uses: its own namespace's (`exportTo: ["."]`), the one whose `workloadSelector`
//! matches it, or none (then the subset is unknown to it and Envoy answers 503).
//!
//! Blocks 166..=169 belong to this file. Each test ends by checking that no sidecar
//! rejected an xDS update and meshd counted no NACK.

use amime_e2e::mesh;
use amime_e2e::rules;
use amime_e2e::{hosts, run_test, Bookinfo, BookinfoOptions, IpBlock, MeshDir, Sidecar, SidecarSpec, TestContext};
use anyhow::Result;

const FRONT_NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: front\n";

/// A DestinationRule for reviews named `name` in `namespace` whose subset `v2` selects
/// pods of `version`, with `scope` (`exportTo` / `workloadSelector` lines) added.
fn rule(namespace: &str, name: &str, version: &str, scope: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\n  namespace: \
         {namespace}\nspec:\n  host: reviews.bookinfo.svc.cluster.local\n{scope}  subsets:\n  - name: v2\n    \
         labels:\n      version: {version}\n"
    )
}

/// Bookinfo (productpage's sidecar in `bookinfo`) with `rules` and a VirtualService sending
/// every caller to subset v2, plus two
/// `web` sidecars in namespace `front`, the second one labelled `track: canary`.
async fn start_with(ctx: &TestContext, block: IpBlock, rules: &[&str]) -> Result<(Bookinfo, Sidecar, Sidecar)> {
    let dir = MeshDir::new(ctx)?;
    dir.write("mesh.yaml", &format!("{}\n---\n{FRONT_NAMESPACE}", mesh::bookinfo_mesh_yaml(block)?))?;
    let all_to_v2 = rules::reviews_vs_all_to("v2");
    let mut all = rules.to_vec();
    all.push(&all_to_v2);
    dir.write("reviews-rules.yaml", &rules::documents(&all))?;
    let bookinfo = Bookinfo::start(ctx, block, dir, BookinfoOptions::default()).await?;
    let xds = bookinfo.meshd.xds_addr();
    let web = SidecarSpec::new("web-stable", "front", block.ip(hosts::EXTRA_1)).label("app", "web");
    let web = Sidecar::start(ctx, &web, xds).await?;
    let canary =
        SidecarSpec::new("web-canary", "front", block.ip(hosts::EXTRA_2)).label("app", "web").label("track", "canary");
    let canary = Sidecar::start(ctx, &canary, xds).await?;
    Ok((bookinfo, web, canary))
}

const REVIEWS_FROM_FRONT: &str = "http://reviews.bookinfo:9080/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_uses_the_destination_rule_of_its_namespace_and_labels() {
    run_test("each_caller_uses_the_destination_rule_of_its_namespace_and_labels", |ctx| async move {
        let rules = [
            rule("bookinfo", "reviews", "v2", "  exportTo: [\".\"]\n"),
            rule("front", "reviews", "v3", "  exportTo: [\".\"]\n"),
            rule("front", "reviews-canary", "v1", "  workloadSelector:\n    matchLabels:\n      track: canary\n"),
        ];
        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
        let (bookinfo, web, canary) = start_with(&ctx, IpBlock(166), &rules).await?;
        // One route (subset v2), three meanings: bookinfo's rule, front's catch-all rule,
        // and the rule selecting front's canary workloads.
        bookinfo.productpage.ensure_all_answer("productpage (bookinfo)", Bookinfo::REVIEWS_URL, "v2").await?;
        web.ensure_all_answer("web (front)", REVIEWS_FROM_FRONT, "v3").await?;
        canary.ensure_all_answer("web canary (front)", REVIEWS_FROM_FRONT, "v1").await?;
        bookinfo.check_no_nacks_with(&[&web, &canary]).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_exported_to_its_namespace_only_is_unknown_elsewhere() {
    run_test("a_rule_exported_to_its_namespace_only_is_unknown_elsewhere", |ctx| async move {
        let rules = [
            rule("bookinfo", "reviews", "v2", "  exportTo: [\".\"]\n"),
            rule("front", "reviews-canary", "v3", "  workloadSelector:\n    matchLabels:\n      track: canary\n"),
        ];
        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
        let (bookinfo, web, canary) = start_with(&ctx, IpBlock(167), &rules).await?;
        bookinfo.productpage.ensure_all_answer("productpage (bookinfo)", Bookinfo::REVIEWS_URL, "v2").await?;
        // front has a rule for reviews (the canary's), so, as in Istio, its other
        // workloads do not fall back to bookinfo's (which is not exported to them anyway):
        // no rule defines v2 for them, and Envoy answers 503 (no cluster).
        web.ensure_all_answer("web (front)", REVIEWS_FROM_FRONT, "HTTP 503").await?;
        canary.ensure_all_answer("web canary (front)", REVIEWS_FROM_FRONT, "v3").await?;
        bookinfo.check_no_nacks_with(&[&web, &canary]).await
    })
    .await;
}
