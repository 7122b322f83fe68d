//! Rules that depend on the caller, end to end: real `meshd`, `meshctl bootstrap` and
//! Envoy sidecars (explicit mode) with different workload labels and namespaces, calling
//! the same reviews host. `sourceLabels` and `sourceNamespace` pick each caller's routes;
//! a VirtualService exported to its own namespace only does not apply elsewhere.
//!
//! Blocks 164..=170 belong to this file (and to the scoping helper's other tests). Each
//! test ends by checking that no sidecar rejected an xDS update and meshd counted no NACK.

use amime_e2e::mesh;
use amime_e2e::rules::{documents, REVIEWS_DESTINATION_RULE};
use amime_e2e::{hosts, run_test, Bookinfo, BookinfoOptions, IpBlock, MeshDir, Sidecar, SidecarSpec, TestContext};
use anyhow::{ensure, Result};

const FRONT_NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: front\n";

/// Bookinfo (productpage v1's sidecar in `bookinfo`) with the reviews DestinationRule
/// and `virtual_service`, plus a productpage v2 sidecar in `bookinfo` and a `web`
/// sidecar in namespace `front`.
async fn start_with(ctx: &TestContext, block: IpBlock, virtual_service: &str) -> Result<(Bookinfo, Sidecar, Sidecar)> {
    let dir = MeshDir::new(ctx)?;
    dir.write("mesh.yaml", &format!("{}\n---\n{FRONT_NAMESPACE}", mesh::bookinfo_mesh_yaml(block)?))?;
    dir.write("reviews-rules.yaml", &documents(&[REVIEWS_DESTINATION_RULE, virtual_service]))?;
    let bookinfo = Bookinfo::start(ctx, block, dir, BookinfoOptions::default()).await?;
    let xds = bookinfo.meshd.xds_addr();
    let v2 = SidecarSpec::new("productpage-v2", "bookinfo", block.ip(hosts::EXTRA_1))
        .label("app", "productpage")
        .label("version", "v2");
    let v2 = Sidecar::start(ctx, &v2, xds).await?;
    let web = SidecarSpec::new("web-v1", "front", block.ip(hosts::EXTRA_2)).label("app", "web").label("version", "v1");
    let web = Sidecar::start(ctx, &web, xds).await?;
    Ok((bookinfo, v2, web))
}

const BY_SOURCE: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts:
  - reviews
  http:
  - name: from-productpage-v2
    match:
    - sourceLabels:
        app: productpage
        version: v2
    route:
    - destination:
        host: reviews
        subset: v2
  - name: from-front
    match:
    - sourceNamespace: front
    route:
    - destination:
        host: reviews
        subset: v3
  - name: for-gateways-only
    match:
    - gateways: [bookinfo/ingress]
    route:
    - destination:
        host: reviews
        subset: v2
  - name: everyone-else
    route:
    - destination:
        host: reviews
        subset: v1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_labels_and_namespace_route_each_caller_its_own_way() {
    run_test("source_labels_and_namespace_route_each_caller_its_own_way", |ctx| async move {
        let (bookinfo, v2, web) = start_with(&ctx, IpBlock(164), BY_SOURCE).await?;
        // Same host, three callers: by labels (v2), by namespace (front), the rest.
        bookinfo.productpage.ensure_all_answer("productpage v1", Bookinfo::REVIEWS_URL, "v1").await?;
        v2.ensure_all_answer("productpage v2", Bookinfo::REVIEWS_URL, "v2").await?;
        web.ensure_all_answer("web (front)", "http://reviews.bookinfo:9080/", "v3").await?;
        bookinfo.check_no_nacks_with(&[&v2, &web]).await
    })
    .await;
}

const LOCAL_ONLY: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts:
  - reviews
  exportTo:
  - "."
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_exported_to_its_namespace_only_leaves_others_the_default_route() {
    run_test("a_rule_exported_to_its_namespace_only_leaves_others_the_default_route", |ctx| async move {
        let (bookinfo, v2, web) = start_with(&ctx, IpBlock(165), LOCAL_ONLY).await?;
        // In `bookinfo`, whatever the labels, the rule applies.
        bookinfo.productpage.ensure_all_answer("productpage v1", Bookinfo::REVIEWS_URL, "v2").await?;
        v2.ensure_all_answer("productpage v2", Bookinfo::REVIEWS_URL, "v2").await?;
        // From `front` the rule does not apply: the service's default route balances over
        // every version.
        let url = "http://reviews.bookinfo:9080/";
        let tally = web.tally(30, url, &[]).await;
        ensure!(
            tally.get("v1") > 0 && tally.get("v2") > 0 && tally.get("v3") > 0,
            "web (front) should reach every version: {tally}"
        );
        bookinfo.check_no_nacks_with(&[&v2, &web]).await
    })
    .await;
}
