//! RateLimit end to end: a real Envoy sidecar under real iptables capture enforces the
//! local token buckets meshd gives its inbound listener.
//!
//! ```text
//!  peer namespace (amime-e2e-<pid>-r<N>-peer)     pod namespace (amime-e2e-<pid>-r<N>-pod)
//!  eth0 10.250.N.2  (a client outside  <── veth ──> eth0 10.250.N.11 = reviews-v1 :9080 (the app)
//!                    the mesh)                      capture (`amime-agent init`), Envoy as uid
//!                                                   1337 (15006 inbound), meshd on 127.0.0.1
//! ```
//!
//! The peer's requests to the pod IP are captured to 15006 and pass the limiter before the
//! app. Blocks 225..=227 belong to this file. Not root (or no `ip netns`): `SKIPPED`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use amime_e2e::meshd::{ensure_no_nacks, parse_metric, NACKS_METRIC};
use amime_e2e::netns::{self, link_veth, AddressBlock, Netns, PROXY_UID};
use amime_e2e::process::{run_to_completion, ManagedProcess};
use amime_e2e::sidecar::{ensure_no_rejected_updates, envoy_args, parse_stats};
use amime_e2e::{await_condition, paths, run_test, MeshDir, Response, TestContext, Upstream};
use anyhow::{ensure, Context as _, Result};
use injector::capture::CaptureSpec;

const APP_PORT: u16 = 9080;
const REVIEWS: u8 = 11;
const PEER: u8 = 2;
const XDS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 15010);
const MONITORING: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 15014);
const ADMIN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 15000);
const TIMEOUT: Duration = Duration::from_secs(20);

fn mesh_yaml(block: AddressBlock) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: bookinfo
---
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: bookinfo
spec:
  clusterIP: 10.96.{n}.2
  selector:
    app: reviews
  ports:
  - name: http
    port: {APP_PORT}
    targetPort: {APP_PORT}
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1
  namespace: bookinfo
  labels:
    app: reviews
    version: v1
spec:
  serviceAccountName: bookinfo-reviews
  containers:
  - name: reviews
    image: example/reviews:v1
    ports:
    - containerPort: {APP_PORT}
status:
  podIP: {ip}
"#,
        n = block.n,
        ip = block.pod(REVIEWS),
    )
}

/// A RateLimit for reviews: the workload's `bucket` (the fields of `tokenBucket`) and more
/// `spec` lines.
fn rate_limit(bucket: &str, more: &str) -> String {
    format!(
        "apiVersion: networking.amime.dev/v1\nkind: RateLimit\nmetadata: {{name: reviews, namespace: bookinfo}}\n\
         spec:\n  selector: {{matchLabels: {{app: reviews}}}}\n  \
         tokenBucket: {{{bucket}}}\n{more}"
    )
}

/// The reviews-v1 pod (app, capture, sidecar, meshd) and a peer outside the mesh. Fields
/// drop in order: Envoy and meshd first, the app, then the namespaces.
struct LimitedPod {
    envoy: ManagedProcess,
    meshd: ManagedProcess,
    _app: Upstream,
    pod: Netns,
    peer: Netns,
    dir: MeshDir,
    block: AddressBlock,
}

impl LimitedPod {
    async fn start(ctx: &TestContext, n: u8, rate_limit: &str) -> Result<Self> {
        let block = AddressBlock { pods: 250, vips: 96, n };
        let pod = Netns::create(&format!("r{n}-pod")).await?;
        let peer = Netns::create(&format!("r{n}-peer")).await?;
        let (pod_cidr, peer_cidr) = (format!("{}/24", block.pod(REVIEWS)), format!("{}/24", block.pod(PEER)));
        link_veth(&pod, "eth0", &pod_cidr, &peer, "eth0", &peer_cidr).await?;
        pod.agent_init(CaptureSpec::default().to_args()).await?;
        let dir = MeshDir::new(ctx)?;
        dir.write("mesh.yaml", &mesh_yaml(block))?;
        dir.write("rate-limit.yaml", rate_limit)?;
        let app = pod.start_upstream(block.pod_addr(REVIEWS, APP_PORT), "reviews", "v1", "reviews-v1").await?;
        let meshd = pod.start_meshd(ctx, dir.path(), XDS, MONITORING, &[]).await?;
        let bootstrap = ctx.unique_path("bootstrap-reviews-v1", ".yaml");
        let args = [
            "bootstrap".to_string(),
            "--node=reviews-v1.bookinfo".into(),
            format!("--ip={}", block.pod(REVIEWS)),
            "--mode=transparent".into(),
            format!("--xds={XDS}"),
            format!("--admin-addr={ADMIN}"),
            "--label=app=reviews".into(),
            "--label=version=v1".into(),
            "--service-account=bookinfo-reviews".into(),
            "-o".into(),
            bootstrap.display().to_string(),
        ];
        run_to_completion(&paths::binary("meshctl")?, args, Duration::from_secs(20)).await?;
        ctx.register_log("envoy bootstrap", bootstrap.clone());
        let envoy = pod.spawn_as(ctx, "envoy-reviews", PROXY_UID, &paths::envoy()?, envoy_args(&bootstrap))?;
        let mesh = LimitedPod { envoy, meshd, _app: app, pod, peer, dir, block };
        await_condition("the sidecar to be ready", TIMEOUT, || mesh.admin("/ready")).await?;
        Ok(mesh)
    }

    fn ensure_running(&self) -> Result<()> {
        self.envoy.ensure_running()?;
        self.meshd.ensure_running()
    }

    /// `GET path` of Envoy's admin, answered 200.
    async fn admin(&self, path: &str) -> Result<Response> {
        self.ensure_running()?;
        let response = self.pod.get(ADMIN, path).await?;
        ensure!(response.status == 200, "Envoy admin {path}: {}", response.summary());
        Ok(response)
    }

    /// `GET path` from the peer to the pod IP (captured by the sidecar's 15006).
    async fn get(&self, path: &str) -> Result<Response> {
        self.ensure_running()?;
        self.peer.request(self.block.pod_addr(REVIEWS, APP_PORT), "GET", path, "reviews:9080", &[]).await
    }

    /// Requests to `path` until one is answered `status` (how many went before it).
    async fn until(&self, path: &str, status: u16) -> Result<usize> {
        let mut before = 0;
        await_condition(&format!("GET {path} to be answered {status}"), TIMEOUT, || {
            before += 1;
            async move {
                let r = self.get(path).await?;
                ensure!(r.status == status, "{}", r.summary());
                Ok(())
            }
        })
        .await?;
        Ok(before - 1)
    }

    /// Statuses of `n` requests to `path`, one after the other.
    async fn burst(&self, path: &str, n: usize) -> Result<Vec<u16>> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.get(path).await?.status);
        }
        Ok(out)
    }

    async fn stat(&self, name: &str) -> Result<u64> {
        Ok(parse_stats(&self.admin("/stats").await?.body).get(name).copied().unwrap_or(0))
    }

    /// Envoy rejected no xDS update and meshd counted no NACK.
    async fn check_no_nacks(&self) -> Result<()> {
        let stats = parse_stats(&self.admin("/stats").await?.body);
        ensure_no_rejected_updates(&stats)?;
        let metrics = self.pod.get(MONITORING, "/metrics").await?;
        ensure_no_nacks(parse_metric(&metrics.body, NACKS_METRIC))
    }
}

async fn run<F>(name: &str, n: u8, rate_limit: String, body: F)
where
    F: for<'a> FnOnce(&'a LimitedPod) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>,
{
    if let Some(reason) = netns::unsupported_reason() {
        eprintln!("SKIPPED: {name}: {reason}");
        return;
    }
    run_test(name, |ctx| async move {
        let mesh = LimitedPod::start(&ctx, n, &rate_limit).await?;
        body(&mesh).await.with_context(|| format!("config dir {}", mesh.dir.path().display()))
    })
    .await;
}

/// A bucket of 3, one token back every 10s (Envoy refills continuously, at `tokensPerFill`
/// per `fillInterval`): a full bucket passes 3 requests, the 4th gets 429 (with the
/// x-ratelimit-* headers); within the interval one token is back, and only one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workload_bucket_empties_and_refills() {
    let limit = rate_limit("maxTokens: 3, tokensPerFill: 1, fillInterval: 10s", "  xRateLimitHeaders: true\n");
    run("the_workload_bucket_empties_and_refills", 225, limit, |mesh| {
        Box::pin(async move {
            // The RateLimit is in the sidecar's first config: the first answer takes the
            // first token of a full bucket.
            mesh.until("/", 200).await?;
            let burst = mesh.burst("/", 2).await?;
            ensure!(burst == [200, 200], "a bucket of 3 after one request: {burst:?}");
            let limited = mesh.get("/").await?;
            ensure!(limited.status == 429, "an empty bucket answered {}", limited.summary());
            ensure!(limited.header("x-ratelimit-limit").is_some(), "no x-ratelimit-limit: {:?}", limited.headers);
            let empty_since = Instant::now();
            mesh.until("/", 200).await?;
            let refill = empty_since.elapsed();
            ensure!(refill <= Duration::from_secs(12), "a token came back only after {refill:?}");
            let next = mesh.get("/").await?;
            ensure!(next.status == 429, "a second token came back at once: {}", next.summary());
            let refused = mesh.stat("rate_limit_reviews.http_local_rate_limit.rate_limited").await?;
            ensure!(refused >= 2, "Envoy counted {refused} limited requests");
            eprintln!("a token came back after {refill:?}; limited in all: {refused}");
            mesh.check_no_nacks().await
        })
    })
    .await;
}

/// A rule's bucket limits only its path: /api/ratings runs out after 2, `/` (the workload's
/// large bucket) goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_bucket_limits_only_its_path() {
    let rule = "  rules:\n  - name: ratings-api\n    match: {uri: {prefix: /api/ratings}}\n    \
                tokenBucket: {maxTokens: 2, fillInterval: 1h}\n";
    run("a_rule_bucket_limits_only_its_path", 226, rate_limit("maxTokens: 1000, fillInterval: 1s", rule), |mesh| {
        Box::pin(async move {
            mesh.until("/", 200).await?;
            let passed = mesh.until("/api/ratings/1", 429).await?;
            ensure!(passed == 2, "{passed} requests to /api/ratings passed a bucket of 2");
            let limited = mesh.burst("/api/ratings/2", 3).await?;
            ensure!(limited == [429, 429, 429], "/api/ratings after its bucket ran out: {limited:?}");
            let others = mesh.burst("/reviews/1", 10).await?;
            ensure!(others.iter().all(|s| *s == 200), "other paths: {others:?}");
            let rule = mesh.stat("rate_limit_reviews_ratings-api.http_local_rate_limit.rate_limited").await?;
            ensure!(rule >= 3, "Envoy counted {rule} requests limited by the rule");
            mesh.check_no_nacks().await
        })
    })
    .await;
}

/// Changing the RateLimit applies live: a large bucket passes everything; shrunk (and
/// answering 503), requests are refused; deleted, they pass again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_rate_limit_applies_live() {
    run("a_changed_rate_limit_applies_live", 227, rate_limit("maxTokens: 1000, fillInterval: 1s", ""), |mesh| {
        Box::pin(async move {
            mesh.until("/", 200).await?;
            let before = mesh.burst("/", 10).await?;
            ensure!(before.iter().all(|s| *s == 200), "with 1000 a second: {before:?}");
            mesh.dir.write("rate-limit.yaml", &rate_limit("maxTokens: 1, fillInterval: 1h", "  statusCode: 503\n"))?;
            mesh.until("/", 503).await?;
            let after = mesh.burst("/", 3).await?;
            ensure!(after == [503, 503, 503], "with 1 an hour: {after:?}");
            mesh.dir.remove("rate-limit.yaml")?;
            mesh.until("/", 200).await?;
            let removed = mesh.burst("/", 5).await?;
            ensure!(removed.iter().all(|s| *s == 200), "without a RateLimit: {removed:?}");
            mesh.check_no_nacks().await
        })
    })
    .await;
}
