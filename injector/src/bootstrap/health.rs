//! The sidecar's health listener (`<primary ip>:15021`): `/healthz/ready` from Envoy's
//! admin `/ready`, and one route per rewritten app probe (`/app-health/<container>/<kind>`)
//! replaying the app's original `httpGet` against `<primary ip>:<port>` (MISSION §5).
//!
//! Each probe's route goes to a static cluster per (port, scheme); HTTPS probes talk TLS
//! without verifying the app's certificate, as kubelet does. The path is rewritten to the
//! original, the original headers are set, and the Host header is what kubelet would have
//! sent (`Host` from the probe's headers, else `<host or pod ip>:<port>`).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use serde_json::{json, Value};

use super::{load_assignment, socket_address, BootstrapConfig, BootstrapError, ADMIN_CLUSTER};
use crate::probes::{AppProbe, AppProbes, ProbeScheme, APP_HEALTH_PREFIX};

const UPSTREAM_TLS_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

/// The routes of the health listener: readiness first, then the app probes in path order.
pub(super) fn routes(config: &BootstrapConfig) -> Vec<Value> {
    let mut routes = vec![json!({
        // Reflects Envoy's own readiness (admin /ready: 200 once initialized).
        "match": { "path": super::READY_PATH },
        "route": { "cluster": ADMIN_CLUSTER, "prefix_rewrite": "/ready" },
    })];
    routes.extend(config.app_probes().iter().map(|(path, probe)| probe_route(config.primary_ip(), path, probe)));
    routes
}

/// One static cluster per (port, scheme) the app probes use.
pub(super) fn clusters(config: &BootstrapConfig) -> Vec<Value> {
    let targets: BTreeSet<(u16, ProbeScheme)> = config.app_probes().values().map(|p| (p.port, p.scheme)).collect();
    targets
        .into_iter()
        .map(|(port, scheme)| {
            let name = cluster_name(port, scheme);
            let mut cluster = json!({
                "name": name,
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": load_assignment(&name, socket_address(config.primary_ip(), port)),
            });
            if scheme == ProbeScheme::Https {
                cluster["transport_socket"] = json!({
                    "name": "envoy.transport_sockets.tls",
                    // No validation context: the app's certificate is not verified (as kubelet).
                    "typed_config": { "@type": UPSTREAM_TLS_TYPE },
                });
            }
            cluster
        })
        .collect()
}

/// `app-probe-<port>` or `app-probe-<port>-https`.
pub fn cluster_name(port: u16, scheme: ProbeScheme) -> String {
    match scheme {
        ProbeScheme::Http => format!("app-probe-{port}"),
        ProbeScheme::Https => format!("app-probe-{port}-https"),
    }
}

fn probe_route(ip: IpAddr, sidecar_path: &str, probe: &AppProbe) -> Value {
    let is_host = |name: &str| name.eq_ignore_ascii_case("host");
    let host = match probe.headers.iter().find(|h| is_host(&h.name)) {
        Some(header) => header.value.clone(),
        None => match &probe.host {
            Some(host) => format!("{host}:{}", probe.port),
            None => SocketAddr::new(ip, probe.port).to_string(),
        },
    };
    let mut route = json!({
        "match": { "path": sidecar_path },
        "route": {
            "cluster": cluster_name(probe.port, probe.scheme),
            "prefix_rewrite": probe.path,
            "host_rewrite_literal": host,
        },
    });
    let headers: Vec<Value> = probe
        .headers
        .iter()
        .filter(|h| !is_host(&h.name))
        .map(|h| {
            json!({
                "header": { "key": h.name.to_ascii_lowercase(), "value": h.value },
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            })
        })
        .collect();
    if !headers.is_empty() {
        route["request_headers_to_add"] = headers.into();
    }
    route
}

/// Checks the probes a bootstrap replays: sidecar paths under `/app-health/`, absolute
/// original paths, non-zero ports, header names and values Envoy accepts.
pub(crate) fn validate(probes: &AppProbes) -> Result<(), BootstrapError> {
    for (path, probe) in probes {
        let bad = |reason: String| Err(BootstrapError::InvalidAppProbe { path: path.clone(), reason });
        let printable = |s: &str| s.chars().all(|c| !c.is_control());
        if !path.starts_with(APP_HEALTH_PREFIX) || path.len() == APP_HEALTH_PREFIX.len() || !printable(path) {
            return bad(format!("the sidecar path must start with {APP_HEALTH_PREFIX:?}"));
        }
        if probe.port == 0 {
            return bad("port 0 is not a port".into());
        }
        if !probe.path.starts_with('/') || !printable(&probe.path) || probe.path.contains(' ') {
            return bad(format!("the app's path {:?} must start with '/' and have no spaces", probe.path));
        }
        if let Some(host) = &probe.host {
            if host.is_empty() || !printable(host) || host.contains(['/', ' ']) {
                return bad(format!("invalid host {host:?}"));
            }
        }
        for header in &probe.headers {
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if header.name.is_empty() || !header.name.chars().all(token) {
                return bad(format!("invalid header name {:?}", header.name));
            }
            if !printable(&header.value) {
                return bad(format!("header {:?} has a control character in its value", header.name));
            }
        }
    }
    Ok(())
}
