//! Telemetry under capture (issue 10): three injected pods productpage -> reviews -> ratings,
//! each with its sidecar (REDIRECT capture installed by its init container's `amime-agent
//! init`, a real Envoy as uid 1337), meshd with a mesh config (`--mesh-config`: Zipkin
//! provider, 100 % sampling, JSON access logs to each sidecar's stdout) and a real Jaeger,
//! both in the node namespace. The apps are the harness [`Upstream`]; reviews' calls ratings
//! by its cluster IP for each request (captured in reviews' pod), copying the trace headers.
//!
//! ```text
//!  node namespace (amime-e2e-<pid>-t<N>-node): bridge br0 10.253.N.254/24
//!    meshd (xDS :15010, monitoring :15014), Jaeger (Zipkin :9411, query API :16686)
//!      ├─ veth ─ productpage-v1  10.253.N.1   (client app: the test's sockets)
//!      ├─ veth ─ reviews-v1      10.253.N.11  :9080 (calls ratings:9080)
//!      └─ veth ─ ratings-v1      10.253.N.21  :9080
//!  cluster IPs 10.99.N.x exist only in the YAML.
//! ```
//!
//! Block 77 belongs to this file (78 and 79 are reserved for it). Not root (or no
//! `ip netns`): the test prints `SKIPPED: <reason>` and passes vacuously.

use std::net::SocketAddr;
use std::time::Duration;

use amime_e2e::injected::{self, RunningPod};
use amime_e2e::jaeger::{Jaeger, Span};
use amime_e2e::meshd::{ensure_no_nacks, parse_metric, NACKS_METRIC};
use amime_e2e::netns::{self, plug_into_bridge, AddressBlock, CallingUpstream, Netns};
use amime_e2e::process::ManagedProcess;
use amime_e2e::upstream::{NextHop, NEXT_HOP_USER_AGENT};
use amime_e2e::{await_condition, run_test, MeshDir, Response, TestContext, Upstream};
use anyhow::{ensure, Context as _, Result};
use injector::settings::InjectionSettings;
use serde_json::{json, Value};

const APP_PORT: u16 = 9080;
const XDS_PORT: u16 = 15010;
const MONITORING_PORT: u16 = 15014;
const CONVERGE: Duration = Duration::from_secs(20);
/// Envoy's Zipkin tracer flushes every 5 s.
const SPANS_ARRIVE: Duration = Duration::from_secs(30);
const USER_AGENT: &str = "amime-e2e-productpage";
const REQUESTS: usize = 3;

/// Host numbers in `10.253.N.0/24` (pods, node) and `10.99.N.0/24` (cluster IPs).
mod host {
    pub const PRODUCTPAGE: u8 = 1;
    pub const REVIEWS: u8 = 11;
    pub const RATINGS: u8 = 21;
    pub const NODE: u8 = 254;
}

/// (service, pod host, cluster-IP host), in call order.
const SERVICES: [(&str, u8, u8); 3] =
    [("productpage", host::PRODUCTPAGE, 1), ("reviews", host::REVIEWS, 2), ("ratings", host::RATINGS, 3)];

/// The mesh config meshd watches; `JAEGER` is replaced by Jaeger's address.
const MESH_CONFIG: &str = "accessLogFile: /dev/stdout\naccessLogEncoding: JSON\nenableTracing: true\n\
defaultConfig:\n  tracing:\n    sampling: 100\nextensionProviders:\n- name: jaeger\n  zipkin:\n    service: JAEGER\n    \
port: 9411\ndefaultProviders:\n  tracing: [jaeger]\n";

fn block(n: u8) -> AddressBlock {
    AddressBlock { pods: 253, vips: 99, n }
}

/// The pod `service-v1` as its owner writes it (before injection).
fn user_pod(service: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("{service}-v1"), "namespace": "bookinfo", "labels": {"app": service, "version": "v1"}},
        "spec": {
            "serviceAccountName": format!("bookinfo-{service}"),
            "containers": [{
                "name": service,
                "image": format!("example/{service}:v1"),
                "ports": [{"name": "http-web", "containerPort": APP_PORT}],
            }],
        },
    })
}

/// The Namespace (labelled for injection) and the three Services.
fn services_yaml(b: AddressBlock) -> String {
    let mut yaml =
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bookinfo\n  labels:\n    amime-injection: enabled\n"
            .to_string();
    for (name, _, vip) in SERVICES {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: bookinfo}}\nspec:\n  clusterIP: {}\n  \
             selector: {{app: {name}}}\n  ports:\n  - {{name: http, port: {APP_PORT}, targetPort: http-web}}\n",
            b.vip(vip)
        ));
    }
    yaml
}

/// The mesh. Fields drop in order: pods (sidecars killed, namespaces deleted), apps, Jaeger,
/// meshd, the node namespace.
struct Mesh {
    pods: Vec<RunningPod>,
    _reviews_app: CallingUpstream,
    _ratings_app: Upstream,
    jaeger: Jaeger,
    meshd: ManagedProcess,
    node: Netns,
    block: AddressBlock,
    _dir: MeshDir,
}

impl Mesh {
    async fn start(ctx: &TestContext, b: AddressBlock) -> Result<Self> {
        let n = b.n;
        let node_ip = b.pod(host::NODE);
        let node = Netns::create(&format!("t{n}-node")).await?;
        node.ip(["link", "add", "br0", "type", "bridge"]).await?;
        node.ip(["addr", "add", &format!("{node_ip}/24"), "dev", "br0"]).await?;
        node.ip(["link", "set", "br0", "up"]).await?;
        let jaeger = Jaeger::start_in(ctx, &node, node_ip).await?;

        let xds = SocketAddr::from((node_ip, XDS_PORT));
        let settings = InjectionSettings { xds_address: xds.to_string(), ..Default::default() };
        let dir = MeshDir::new(ctx)?;
        let mut yaml = services_yaml(b);
        let mut injected = Vec::new();
        for (service, h, _) in SERVICES {
            let mut pod = injected::inject_pod(&user_pod(service), &settings)?;
            let ip = b.pod(h).to_string();
            pod["status"] = json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]});
            yaml.push_str("---\n");
            yaml.push_str(&serde_yaml::to_string(&pod)?);
            injected.push((h, pod));
        }
        dir.write("mesh.yaml", &yaml)?;
        let mesh_config = ctx.unique_path("meshconfig", ".yaml");
        std::fs::write(&mesh_config, MESH_CONFIG.replace("JAEGER", &node_ip.to_string()))?;
        let monitoring = SocketAddr::from((node_ip, MONITORING_PORT));
        let args = ["--mesh-config", mesh_config.to_str().context("utf-8 path")?];
        let meshd = node.start_meshd(ctx, dir.path(), xds, monitoring, &args).await?;

        // Each app listens before its pod starts (ratings first: reviews' app calls it).
        let mut pods = Vec::new();
        let mut apps = (None, None);
        for (h, pod) in injected.into_iter().rev() {
            let ns = Netns::create(&format!("t{n}-{h}")).await?;
            plug_into_bridge(&node, &ns, &format!("veth{h}"), b.pod(h), node_ip).await?;
            let addr = b.pod_addr(h, APP_PORT);
            if h == host::RATINGS {
                apps.1 = Some(ns.start_upstream(addr, "ratings", "v1", "ratings-v1").await?);
            } else if h == host::REVIEWS {
                // By the cluster IP, as an app does: only reviews' capture can deliver it.
                let next = NextHop { proxy: b.vip_addr(3, APP_PORT), url: "http://ratings:9080/".into() };
                apps.0 = Some(ns.start_calling_upstream(addr, ["reviews", "v1", "reviews-v1"], next).await?);
            }
            pods.push(RunningPod::start(ctx, ns, b.pod(h), pod, &node).await?);
        }
        pods.reverse();
        let (Some(reviews_app), Some(ratings_app)) = apps else { unreachable!("both apps started") };
        Ok(Self {
            pods,
            _reviews_app: reviews_app,
            _ratings_app: ratings_app,
            jaeger,
            meshd,
            node,
            block: b,
            _dir: dir,
        })
    }

    fn pod(&self, i: usize) -> &RunningPod {
        &self.pods[i]
    }

    fn ensure_running(&self) -> Result<()> {
        self.meshd.ensure_running()?;
        self.jaeger.process().ensure_running()?;
        self.pods.iter().try_for_each(RunningPod::ensure_running)
    }

    /// `GET http://reviews:9080<path>` from productpage's app, by reviews' cluster IP; checks
    /// that reviews reached ratings.
    async fn call(&self, path: &str) -> Result<Response> {
        let vip = self.block.vip_addr(2, APP_PORT);
        let r = self.pod(0).netns.request(vip, "GET", path, "reviews:9080", &[("user-agent", USER_AGENT)]).await?;
        ensure!(r.status == 200, "{}", r.summary());
        let body = r.json()?;
        ensure!(body["pod"] == "reviews-v1" && body["next"]["pod"] == "ratings-v1", "not through both hops: {body}");
        Ok(r)
    }

    /// Every sidecar accepted listeners and clusters and rejected nothing; meshd counted no NACK.
    async fn check_no_nacks(&self) -> Result<()> {
        for pod in &self.pods {
            pod.ensure_updates_accepted().await?;
        }
        let monitoring = SocketAddr::from((self.block.pod(host::NODE), MONITORING_PORT));
        let metrics = self.node.get(monitoring, "/metrics").await?;
        ensure_no_nacks(parse_metric(&metrics.body, NACKS_METRIC))
    }
}

/// The JSON access-log lines of `pod`'s sidecar.
fn access_log(pod: &RunningPod) -> Vec<Value> {
    let text = pod.sidecar_stdout().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v.is_object()).collect()
}

/// The one span of `trace` from `service`'s sidecar of `kind` (`client` or `server`).
fn span<'a>(trace: &'a [Span], service: &str, kind: &str) -> Result<&'a Span> {
    let mut found =
        trace.iter().filter(|s| s.service == format!("{service}.bookinfo") && s.tag("span.kind") == Some(kind));
    let span = found.next().with_context(|| format!("no {kind} span of {service} in {trace:#?}"))?;
    ensure!(found.next().is_none(), "two {kind} spans of {service} in {trace:#?}");
    Ok(span)
}

/// One trace per request with the four spans of the three sidecars, linked as a chain:
/// productpage's outbound -> reviews' inbound -> reviews' outbound -> ratings' inbound.
async fn one_chained_trace_per_request(mesh: &Mesh) -> Result<()> {
    let traces = await_condition("the traces of the requests in Jaeger", SPANS_ARRIVE, || async {
        mesh.ensure_running()?;
        let all = mesh.jaeger.traces_via(&mesh.node, "productpage.bookinfo").await?;
        let ours: Vec<Vec<Span>> = all
            .into_iter()
            .filter(|t| t.iter().any(|s| s.tag("http.url").is_some_and(|u| u.contains("phase=capture-"))))
            .collect();
        ensure!(ours.len() == REQUESTS, "{} of {REQUESTS} traces so far", ours.len());
        ensure!(ours.iter().all(|t| t.len() >= 4), "spans still missing: {ours:#?}");
        Ok(ours)
    })
    .await?;
    for trace in &traces {
        ensure!(trace.len() == 4, "four spans (one per sidecar and direction): {trace:#?}");
        let chain = [
            span(trace, "productpage", "client")?,
            span(trace, "reviews", "server")?,
            span(trace, "reviews", "client")?,
            span(trace, "ratings", "server")?,
        ];
        ensure!(chain[0].parent.is_none(), "productpage's outbound span starts the trace: {trace:#?}");
        for pair in chain.windows(2) {
            ensure!(
                pair[1].parent.as_deref() == Some(pair[0].span_id.as_str()) && pair[1].trace_id == pair[0].trace_id,
                "{} {} is not a child of {} {}: {trace:#?}",
                pair[1].service,
                pair[1].operation,
                pair[0].service,
                pair[0].operation
            );
        }
        let cluster = |s: &Span| s.tag("upstream_cluster").unwrap_or_default().to_owned();
        ensure!(cluster(chain[0]).starts_with("outbound|9080||reviews.bookinfo"), "{:?}", chain[0]);
        ensure!(cluster(chain[2]).starts_with("outbound|9080||ratings.bookinfo"), "{:?}", chain[2]);
        for (s, name) in [(chain[1], "reviews"), (chain[3], "ratings")] {
            ensure!(s.tag("istio.canonical_service") == Some(name), "{s:?}");
        }
    }
    let spans: Vec<String> =
        traces[0].iter().map(|s| format!("{} {}", s.service, s.tag("span.kind").unwrap_or_default())).collect();
    eprintln!("{REQUESTS} traces of 4 chained spans each; the first: {spans:?}");
    Ok(())
}

/// A request's access-log line at `pod` for which `pick` holds; exactly one.
fn line_of(pod: &RunningPod, id: &str, pick: impl Fn(&Value) -> bool) -> Result<Value> {
    let lines: Vec<Value> = access_log(pod).into_iter().filter(|l| l["request_id"] == id && pick(l)).collect();
    ensure!(lines.len() == 1, "pod {}: lines for {id}: {lines:?}", pod.name);
    Ok(lines[0].clone())
}

fn is_outbound(line: &Value) -> bool {
    line["upstream_cluster"].as_str().is_some_and(|c| c.starts_with("outbound|"))
}

/// The same x-request-id in productpage's outbound line, reviews' inbound line and ratings'
/// inbound line, each with real durations, byte counts, downstream addresses and user agents.
async fn one_request_id_in_the_logs(mesh: &Mesh, request_id: &str) -> Result<()> {
    let lines = await_condition("the request's access-log lines at the three sidecars", CONVERGE, || async {
        Ok([
            line_of(mesh.pod(0), request_id, is_outbound)?,
            line_of(mesh.pod(1), request_id, |l| !is_outbound(l))?,
            line_of(mesh.pod(2), request_id, |l| !is_outbound(l))?,
        ])
    })
    .await?;
    let b = mesh.block;
    let ip = |h: u8| b.pod(h).to_string();
    // (line, where the request came from, where it was sent, the user agent it carried)
    let expected = [
        (&lines[0], ip(host::PRODUCTPAGE), format!("{}:{APP_PORT}", ip(host::REVIEWS)), USER_AGENT),
        (&lines[1], ip(host::PRODUCTPAGE), format!("{}:{APP_PORT}", ip(host::REVIEWS)), USER_AGENT),
        (&lines[2], ip(host::REVIEWS), format!("{}:{APP_PORT}", ip(host::RATINGS)), NEXT_HOP_USER_AGENT),
    ];
    for (line, from, to, agent) in expected {
        let number = |key: &str| line[key].as_u64().or_else(|| line[key].as_str().and_then(|s| s.parse().ok()));
        ensure!(line["method"] == "GET" && number("response_code") == Some(200), "{line}");
        ensure!(number("duration").is_some(), "duration: {line}");
        ensure!(number("bytes_sent").is_some_and(|n| n > 0) && number("bytes_received") == Some(0), "bytes: {line}");
        let remote = line["downstream_remote_address"].as_str().unwrap_or_default();
        ensure!(remote.starts_with(&format!("{from}:")) && !remote.ends_with(":0"), "downstream address: {line}");
        ensure!(line["upstream_host"] == to.as_str(), "upstream host: {line}");
        ensure!(line["user_agent"] == agent, "user agent: {line}");
    }
    ensure!(lines[0]["authority"] == "reviews:9080" && lines[2]["authority"] == "ratings:9080", "{lines:?}");
    // One connection: productpage's sidecar connected from where reviews' sidecar saw it come.
    ensure!(
        lines[0]["upstream_local_address"] == lines[1]["downstream_remote_address"],
        "productpage's upstream connection is not reviews' downstream one: {lines:?}"
    );
    for line in &lines {
        eprintln!("  {line}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_three_hop_request_makes_one_chained_trace_and_one_request_id() {
    let name = "captured_three_hop_request_makes_one_chained_trace_and_one_request_id";
    if let Some(reason) = netns::unsupported_reason() {
        eprintln!("SKIPPED: {name}: {reason}");
        return;
    }
    run_test(name, |ctx| async move {
        let mesh = Mesh::start(&ctx, block(77)).await?;
        await_condition("a request to cross the three sidecars", CONVERGE, || async {
            mesh.ensure_running()?;
            mesh.call("/").await.map(drop)
        })
        .await?;
        let mut ids = Vec::new();
        for i in 0..REQUESTS {
            let body = mesh.call(&format!("/?phase=capture-{i}")).await?.json()?;
            let id = body["headers"]["x-request-id"].as_str().context("reviews' app saw no x-request-id")?;
            ensure!(body["next"]["headers"]["x-request-id"] == id, "reviews forwarded another request id: {body}");
            ids.push(id.to_owned());
        }
        one_chained_trace_per_request(&mesh).await?;
        eprintln!("access-log lines of request {}:", ids[0]);
        one_request_id_in_the_logs(&mesh, &ids[0]).await?;
        mesh.check_no_nacks().await
    })
    .await;
}
