//! A real Prometheus server (Debian's `prometheus` package, installed by `scripts/test.sh`)
//! scraping meshd and Envoy sidecars, and its HTTP query API.
//!
//! It listens on the test's loopback block ([`PROMETHEUS_HOST`], port [`PROMETHEUS_PORT`]),
//! keeps its data in the test's directory and scrapes every [`SCRAPE_INTERVAL`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use serde::Deserialize;

use crate::context::TestContext;
use crate::http::{self, snippet};
use crate::process::ManagedProcess;
use crate::wait::await_condition;

/// Host number of Prometheus inside a test's block.
pub const PROMETHEUS_HOST: u8 = 90;
/// Not Prometheus's usual 9090, which a Prometheus installed as a service may hold on
/// every address.
pub const PROMETHEUS_PORT: u16 = 19090;
/// Short, so that a test waits a second or two for what it did to be scraped.
pub const SCRAPE_INTERVAL: &str = "500ms";

/// The Prometheus binary: `$AMIME_PROMETHEUS`, else `/usr/bin/prometheus`.
pub fn binary() -> Result<PathBuf> {
    let path = std::env::var_os("AMIME_PROMETHEUS").map_or_else(|| PathBuf::from("/usr/bin/prometheus"), PathBuf::from);
    ensure!(
        path.is_file(),
        "Prometheus not found at {} (scripts/test.sh installs Debian's `prometheus` package; or set AMIME_PROMETHEUS)",
        path.display()
    );
    Ok(path)
}

/// One endpoint to scrape.
#[derive(Clone, Debug)]
pub struct Target {
    /// The `job` label of its series.
    pub job: String,
    pub addr: SocketAddr,
    pub path: String,
}

impl Target {
    pub fn new(job: &str, addr: SocketAddr, path: &str) -> Target {
        Target { job: job.to_owned(), addr, path: path.to_owned() }
    }
}

/// The scrape configuration: one job per target.
pub fn scrape_config(targets: &[Target]) -> String {
    let mut out = format!(
        "global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  scrape_timeout: {SCRAPE_INTERVAL}\nscrape_configs:\n"
    );
    for t in targets {
        let _ = write!(
            out,
            "- job_name: '{}'\n  metrics_path: '{}'\n  static_configs:\n  - targets: ['{}']\n",
            t.job, t.path, t.addr
        );
    }
    out
}

/// One sample of an instant query's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Deserialize)]
struct ApiResponse<T> {
    status: String,
    data: Option<T>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct VectorData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<VectorSample>,
}

#[derive(Deserialize)]
struct VectorSample {
    metric: BTreeMap<String, String>,
    /// `[unix time, "value"]`.
    value: (f64, String),
}

#[derive(Deserialize)]
struct TargetsData {
    #[serde(rename = "activeTargets")]
    active_targets: Vec<ActiveTarget>,
}

#[derive(Deserialize)]
struct ActiveTarget {
    #[serde(rename = "scrapeUrl")]
    scrape_url: String,
    health: String,
    #[serde(rename = "lastError", default)]
    last_error: String,
}

/// A running Prometheus. Killed when dropped.
pub struct Prometheus {
    process: ManagedProcess,
    addr: SocketAddr,
}

impl Prometheus {
    /// Start Prometheus on `ip` scraping `targets` and wait until every target is up.
    pub async fn start(ctx: &TestContext, ip: Ipv4Addr, targets: &[Target]) -> Result<Prometheus> {
        let addr = SocketAddr::from((ip, PROMETHEUS_PORT));
        let config = ctx.unique_path("prometheus", ".yml");
        std::fs::write(&config, scrape_config(targets)).with_context(|| format!("write {}", config.display()))?;
        let data = ctx.unique_path("prometheus-data", "");
        let args = [
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address={addr}"),
            "--storage.tsdb.retention.time=1h".to_owned(),
            "--log.level=warn".to_owned(),
        ];
        let process = ManagedProcess::spawn(ctx, "prometheus", &binary()?, &args)?;
        let prometheus = Prometheus { process, addr };
        prometheus.await_targets_up(targets.len(), Duration::from_secs(20)).await?;
        Ok(prometheus)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn api<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let response = http::get(self.addr, path).await.with_context(|| format!("Prometheus GET {path}"))?;
        let parsed: ApiResponse<T> = serde_json::from_str(&response.body)
            .with_context(|| format!("Prometheus GET {path}: not an API answer: {}", response.summary()))?;
        match (parsed.status.as_str(), parsed.data) {
            ("success", Some(data)) => Ok(data),
            _ => bail!(
                "Prometheus GET {path}: {} {}",
                parsed.status,
                parsed.error.unwrap_or_else(|| snippet(&response.body))
            ),
        }
    }

    /// Wait until `expected` targets are scraped and healthy.
    async fn await_targets_up(&self, expected: usize, timeout: Duration) -> Result<()> {
        await_condition(&format!("Prometheus {} to scrape its {expected} targets", self.addr), timeout, || async {
            self.process.ensure_running()?;
            let targets: TargetsData = self.api("/api/v1/targets?state=active").await?;
            let down: Vec<String> = targets
                .active_targets
                .iter()
                .filter(|t| t.health != "up")
                .map(|t| format!("{} ({}: {})", t.scrape_url, t.health, t.last_error))
                .collect();
            ensure!(targets.active_targets.len() == expected && down.is_empty(), "not up: {down:?}");
            Ok(())
        })
        .await
    }

    /// An instant query (`/api/v1/query`) whose result is a vector.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let data: VectorData = self.api(&format!("/api/v1/query?query={}", url_encode(promql))).await?;
        ensure!(data.result_type == "vector", "{promql}: a {} result, not a vector", data.result_type);
        data.result
            .into_iter()
            .map(|s| {
                let value = s.value.1.parse::<f64>().with_context(|| format!("{promql}: value {:?}", s.value.1))?;
                Ok(Sample { labels: s.metric, value })
            })
            .collect()
    }

    /// The value of a query whose result is one sample.
    pub async fn query_one(&self, promql: &str) -> Result<f64> {
        match self.query(promql).await?.as_slice() {
            [one] => Ok(one.value),
            other => bail!("{promql}: {} samples, expected one: {other:?}", other.len()),
        }
    }

    /// Wait until `promql` returns one sample of value `want` (what the test did has been
    /// scraped); the error names the last value seen.
    pub async fn await_value(&self, promql: &str, want: f64, timeout: Duration) -> Result<()> {
        await_condition(&format!("`{promql}` to be {want}"), timeout, || async {
            self.process.ensure_running()?;
            let got = self.query_one(promql).await?;
            ensure!(got == want, "{got}");
            Ok(())
        })
        .await
    }
}

/// Percent-encoding of a query parameter's value (everything but RFC 3986's unreserved
/// characters).
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(url_encode("sum(x{a=\"b c\"})"), "sum%28x%7Ba%3D%22b%20c%22%7D%29");
        assert_eq!(url_encode("rate(y[1m])/2"), "rate%28y%5B1m%5D%29%2F2");
    }

    #[test]
    fn every_target_is_its_own_job() {
        let config = scrape_config(&[
            Target::new("meshd", "127.0.80.2:15014".parse().unwrap(), "/metrics"),
            Target::new("productpage", "127.0.80.1:15090".parse().unwrap(), "/stats/prometheus"),
        ]);
        assert!(config.contains("- job_name: 'productpage'\n  metrics_path: '/stats/prometheus'\n  static_configs:\n  - targets: ['127.0.80.1:15090']\n"));
        assert!(config.starts_with("global:\n  scrape_interval: 500ms\n"));
    }
}
