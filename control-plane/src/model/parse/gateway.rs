//! Gateway: read and checked as Istio checks it, so a user's YAML loads and its
//! mistakes are reported; in effect on gateway proxies (see `translate::gateway`). Its
//! port and host checks are shared with ServiceEntry ([`super::service_entry`]).

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
    server_certificate: Option<String>,
    private_key: Option<String>,
    ca_certificates: Option<String>,
    min_protocol_version: Option<String>,
    max_protocol_version: Option<String>,
}

/// Istio's `TLSProtocol`: the TLS 1.x minor version, `None` for `TLS_AUTO`.
fn tls_version(cx: &Context<'_>, field: &str, value: Option<&str>) -> Result<Option<u8>, Diagnostic> {
    Ok(match value {
        None | Some("TLS_AUTO") => None,
        Some("TLSV1_0") => Some(0),
        Some("TLSV1_1") => Some(1),
        Some("TLSV1_2") => Some(2),
        Some("TLSV1_3") => Some(3),
        Some(other) => {
            return Err(cx.error(field, format!("{other:?} is not one of TLS_AUTO, TLSV1_0, TLSV1_1, TLSV1_2, TLSV1_3")))
        }
    })
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

/// A server's `tls`: the mode (Istio's default PASSTHROUGH), and for SIMPLE and MUTUAL
/// a certificate (`credentialName(s)` or `serverCertificate` + `privateKey`).
fn server_tls(
    cx: &Context<'_>,
    field: &str,
    t: &ServerTlsSpec,
    protocol: PortProtocol,
) -> Result<ServerTls, Diagnostic> {
    let mode = tls_mode(cx, &format!("{field}.mode"), t.mode.as_deref())?;
    let mut credential_names: Vec<String> = t.credential_name.iter().filter(|c| !c.is_empty()).cloned().collect();
    credential_names.extend(t.credential_names.iter().cloned());
    for (i, name) in credential_names.iter().enumerate() {
        let f = if t.credential_name.as_deref().is_some_and(|c| !c.is_empty()) && i == 0 {
            format!("{field}.credentialName")
        } else {
            format!("{field}.credentialNames")
        };
        check_dns_subdomain(cx, &f, name)?;
    }
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let cert_files = match (nonempty(&t.server_certificate), nonempty(&t.private_key)) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => return Err(cx.error(&format!("{field}.privateKey"), "required with serverCertificate")),
        (None, Some(_)) => return Err(cx.error(&format!("{field}.serverCertificate"), "required with privateKey")),
    };
    let terminates =
        matches!(protocol, PortProtocol::Https) && matches!(mode, ServerTlsMode::Simple | ServerTlsMode::Mutual);
    if terminates && credential_names.is_empty() && cert_files.is_none() {
        return Err(cx.error(
            field,
            format!("mode {mode:?} needs a certificate: credentialName (a kubernetes.io/tls Secret) or serverCertificate and privateKey"),
        ));
    }
    if !credential_names.is_empty() && cert_files.is_some() {
        return Err(cx.error(
            &format!("{field}.serverCertificate"),
            "give either credentialName(s) or serverCertificate, not both",
        ));
    }
    let min_version = tls_version(cx, &format!("{field}.minProtocolVersion"), t.min_protocol_version.as_deref())?;
    let max_version = tls_version(cx, &format!("{field}.maxProtocolVersion"), t.max_protocol_version.as_deref())?;
    if let (Some(min), Some(max)) = (min_version, max_version) {
        if min > max {
            return Err(cx.error(&format!("{field}.maxProtocolVersion"), "lower than minProtocolVersion"));
        }
    }
    Ok(ServerTls {
        mode,
        https_redirect: t.https_redirect,
        credential_names,
        cert_files,
        ca_file: nonempty(&t.ca_certificates),
        min_version,
        max_version,
    })
}

/// Why meshd cannot serve a server of this protocol and TLS mode, if it cannot.
fn left_out(protocol: PortProtocol, tls: Option<&ServerTls>) -> Option<String> {
    let mode = tls.map(|t| t.mode);
    match protocol {
        PortProtocol::Http | PortProtocol::Http2 | PortProtocol::Grpc => None,
        PortProtocol::Https | PortProtocol::Tls => match mode {
            Some(ServerTlsMode::Passthrough) => None,
            Some(ServerTlsMode::Simple | ServerTlsMode::Mutual) if protocol == PortProtocol::Https => None,
            Some(ServerTlsMode::Simple | ServerTlsMode::Mutual) => Some(
                "protocol TLS with tls.mode SIMPLE or MUTUAL (TLS terminated, then TCP routes) is not supported by \
                 meshd yet; use HTTPS to terminate HTTP, or PASSTHROUGH"
                    .to_owned(),
            ),
            Some(mode) => Some(format!(
                "tls.mode {mode:?} (SNI-named mesh clusters, Istio mTLS) is not supported by meshd yet: it needs mesh \
                 mTLS"
            )),
            None => Some(format!("{protocol:?} needs tls")),
        },
        PortProtocol::Tcp | PortProtocol::Mongo => None,
    }
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
    let mut servers: Vec<GatewayServer> = Vec::new();
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
            Some(t) => Some(server_tls(cx, &format!("{field}.tls"), t, protocol)?),
            None if matches!(protocol, PortProtocol::Https | PortProtocol::Tls) => {
                return Err(cx.error(&format!("{field}.tls"), "required for an HTTPS or TLS server"))
            }
            None => None,
        };
        if let Some(why) = left_out(protocol, tls.as_ref()) {
            cx.warn(&field, format!("{why}; meshd leaves this server out (the Gateway's other servers are served)"));
        }
        let plain = |p: PortProtocol| matches!(p, PortProtocol::Http | PortProtocol::Http2 | PortProtocol::Grpc);
        if let Some((j, other)) = servers
            .iter()
            .enumerate()
            .find(|(_, o)| o.port == number && o.bind == bind && plain(o.protocol) != plain(protocol))
        {
            return Err(cx.error(
                &format!("{field}.port.protocol"),
                format!(
                    "port {number} is also spec.servers[{j}]'s, with protocol {:?}: one port serves plain HTTP or TLS, \
                     not both",
                    other.protocol
                ),
            ));
        }
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
    Ok(Gateway { namespace, name: cx.raw.name.clone(), selector: spec.selector, servers })
}
