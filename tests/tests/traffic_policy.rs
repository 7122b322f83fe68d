//! DestinationRule traffic policies end to end: real meshd, the productpage sidecar
//! (explicit mode, real Envoy) and in-process upstreams. Blocks 131-136 and 90 belong to
//! this file. Each test ends by checking that Envoy rejected no update and meshd counted no
//! NACK.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amime_e2e::mesh::{self, example_pod, APP_PORT};
use amime_e2e::process::{run_to_completion, ManagedProcess};
use amime_e2e::{await_condition, hosts, run_test, Bookinfo, BookinfoOptions, IpBlock, MeshDir, TestContext, Upstream};
use anyhow::{ensure, Context as _, Result};
use axum::http::StatusCode;
use serde_json::json;

const REVIEWS: &str = Bookinfo::REVIEWS_URL;
const EXTRA_URL: &str = "http://extra:9080/";
const RULE_FILE: &str = "policy.yaml";

/// Service `extra` (pods `extra-a` on EXTRA_1 and, with `two`, `extra-b` on EXTRA_2).
fn extra_service(two: bool) -> String {
    let mut yaml = mesh::RATINGS_SERVICE.replace("ratings", "extra").replace("10.96.10.3", "10.96.10.30");
    yaml += "---\n";
    yaml += &example_pod("extra", "a", hosts::EXTRA_1);
    if two {
        yaml += "---\n";
        yaml += &example_pod("extra", "b", hosts::EXTRA_2);
    }
    yaml
}

fn destination_rule(host: &str, traffic_policy: &str) -> String {
    format!(
        "apiVersion: networking.amime.dev/v1\nkind: DestinationRule\nmetadata:\n  name: {host}\n  namespace: bookinfo\nspec:\n  host: {host}\n  trafficPolicy:\n{traffic_policy}"
    )
}

/// The bookinfo mesh in `block`, plus `extra` YAML and `rule` (a DestinationRule).
async fn start(ctx: &TestContext, block: IpBlock, extra: &str, rule: &str) -> Result<Bookinfo> {
    let dir = MeshDir::new(ctx)?;
    dir.write("mesh.yaml", &mesh::bookinfo_mesh_yaml(block)?)?;
    if !extra.is_empty() {
        dir.write("extra.yaml", &block.render(extra))?;
    }
    dir.write(RULE_FILE, rule)?;
    Bookinfo::start(ctx, block, dir, BookinfoOptions::default()).await
}

/// An upstream that answers `{"version": ...}` with `status`, after `gate` opens (when
/// given). Counts the requests that arrived. Stops when dropped.
struct Scripted {
    arrived: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    async fn start(
        addr: SocketAddr,
        version: &str,
        status: StatusCode,
        gate: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?;
        let arrived = Arc::new(AtomicUsize::new(0));
        let (counter, version) = (arrived.clone(), version.to_owned());
        let app = axum::Router::new().fallback(move || {
            let (counter, version, mut gate) = (counter.clone(), version.clone(), gate.clone());
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                if let Some(gate) = gate.as_mut() {
                    let _ = gate.wait_for(|open| *open).await;
                }
                (status, axum::Json(json!({"service": "extra", "version": version})))
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { arrived, task })
    }

    fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `lb_policy` of cluster `name` in the sidecar's config dump.
async fn lb_policy(bookinfo: &Bookinfo, name: &str) -> Result<String> {
    let dump = bookinfo.productpage.config_dump().await?;
    let clusters = dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["dynamic_active_clusters"].as_array())
        .flatten();
    for c in clusters {
        if c["cluster"]["name"] == name {
            return Ok(c["cluster"]["lb_policy"].as_str().unwrap_or("ROUND_ROBIN").to_owned());
        }
    }
    anyhow::bail!("no cluster {name} in the config dump")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_each_key_on_one_endpoint() {
    run_test("consistent_hash_keeps_each_key_on_one_endpoint", |ctx| async move {
        let policy = "    loadBalancer:\n      consistentHash:\n        httpHeaderName: x-user\n";
        let bookinfo = start(&ctx, IpBlock(131), "", &destination_rule("reviews", policy)).await?;
        let mut versions = BTreeSet::new();
        for user in 0..12 {
            let user = format!("user-{user}");
            let tally = bookinfo.productpage.tally(15, REVIEWS, &[("x-user", &user)]).await;
            let version = ["v1", "v2", "v3"].into_iter().find(|v| tally.all(v));
            let version = version.with_context(|| format!("{user} should stay on one endpoint; got {tally}"))?;
            versions.insert(version);
        }
        // Twelve keys on three endpoints: the hash spreads them (all on one: p < 1e-5).
        ensure!(versions.len() >= 2, "every key landed on {versions:?}");
        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_and_random_are_accepted() {
    run_test("least_request_and_random_are_accepted", |ctx| async move {
        let rule = |simple: &str| destination_rule("reviews", &format!("    loadBalancer:\n      simple: {simple}\n"));
        let bookinfo = start(&ctx, IpBlock(132), "", &rule("LEAST_REQUEST")).await?;
        let cluster = "outbound|9080||reviews.bookinfo.svc.cluster.local";
        for simple in ["LEAST_REQUEST", "RANDOM"] {
            bookinfo.dir.write(RULE_FILE, &rule(simple))?;
            await_condition(&format!("{cluster} to balance by {simple}"), Duration::from_secs(5), || async {
                let got = lb_policy(&bookinfo, cluster).await?;
                ensure!(got == simple, "lb_policy {got}");
                Ok(())
            })
            .await?;
            let tally = bookinfo.productpage.tally(60, REVIEWS, &[]).await;
            let spread = ["v1", "v2", "v3"].iter().filter(|v| tally.get(v) > 0).count();
            ensure!(tally.get("v1") + tally.get("v2") + tally.get("v3") == 60 && spread >= 2, "{simple}: {tally}");
        }
        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_overflows_to_503_under_concurrent_load() {
    run_test("circuit_breaker_overflows_to_503_under_concurrent_load", |ctx| async move {
        let block = IpBlock(133);
        let (open, gate) = tokio::sync::watch::channel(false);
        let upstream = Scripted::start(block.addr(hosts::EXTRA_1, APP_PORT), "a", StatusCode::OK, Some(gate)).await?;
        let policy = "    connectionPool:\n      tcp:\n        maxConnections: 1\n      http:\n        http1MaxPendingRequests: 1\n";
        let bookinfo = start(&ctx, block, &extra_service(false), &destination_rule("extra", policy)).await?;

        const CONCURRENT: usize = 10;
        let finished = AtomicUsize::new(0);
        let requests = futures::future::join_all((0..CONCURRENT).map(|_| async {
            let r = bookinfo.productpage.request(EXTRA_URL, &[]).await;
            finished.fetch_add(1, Ordering::SeqCst);
            r
        }));
        // Release the held requests once every request is either held by the upstream,
        // answered, or the one allowed to wait (pending). Envoy checks the connection limit
        // per worker thread against shared counters, so a second connection may open in a
        // race (Istio's circuit-breaking task sees the same leeway).
        let release = async {
            let waited = await_condition("the overflowing requests to be answered", Duration::from_secs(10), || async {
                let (arrived, done) = (upstream.arrived(), finished.load(Ordering::SeqCst));
                ensure!(arrived >= 1 && arrived + done >= CONCURRENT - 1, "arrived {arrived}, finished {done}");
                Ok(())
            })
            .await;
            let _ = open.send(true);
            waited
        };
        let (responses, waited) = tokio::join!(requests, release);
        waited?;
        let mut ok = 0;
        let mut overflowed = 0;
        for r in responses {
            let r = r?;
            match r.status {
                200 => ok += 1,
                503 if r.header("x-envoy-overloaded") == Some("true") => overflowed += 1,
                _ => anyhow::bail!("unexpected answer: {}", r.summary()),
            }
        }
        // One connection (two in a race between Envoy's workers) and at most one pending
        // request get through (none when the requests all arrive while the first connection
        // is still being set up: that request is the pending one); the rest overflow.
        ensure!((1..=3).contains(&ok) && ok + overflowed == CONCURRENT, "{ok} answered, {overflowed} overflowed");
        let stat = "cluster.outbound|9080||extra.bookinfo.svc.cluster.local.upstream_rq_pending_overflow";
        let overflow = bookinfo.productpage.stat(stat).await?.unwrap_or(0);
        ensure!(overflow == overflowed as u64, "{stat} = {overflow}, {overflowed} requests overflowed");
        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_the_failing_endpoint() {
    run_test("outlier_detection_ejects_the_failing_endpoint", |ctx| async move {
        let block = IpBlock(134);
        let bad = Scripted::start(block.addr(hosts::EXTRA_1, APP_PORT), "a", StatusCode::INTERNAL_SERVER_ERROR, None).await?;
        let _good = Upstream::start(block.addr(hosts::EXTRA_2, APP_PORT), "extra", "b", "extra-b").await?;
        let policy = "    outlierDetection:\n      consecutive5xxErrors: 2\n      interval: 1s\n      baseEjectionTime: 3m\n      maxEjectionPercent: 100\n";
        let bookinfo = start(&ctx, block, &extra_service(true), &destination_rule("extra", policy)).await?;

        await_condition("every request to extra to reach b", Duration::from_secs(10), || async {
            let tally = bookinfo.productpage.tally(20, EXTRA_URL, &[]).await;
            ensure!(tally.all("b"), "{tally}");
            Ok(())
        })
        .await?;
        let failures = bad.arrived();
        ensure!(failures >= 2, "a was ejected after {failures} requests; consecutive5xxErrors is 2");
        let tally = bookinfo.productpage.tally(50, EXTRA_URL, &[]).await;
        ensure!(tally.all("b") && bad.arrived() == failures, "after ejection: {tally}, a got {} more", bad.arrived() - failures);
        let stat = "cluster.outbound|9080||extra.bookinfo.svc.cluster.local.outlier_detection.ejections_enforced_consecutive_5xx";
        let ejections = bookinfo.productpage.stat(stat).await?.unwrap_or(0);
        ensure!(ejections >= 1, "{stat} = {ejections}");
        bookinfo.check_no_nacks().await
    })
    .await;
}

/// A new endpoint under `warmup` starts with a small share of round robin (Envoy's slow
/// start), and gets its full half once the rule drops the warmup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_starts_a_new_endpoint_with_a_small_share() {
    run_test("warmup_starts_a_new_endpoint_with_a_small_share", |ctx| async move {
        let block = IpBlock(90);
        let _a = Upstream::start(block.addr(hosts::EXTRA_1, APP_PORT), "extra", "a", "extra-a").await?;
        let _b = Upstream::start(block.addr(hosts::EXTRA_2, APP_PORT), "extra", "b", "extra-b").await?;
        // A 4s window; aggression 0.25 keeps a new endpoint at minimumPercent (10%) for its
        // first ~2.2s (weight = max(10%, (age/4s)^4)).
        let warm = "    loadBalancer:\n      simple: ROUND_ROBIN\n      warmup:\n        duration: 4s\n        minimumPercent: 10\n        aggression: 0.25\n";
        let bookinfo = start(&ctx, block, &extra_service(false), &destination_rule("extra", warm)).await?;
        bookinfo.await_answer(EXTRA_URL, Duration::from_secs(10)).await?;
        // Every endpoint is new when the cluster starts: a must first leave its own window.
        // (Time itself is the condition here.)
        tokio::time::sleep(Duration::from_secs(5)).await;

        bookinfo.dir.write("extra.yaml", &block.render(&extra_service(true)))?;
        await_condition("b to get a request", Duration::from_secs(10), || async {
            let r = bookinfo.productpage.request(EXTRA_URL, &[]).await?;
            ensure!(r.json_str("version").as_deref() == Some("b"), "{}", r.summary());
            Ok(())
        })
        .await?;
        let started = std::time::Instant::now();
        let tally = bookinfo.productpage.tally(100, EXTRA_URL, &[]).await;
        let took = started.elapsed();
        // Weights 1 and 0.1: b gets about 9 of 100; plain round robin would give it 50.
        ensure!(tally.get("a") + tally.get("b") == 100 && tally.get("b") <= 30, "under warmup (in {took:?}): {tally}");

        bookinfo.dir.write(RULE_FILE, &destination_rule("extra", "    loadBalancer:\n      simple: ROUND_ROBIN\n"))?;
        await_condition("b to get its full share without warmup", Duration::from_secs(10), || async {
            let tally = bookinfo.productpage.tally(100, EXTRA_URL, &[]).await;
            ensure!((40..=60).contains(&tally.get("b")), "{tally}");
            Ok(())
        })
        .await?;
        bookinfo.check_no_nacks().await
    })
    .await;
}

/// Writes a self-signed certificate for `name` as `<stem>.pem` and `<stem>-key.pem` in `dir`.
async fn self_signed(dir: &std::path::Path, stem: &str, name: &str) -> Result<(String, String)> {
    let (key, cert) = (dir.join(format!("{stem}-key.pem")), dir.join(format!("{stem}.pem")));
    let mut args: Vec<String> = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend(
        ["-days", "1", "-subj", &format!("/CN={name}"), "-addext", &format!("subjectAltName=DNS:{name}")]
            .map(String::from),
    );
    args.extend(["-keyout".into(), key.display().to_string(), "-out".into(), cert.display().to_string()]);
    run_to_completion(std::path::Path::new("openssl"), &args, Duration::from_secs(20)).await.context("openssl req")?;
    Ok((cert.display().to_string(), key.display().to_string()))
}

/// A TLS server (`openssl s_server -WWW`, serving files of its directory) on `addr`, with a
/// self-signed certificate for `name`; with `client_ca`, it demands a client certificate
/// signed by it. Returns the server and its certificate's path.
async fn start_tls_server(
    ctx: &TestContext,
    addr: SocketAddr,
    name: &str,
    client_ca: Option<&str>,
) -> Result<(ManagedProcess, String)> {
    let dir = ctx.unique_path("tls-upstream", "");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("hello"), "hello over TLS\n")?;
    let (cert, _) = self_signed(&dir, "cert", name).await?;
    let verify = client_ca.map(|ca| format!(" -Verify 1 -CAfile '{ca}'")).unwrap_or_default();
    let script = format!(
        "cd '{}' && exec openssl s_server -quiet -accept {addr} -cert cert.pem -key cert-key.pem -WWW{verify}",
        dir.display()
    );
    let process = ManagedProcess::spawn(ctx, "tls-upstream", std::path::Path::new("/bin/sh"), ["-c", &script])?;
    await_condition(&format!("the TLS upstream to listen on {addr}"), Duration::from_secs(10), || async {
        process.ensure_running()?;
        tokio::net::TcpStream::connect(addr).await.map(drop).context("connect")
    })
    .await?;
    Ok((process, cert))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_tls_reaches_an_upstream_that_speaks_only_tls() {
    run_test("simple_tls_reaches_an_upstream_that_speaks_only_tls", |ctx| async move {
        let block = IpBlock(135);
        let (_server, cert) = start_tls_server(&ctx, block.addr(hosts::EXTRA_1, APP_PORT), "extra.example", None).await?;
        let rule = |san: &str| {
            destination_rule("extra", &format!("    tls:\n      mode: SIMPLE\n      caCertificates: {cert}\n      sni: extra.example\n      subjectAltNames: [{san}]\n"))
        };
        let bookinfo = start(&ctx, block, &extra_service(false), &rule("extra.example")).await?;
        let url = "http://extra:9080/hello";
        await_condition("GET /hello through the sidecar to come back from the TLS upstream", Duration::from_secs(10), || async {
            let r = bookinfo.productpage.request(url, &[]).await?;
            ensure!(r.status == 200 && r.body.contains("hello over TLS"), "{}", r.summary());
            Ok(())
        })
        .await?;
        // The certificate is checked: a name it does not carry fails the handshake.
        bookinfo.dir.write(RULE_FILE, &rule("someone-else.example"))?;
        await_condition("a SAN the certificate lacks to fail the request", Duration::from_secs(10), || async {
            let r = bookinfo.productpage.request(url, &[]).await?;
            ensure!(r.status == 503, "{}", r.summary());
            Ok(())
        })
        .await?;
        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_client_certificate() {
    run_test("mutual_tls_presents_the_client_certificate", |ctx| async move {
        let block = IpBlock(136);
        let dir = ctx.unique_path("client-cert", "");
        std::fs::create_dir_all(&dir)?;
        let (client_cert, client_key) = self_signed(&dir, "client", "productpage.example").await?;
        let addr = block.addr(hosts::EXTRA_1, APP_PORT);
        let (_server, cert) = start_tls_server(&ctx, addr, "extra.example", Some(&client_cert)).await?;
        let tls = format!("    tls:\n      mode: MUTUAL\n      caCertificates: {cert}\n      sni: extra.example\n      clientCertificate: {client_cert}\n      privateKey: {client_key}\n");
        let bookinfo = start(&ctx, block, &extra_service(false), &destination_rule("extra", &tls)).await?;
        let url = "http://extra:9080/hello";
        let answer = |want: u16| {
            let bookinfo = &bookinfo;
            async move {
                let r = bookinfo.productpage.request(url, &[]).await?;
                ensure!(r.status == want && (want != 200 || r.body.contains("hello over TLS")), "{}", r.summary());
                Ok(())
            }
        };
        await_condition("MUTUAL TLS to the upstream to answer", Duration::from_secs(10), || answer(200)).await?;
        // Without the client certificate the server ends the handshake.
        let simple = format!("    tls:\n      mode: SIMPLE\n      caCertificates: {cert}\n      sni: extra.example\n");
        bookinfo.dir.write(RULE_FILE, &destination_rule("extra", &simple))?;
        await_condition("SIMPLE TLS (no client certificate) to be refused", Duration::from_secs(10), || answer(503)).await?;
        bookinfo.check_no_nacks().await
    })
    .await;
}
