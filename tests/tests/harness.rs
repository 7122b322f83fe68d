//! Tests of the harness itself; they need Envoy but not meshd/meshctl.
//! Loopback blocks 201..=209 belong to this file.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use amime_e2e::context::TestContext;
use amime_e2e::http;
use amime_e2e::process::ManagedProcess;
use amime_e2e::{await_condition, fatal, hosts, mesh, paths, run_test, IpBlock, MeshDir, Sidecar, Upstream};
use anyhow::{bail, ensure, Result};

/// Wait at most `timeout` until `GET path` to `addr` fails (nothing answers there any more).
async fn await_no_answer(what: &str, addr: SocketAddr, path: &str, timeout: Duration) -> Result<()> {
    await_condition(what, timeout, || async {
        match http::get(addr, path).await {
            Ok(r) => bail!("still answering: {}", r.summary()),
            Err(_) => Ok(()),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_answers_with_its_identity() {
    run_test("upstream_answers_with_its_identity", |_ctx| async move {
        let block = IpBlock(201);
        let upstream = Upstream::start(block.addr(11, 9080), "reviews", "v7", "reviews-v7").await?;

        let r =
            http::send(upstream.addr(), "GET", "/some/path?x=1", "reviews:9080", &[("end-user", "jason")], b"").await?;
        ensure!(r.status == 200, "{}", r.summary());
        let body = r.json()?;
        ensure!(body["service"] == "reviews" && body["version"] == "v7" && body["pod"] == "reviews-v7", "{body}");
        ensure!(body["path"] == "/some/path?x=1", "{body}");
        ensure!(body["headers"]["end-user"] == "jason", "{body}");
        ensure!(body["headers"]["host"] == "reviews:9080", "{body}");

        // An absolute-form request (what a proxy receives) works too.
        let r = http::proxy_request(upstream.addr(), "GET", "http://anything:1/abs", &[]).await?;
        ensure!(r.json_str("path").as_deref() == Some("/abs"), "{}", r.summary());
        ensure!(upstream.hits() == 2, "hits = {}", upstream.hits());

        // Dropping it stops the server.
        let addr = upstream.addr();
        drop(upstream);
        await_no_answer("the dropped upstream to refuse connections", addr, "/", Duration::from_secs(5)).await
    })
    .await;
}

#[tokio::test]
async fn await_condition_polls_until_true() {
    let start = Instant::now();
    let mut calls = 0;
    let value = await_condition("the third call", Duration::from_secs(5), || {
        calls += 1;
        let n = calls;
        async move {
            ensure!(n >= 3, "call {n}");
            Ok(n * 10)
        }
    })
    .await
    .unwrap();
    assert_eq!(value, 30);
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn await_condition_reports_what_and_last_observation() {
    let mut calls = 0;
    let err = await_condition("the moon to turn blue", Duration::from_millis(100), || {
        calls += 1;
        let n = calls;
        async move {
            bail!("it was grey (look #{n})");
            #[allow(unreachable_code)]
            Ok(())
        }
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains("the moon to turn blue"), "{err}");
    assert!(err.contains(&format!("it was grey (look #{calls})")), "{err}");
}

#[tokio::test]
async fn await_condition_stops_on_fatal_and_cuts_off_hanging_checks() {
    let start = Instant::now();
    let err = await_condition("x", Duration::from_secs(30), || async { Err::<(), _>(fatal("process died")) })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("gave up") && err.contains("process died"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(1));

    let start = Instant::now();
    let err = await_condition("a hanging check", Duration::from_millis(200), || async {
        std::future::pending::<()>().await;
        Ok(())
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("did not finish"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn managed_process_captures_logs_and_reports_exit() {
    run_test("managed_process_captures_logs_and_reports_exit", |ctx| async move {
        let sh = std::path::Path::new("/bin/sh");
        let p = ManagedProcess::spawn(&ctx, "short", sh, ["-c", "echo to-stdout; echo to-stderr >&2; exit 3"])?;
        let err = await_condition("short to exit", Duration::from_secs(5), || async {
            p.ensure_running()?;
            Err::<(), _>(anyhow::anyhow!("still running"))
        })
        .await
        .unwrap_err();
        let err = format!("{err:#}");
        ensure!(err.contains("exited") && err.contains("to-stderr"), "{err}");
        ensure!(p.log_tail(5).contains("to-stdout"), "{}", p.log_tail(5));
        ensure!(ctx.log_tails(5).contains("to-stderr"), "{}", ctx.log_tails(5));

        // A long-running process is killed when dropped.
        let long = ManagedProcess::spawn(&ctx, "long", sh, ["-c", "sleep 600"])?;
        let pid = long.pid();
        ensure!(long.is_running());
        drop(long);
        await_condition("the dropped process to be gone", Duration::from_secs(5), || async {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting to be reaped.
            ensure!(state.is_empty() || state.contains(") Z"), "still alive: {state}");
            Ok(())
        })
        .await
    })
    .await;
}

#[test]
fn finish_panics_with_the_error_chain() {
    let ctx = TestContext::new("finish_panics_with_the_error_chain").unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ctx.finish(Err(anyhow::anyhow!("body-error-marker").context("outer context")))
    }));
    let message = *result.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("body-error-marker") && message.contains("outer context"), "{message}");
    ctx.finish(Ok(()));
}

#[test]
fn context_removes_its_directory() {
    let ctx = TestContext::new("context_removes_its_directory").unwrap();
    let dir = ctx.dir().to_path_buf();
    std::fs::write(dir.join("f"), "x").unwrap();
    drop(ctx);
    assert!(std::env::var_os("AMIME_E2E_KEEP").is_some() || !dir.exists());
}

#[test]
fn mesh_dir_and_rendering() {
    let ctx = TestContext::new("mesh_dir_and_rendering").unwrap();
    let dir = MeshDir::new(&ctx).unwrap();
    dir.write("a.yaml", "one").unwrap();
    dir.write("a.yaml", "two").unwrap();
    dir.write("sub/b.yml", "three").unwrap();
    assert_eq!(dir.read("a.yaml").unwrap(), "two");
    assert_eq!(dir.read("sub/b.yml").unwrap(), "three");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "no temp files left behind: {names:?}");

    let yaml = mesh::bookinfo_mesh_yaml(IpBlock(42)).unwrap();
    assert!(yaml.contains("podIP: 127.0.42.11") && yaml.contains("clusterIP: 10.96.42.2"));
    assert!(!yaml.contains("127.0.10."));
    dir.copy_bookinfo_example(IpBlock(43)).unwrap();
    assert!(dir.read("mesh.yaml").unwrap().contains("127.0.43.13"));
    assert!(dir.read("reviews-rules.yaml").unwrap().contains("kind: VirtualService"));
}

#[test]
fn missing_binary_says_how_to_build() {
    let err = paths::binary("no-such-amime-binary").unwrap_err().to_string();
    assert!(err.contains("cargo build --workspace --bins"), "{err}");
}

/// A hand-written static bootstrap: proves the Envoy process wrapper, readiness, stats and the
/// proxy client without meshd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_with_static_bootstrap() {
    run_test("envoy_with_static_bootstrap", |ctx| async move {
        let block = IpBlock(203);
        let ip = block.ip(hosts::PRODUCTPAGE);
        let _backend = Upstream::start(block.addr(hosts::REVIEWS_V1, 9080), "backend", "v1", "backend-0").await?;
        let bootstrap = ctx.dir().join("static-bootstrap.yaml");
        std::fs::write(&bootstrap, static_bootstrap(block))?;
        let envoy =
            Sidecar::launch(&ctx, "envoy-static", &bootstrap, ip, block.addr(hosts::PRODUCTPAGE, 15000)).await?;

        let r = envoy.request("http://hello/", &[]).await?;
        ensure!(r.status == 200 && r.body == "hello from envoy", "{}", r.summary());

        let r = envoy.request("http://backend:9080/through?q=1", &[("end-user", "jason")]).await?;
        ensure!(r.status == 200, "{}", r.summary());
        let body = r.json()?;
        ensure!(body["pod"] == "backend-0" && body["path"] == "/through?q=1", "{body}");
        ensure!(body["headers"]["end-user"] == "jason", "{body}");

        let r = envoy.request("http://unknown:1/", &[]).await?;
        ensure!(r.status == 404, "{}", r.summary());

        let tally = envoy.tally(10, "http://backend:9080/", &[]).await;
        ensure!(tally.all("v1"), "{tally}");

        await_condition("downstream 2xx stat to count 12 requests", Duration::from_secs(10), || async {
            let n = envoy.stat("http.outbound.downstream_rq_2xx").await?;
            ensure!(n == Some(12), "http.outbound.downstream_rq_2xx = {n:?}");
            Ok(())
        })
        .await?;
        ensure!(envoy.stat("no.such.stat").await?.is_none());
        ensure!(envoy.rejected_updates().await? == 0);
        ensure!(envoy.config_dump().await?["configs"].is_array());

        // Killed on drop: the admin port goes away.
        let admin = envoy.admin_addr();
        drop(envoy);
        await_no_answer("the dropped Envoy to stop answering on admin", admin, "/ready", Duration::from_secs(10)).await
    })
    .await;
}

/// A missing Envoy binary or a broken bootstrap fails fast with Envoy's own message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_with_bad_bootstrap_fails_fast() {
    run_test("envoy_with_bad_bootstrap_fails_fast", |ctx| async move {
        let block = IpBlock(204);
        let bootstrap = ctx.dir().join("bad.yaml");
        std::fs::write(&bootstrap, "static_resources: {listeners: [{name: x, bogus_field: 1}]}\n")?;
        let start = Instant::now();
        let result = Sidecar::launch(&ctx, "envoy-bad", &bootstrap, block.ip(1), block.addr(1, 15000)).await;
        let err = match result {
            Ok(_) => bail!("Envoy started with a bad bootstrap"),
            Err(e) => format!("{e:#}"),
        };
        ensure!(err.contains("gave up") && err.contains("exited"), "{err}");
        ensure!(start.elapsed() < Duration::from_secs(15), "took {:?}", start.elapsed());
        Ok(())
    })
    .await;
}

fn static_bootstrap(block: IpBlock) -> String {
    let ip = block.ip(hosts::PRODUCTPAGE);
    let backend = block.ip(hosts::REVIEWS_V1);
    format!(
        r#"
admin:
  address: {{socket_address: {{address: {ip}, port_value: 15000}}}}
static_resources:
  listeners:
  - name: outbound
    address: {{socket_address: {{address: {ip}, port_value: 15001}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound
          route_config:
            virtual_hosts:
            - name: hello
              domains: ["hello", "hello:*"]
              routes:
              - match: {{prefix: "/"}}
                direct_response: {{status: 200, body: {{inline_string: "hello from envoy"}}}}
            - name: backend
              domains: ["backend", "backend:*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: backend}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {backend}, port_value: 9080}}}}}}
"#
    )
}
