//! Telemetry end to end: real meshd (`--mesh-config`), real Envoy sidecars (explicit mode) and
//! a real Jaeger. Three hops: the test (as productpage's app) → productpage's sidecar →
//! reviews' app → reviews' sidecar → ratings' app (ratings has a sidecar too); the apps copy
//! the trace headers ([`amime_e2e::upstream::TRACE_HEADERS`]).
//!
//! Blocks 73..=75 belong to this file. Each test ends by checking that Envoy rejected no xDS
//! update and meshd counted no NACK.

use std::path::PathBuf;
use std::time::Duration;

use amime_e2e::jaeger::{Jaeger, Span};
use amime_e2e::mesh::{self, hosts, APP_PORT};
use amime_e2e::meshd::{self, Meshd};
use amime_e2e::rules::{documents, reviews_vs_all_to, REVIEWS_DESTINATION_RULE};
use amime_e2e::sidecar::{self, Sidecar, SidecarSpec};
use amime_e2e::upstream::NextHop;
use amime_e2e::{await_condition, run_test, IpBlock, MeshDir, TestContext, Upstream};
use anyhow::{ensure, Context as _, Result};
use serde_json::Value;

const JAEGER_HOST: u8 = 30;
const RATINGS_HOST: u8 = hosts::EXTRA_1;
const REVIEWS_URL: &str = "http://reviews:9080/";
const CONVERGE: Duration = Duration::from_secs(20);
/// Envoy's Zipkin and OpenTelemetry tracers flush every 5 s.
const SPANS_ARRIVE: Duration = Duration::from_secs(30);

/// The three-hop mesh, Jaeger and the mesh-config file meshd watches.
struct Hops {
    productpage: Sidecar,
    reviews_sidecar: Sidecar,
    ratings_sidecar: Sidecar,
    meshd: Meshd,
    _reviews: Upstream,
    _ratings: Upstream,
    jaeger: Jaeger,
    dir: MeshDir,
    mesh_config: PathBuf,
}

impl Hops {
    async fn start(ctx: &TestContext, block: IpBlock, mesh_config: &str) -> Result<Hops> {
        let jaeger = Jaeger::start(ctx, block.ip(JAEGER_HOST)).await?;
        let dir = MeshDir::new(ctx)?;
        dir.write("mesh.yaml", &mesh::bookinfo_mesh_yaml(block)?)?;
        let ratings = [mesh::RATINGS_SERVICE, &mesh::example_pod("ratings", "v1", RATINGS_HOST)].join("---\n");
        dir.write("ratings.yaml", &block.render(&ratings))?;
        dir.write("reviews-rules.yaml", &documents(&[REVIEWS_DESTINATION_RULE, &reviews_vs_all_to("v1")]))?;
        let mesh_config_path = ctx.unique_path("meshconfig", ".yaml");
        std::fs::write(&mesh_config_path, render(block, mesh_config))?;
        let args = ["--mesh-config", mesh_config_path.to_str().context("utf-8 path")?];
        let meshd = Meshd::start(ctx, dir.path(), block.ip(hosts::MESHD), &args).await?;
        let sidecar = |pod: &str, app: &str, host: u8| {
            SidecarSpec::new(pod, "bookinfo", block.ip(host)).label("app", app).label("version", "v1")
        };
        let ratings_up = Upstream::start(block.addr(RATINGS_HOST, APP_PORT), "ratings", "v1", "ratings-v1").await?;
        let reviews_sidecar =
            Sidecar::start(ctx, &sidecar("reviews-v1", "reviews", hosts::REVIEWS_V1), meshd.xds_addr()).await?;
        let next = NextHop { proxy: reviews_sidecar.proxy_addr(), url: "http://ratings:9080/".into() };
        let reviews =
            Upstream::start_calling(block.addr(hosts::REVIEWS_V1, APP_PORT), "reviews", "v1", "reviews-v1", next)
                .await?;
        let ratings_sidecar =
            Sidecar::start(ctx, &sidecar("ratings-v1", "ratings", RATINGS_HOST), meshd.xds_addr()).await?;
        let productpage =
            Sidecar::start(ctx, &sidecar("productpage-v1", "productpage", hosts::PRODUCTPAGE), meshd.xds_addr())
                .await?;
        let hops = Hops {
            productpage,
            reviews_sidecar,
            ratings_sidecar,
            meshd,
            _reviews: reviews,
            _ratings: ratings_up,
            jaeger,
            dir,
            mesh_config: mesh_config_path,
        };
        await_condition("a request to cross all three hops", CONVERGE, || async { hops.call("/").await.map(|_| ()) })
            .await?;
        Ok(hops)
    }

    /// `GET reviews<path>` from productpage's app; checks that ratings answered reviews.
    async fn call(&self, path: &str) -> Result<Value> {
        let url = format!("{}{}", REVIEWS_URL.trim_end_matches('/'), path);
        let r = self.productpage.request(&url, &[]).await?;
        ensure!(r.status == 200, "{}", r.summary());
        let body = r.json()?;
        ensure!(body["next"]["service"] == "ratings", "reviews did not reach ratings: {body}");
        Ok(body)
    }

    /// Rewrites the mesh-config file the way editors do (temp file, rename over it).
    fn write_mesh_config(&self, block: IpBlock, text: &str) -> Result<()> {
        let temp = self.mesh_config.with_extension("tmp");
        std::fs::write(&temp, render(block, text))?;
        std::fs::rename(&temp, &self.mesh_config)?;
        Ok(())
    }

    async fn check_no_nacks(&self) -> Result<()> {
        for s in [&self.productpage, &self.reviews_sidecar, &self.ratings_sidecar] {
            sidecar::ensure_no_rejected_updates(&s.stats().await?)?;
        }
        meshd::ensure_no_nacks(self.meshd.metric(meshd::NACKS_METRIC).await?)
    }
}

fn render(block: IpBlock, text: &str) -> String {
    text.replace("JAEGER", &block.ip(JAEGER_HOST).to_string())
}

/// The sampling percentage of the first tracer in `sidecar`'s listeners, if it has one.
async fn sampling(sidecar: &Sidecar) -> Result<Option<f64>> {
    let dump = sidecar.active_listeners().await?;
    fn find(v: &Value) -> Option<f64> {
        match v {
            Value::Object(m) => match m.get("random_sampling") {
                Some(s) => Some(s.get("value").and_then(Value::as_f64).unwrap_or(0.0)),
                None => m.values().find_map(find),
            },
            Value::Array(items) => items.iter().find_map(find),
            _ => None,
        }
    }
    Ok(find(&dump))
}

/// Lines of `sidecar`'s stdout (Envoy's access log at /dev/stdout).
fn access_lines(sidecar: &Sidecar) -> Vec<String> {
    let text = std::fs::read_to_string(sidecar.process().stdout_log()).unwrap_or_default();
    text.lines().map(str::to_owned).collect()
}

/// Spans of `service` whose `http.url` contains `marker`, with their whole traces.
async fn traces_with(jaeger: &Jaeger, service: &str, marker: &str) -> Result<Vec<Vec<Span>>> {
    let traces = jaeger.traces(service).await?;
    Ok(traces.into_iter().filter(|t| t.iter().any(|s| s.tag("http.url").is_some_and(|u| u.contains(marker)))).collect())
}

const ZIPKIN_ALL: &str = "accessLogFile: /dev/stdout\nenableTracing: true\ndefaultConfig:\n  tracing:\n    sampling: 100\nextensionProviders:\n- name: jaeger\n  zipkin:\n    service: JAEGER\n    port: 9411\ndefaultProviders:\n  tracing: [jaeger]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_across_three_hops_in_jaeger_and_one_request_id_in_the_logs() {
    run_test("one_trace_across_three_hops_in_jaeger_and_one_request_id_in_the_logs", |ctx| async move {
        let block = IpBlock(73);
        let hops = Hops::start(&ctx, block, ZIPKIN_ALL).await?;
        for i in 0..3 {
            hops.call(&format!("/?phase=three-hops-{i}")).await?;
        }
        let traces = await_condition("the three traces in Jaeger", SPANS_ARRIVE, || async {
            let traces = traces_with(&hops.jaeger, "productpage.bookinfo", "phase=three-hops").await?;
            ensure!(traces.len() == 3, "{} of 3 traces so far", traces.len());
            ensure!(traces.iter().all(|t| t.len() >= 2), "spans of reviews still missing: {traces:?}");
            Ok(traces)
        })
        .await?;
        for trace in &traces {
            let caller = trace.iter().find(|s| s.service == "productpage.bookinfo").context("productpage's span")?;
            let reviews = trace.iter().find(|s| s.service == "reviews.bookinfo").context("reviews' span")?;
            ensure!(caller.parent.is_none(), "the first hop starts the trace: {caller:?}");
            ensure!(
                reviews.parent.as_deref() == Some(caller.span_id.as_str()),
                "reviews' span is a child of productpage's: {trace:?}"
            );
            ensure!(reviews.trace_id == caller.trace_id, "one trace id");
            ensure!(caller.tag("istio.canonical_service") == Some("productpage"), "{caller:?}");
            ensure!(reviews.tag("istio.canonical_service") == Some("reviews"), "{reviews:?}");
            ensure!(
                reviews.tag("istio.namespace") == Some("bookinfo")
                    && reviews.tag("istio.canonical_revision") == Some("v1"),
                "{reviews:?}"
            );
            ensure!(caller.tag("upstream_cluster").is_some_and(|c| c.contains("reviews.bookinfo")), "{caller:?}");
        }
        eprintln!("three traces of {} spans each, parent links as expected", traces[0].len());

        // Access logs: one line per request at each sidecar, the same x-request-id at both hops.
        let (front, back) = await_condition("access-log lines at both hops", CONVERGE, || async {
            let front: Vec<String> =
                access_lines(&hops.productpage).into_iter().filter(|l| l.contains("phase=three-hops-0")).collect();
            ensure!(front.len() == 1, "productpage's lines: {front:?}");
            let id = front[0].split('"').nth(9).unwrap_or_default().to_owned();
            ensure!(id.len() >= 16, "no request id in {}", front[0]);
            let back: Vec<String> =
                access_lines(&hops.reviews_sidecar).into_iter().filter(|l| l.contains(&id)).collect();
            ensure!(back.len() == 1, "reviews' lines with {id}: {back:?}");
            Ok((front[0].clone(), back[0].clone()))
        })
        .await?;
        for (line, authority, cluster) in [
            (&front, "reviews:9080", "outbound|9080|v1|reviews.bookinfo.svc.cluster.local"),
            (&back, "ratings:9080", "outbound|9080||ratings.bookinfo.svc.cluster.local"),
        ] {
            ensure!(
                line.contains("\"GET /") && line.contains(" HTTP/1.1\" 200 - "),
                "method, path, code, flags: {line}"
            );
            ensure!(
                line.contains(&format!("\"{authority}\"")) && line.contains(cluster),
                "authority and cluster: {line}"
            );
            ensure!(
                line.contains(&format!(
                    "\"{}:{APP_PORT}\"",
                    if authority.starts_with("reviews") { block.ip(hosts::REVIEWS_V1) } else { block.ip(RATINGS_HOST) }
                )),
                "upstream host: {line}"
            );
            ensure!(line.starts_with('[') && line.split('"').count() == 15, "time and the other fields: {line}");
        }
        eprintln!("access logs:\n  {front}\n  {back}");
        hops.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_telemetry_and_json_logs_apply_live() {
    run_test("sampling_telemetry_and_json_logs_apply_live", |ctx| async move {
        let block = IpBlock(74);
        let hops = Hops::start(&ctx, block, ZIPKIN_ALL).await?;

        // 0 %: a root-namespace Telemetry; no trace for the requests sent while it holds.
        let zero = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: mesh-default\n  namespace: amime-system\nspec:\n  tracing:\n  - randomSamplingPercentage: 0\n";
        hops.dir.write("telemetry.yaml", zero)?;
        await_condition("sampling 0% at both callers", CONVERGE, || async {
            for s in [&hops.productpage, &hops.reviews_sidecar] {
                ensure!(sampling(s).await? == Some(0.0), "sampling still {:?}", sampling(s).await?);
            }
            Ok(())
        })
        .await?;
        for i in 0..10 {
            hops.call(&format!("/?phase=none-{i}")).await?;
        }
        // 100 % again: every request gets its trace; once they are all there, the 0 % ones
        // (sent earlier by the same sidecars, flushed in order) are known to be absent.
        hops.dir.remove("telemetry.yaml")?;
        await_condition("sampling 100% again", CONVERGE, || async {
            ensure!(sampling(&hops.productpage).await? == Some(100.0), "not yet");
            Ok(())
        })
        .await?;
        for i in 0..10 {
            hops.call(&format!("/?phase=all-{i}")).await?;
        }
        await_condition("10 traces for 10 requests at 100%", SPANS_ARRIVE, || async {
            let all = traces_with(&hops.jaeger, "productpage.bookinfo", "phase=all").await?;
            ensure!(all.len() == 10, "{} of 10", all.len());
            Ok(())
        })
        .await?;
        let none = traces_with(&hops.jaeger, "productpage.bookinfo", "phase=none").await?;
        ensure!(none.is_empty(), "sampling 0% yet {} traces", none.len());
        eprintln!("sampling: 0 of 10 traced at 0%, 10 of 10 at 100%");

        // A Telemetry turning reviews' access log off takes effect live, and only there.
        let quiet = "apiVersion: telemetry.amime.dev/v1\nkind: Telemetry\nmetadata:\n  name: quiet-reviews\n  namespace: bookinfo\nspec:\n  selector:\n    matchLabels:\n      app: reviews\n  accessLogging:\n  - disabled: true\n";
        hops.dir.write("quiet.yaml", quiet)?;
        await_condition("reviews' listener without access log", CONVERGE, || async {
            let dump = hops.reviews_sidecar.active_listeners().await?.to_string();
            ensure!(!dump.contains("envoy.access_loggers.file"), "still logging");
            Ok(())
        })
        .await?;
        let body = hops.call("/?phase=quiet").await?;
        let quiet_id = body["headers"]["x-request-id"].as_str().context("reviews saw a request id")?.to_owned();
        hops.dir.remove("quiet.yaml")?;
        await_condition("reviews logging again", CONVERGE, || async {
            let body = hops.call("/?phase=loud").await?;
            let id = body["headers"]["x-request-id"].as_str().unwrap_or_default().to_owned();
            ensure!(access_lines(&hops.reviews_sidecar).iter().any(|l| l.contains(&id)), "no line for {id} yet");
            Ok(())
        })
        .await?;
        ensure!(!access_lines(&hops.reviews_sidecar).iter().any(|l| l.contains(&quiet_id)), "reviews logged {quiet_id} while off");
        ensure!(access_lines(&hops.productpage).iter().any(|l| l.contains(&quiet_id)), "productpage kept logging");

        // JSON encoding, by a live change of the mesh-config file.
        hops.write_mesh_config(block, &format!("{ZIPKIN_ALL}accessLogEncoding: JSON\n"))?;
        let line = await_condition("a JSON access-log line", CONVERGE, || async {
            let body = hops.call("/?phase=json").await?;
            let id = body["headers"]["x-request-id"].as_str().unwrap_or_default().to_owned();
            let line = access_lines(&hops.productpage).into_iter().find(|l| l.contains(&id) && l.starts_with('{'));
            line.with_context(|| format!("no JSON line for {id} yet"))
        })
        .await?;
        let json: Value = serde_json::from_str(&line)?;
        for (key, want) in [("method", "GET"), ("authority", "reviews:9080"), ("path", "/?phase=json")] {
            ensure!(json[key] == want, "{key} in {json}");
        }
        ensure!(json["response_code"].to_string().trim_matches('"') == "200" && json["upstream_cluster"].as_str().is_some_and(|c| c.contains("reviews")), "{json}");
        for key in ["start_time", "response_flags", "duration", "bytes_sent", "bytes_received", "upstream_host", "downstream_remote_address", "user_agent", "request_id"] {
            ensure!(json.get(key).is_some(), "{key} missing in {json}");
        }
        hops.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentelemetry_spans_reach_jaeger_over_otlp() {
    run_test("opentelemetry_spans_reach_jaeger_over_otlp", |ctx| async move {
        let block = IpBlock(75);
        let config = "defaultConfig:\n  tracing:\n    sampling: 100\nextensionProviders:\n- name: otel\n  opentelemetry:\n    service: JAEGER\n    port: 4317\ndefaultProviders:\n  tracing: [otel]\n";
        let hops = Hops::start(&ctx, block, config).await?;
        hops.call("/?phase=otel").await?;
        let trace = await_condition("the OTLP trace in Jaeger", SPANS_ARRIVE, || async {
            let traces = traces_with(&hops.jaeger, "productpage.bookinfo", "phase=otel").await?;
            let trace = traces.into_iter().next().context("no trace yet")?;
            ensure!(trace.iter().any(|s| s.service == "reviews.bookinfo"), "reviews' span missing: {trace:?}");
            Ok(trace)
        })
        .await?;
        let caller = trace.iter().find(|s| s.service == "productpage.bookinfo").context("caller span")?;
        let reviews = trace.iter().find(|s| s.service == "reviews.bookinfo").context("reviews span")?;
        ensure!(reviews.parent.as_deref() == Some(caller.span_id.as_str()), "{trace:?}");
        hops.check_no_nacks().await
    })
    .await;
}
