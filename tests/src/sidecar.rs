//! Envoy sidecars: bootstrap via `meshctl bootstrap`, the Envoy process, its admin API and
//! requests through its explicit-proxy listener.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;

use crate::context::TestContext;
use crate::http::{self, snippet, Response};
use crate::paths;
use crate::process::{run_to_completion, ManagedProcess};
use crate::wait::await_condition;

/// Outbound listener (explicit HTTP proxy in `--mode explicit`).
pub const OUTBOUND_PORT: u16 = 15001;
/// Envoy admin port used by the tests (bound on the sidecar's own IP).
pub const ADMIN_PORT: u16 = 15000;
/// How long Envoy may take to become ready (includes the initial xDS fetch).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Which xDS protocol variant the sidecar uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdsApi {
    Delta,
    Sotw,
}

impl XdsApi {
    pub fn as_str(self) -> &'static str {
        match self {
            XdsApi::Delta => "delta",
            XdsApi::Sotw => "sotw",
        }
    }
}

/// Identity and placement of a sidecar.
#[derive(Clone, Debug)]
pub struct SidecarSpec {
    pub pod: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    pub labels: Vec<(String, String)>,
    pub xds_api: XdsApi,
    pub admin_port: u16,
    /// Started with `meshctl bootstrap --gateway` (an ingress gateway, no sidecar listeners).
    pub gateway: bool,
    /// `meshctl bootstrap --locality` (`region/zone/subzone`), if set.
    pub locality: Option<String>,
}

impl SidecarSpec {
    pub fn new(pod: &str, namespace: &str, ip: Ipv4Addr) -> Self {
        Self {
            pod: pod.to_string(),
            namespace: namespace.to_string(),
            ip,
            labels: Vec::new(),
            xds_api: XdsApi::Delta,
            admin_port: ADMIN_PORT,
            gateway: false,
            locality: None,
        }
    }

    /// An ingress gateway proxy (`meshctl bootstrap --gateway`).
    pub fn gateway(mut self) -> Self {
        self.gateway = true;
        self
    }

    /// Where the proxy runs (`meshctl bootstrap --locality`).
    pub fn locality(mut self, locality: &str) -> Self {
        self.locality = Some(locality.to_string());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_string(), value.to_string()));
        self
    }

    pub fn xds_api(mut self, api: XdsApi) -> Self {
        self.xds_api = api;
        self
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.admin_port))
    }
}

/// A running Envoy.
pub struct Sidecar {
    process: ManagedProcess,
    admin: SocketAddr,
    proxy: SocketAddr,
    bootstrap: PathBuf,
}

impl Sidecar {
    /// Write the bootstrap with `meshctl bootstrap` (explicit mode) and start Envoy with it.
    pub async fn start(ctx: &TestContext, spec: &SidecarSpec, xds: SocketAddr) -> Result<Self> {
        let bootstrap = ctx.unique_path(&format!("bootstrap-{}", spec.pod), ".yaml");
        let meshctl = paths::binary("meshctl")?;
        let mut args: Vec<String> = vec![
            "bootstrap".into(),
            "--node".into(),
            format!("{}.{}", spec.pod, spec.namespace),
            "--ip".into(),
            spec.ip.to_string(),
            "--xds".into(),
            xds.to_string(),
            "--mode".into(),
            "explicit".into(),
            "--xds-api".into(),
            spec.xds_api.as_str().into(),
        ];
        if spec.gateway {
            args.push("--gateway".into());
        }
        if let Some(locality) = &spec.locality {
            args.extend(["--locality".into(), locality.clone()]);
        }
        for (key, value) in &spec.labels {
            args.push("--label".into());
            args.push(format!("{key}={value}"));
        }
        args.extend([
            "--admin-addr".into(),
            spec.admin_addr().to_string(),
            "-o".into(),
            bootstrap.display().to_string(),
        ]);
        run_to_completion(&meshctl, &args, Duration::from_secs(20)).await?;
        if !bootstrap.is_file() {
            bail!("`meshctl bootstrap` succeeded but did not write {}", bootstrap.display());
        }
        Self::launch(ctx, &format!("envoy-{}", spec.pod), &bootstrap, spec.ip, spec.admin_addr()).await
    }

    /// Start Envoy with an existing bootstrap and wait until admin `/ready` answers 200.
    /// `ip` is where the outbound listener (`ip:15001`) is expected.
    pub async fn launch(
        ctx: &TestContext,
        label: &str,
        bootstrap: &Path,
        ip: Ipv4Addr,
        admin: SocketAddr,
    ) -> Result<Self> {
        let envoy = paths::envoy()?;
        let process = ManagedProcess::spawn(ctx, label, &envoy, envoy_args(bootstrap))?;
        ctx.register_log(format!("{label} bootstrap"), bootstrap.to_path_buf());
        let sidecar =
            Self { process, admin, proxy: SocketAddr::from((ip, OUTBOUND_PORT)), bootstrap: bootstrap.to_path_buf() };
        sidecar.wait_ready(READY_TIMEOUT).await?;
        Ok(sidecar)
    }

    /// Wait until admin `/ready` answers 200 (Envoy initialized: initial xDS fetch done).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let what = format!("{} admin {} to answer 200 on /ready", self.process.label(), self.admin);
        await_condition(&what, timeout, || async {
            self.process.ensure_running()?;
            let response = self.admin_get("/ready").await?;
            if response.status != 200 {
                bail!("/ready: {}", response.summary());
            }
            Ok(())
        })
        .await
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn process(&self) -> &ManagedProcess {
        &self.process
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The explicit-proxy listener (`IP:15001`).
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy
    }

    pub fn bootstrap_path(&self) -> &Path {
        &self.bootstrap
    }

    /// GET a path on the Envoy admin API.
    pub async fn admin_get(&self, path: &str) -> Result<Response> {
        http::get(self.admin, path).await.with_context(|| format!("envoy admin GET {path}"))
    }

    /// All counters and gauges from admin `/stats` (histograms skipped).
    pub async fn stats(&self) -> Result<BTreeMap<String, u64>> {
        let response = self.admin_get("/stats").await?;
        if response.status != 200 {
            bail!("envoy admin /stats: {}", response.summary());
        }
        Ok(parse_stats(&response.body))
    }

    /// One stat from admin `/stats`; `None` if Envoy does not have it.
    pub async fn stat(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.stats().await?.get(name).copied())
    }

    /// Sum of every stat ending in `.update_rejected` (where a NACK shows).
    pub async fn rejected_updates(&self) -> Result<u64> {
        Ok(rejected_updates(&self.stats().await?))
    }

    /// Admin `/config_dump` as JSON.
    /// The active dynamic listeners (listeners being drained after an update still show
    /// the old configuration elsewhere in the dump).
    pub async fn active_listeners(&self) -> Result<Value> {
        let dump = self.config_dump().await?;
        let configs = dump["configs"].as_array().context("config_dump configs")?;
        let listeners = configs
            .iter()
            .find(|c| c["@type"].as_str().is_some_and(|t| t.ends_with("ListenersConfigDump")))
            .context("no ListenersConfigDump")?;
        let active = listeners["dynamic_listeners"].as_array().into_iter().flatten().map(|l| l["active_state"].clone());
        Ok(Value::Array(active.collect()))
    }

    pub async fn config_dump(&self) -> Result<Value> {
        let response = self.admin_get("/config_dump").await?;
        if response.status != 200 {
            bail!("envoy admin /config_dump: {}", response.summary());
        }
        response.json()
    }

    /// `GET url` through the sidecar's explicit-proxy listener.
    pub async fn request(&self, url: &str, headers: &[(&str, &str)]) -> Result<Response> {
        http::proxy_request(self.proxy, "GET", url, headers).await
    }

    /// Send `n` requests and count who answered.
    pub async fn tally(&self, n: usize, url: &str, headers: &[(&str, &str)]) -> Tally {
        let mut tally = Tally::default();
        for _ in 0..n {
            tally.record(self.request(url, headers).await);
        }
        tally
    }

    /// Waits until 20 requests in a row from this sidecar (`who`) to `url` all get
    /// `answer` (a version, `HTTP 503`, see [`Tally`]), then checks 30 more.
    pub async fn ensure_all_answer(&self, who: &str, url: &str, answer: &str) -> Result<()> {
        let what = format!("{who}'s requests to {url} to get {answer}");
        crate::await_condition(&what, Duration::from_secs(10), || async {
            let tally = self.tally(20, url, &[]).await;
            ensure!(tally.all(answer), "{tally}");
            Ok(())
        })
        .await?;
        self.tally(30, url, &[]).await.ensure_all(answer, &format!("{who} -> {url}"))
    }
}

/// The arguments the tests start Envoy with: `bootstrap`, log level info, two workers, and a
/// dynamic base id (so that several Envoys run side by side).
pub fn envoy_args(bootstrap: &Path) -> Vec<String> {
    vec![
        "--use-dynamic-base-id".into(),
        "-c".into(),
        bootstrap.display().to_string(),
        "--log-level".into(),
        "info".into(),
        "--concurrency".into(),
        "2".into(),
    ]
}

/// Parse admin `/stats` text (`name: value` lines); non-integer values are skipped.
pub fn parse_stats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(": ")?;
            Some((name.trim().to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Sum of the stats ending in `.update_rejected`.
pub fn rejected_updates(stats: &BTreeMap<String, u64>) -> u64 {
    stats.iter().filter(|(name, _)| name.ends_with(".update_rejected")).map(|(_, v)| v).sum()
}

/// `Ok` if Envoy rejected no xDS update (every `*.update_rejected` stat is 0); otherwise an
/// error listing the nonzero ones.
pub fn ensure_no_rejected_updates(stats: &BTreeMap<String, u64>) -> Result<()> {
    let rejected = rejected_updates(stats);
    if rejected != 0 {
        let nonzero: Vec<String> = stats
            .iter()
            .filter(|(n, v)| n.ends_with(".update_rejected") && **v > 0)
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        bail!("Envoy rejected {rejected} xDS updates: {}", nonzero.join(", "));
    }
    Ok(())
}

/// Every `weighted_clusters` found in a config dump: a list of (cluster name, weight) per route.
pub fn weighted_clusters(dump: &Value) -> Vec<Vec<(String, u64)>> {
    fn walk(value: &Value, out: &mut Vec<Vec<(String, u64)>>) {
        match value {
            Value::Object(map) => {
                if let Some(clusters) =
                    map.get("weighted_clusters").and_then(|w| w.get("clusters")).and_then(Value::as_array)
                {
                    out.push(
                        clusters
                            .iter()
                            .map(|c| {
                                let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                                let weight = match c.get("weight") {
                                    Some(Value::Number(n)) => n.as_u64().unwrap_or_default(),
                                    Some(Value::String(s)) => s.parse().unwrap_or_default(),
                                    _ => 0,
                                };
                                (name, weight)
                            })
                            .collect(),
                    );
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dump, &mut out);
    out
}

/// Who answered a series of requests: the upstream `version` for 200 answers with an
/// [`Upstream`](crate::Upstream) body, `HTTP <status>` for other answers, `error` for
/// transport errors. Keeps a few samples of the unexpected answers.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub counts: BTreeMap<String, usize>,
    pub total: usize,
    pub samples: Vec<String>,
}

impl Tally {
    pub fn record(&mut self, result: Result<Response>) {
        self.total += 1;
        let key = match &result {
            Ok(r) if r.status == 200 => match r.json_str("version") {
                Some(version) => version,
                None => {
                    self.sample(format!("200 without a version: {}", snippet(&r.body)));
                    "HTTP 200 (no version)".to_string()
                }
            },
            Ok(r) => {
                self.sample(r.summary());
                format!("HTTP {}", r.status)
            }
            Err(e) => {
                self.sample(format!("{e:#}"));
                "error".to_string()
            }
        };
        *self.counts.entry(key).or_default() += 1;
    }

    fn sample(&mut self, text: String) {
        if self.samples.len() < 3 {
            self.samples.push(text);
        }
    }

    /// How many answers came from `key` (a version, `HTTP 503`, `error`).
    pub fn get(&self, key: &str) -> usize {
        self.counts.get(key).copied().unwrap_or(0)
    }

    /// True if every answer came from `key`.
    pub fn all(&self, key: &str) -> bool {
        self.total > 0 && self.get(key) == self.total
    }

    /// `Ok` if every answer came from `key`; otherwise an error saying `what` and the tally.
    pub fn ensure_all(&self, key: &str, what: &str) -> Result<()> {
        anyhow::ensure!(self.all(key), "{what}: want every answer from {key}; got {self}");
        Ok(())
    }

    /// `Ok` if `a` and `b` each got their share of a 50/50 split of the `n` answers.
    ///
    /// Each side is Binomial(n, 1/2): sigma = sqrt(n)/2. We accept n/2 ± 4.5 sigma (for n = 400:
    /// 155..=245), a two-sided false-failure probability of about 7e-6 per check.
    pub fn ensure_even_split(&self, a: &str, b: &str) -> Result<()> {
        let n = self.total;
        let sigma = (n as f64).sqrt() / 2.0;
        let low = (n as f64 / 2.0 - 4.5 * sigma).ceil() as usize;
        let high = (n as f64 / 2.0 + 4.5 * sigma).floor() as usize;
        let even = low..=high;
        ensure!(
            even.contains(&self.get(a)) && even.contains(&self.get(b)),
            "50/50 split: {a} and {b} should each get {low}..={high} of {n}; got {self}"
        );
        Ok(())
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: Vec<String> = self.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, "{} requests: {}", self.total, counts.join(" "))?;
        if !self.samples.is_empty() {
            write!(f, " (unexpected answers, e.g.: {})", self.samples.join(" | "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stats_text() {
        let stats = parse_stats(
            "cluster_manager.cds.update_rejected: 1\nhttp.x.rds.r.update_rejected: 2\n\
             server.live: 1\ncluster.a.upstream_cx_length_ms: P0(nan,1) P25(nan,2)\nlistener_manager.lds.update_success: 3\n",
        );
        assert_eq!(stats.get("server.live"), Some(&1));
        assert_eq!(stats.get("cluster.a.upstream_cx_length_ms"), None);
        assert_eq!(rejected_updates(&stats), 3);
        let error = ensure_no_rejected_updates(&stats).unwrap_err().to_string();
        assert_eq!(
            error,
            "Envoy rejected 3 xDS updates: cluster_manager.cds.update_rejected=1, \
             http.x.rds.r.update_rejected=2"
        );
        assert!(ensure_no_rejected_updates(&parse_stats("server.live: 1\n")).is_ok());
    }

    #[test]
    fn finds_weighted_clusters() {
        let dump: Value = serde_json::from_str(
            r#"{"configs":[{"dynamic_route_configs":[{"route_config":{"virtual_hosts":[{"routes":[
                {"route":{"weighted_clusters":{"clusters":[{"name":"a","weight":80},{"name":"b","weight":20}]}}}]}]}}]}]}"#,
        )
        .unwrap();
        assert_eq!(weighted_clusters(&dump), vec![vec![("a".to_string(), 80), ("b".to_string(), 20)]]);
    }

    #[test]
    fn tally_counts() {
        let mut t = Tally::default();
        let ok = |v: &str| Response { status: 200, headers: vec![], body: format!(r#"{{"version":"{v}"}}"#) };
        t.record(Ok(ok("v1")));
        t.record(Ok(ok("v1")));
        t.record(Ok(Response { status: 503, headers: vec![], body: "no healthy upstream".into() }));
        assert_eq!((t.get("v1"), t.get("HTTP 503"), t.total), (2, 1, 3));
        assert!(!t.all("v1"));
        assert!(t.to_string().contains("no healthy upstream"));

        // n = 400 accepts 155..=245 on each side.
        let split = |v1: usize, v3: usize| {
            let mut t = Tally::default();
            (0..v1).for_each(|_| t.record(Ok(ok("v1"))));
            (0..v3).for_each(|_| t.record(Ok(ok("v3"))));
            t.ensure_even_split("v1", "v3")
        };
        assert!(split(155, 245).is_ok() && split(245, 155).is_ok());
        let error = split(154, 246).unwrap_err().to_string();
        assert!(error.starts_with("50/50 split: v1 and v3 should each get 155..=245 of 400;"));
    }
}
