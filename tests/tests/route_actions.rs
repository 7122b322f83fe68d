//! VirtualService route actions end to end: real `meshd`, `meshctl bootstrap` and Envoy
//! (productpage's sidecar, explicit mode) in front of in-process reviews upstreams that
//! misbehave on request (`fail=N`, `status=S`, `sleep_ms=N`; see [`amime_e2e::Upstream`]).
//!
//! Blocks 120..=129 belong to this file. Each test ends by checking that Envoy rejected no
//! xDS update and meshd counted no NACK.

use std::time::{Duration, Instant};

use amime_e2e::mesh;
use amime_e2e::rules::{documents, reviews_vs_then_v1, REVIEWS_DESTINATION_RULE};
use amime_e2e::{run_test, Bookinfo, BookinfoOptions, IpBlock, MeshDir, TestContext};
use anyhow::{ensure, Result};

/// Start bookinfo with the reviews DestinationRule and `virtual_service`.
async fn start_with(ctx: &TestContext, block: IpBlock, virtual_service: &str) -> Result<Bookinfo> {
    let dir = MeshDir::new(ctx)?;
    dir.write("mesh.yaml", &mesh::bookinfo_mesh_yaml(block)?)?;
    dir.write("reviews-rules.yaml", &documents(&[REVIEWS_DESTINATION_RULE, virtual_service]))?;
    Bookinfo::start(ctx, block, dir, BookinfoOptions::default()).await
}

/// An HTTP rule for requests with `x-test: <test>`, to v1, with `actions` (YAML lines at
/// the rule's indentation, four spaces).
fn rule(test: &str, actions: &str) -> String {
    format!(
        "  - name: {test}\n    match:\n    - headers:\n        x-test:\n          exact: {test}\n{actions}    route:\n    \
         - destination:\n        host: reviews\n        subset: v1\n"
    )
}

const V1: usize = 0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_recover_from_a_flaky_upstream() {
    run_test("retries_recover_from_a_flaky_upstream", |ctx| async move {
        let rules = [
            rule("off", "    retries:\n      attempts: 0\n"),
            rule("five-hundreds", "    retries:\n      attempts: 3\n      perTryTimeout: 2s\n      retryOn: 5xx\n"),
            rule("on-409", "    retries:\n      attempts: 2\n      retryOn: '409'\n"),
        ]
        .concat();
        let bookinfo = start_with(&ctx, IpBlock(120), &reviews_vs_then_v1(&rules)).await?;
        let v1 = &bookinfo.reviews[V1];
        let get = |query: &str, test: &'static str| {
            let url = format!("{}?{query}", Bookinfo::REVIEWS_URL);
            let productpage = &bookinfo.productpage;
            async move { productpage.request(&url, &[("x-test", test)]).await }
        };

        // No `retries`: Istio's default policy retries a 503 twice.
        let r = get("fail=2&key=default", "none").await?;
        ensure!(r.status == 200, "the default policy should retry two 503s: {}", r.summary());
        ensure!(v1.hits_for("default") == 3, "3 attempts expected, upstream saw {}", v1.hits_for("default"));
        // ... but not a 500, and not a third failure.
        let r = get("fail=1&status=500&key=default-500", "none").await?;
        ensure!(r.status == 500, "the default policy does not retry a 500: {}", r.summary());
        ensure!(v1.hits_for("default-500") == 1, "1 attempt expected, saw {}", v1.hits_for("default-500"));
        let r = get("fail=3&key=default-3", "none").await?;
        ensure!(r.status == 503, "the default policy gives up after 2 retries: {}", r.summary());
        ensure!(v1.hits_for("default-3") == 3, "3 attempts expected, saw {}", v1.hits_for("default-3"));

        // `attempts: 0` turns retries off.
        let r = get("fail=1&key=off", "off").await?;
        ensure!(r.status == 503, "attempts: 0 should not retry: {}", r.summary());
        ensure!(v1.hits_for("off") == 1, "1 attempt expected, saw {}", v1.hits_for("off"));

        // `retryOn: 5xx` with 3 attempts recovers from three 500s.
        let r = get("fail=3&status=500&key=5xx", "five-hundreds").await?;
        ensure!(r.status == 200, "retryOn 5xx should retry 500s: {}", r.summary());
        ensure!(v1.hits_for("5xx") == 4, "4 attempts expected, saw {}", v1.hits_for("5xx"));

        // A status code in `retryOn` retries that status (and only the listed ones).
        let r = get("fail=2&status=409&key=409", "on-409").await?;
        ensure!(r.status == 200, "retryOn 409 should retry 409s: {}", r.summary());
        ensure!(v1.hits_for("409") == 3, "3 attempts expected, saw {}", v1.hits_for("409"));
        let r = get("fail=1&key=409-503", "on-409").await?;
        ensure!(r.status == 503, "retryOn '409' replaces the default conditions: {}", r.summary());

        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_fires_and_no_timeout_by_default() {
    run_test("route_timeout_fires_and_no_timeout_by_default", |ctx| async move {
        let rules = [
            rule("timeout", "    timeout: 300ms\n    retries:\n      attempts: 0\n"),
            rule("per-try", "    retries:\n      attempts: 2\n      perTryTimeout: 200ms\n      retryOn: reset\n"),
        ]
        .concat();
        let bookinfo = start_with(&ctx, IpBlock(121), &reviews_vs_then_v1(&rules)).await?;
        let v1 = &bookinfo.reviews[V1];
        let url = |query: &str| format!("{}?{query}", Bookinfo::REVIEWS_URL);

        // A slow answer beyond the route timeout: Envoy answers 504 when the timeout fires.
        let started = Instant::now();
        let r = bookinfo.productpage.request(&url("sleep_ms=3000&key=slow"), &[("x-test", "timeout")]).await?;
        let took = started.elapsed();
        ensure!(r.status == 504, "a 3s answer on a 300ms route should time out: {}", r.summary());
        // Envoy's timers run on its cached, coarse clock: allow them a few ms early.
        ensure!(
            took >= Duration::from_millis(280) && took < Duration::from_millis(1500),
            "the timeout should fire after 300ms, took {took:?}"
        );
        // A fast answer on the same route is not affected.
        let r = bookinfo.productpage.request(&url("key=fast"), &[("x-test", "timeout")]).await?;
        ensure!(r.status == 200, "{}", r.summary());

        // perTryTimeout: each try times out after 200ms, three tries, then 504.
        let started = Instant::now();
        let r = bookinfo.productpage.request(&url("sleep_ms=2000&key=per-try"), &[("x-test", "per-try")]).await?;
        let took = started.elapsed();
        ensure!(r.status == 504, "every try should time out: {}", r.summary());
        ensure!(v1.hits_for("per-try") == 3, "3 tries expected, upstream saw {}", v1.hits_for("per-try"));
        ensure!(took < Duration::from_millis(1900), "3 tries of 200ms (plus backoff) took {took:?}");

        // Without `timeout` there is none (Envoy's own default would be 15s; 1.5s is enough
        // to see that no short default applies).
        let r = bookinfo.productpage.request(&url("sleep_ms=1500&key=patient"), &[]).await?;
        ensure!(r.status == 200, "no timeout by default: {}", r.summary());

        bookinfo.check_no_nacks().await
    })
    .await;
}

/// With probability `p` per request, `n` requests give a count within `sigmas` standard
/// deviations of `n * p` (binomial); 5 sigmas fail by chance about once in 1.7 million runs.
fn within_binomial_bounds(count: usize, n: usize, p: f64, sigmas: f64) -> Result<()> {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let (low, high) = (mean - sigmas * sd, mean + sigmas * sd);
    ensure!(
        (low..=high).contains(&(count as f64)),
        "{count} of {n} is outside [{low:.0}, {high:.0}] (expected {mean:.0} for p = {p})"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_delay_and_abort_their_share() {
    run_test("faults_delay_and_abort_their_share", |ctx| async move {
        let rules = [
            rule("delay", "    fault:\n      delay:\n        fixedDelay: 400ms\n        percentage:\n          value: 100\n"),
            rule("abort-all", "    fault:\n      abort:\n        httpStatus: 418\n        percentage:\n          value: 100\n"),
            rule("abort-half", "    fault:\n      abort:\n        httpStatus: 503\n        percentage:\n          value: 50\n    retries:\n      attempts: 0\n"),
        ]
        .concat();
        let bookinfo = start_with(&ctx, IpBlock(122), &reviews_vs_then_v1(&rules)).await?;
        let v1 = &bookinfo.reviews[V1];
        let url = |key: &str| format!("{}?key={key}", Bookinfo::REVIEWS_URL);

        // Delay: every request takes at least the 400ms, then reaches the upstream.
        for _ in 0..3 {
            let started = Instant::now();
            let r = bookinfo.productpage.request(&url("delayed"), &[("x-test", "delay")]).await?;
            let took = started.elapsed();
            ensure!(r.status == 200, "{}", r.summary());
            // Envoy's timers run on its cached, coarse clock: allow them a few ms early.
            ensure!(
                took >= Duration::from_millis(380) && took < Duration::from_millis(1400),
                "a 400ms delay took {took:?}"
            );
        }
        ensure!(v1.hits_for("delayed") == 3, "delayed requests go on to the upstream");
        // Without the header, no delay.
        let started = Instant::now();
        let r = bookinfo.productpage.request(&url("fast"), &[]).await?;
        ensure!(r.status == 200 && started.elapsed() < Duration::from_millis(300), "{}", r.summary());

        // Abort 100%: every request answered 418 by the sidecar, none reaches the upstream.
        let tally = bookinfo.productpage.tally(20, &url("aborted"), &[("x-test", "abort-all")]).await;
        ensure!(tally.get("HTTP 418") == 20, "every request should be aborted with 418: {tally}");
        ensure!(v1.hits_for("aborted") == 0, "aborted requests never reach the upstream");

        // Abort 50%: 400 requests, the aborted count within binomial bounds.
        let n = 400;
        let mut aborted = 0;
        for _ in 0..n {
            let r = bookinfo.productpage.request(&url("half"), &[("x-test", "abort-half")]).await?;
            match r.status {
                503 => aborted += 1,
                200 => {}
                other => anyhow::bail!("unexpected status {other}: {}", r.summary()),
            }
        }
        eprintln!("abort 50%: {aborted} of {n} aborted");
        within_binomial_bounds(aborted, n, 0.5, 5.0)?;
        ensure!(v1.hits_for("half") == (n - aborted) as u64, "only the requests not aborted reach the upstream");

        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_edits_reach_the_upstream_and_the_client() {
    run_test("header_edits_reach_the_upstream_and_the_client", |ctx| async move {
        let edits = "    headers:\n      request:\n        set:\n          x-route: set\n        add:\n          \
                     x-trace: route\n        remove:\n        - x-secret\n      response:\n        set:\n          \
                     cache-control: no-store\n        remove:\n        - x-powered-by\n";
        let destination_edits = "      headers:\n        request:\n          set:\n            x-subset: v1\n        \
                                 response:\n          add:\n            x-served-by: reviews-v1\n";
        let rules = format!(
            "  - name: edits\n    match:\n    - headers:\n        x-test:\n          exact: edits\n{edits}    route:\n    \
             - destination:\n        host: reviews\n        subset: v1\n{destination_edits}"
        );
        let bookinfo = start_with(&ctx, IpBlock(123), &reviews_vs_then_v1(&rules)).await?;
        let sent = [("x-test", "edits"), ("x-route", "client"), ("x-trace", "client"), ("x-secret", "s3cret")];
        let r = bookinfo.productpage.request(Bookinfo::REVIEWS_URL, &sent).await?;
        ensure!(r.status == 200, "{}", r.summary());
        let seen = &r.json()?["headers"];
        ensure!(seen["x-route"] == "set", "set replaces the client's value: {seen}");
        ensure!(seen["x-trace"] == "client, route", "add appends to the client's value: {seen}");
        ensure!(seen.get("x-secret").is_none(), "remove drops the header: {seen}");
        ensure!(seen["x-subset"] == "v1", "the destination's edit applies too: {seen}");
        ensure!(r.header("cache-control") == Some("no-store"), "response set: {:?}", r.headers);
        ensure!(r.header("x-served-by") == Some("reviews-v1"), "destination response add: {:?}", r.headers);

        // Requests the rule does not take are not edited.
        let r = bookinfo.productpage.request(Bookinfo::REVIEWS_URL, &[("x-secret", "s3cret")]).await?;
        let seen = &r.json()?["headers"];
        ensure!(seen["x-secret"] == "s3cret" && seen.get("x-route").is_none(), "{seen}");
        ensure!(r.header("cache-control").is_none(), "{:?}", r.headers);

        bookinfo.check_no_nacks().await
    })
    .await;
}
