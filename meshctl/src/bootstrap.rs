//! `meshctl bootstrap`: render the Envoy bootstrap for one sidecar.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use injector::bootstrap::{
    render_yaml, BootstrapConfig, InterceptionMode, ProxyIdentity, ProxyKind, XdsApi, DEFAULT_SERVICE_ACCOUNT,
};
use injector::locality::Locality;
use injector::probes::AppProbes;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  meshctl bootstrap --node productpage-v1.bookinfo --ip 127.0.0.2 \
--admin-addr 127.0.0.2:15000 --label app=productpage -o productpage.yaml\n\
  meshctl bootstrap --gateway --node ingressgateway.istio-system --ip 127.0.0.30 \
--admin-addr 127.0.0.30:15000 --label istio=ingressgateway -o gateway.yaml")]
pub struct BootstrapArgs {
    /// Proxy identity as POD_NAME.NAMESPACE (split at the last '.'); becomes Envoy's node.id.
    #[arg(long, value_name = "NAME.NAMESPACE", value_parser = parse_node)]
    node: ProxyIdentity,

    /// Instance IP of the workload; repeat for several. The health (15021) and
    /// Prometheus (15090) listeners bind to the first one.
    #[arg(long = "ip", value_name = "IP", required = true)]
    ips: Vec<IpAddr>,

    /// meshd's xDS gRPC address, HOST:PORT; HOST may be an IP ([::1] for IPv6) or a DNS name.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:15010")]
    xds: String,

    /// How application traffic reaches the sidecar: `explicit` (HTTP proxy on
    /// 15001, INTERCEPTION_MODE=NONE) or `transparent` (iptables capture, REDIRECT).
    #[arg(long, value_enum, default_value_t = Mode::Explicit)]
    mode: Mode,

    /// xDS protocol variant: `delta` (incremental, DELTA_GRPC) or `sotw` (state of the world, GRPC).
    #[arg(long = "xds-api", value_enum, default_value_t = Api::Delta)]
    xds_api: Api,

    /// Run as an ingress gateway (node.metadata.PROXY_TYPE=router): no sidecar listeners
    /// (15001, 15006), only those of the Gateways whose spec.selector matches the labels.
    /// In explicit mode the gateway's servers listen on the first --ip (unless a server
    /// names its `bind`); in transparent mode on 0.0.0.0.
    #[arg(long)]
    gateway: bool,

    /// Pod label KEY=VALUE (repeatable); `app` also names Envoy's node.cluster. A
    /// Gateway's spec.selector matches a gateway proxy's labels.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,

    /// Kubernetes service account of the workload.
    #[arg(long, value_name = "SA", default_value = DEFAULT_SERVICE_ACCOUNT)]
    service_account: String,

    /// Envoy admin address (loopback only). Give each sidecar on one machine its own.
    #[arg(long = "admin-addr", value_name = "ADDR", default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,

    /// The app's HTTP probes the health listener (15021) replays, as JSON (the injected
    /// sidecar's AMIME_APP_PROBES): {"/app-health/<container>/<kind>": {"port": 8080, "path": "/ready"}}.
    #[arg(long = "app-probes", value_name = "JSON", value_parser = parse_app_probes)]
    app_probes: Option<AppProbes>,

    /// Where the proxy runs, `region[/zone[/subzone]]`, written as Envoy's node.locality:
    /// with a DestinationRule's locality balancing (localityLbSetting), meshd prefers
    /// endpoints in the same locality. Unset: no locality (endpoints without one are nearest).
    #[arg(long, value_name = "REGION/ZONE/SUBZONE", value_parser = parse_locality)]
    locality: Option<Locality>,

    /// Write the bootstrap to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Explicit,
    Transparent,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Api {
    Delta,
    Sotw,
}

fn parse_node(s: &str) -> Result<ProxyIdentity, String> {
    ProxyIdentity::parse(s).map_err(|e| e.to_string())
}

fn parse_app_probes(s: &str) -> Result<AppProbes, String> {
    serde_json::from_str(s).map_err(|e| format!("not app probes JSON: {e}"))
}

fn parse_locality(s: &str) -> Result<Locality, String> {
    Locality::parse(s).map_err(|e| e.to_string())
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => Err(format!("expected KEY=VALUE, got {s:?} (no '=')")),
    }
}

pub fn run(args: BootstrapArgs) -> anyhow::Result<()> {
    let mut labels = BTreeMap::new();
    for (key, value) in args.labels {
        if let Some(previous) = labels.insert(key.clone(), value.clone()) {
            if previous != value {
                bail!("label {key:?} given twice ({previous:?} and {value:?})");
            }
        }
    }
    let config = BootstrapConfig::builder(args.node)
        .ips(args.ips)
        .xds_address(args.xds)
        .mode(match args.mode {
            Mode::Explicit => InterceptionMode::None,
            Mode::Transparent => InterceptionMode::Redirect,
        })
        .xds_api(match args.xds_api {
            Api::Delta => XdsApi::Delta,
            Api::Sotw => XdsApi::Sotw,
        })
        .kind(if args.gateway { ProxyKind::Gateway } else { ProxyKind::Sidecar })
        .labels(labels)
        .service_account(args.service_account)
        .admin_address(args.admin_addr)
        .app_probes(args.app_probes.unwrap_or_default())
        .locality(args.locality.unwrap_or_default())
        .build()?;
    let yaml = render_yaml(&config)?;
    match args.output {
        Some(path) => {
            std::fs::write(&path, yaml).with_context(|| format!("cannot write bootstrap to {}", path.display()))?
        }
        None => std::io::stdout().write_all(yaml.as_bytes()).context("cannot write bootstrap to standard output")?,
    }
    Ok(())
}
