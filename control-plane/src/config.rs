//! meshd's one typed configuration, parsed from flags and environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::translate::{MeshSettings, OutboundTrafficPolicy};

/// meshd: the Amime service-mesh control plane.
///
/// Reads the mesh (Services, Pods, EndpointSlices, VirtualServices, DestinationRules)
/// from a directory of Kubernetes-style YAML, translates it to Envoy configuration and
/// serves it to Envoy sidecars over xDS (ADS, state of the world and delta).
#[derive(Debug, Clone, Parser)]
#[command(name = "meshd", version)]
pub struct MeshdConfig {
    /// Directory of Kubernetes-style YAML (*.yaml, *.yml, read recursively, multi-document)
    /// to serve; watched, and changes are pushed live. Required until the Kubernetes
    /// API source lands.
    #[arg(long, env = "AMIME_CONFIG_DIR", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,

    /// Address of the gRPC xDS (ADS) server.
    #[arg(long, env = "AMIME_XDS_ADDR", default_value = "0.0.0.0:15010", value_name = "ADDR")]
    pub xds_addr: SocketAddr,

    /// Address of the monitoring HTTP server (/healthz, /readyz, /metrics, /debug/...).
    #[arg(long, env = "AMIME_MONITORING_ADDR", default_value = "0.0.0.0:15014", value_name = "ADDR")]
    pub monitoring_addr: SocketAddr,

    /// Push once no change has arrived for this many milliseconds...
    #[arg(long, env = "AMIME_DEBOUNCE_QUIET", default_value_t = 100, value_name = "MS")]
    pub debounce_quiet: u64,

    /// ...or once the oldest unpushed change is this many milliseconds old.
    #[arg(long, env = "AMIME_DEBOUNCE_MAX", default_value_t = 1000, value_name = "MS")]
    pub debounce_max: u64,

    /// Where traffic to destinations that are not services of the mesh goes, as Istio's
    /// `meshConfig.outboundTrafficPolicy.mode`: ALLOW_ANY passes it through (by IP, or by
    /// name in explicit mode); REGISTRY_ONLY blocks it (HTTP answers 502 saying why).
    #[arg(long, env = "AMIME_OUTBOUND_TRAFFIC_POLICY", default_value = "ALLOW_ANY", value_name = "POLICY")]
    pub outbound_traffic_policy: OutboundTrafficPolicy,

    /// Log format.
    #[arg(long, env = "AMIME_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `info,xds=debug`.
    #[arg(long, env = "AMIME_LOG", default_value = "info")]
    pub log: String,
}

impl MeshdConfig {
    pub fn mesh_settings(&self) -> MeshSettings {
        MeshSettings { outbound_traffic_policy: self.outbound_traffic_policy }
    }

    pub fn debounce(&self) -> crate::push::Debounce {
        crate::push::Debounce {
            quiet: Duration::from_millis(self.debounce_quiet),
            max_delay: Duration::from_millis(self.debounce_max.max(self.debounce_quiet)),
        }
    }
}
