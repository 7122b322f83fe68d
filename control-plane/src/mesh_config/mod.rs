//! Mesh-wide settings read from an Istio `MeshConfig` document (`meshd --mesh-config FILE`,
//! or with the Kubernetes source the key `mesh` of a ConfigMap, [`configmap`]): access logs,
//! tracing providers and defaults, the outbound traffic policy.
//!
//! [`parse`] turns the YAML into [`MeshTelemetry`] (plain data the translator reads) or
//! diagnostics naming the file and the field; [`watch`] re-reads the file when it changes
//! and hands each good version to the push loop (a bad one is reported and the last good
//! one stays in force, like any other config).

pub mod configmap;
pub mod parse;
pub mod watch;

use std::collections::BTreeMap;

use crate::translate::OutboundTrafficPolicy;

/// Where meshd looks for Telemetry objects that apply mesh-wide when the mesh config
/// does not say (`rootNamespace`): meshd's own namespace (`--namespace`, `amime-system`).
pub const DEFAULT_ROOT_NAMESPACE: &str = "amime-system";

/// How access-log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogEncoding {
    #[default]
    Text,
    Json,
}

/// Where a tracing provider sends spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TracerKind {
    /// Zipkin v2 JSON over HTTP (`/api/v2/spans`).
    Zipkin,
    /// OpenTelemetry OTLP over gRPC.
    OpenTelemetry,
}

/// A tracing collector named in `extensionProviders`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TracingProvider {
    pub kind: TracerKind,
    /// `service`: a mesh host (`name.ns.svc.cluster.local`, `ns/host`) or any DNS name or IP.
    pub service: String,
    pub port: u16,
    /// Longest tag value kept (Envoy's `max_path_tag_length`); Istio's default is 256.
    pub max_tag_length: u32,
}

/// A file access-log provider (`envoyFileAccessLog`, and the built-in `envoy`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileLogProvider {
    pub path: String,
    pub encoding: LogEncoding,
    /// A text format (Envoy's substitution format); `None`: Istio's default line.
    pub format: Option<String>,
    /// JSON keys and their Envoy format strings; empty: Istio's default keys.
    pub json_labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Provider {
    Tracing(TracingProvider),
    FileLog(FileLogProvider),
}

/// The telemetry part of the mesh config, as the translator uses it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeshTelemetry {
    /// `accessLogFile`: every sidecar logs to it when set (the built-in `envoy` provider).
    pub access_log_file: Option<String>,
    pub access_log_encoding: LogEncoding,
    pub access_log_format: Option<String>,
    /// `enableTracing` (Istio's default: true). Off: no tracing unless a Telemetry asks.
    pub enable_tracing: bool,
    /// `defaultConfig.tracing.sampling`, in millionths (Istio's default: 1% = 10000).
    pub sampling_millionths: u32,
    /// `extensionProviders` by name.
    pub providers: BTreeMap<String, Provider>,
    /// `defaultProviders.tracing` / `.accessLogging`.
    pub default_tracing: Vec<String>,
    pub default_access_logging: Vec<String>,
    /// `rootNamespace`; `None`: meshd's namespace.
    pub root_namespace: Option<String>,
}

impl Default for MeshTelemetry {
    fn default() -> Self {
        MeshTelemetry {
            access_log_file: None,
            access_log_encoding: LogEncoding::Text,
            access_log_format: None,
            enable_tracing: true,
            sampling_millionths: 10_000,
            providers: BTreeMap::new(),
            default_tracing: Vec::new(),
            default_access_logging: Vec::new(),
            root_namespace: None,
        }
    }
}

/// Name of the built-in access-log provider (Istio's `envoy`): `accessLogFile` (else
/// `/dev/stdout`) with `accessLogEncoding` and `accessLogFormat`.
pub const ENVOY_PROVIDER: &str = "envoy";

impl MeshTelemetry {
    /// The provider called `name`: an `extensionProviders` entry, or the built-in `envoy`.
    pub fn provider(&self, name: &str) -> Option<Provider> {
        if let Some(p) = self.providers.get(name) {
            return Some(p.clone());
        }
        (name == ENVOY_PROVIDER).then(|| Provider::FileLog(self.builtin_file_log()))
    }

    fn builtin_file_log(&self) -> FileLogProvider {
        FileLogProvider {
            path: self.access_log_file.clone().unwrap_or_else(|| "/dev/stdout".to_owned()),
            encoding: self.access_log_encoding,
            format: self.access_log_format.clone(),
            json_labels: BTreeMap::new(),
        }
    }

    /// Access-log providers in force when no Telemetry says otherwise.
    pub fn default_access_log_providers(&self) -> Vec<String> {
        if !self.default_access_logging.is_empty() {
            return self.default_access_logging.clone();
        }
        match &self.access_log_file {
            Some(_) => vec![ENVOY_PROVIDER.to_owned()],
            None => Vec::new(),
        }
    }
}

/// Everything a mesh-config document sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshConfigFile {
    pub telemetry: MeshTelemetry,
    /// `outboundTrafficPolicy.mode`, when set.
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}
