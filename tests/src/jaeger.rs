//! A real Jaeger (the all-in-one binary built from its Go module by `scripts/jaeger.sh`),
//! started by a test on its own loopback address: Zipkin receiver on `:9411`, OTLP gRPC on
//! `:4317`, the query HTTP API on `:16686`, in-memory storage. Stops when dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;

use crate::context::TestContext;
use crate::http;
use crate::netns::Netns;
use crate::paths;
use crate::process::{run_to_completion, ManagedProcess};
use crate::wait::await_condition;

pub const ZIPKIN_PORT: u16 = 9411;
pub const OTLP_GRPC_PORT: u16 = 4317;
pub const QUERY_PORT: u16 = 16686;

/// The jaeger binary: `$AMIME_JAEGER_BIN/jaeger`, else what `scripts/jaeger.sh` prints
/// (it builds Jaeger once, then answers from its caches).
pub async fn binary() -> Result<PathBuf> {
    let dir = match std::env::var_os("AMIME_JAEGER_BIN") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let script = paths::workspace_root().join("scripts/jaeger.sh");
            let out = run_to_completion(&script, Vec::<String>::new(), Duration::from_secs(1800)).await?;
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    let jaeger = dir.join("jaeger");
    ensure!(jaeger.is_file(), "{} does not exist; run scripts/jaeger.sh", jaeger.display());
    Ok(jaeger)
}

/// Jaeger v2's configuration (an OpenTelemetry-collector YAML) bound to `ip`.
fn config(ip: Ipv4Addr) -> String {
    format!(
        r#"service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp, zipkin]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
    traces:
      level: none
extensions:
  jaeger_query:
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: "{ip}:{QUERY_PORT}"
    grpc:
      endpoint: "{ip}:16685"
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "{ip}:{OTLP_GRPC_PORT}"
  zipkin:
    endpoint: "{ip}:{ZIPKIN_PORT}"
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"#
    )
}

/// One span as Jaeger's query API returns it.
#[derive(Clone, Debug)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// The span this one is a child of (a `CHILD_OF` reference), if any.
    pub parent: Option<String>,
    pub operation: String,
    pub service: String,
    pub tags: Vec<(String, String)>,
}

impl Span {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

pub struct Jaeger {
    process: ManagedProcess,
    ip: Ipv4Addr,
}

impl Jaeger {
    /// Starts Jaeger on `ip` and waits until its query API answers.
    pub async fn start(ctx: &TestContext, ip: Ipv4Addr) -> Result<Jaeger> {
        Self::start_maybe_in(ctx, None, ip).await
    }

    /// Starts Jaeger inside `netns` on `ip` (one of its addresses), where pods plugged into
    /// that namespace reach it; query it with [`Jaeger::traces_via`].
    pub async fn start_in(ctx: &TestContext, netns: &Netns, ip: Ipv4Addr) -> Result<Jaeger> {
        Self::start_maybe_in(ctx, Some(netns), ip).await
    }

    async fn start_maybe_in(ctx: &TestContext, netns: Option<&Netns>, ip: Ipv4Addr) -> Result<Jaeger> {
        let jaeger = binary().await?;
        let config_path = ctx.unique_path("jaeger", ".yaml");
        std::fs::write(&config_path, config(ip)).with_context(|| format!("write {}", config_path.display()))?;
        let args = vec!["--config".to_owned(), format!("file:{}", config_path.display())];
        let process = match netns {
            Some(netns) => netns.spawn(ctx, "jaeger", &jaeger, args)?,
            None => ManagedProcess::spawn(ctx, "jaeger", &jaeger, args)?,
        };
        let j = Jaeger { process, ip };
        await_condition("Jaeger's query API to answer", Duration::from_secs(60), || async {
            j.process.ensure_running()?;
            let r = j.query(netns, "/api/services").await?;
            ensure!(r.status == 200, "{}", r.summary());
            Ok(())
        })
        .await?;
        Ok(j)
    }

    /// `GET path` on the query API, from inside `netns` if given.
    async fn query(&self, netns: Option<&Netns>, path: &str) -> Result<http::Response> {
        match netns {
            Some(netns) => netns.get(self.query_addr(), path).await,
            None => http::get(self.query_addr(), path).await,
        }
    }

    pub fn zipkin_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, ZIPKIN_PORT))
    }

    pub fn otlp_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, OTLP_GRPC_PORT))
    }

    pub fn query_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, QUERY_PORT))
    }

    pub fn process(&self) -> &ManagedProcess {
        &self.process
    }

    /// Every trace Jaeger holds with a span of `service`, as lists of spans.
    pub async fn traces(&self, service: &str) -> Result<Vec<Vec<Span>>> {
        self.traces_maybe_via(None, service).await
    }

    /// [`Jaeger::traces`] of a Jaeger started with [`Jaeger::start_in`] `netns`.
    pub async fn traces_via(&self, netns: &Netns, service: &str) -> Result<Vec<Vec<Span>>> {
        self.traces_maybe_via(Some(netns), service).await
    }

    async fn traces_maybe_via(&self, netns: Option<&Netns>, service: &str) -> Result<Vec<Vec<Span>>> {
        let r = self.query(netns, &format!("/api/traces?service={service}&limit=1000&lookback=1h")).await?;
        if r.status == 404 {
            return Ok(Vec::new());
        }
        ensure!(r.status == 200, "GET /api/traces: {}", r.summary());
        parse_traces(&r.json()?)
    }
}

/// Jaeger's `{"data": [{"traceID", "spans": [...], "processes": {...}}]}`.
pub fn parse_traces(body: &Value) -> Result<Vec<Vec<Span>>> {
    let Some(data) = body.get("data").and_then(Value::as_array) else { bail!("no `data` in {body}") };
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut traces = Vec::new();
    for trace in data {
        let processes = trace.get("processes").cloned().unwrap_or_default();
        let mut spans = Vec::new();
        for s in trace.get("spans").and_then(Value::as_array).into_iter().flatten() {
            let parent = s
                .get("references")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|r| r.get("refType").and_then(Value::as_str) == Some("CHILD_OF"))
                .map(|r| text(r, "spanID"));
            let process = processes.get(text(s, "processID")).cloned().unwrap_or_default();
            let tags = s
                .get("tags")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|t| {
                    let v = t.get("value").map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
                    (text(t, "key"), v.unwrap_or_default())
                })
                .collect();
            spans.push(Span {
                trace_id: text(s, "traceID"),
                span_id: text(s, "spanID"),
                parent,
                operation: text(s, "operationName"),
                service: text(&process, "serviceName"),
                tags,
            });
        }
        traces.push(spans);
    }
    Ok(traces)
}
