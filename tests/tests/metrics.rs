//! Metrics end to end: real meshd, productpage's Envoy sidecar (explicit mode) in front of
//! the in-process reviews upstreams, and a real Prometheus scraping meshd's `/metrics` and
//! the sidecar's `:15090/stats/prometheus`. The PromQL queries are the README's.
//!
//! Blocks 80..=89 belong to this file. Each test ends by checking that Envoy rejected no
//! xDS update and meshd counted no NACK.

use std::collections::BTreeMap;
use std::time::Duration;

use amime_e2e::mesh::{self, hosts, EXAMPLE_RULES_FILE};
use amime_e2e::prometheus::{Prometheus, Target};
use amime_e2e::rules::{documents, REVIEWS_DESTINATION_RULE};
use amime_e2e::{http, run_test, Bookinfo, BookinfoOptions, IpBlock, MeshDir};
use anyhow::{ensure, Context as _, Result};

/// The reviews service's cluster host, as `destination_service`.
const REVIEWS: &str = "reviews.bookinfo.svc.cluster.local";
/// The header that takes a request to the subset under test.
const TEST_HEADER: (&str, &str) = ("x-test", "metrics");
/// How long a scrape of what a test did may take to show in Prometheus.
const SCRAPED: Duration = Duration::from_secs(10);

/// Requests with [`TEST_HEADER`] to `subset` without retries (so each request is one
/// upstream attempt and a 503 stays a 503); the rest to v1.
fn reviews_vs(subset: &str) -> String {
    format!(
        r#"apiVersion: networking.amime.dev/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts:
  - reviews
  http:
  - name: under-test
    match:
    - headers:
        {}:
          exact: {}
    retries:
      attempts: 0
    route:
    - destination:
        host: reviews
        subset: {subset}
  - name: default
    route:
    - destination:
        host: reviews
        subset: v1
"#,
        TEST_HEADER.0, TEST_HEADER.1
    )
}

/// Requests to a selection by response code class, summed over every caller's outbound
/// cluster stats: the counters behind [`rate_by_class`].
fn by_class(selector: &str) -> String {
    format!("sum by (envoy_response_code_class) (envoy_cluster_upstream_rq_xx{{{selector}}})")
}

/// The README's request and error rate of a selection, by response code class.
fn rate_by_class(selector: &str) -> String {
    format!("sum by (envoy_response_code_class) (rate(envoy_cluster_upstream_rq_xx{{{selector}}}[1m]))")
}

/// Send `n` requests with [`TEST_HEADER`]; the first `failures` of them are answered 503 by
/// the upstream (its `fail` query). Returns the statuses the client saw.
async fn send(bookinfo: &Bookinfo, key: &str, n: usize, failures: usize) -> Result<BTreeMap<u16, usize>> {
    let url = format!("{}?fail={failures}&status=503&key={key}", Bookinfo::REVIEWS_URL);
    let mut statuses = BTreeMap::new();
    for _ in 0..n {
        let response = bookinfo.productpage.request(&url, &[TEST_HEADER]).await?;
        *statuses.entry(response.status).or_default() += 1;
    }
    Ok(statuses)
}

/// Samples of `promql` as `label value → sample value`.
async fn by_label(prometheus: &Prometheus, promql: &str, label: &str) -> Result<BTreeMap<String, f64>> {
    Ok(prometheus
        .query(promql)
        .await?
        .into_iter()
        .map(|s| (s.labels.get(label).cloned().unwrap_or_default(), s.value))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_counts_requests_and_errors_per_subset_and_meshd_convergence() {
    run_test("prometheus_counts_requests_and_errors_per_subset_and_meshd_convergence", |ctx| async move {
        let block = IpBlock(80);
        let dir = MeshDir::new(&ctx)?;
        dir.write("mesh.yaml", &mesh::bookinfo_mesh_yaml(block)?)?;
        dir.write(EXAMPLE_RULES_FILE, &documents(&[REVIEWS_DESTINATION_RULE, &reviews_vs("v2")]))?;
        let bookinfo = Bookinfo::start(&ctx, block, dir, BookinfoOptions::default()).await?;
        let stats_addr = block.addr(hosts::PRODUCTPAGE, injector::bootstrap::PROMETHEUS_PORT);

        // The sidecar's own exposition: the host never leaks into a metric's name.
        let exposition = http::get(stats_addr, "/stats/prometheus").await?;
        ensure!(exposition.status == 200, "{}", exposition.summary());
        let leaked: Vec<&str> = exposition
            .body
            .lines()
            .filter(|l| l.starts_with("# TYPE") && (l.contains("svc_cluster_local") || l.contains("bookinfo")))
            .collect();
        ensure!(leaked.is_empty(), "metric names carrying a cluster's host: {leaked:?}");

        let prometheus = Prometheus::start(
            &ctx,
            block.ip(amime_e2e::prometheus::PROMETHEUS_HOST),
            &[
                Target::new("meshd", bookinfo.meshd.monitoring_addr(), "/metrics"),
                Target::new("productpage", stats_addr, "/stats/prometheus"),
            ],
        )
        .await?;

        // 12 requests to v2, the first 3 failing; then 8 more, the first 2 failing.
        let v2 = format!("destination_service=\"{REVIEWS}\",destination_subset=\"v2\"");
        let total = format!("sum(envoy_cluster_upstream_rq_total{{{v2}}})");
        let seen = send(&bookinfo, "phase-1", 12, 3).await?;
        ensure!(seen == BTreeMap::from([(200, 9), (503, 3)]), "the client saw {seen:?}");
        prometheus.await_value(&total, 12.0, SCRAPED).await?;
        let classes = by_label(&prometheus, &by_class(&v2), "envoy_response_code_class").await?;
        ensure!(classes == BTreeMap::from([("2".into(), 9.0), ("5".into(), 3.0)]), "by class: {classes:?}");
        let seen = send(&bookinfo, "phase-2", 8, 2).await?;
        ensure!(seen == BTreeMap::from([(200, 6), (503, 2)]), "the client saw {seen:?}");
        prometheus.await_value(&total, 20.0, SCRAPED).await?;
        let classes = by_label(&prometheus, &by_class(&v2), "envoy_response_code_class").await?;
        ensure!(classes == BTreeMap::from([("2".into(), 15.0), ("5".into(), 5.0)]), "by class: {classes:?}");
        // Every destination label, and the response code on `upstream_rq`.
        let all_labels = format!(
            "sum(envoy_cluster_upstream_rq{{destination_service_name=\"reviews\",destination_namespace=\"bookinfo\",\
             destination_subset=\"v2\",destination_port=\"9080\",envoy_response_code=\"503\",\
             envoy_cluster_name=\"outbound|9080|v2|{REVIEWS}\"}})"
        );
        ensure!(prometheus.query_one(&all_labels).await? == 5.0, "{all_labels}");
        // The README's rates: both classes moved between two scrapes.
        let rates = by_label(&prometheus, &rate_by_class(&v2), "envoy_response_code_class").await?;
        ensure!(
            rates.get("2").is_some_and(|r| *r > 0.0) && rates.get("5").is_some_and(|r| *r > 0.0),
            "rates: {rates:?}"
        );
        let error_ratio = format!(
            "sum(rate(envoy_cluster_upstream_rq_xx{{{v2},envoy_response_code_class=\"5\"}}[1m])) / \
             sum(rate(envoy_cluster_upstream_rq_total{{{v2}}}[1m]))"
        );
        let ratio = prometheus.query_one(&error_ratio).await?;
        ensure!(ratio > 0.0 && ratio < 1.0, "error ratio {ratio}");

        // meshd's own metrics, through Prometheus.
        let proxies = prometheus.query_one("amime_xds_connected_proxies{kind=\"sidecar\",mode=\"NONE\"}").await?;
        ensure!(proxies == 1.0, "connected explicit sidecars: {proxies}");

        // A VirtualService change: one more convergence sample once the sidecar has it.
        let convergence = "amime_xds_convergence_seconds_count";
        let before = bookinfo.meshd.metric(convergence).await?.context(convergence)?;
        let rds_pushes = "amime_xds_pushes_total{type=\"RDS\"}";
        let rds_before = prometheus.query_one(rds_pushes).await?;
        let since = bookinfo.dir.replace_virtual_service(EXAMPLE_RULES_FILE, &reviews_vs("v3"))?;
        bookinfo.await_all_to("v3", &[TEST_HEADER], since, Duration::from_secs(5)).await?;
        amime_e2e::await_condition("meshd to record the sidecar's convergence", SCRAPED, || async {
            let now = bookinfo.meshd.metric(convergence).await?.context(convergence)?;
            ensure!(now > before, "{convergence} still {now}");
            Ok(())
        })
        .await?;
        let after = bookinfo.meshd.metric(convergence).await?.context(convergence)?;
        ensure!(after == before + 1.0, "one proxy, one change: {before} → {after}");
        prometheus.await_value(convergence, after, SCRAPED).await?;
        let under_5s = prometheus.query_one("amime_xds_convergence_seconds_bucket{le=\"5\"}").await?;
        ensure!(under_5s == after, "every convergence under 5 s: {under_5s} of {after}");
        ensure!(prometheus.query_one(rds_pushes).await? > rds_before, "no RDS push counted");

        // A refused VirtualService is a configuration error of its kind.
        let errors = "amime_config_errors{kind=\"VirtualService\"}";
        ensure!(bookinfo.meshd.metric(errors).await?.is_none(), "no errors yet");
        let broken = reviews_vs("v3").replace("attempts: 0", "attempts: -1");
        bookinfo.dir.replace_virtual_service(EXAMPLE_RULES_FILE, &broken)?;
        amime_e2e::await_condition("meshd to count the refused VirtualService", SCRAPED, || async {
            ensure!(bookinfo.meshd.metric(errors).await? == Some(1.0), "{errors} not 1");
            Ok(())
        })
        .await?;

        ensure!(prometheus.query_one("sum(amime_xds_nacks_total)").await? == 0.0, "NACKs counted");
        bookinfo.check_no_nacks().await
    })
    .await;
}
