//! DestinationRule consistent hashing by cookie, query parameter and source IP end to end,
//! with the policy given per port (`portLevelSettings`, which replaces the rule's policy
//! for that port) and per subset: real meshd, the productpage sidecar (explicit mode, real
//! Envoy) and reviews v1, v2, v3. Blocks 176..=178 belong to this file. Each test ends by
//! checking that Envoy rejected no update and meshd counted no NACK.

use std::collections::BTreeSet;

use amime_e2e::mesh;
use amime_e2e::{run_test, Bookinfo, BookinfoOptions, IpBlock, MeshDir};
use anyhow::{ensure, Context as _, Result};

const REVIEWS: &str = Bookinfo::REVIEWS_URL;

/// Sends 12 keys, 15 requests each, with `request(key)` (a URL and headers); each key must
/// stay on one version, and the keys must spread over at least two.
async fn keys_stick(bookinfo: &Bookinfo, request: impl Fn(&str) -> (String, Vec<(String, String)>)) -> Result<()> {
    let mut versions = BTreeSet::new();
    for key in 0..12 {
        let key = format!("key-{key}");
        let (url, headers) = request(&key);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let tally = bookinfo.productpage.tally(15, &url, &headers).await;
        let version = ["v1", "v2", "v3"].into_iter().find(|v| tally.all(v));
        versions.insert(version.with_context(|| format!("{key} should stay on one endpoint; got {tally}"))?);
    }
    // Twelve keys on three endpoints: the hash spreads them (all on one: p < 1e-5).
    ensure!(versions.len() >= 2, "every key landed on {versions:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_level_cookie_hashing_replaces_the_rules_round_robin() {
    run_test("port_level_cookie_hashing_replaces_the_rules_round_robin", |ctx| async move {
        let block = IpBlock(176);
        let dir = MeshDir::new(&ctx)?;
        dir.write("mesh.yaml", &mesh::bookinfo_mesh_yaml(block)?)?;
        dir.write(
            "policy.yaml",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: bookinfo}\n\
             spec:\n  host: reviews\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    portLevelSettings:\n    \
             - port: {number: 9080}\n      loadBalancer: {consistentHash: {httpCookie: {name: session, ttl: 0s}}}\n",
        )?;
        let bookinfo = Bookinfo::start(&ctx, block, dir, BookinfoOptions::default()).await?;
        keys_stick(&bookinfo, |key| (REVIEWS.to_owned(), vec![("cookie".to_owned(), format!("session={key}"))])).await?;
        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameter_and_source_ip_hashing_keep_a_client_on_one_endpoint() {
    run_test("query_parameter_and_source_ip_hashing_keep_a_client_on_one_endpoint", |ctx| async move {
        let block = IpBlock(177);
        let dir = MeshDir::new(&ctx)?;
        dir.write("mesh.yaml", &mesh::bookinfo_mesh_yaml(block)?)?;
        let rule = |policy: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: \
                 bookinfo}}\nspec:\n  host: reviews\n  trafficPolicy:\n    loadBalancer: {{consistentHash: {policy}}}\n"
            )
        };
        dir.write("policy.yaml", &rule("{httpQueryParameterName: shard}"))?;
        let bookinfo = Bookinfo::start(&ctx, block, dir, BookinfoOptions::default()).await?;
        keys_stick(&bookinfo, |key| (format!("{REVIEWS}?shard={key}"), Vec::new())).await?;

        // By source IP (the rule changed live): every request of this one client goes to
        // one endpoint, whatever its query (six shards on one version by chance under the
        // query hash: p < 0.5%).
        bookinfo.dir.write("policy.yaml", &rule("{useSourceIp: true}"))?;
        amime_e2e::await_condition("the source-IP policy to apply", std::time::Duration::from_secs(10), || async {
            let mut seen = BTreeSet::new();
            for shard in ["a", "b", "c", "d", "e", "f"] {
                let tally = bookinfo.productpage.tally(5, &format!("{REVIEWS}?shard={shard}"), &[]).await;
                let version = ["v1", "v2", "v3"].into_iter().find(|v| tally.all(v));
                seen.insert(version.with_context(|| format!("shard {shard}: {tally}"))?);
            }
            ensure!(seen.len() == 1, "one client should reach one endpoint: {seen:?}");
            Ok(())
        })
        .await?;
        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subsets_policy_overrides_the_rules_for_its_cluster_only() {
    run_test("a_subsets_policy_overrides_the_rules_for_its_cluster_only", |ctx| async move {
        let block = IpBlock(178);
        let dir = MeshDir::new(&ctx)?;
        dir.write("mesh.yaml", &mesh::bookinfo_mesh_yaml(block)?)?;
        // Subset `sticky` holds every reviews pod and hashes by x-user; the rule (and so
        // the host's own cluster) balances round robin. Requests with `x-sticky: 1` go to
        // the subset.
        dir.write(
            "policy.yaml",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: bookinfo}\n\
             spec:\n  host: reviews\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n  subsets:\n  - name: \
             sticky\n    labels: {app: reviews}\n    trafficPolicy:\n      loadBalancer: {consistentHash: \
             {httpHeaderName: x-user}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: \
             reviews, namespace: bookinfo}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{headers: {x-sticky: \
             {exact: '1'}}}]\n    route: [{destination: {host: reviews, subset: sticky}}]\n  - route: [{destination: \
             {host: reviews}}]\n",
        )?;
        let bookinfo = Bookinfo::start(&ctx, block, dir, BookinfoOptions::default()).await?;
        keys_stick(&bookinfo, |key| {
            (REVIEWS.to_owned(), vec![("x-sticky".to_owned(), "1".to_owned()), ("x-user".to_owned(), key.to_owned())])
        })
        .await?;
        // Without the subset, the rule's round robin: one user's 15 requests reach every version.
        let tally = bookinfo.productpage.tally(15, REVIEWS, &[("x-user", "key-0")]).await;
        ensure!(
            ["v1", "v2", "v3"].into_iter().all(|v| tally.get(v) > 0),
            "the host's own cluster should round robin: {tally}"
        );
        bookinfo.check_no_nacks().await
    })
    .await;
}
