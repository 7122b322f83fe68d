//! Gateway: read and checked as Istio checks it, so a user's YAML loads and its
//! mistakes are reported; reported as not yet in effect. Its port and host checks are
//! shared with ServiceEntry ([`super::service_entry`]).

use serde::Deserialize;

use super::*;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GatewaySpec {
    #[serde(default)]
    servers: Vec<ServerSpec>,
    #[serde(default)]
    selector: Labels,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerSpec {
    port: Option<PortSpec>,
    bind: Option<String>,
    #[serde(default)]
    hosts: Vec<String>,
    tls: Option<ServerTlsSpec>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PortSpec {
    pub number: Option<i64>,
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: String,
    pub target_port: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerTlsSpec {
    #[serde(default)]
    https_redirect: bool,
    mode: Option<String>,
    credential_name: Option<String>,
    #[serde(default)]
    credential_names: Vec<String>,
}

pub(super) fn protocol(cx: &Context<'_>, field: &str, name: &str) -> Result<PortProtocol, Diagnostic> {
    // Istio reads protocol names case-insensitively.
    Ok(match name.to_ascii_uppercase().as_str() {
        "HTTP" => PortProtocol::Http,
        "HTTPS" => PortProtocol::Https,
        "HTTP2" => PortProtocol::Http2,
        "GRPC" => PortProtocol::Grpc,
        "TCP" => PortProtocol::Tcp,
        "TLS" => PortProtocol::Tls,
        "MONGO" => PortProtocol::Mongo,
        _ => return Err(cx.error(field, format!("{name:?} is not one of HTTP, HTTPS, HTTP2, GRPC, TCP, TLS, MONGO"))),
    })
}

fn tls_mode(cx: &Context<'_>, field: &str, mode: Option<&str>) -> Result<ServerTlsMode, Diagnostic> {
    Ok(match mode.unwrap_or("PASSTHROUGH") {
        "PASSTHROUGH" => ServerTlsMode::Passthrough,
        "SIMPLE" => ServerTlsMode::Simple,
        "MUTUAL" => ServerTlsMode::Mutual,
        "AUTO_PASSTHROUGH" => ServerTlsMode::AutoPassthrough,
        "ISTIO_MUTUAL" => ServerTlsMode::IstioMutual,
        "OPTIONAL_MUTUAL" => ServerTlsMode::OptionalMutual,
        other => {
            return Err(cx.error(
                field,
                format!(
                    "{other:?} is not one of PASSTHROUGH, SIMPLE, MUTUAL, AUTO_PASSTHROUGH, ISTIO_MUTUAL, \
                     OPTIONAL_MUTUAL"
                ),
            ))
        }
    })
}

/// A host as a Gateway server lists it: `[namespace/]host`, the namespace `*`, `.`
/// or a name, the host a DNS name with an optional leading `*` label, or `*`.
fn check_server_host(cx: &Context<'_>, field: &str, entry: &str) -> Result<(), Diagnostic> {
    let (namespace, host) = entry.split_once('/').unwrap_or(("*", entry));
    let namespace_ok = matches!(namespace, "*" | ".") || check_dns_label(cx, field, namespace).is_ok();
    if namespace_ok && check_host(host) {
        Ok(())
    } else {
        Err(cx.error(field, format!("{entry:?} is not `namespace/host` with a DNS host name or `*`")))
    }
}

/// A DNS name, optionally starting with a `*` label, or `*` alone.
pub(super) fn check_host(host: &str) -> bool {
    let rest = host.strip_prefix("*.").unwrap_or(host);
    host == "*"
        || (!rest.is_empty()
            && rest.len() <= 253
            && rest.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            }))
}

pub(super) fn port_number(cx: &Context<'_>, field: &str, number: Option<i64>) -> Result<u16, Diagnostic> {
    match number {
        Some(n) => check_port(cx, field, n),
        None => Err(cx.error(field, "required")),
    }
}

pub(super) fn parse_gateway(cx: &mut Context<'_>, namespace: String) -> Result<Gateway, Diagnostic> {
    let spec: GatewaySpec = cx.field("spec")?;
    if spec.servers.is_empty() {
        return Err(cx.error("spec.servers", "at least one server is required"));
    }
    let mut servers = Vec::new();
    for (i, s) in spec.servers.iter().enumerate() {
        let field = format!("spec.servers[{i}]");
        let port = s.port.as_ref().ok_or_else(|| cx.error(&format!("{field}.port"), "required"))?;
        let number = port_number(cx, &format!("{field}.port.number"), port.number)?;
        let protocol = match &port.protocol {
            Some(p) => protocol(cx, &format!("{field}.port.protocol"), p)?,
            None => return Err(cx.error(&format!("{field}.port.protocol"), "required")),
        };
        if port.name.is_empty() {
            return Err(cx.error(&format!("{field}.port.name"), "required"));
        }
        if let Some(t) = port.target_port {
            check_port(cx, &format!("{field}.port.targetPort"), t)?;
        }
        if s.hosts.is_empty() {
            return Err(cx.error(&format!("{field}.hosts"), "at least one host is required"));
        }
        for (j, h) in s.hosts.iter().enumerate() {
            check_server_host(cx, &format!("{field}.hosts[{j}]"), h)?;
        }
        let bind = match s.bind.as_deref() {
            None | Some("") => None,
            Some(b) => Some(parse_ip(cx, &format!("{field}.bind"), b)?),
        };
        let tls = match &s.tls {
            Some(t) => {
                let mode = tls_mode(cx, &format!("{field}.tls.mode"), t.mode.as_deref())?;
                let mut credential_names = t.credential_names.clone();
                credential_names.extend(t.credential_name.iter().filter(|c| !c.is_empty()).cloned());
                Some(ServerTls { mode, https_redirect: t.https_redirect, credential_names })
            }
            None if matches!(protocol, PortProtocol::Https | PortProtocol::Tls) => {
                return Err(cx.error(&format!("{field}.tls"), "required for an HTTPS or TLS server"))
            }
            None => None,
        };
        servers.push(GatewayServer {
            name: s.name.clone(),
            port: number,
            protocol,
            port_name: port.name.clone(),
            hosts: s.hosts.clone(),
            bind,
            tls,
        });
    }
    cx.warn("", "Gateway is read and checked, but not in effect yet: meshd does not configure gateways yet");
    Ok(Gateway { namespace, name: cx.raw.name.clone(), selector: spec.selector, servers })
}
