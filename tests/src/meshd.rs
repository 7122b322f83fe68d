//! The `meshd` control-plane process and its monitoring endpoints.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use crate::context::TestContext;
use crate::http::{self, snippet, Response};
use crate::paths;
use crate::process::{run_to_completion, ManagedProcess};
use crate::wait::await_condition;

/// xDS (ADS gRPC) port, as in production.
pub const XDS_PORT: u16 = 15010;
/// Monitoring HTTP port, as in production.
pub const MONITORING_PORT: u16 = 15014;
/// HTTPS injection webhook port, as in production.
pub const WEBHOOK_PORT: u16 = 15017;
/// How long meshd may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// One entry of `/debug/config_errors`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ConfigError {
    /// Empty when meshd does not say (problems found while translating may have no file).
    #[serde(deserialize_with = "null_as_empty")]
    pub file: String,
    pub document: Option<u64>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// A running `meshd --config-dir DIR`.
pub struct Meshd {
    process: ManagedProcess,
    xds: SocketAddr,
    monitoring: SocketAddr,
    webhook: SocketAddr,
    config_dir: PathBuf,
}

impl Meshd {
    /// Start meshd on `ip` (xDS on `ip:15010`, monitoring on `ip:15014`, the webhook on
    /// `ip:15017` unless `extra_args` set `--webhook-addr`) and wait for `/readyz`.
    pub async fn start(ctx: &TestContext, config_dir: &Path, ip: Ipv4Addr, extra_args: &[&str]) -> Result<Self> {
        Self::spawn(ctx, ("--config-dir", config_dir), ip, extra_args, false).await
    }

    /// Start meshd on the Kubernetes API of `kubeconfig` (`--kubeconfig`) on `ip` and wait for
    /// `/readyz` (every watch listed). [`Meshd::config_dir`] is then the kubeconfig.
    pub async fn start_kube(ctx: &TestContext, kubeconfig: &Path, ip: Ipv4Addr, extra_args: &[&str]) -> Result<Self> {
        Self::spawn(ctx, ("--kubeconfig", kubeconfig), ip, extra_args, false).await
    }

    /// Like [`Meshd::start`], but meshd runs as user and group `nobody` (65534, through
    /// `setpriv`), so that file permission bits apply to it (root ignores them).
    pub async fn start_unprivileged(
        ctx: &TestContext,
        config_dir: &Path,
        ip: Ipv4Addr,
        extra_args: &[&str],
    ) -> Result<Self> {
        Self::spawn(ctx, ("--config-dir", config_dir), ip, extra_args, true).await
    }

    async fn spawn(
        ctx: &TestContext,
        (source_flag, config_dir): (&str, &Path),
        ip: Ipv4Addr,
        extra_args: &[&str],
        as_nobody: bool,
    ) -> Result<Self> {
        let xds = SocketAddr::from((ip, XDS_PORT));
        let monitoring = SocketAddr::from((ip, MONITORING_PORT));
        let webhook = SocketAddr::from((ip, WEBHOOK_PORT));
        let meshd = paths::binary("meshd")?;
        let mut args: Vec<String> = Vec::new();
        let program = if as_nobody {
            args.extend(["--reuid=65534", "--regid=65534", "--clear-groups"].map(String::from));
            args.push(meshd.display().to_string());
            PathBuf::from("setpriv")
        } else {
            meshd
        };
        args.extend([
            source_flag.into(),
            config_dir.display().to_string(),
            "--xds-addr".into(),
            xds.to_string(),
            "--monitoring-addr".into(),
            monitoring.to_string(),
        ]);
        if !extra_args.iter().any(|a| a.starts_with("--webhook-addr")) {
            args.extend(["--webhook-addr".into(), webhook.to_string()]);
        }
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let process = ManagedProcess::spawn(ctx, "meshd", &program, &args)?;
        let meshd = Self { process, xds, monitoring, webhook, config_dir: config_dir.to_path_buf() };
        meshd.wait_ready(READY_TIMEOUT).await?;
        Ok(meshd)
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let what = format!("meshd {} to answer 200 on /readyz", self.monitoring);
        await_condition(&what, timeout, || async {
            self.process.ensure_running()?;
            let response = self.get("/readyz").await?;
            if response.status != 200 {
                bail!("/readyz: {}", response.summary());
            }
            Ok(())
        })
        .await
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Kill meshd with SIGKILL (the way a crash happens: no graceful shutdown, its streams
    /// just break) and wait until it has exited, so its addresses can be bound again.
    pub async fn kill(&self) -> Result<()> {
        self.signal_and_wait("KILL", Duration::from_secs(5)).await
    }

    /// Send `signal` (e.g. `TERM`) and wait at most `limit` for meshd to exit.
    pub async fn signal_and_wait(&self, signal: &str, limit: Duration) -> Result<()> {
        let pid = self.process.pid().to_string();
        if self.process.is_running() {
            let flag = format!("-{signal}");
            run_to_completion(Path::new("kill"), [flag.as_str(), pid.as_str()], Duration::from_secs(5)).await?;
        }
        let what = format!("meshd (pid {pid}) to exit after SIG{signal}");
        await_condition(&what, limit, || async {
            match self.process.exit_status() {
                Some(_) => Ok(()),
                None => bail!("still running"),
            }
        })
        .await
    }

    pub fn process(&self) -> &ManagedProcess {
        &self.process
    }

    pub fn xds_addr(&self) -> SocketAddr {
        self.xds
    }

    pub fn monitoring_addr(&self) -> SocketAddr {
        self.monitoring
    }

    /// The webhook's address (unless `--webhook-addr` was given in the extra arguments).
    pub fn webhook_addr(&self) -> SocketAddr {
        self.webhook
    }

    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// GET a path on the monitoring server.
    pub async fn get(&self, path: &str) -> Result<Response> {
        http::get(self.monitoring, path).await.with_context(|| format!("meshd GET {path}"))
    }

    async fn get_ok(&self, path: &str) -> Result<Response> {
        let response = self.get(path).await?;
        if response.status != 200 {
            bail!("meshd GET {path}: {}", response.summary());
        }
        Ok(response)
    }

    /// `/debug/config_errors`.
    pub async fn config_errors(&self) -> Result<Vec<ConfigError>> {
        let response = self.get_ok("/debug/config_errors").await?;
        serde_json::from_str(&response.body)
            .with_context(|| format!("/debug/config_errors is not a JSON array of errors: {}", snippet(&response.body)))
    }

    /// `/debug/proxies` as JSON.
    pub async fn debug_proxies(&self) -> Result<serde_json::Value> {
        self.get_ok("/debug/proxies").await?.json()
    }

    /// `/metrics` (Prometheus text).
    pub async fn metrics(&self) -> Result<String> {
        Ok(self.get_ok("/metrics").await?.body)
    }

    /// The value of a metric (summed over all its label sets); `None` if absent.
    pub async fn metric(&self, name: &str) -> Result<Option<f64>> {
        Ok(parse_metric(&self.metrics().await?, name))
    }
}

/// meshd's counter of NACKed xDS responses.
pub const NACKS_METRIC: &str = "amime_xds_nacks_total";

/// `Ok` if meshd counted no NACK: `nacks_total` is the value of [`NACKS_METRIC`] (`None`
/// when `/metrics` does not have it, which is an error too).
pub fn ensure_no_nacks(nacks_total: Option<f64>) -> Result<()> {
    match nacks_total {
        Some(0.0) => Ok(()),
        Some(n) => bail!("meshd counted {n} NACKs ({NACKS_METRIC})"),
        None => bail!("meshd /metrics has no {NACKS_METRIC}"),
    }
}

/// Sum of the samples of metric `name` (any labels) in Prometheus text format.
pub fn parse_metric(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = if rest.starts_with('{') {
            match rest.find('}') {
                Some(end) => &rest[end + 1..],
                None => continue,
            }
        } else if rest.starts_with([' ', '\t']) {
            rest
        } else {
            continue; // a longer metric name with the same prefix
        };
        let Some(value) = rest.split_whitespace().next() else {
            continue;
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        *total.get_or_insert(0.0) += value;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metrics() {
        let text = "# HELP amime_xds_nacks_total NACKs\n# TYPE amime_xds_nacks_total counter\n\
                    amime_xds_nacks_total{type=\"cds\"} 1\namime_xds_nacks_total{type=\"lds\"} 2\n\
                    amime_xds_nacks_total_other 7\namime_xds_connected_proxies 3\n";
        assert_eq!(parse_metric(text, "amime_xds_nacks_total"), Some(3.0));
        assert_eq!(parse_metric(text, "amime_xds_connected_proxies"), Some(3.0));
        assert_eq!(parse_metric(text, "amime_missing"), None);
        assert!(ensure_no_nacks(Some(0.0)).is_ok());
        assert!(ensure_no_nacks(parse_metric(text, NACKS_METRIC)).is_err());
        assert!(ensure_no_nacks(None).is_err());
    }

    #[test]
    fn parses_config_errors() {
        let errors: Vec<ConfigError> = serde_json::from_str(
            r#"[{"file":"/x/a.yaml","document":1,"kind":"VirtualService","namespace":"ns","name":"r",
                 "field":"spec.http[0].route[0].weight","message":"must be >= 0"},
                {"file":"/x/b.yaml","message":"yaml syntax error"}]"#,
        )
        .unwrap();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].field.as_deref(), Some("spec.http[0].route[0].weight"));
        assert_eq!(errors[1].document, None);
    }
}
