//! ServiceEntry: hosts added to the mesh registry, checked as Istio checks them
//! (`ValidateServiceEntry`): an endpoint's address must suit the resolution, NONE takes
//! no endpoints, DNS without endpoints needs hosts that are names (no wildcard), and
//! DNS_ROUND_ROBIN takes at most one endpoint. Each refusal names the field.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::gateway::{check_host, port_number, protocol, PortSpec};
use super::*;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ServiceEntrySpec {
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    ports: Vec<PortSpec>,
    location: Option<String>,
    resolution: Option<String>,
    #[serde(default)]
    endpoints: Vec<WorkloadEntrySpec>,
    workload_selector: Option<WorkloadSelectorSpec>,
    #[serde(default)]
    export_to: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkloadEntrySpec {
    address: Option<String>,
    #[serde(default)]
    ports: BTreeMap<String, i64>,
    #[serde(default)]
    labels: Labels,
    weight: Option<i64>,
    #[serde(default)]
    locality: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkloadSelectorSpec {
    #[serde(default)]
    labels: Labels,
}

/// An IP address or a CIDR range.
fn check_address(cx: &Context<'_>, field: &str, address: &str) -> Result<(), Diagnostic> {
    let (ip, prefix) = address.split_once('/').unwrap_or((address, ""));
    let ip = parse_ip(cx, field, ip)?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix.is_empty() || prefix.parse::<u8>().is_ok_and(|p| p <= max) {
        Ok(())
    } else {
        Err(cx.error(field, format!("{address:?} is not an IP address or CIDR range")))
    }
}

fn mesh_protocol(declared: Option<PortProtocol>, name: &str) -> Protocol {
    match declared {
        Some(PortProtocol::Http) => Protocol::Http,
        Some(PortProtocol::Http2 | PortProtocol::Grpc) => Protocol::Http2,
        Some(PortProtocol::Https | PortProtocol::Tls | PortProtocol::Tcp | PortProtocol::Mongo) => Protocol::Tcp,
        None => super::kube::port_protocol(name, None),
    }
}

fn parse_ports(cx: &Context<'_>, specs: &[PortSpec]) -> Result<Vec<ServiceEntryPort>, Diagnostic> {
    let mut ports: Vec<ServiceEntryPort> = Vec::new();
    for (i, p) in specs.iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        let number = port_number(cx, &format!("{field}.number"), p.number)?;
        if ports.iter().any(|q| q.number == number) {
            return Err(cx.error(&format!("{field}.number"), format!("port {number} is listed twice")));
        }
        if p.name.is_empty() {
            return Err(cx.error(&format!("{field}.name"), "required"));
        }
        if ports.iter().any(|q| q.name == p.name) {
            return Err(cx.error(&format!("{field}.name"), format!("port name {:?} is listed twice", p.name)));
        }
        let protocol = match &p.protocol {
            Some(name) => Some(protocol(cx, &format!("{field}.protocol"), name)?),
            None => None,
        };
        let target_port = match p.target_port {
            Some(t) => Some(check_port(cx, &format!("{field}.targetPort"), t)?),
            None => None,
        };
        let mesh_protocol = mesh_protocol(protocol, &p.name);
        ports.push(ServiceEntryPort { number, protocol, name: p.name.clone(), target_port, mesh_protocol });
    }
    Ok(ports)
}

fn parse_resolution(cx: &Context<'_>, resolution: Option<&str>) -> Result<Resolution, Diagnostic> {
    Ok(match resolution {
        None | Some("NONE") => Resolution::None,
        Some("STATIC") => Resolution::Static,
        Some("DNS") => Resolution::Dns,
        Some("DNS_ROUND_ROBIN") => Resolution::DnsRoundRobin,
        Some("DYNAMIC_DNS") => {
            return Err(cx.error(
                "spec.resolution",
                "DYNAMIC_DNS (resolving each wildcard host on demand) is not supported by meshd yet",
            ))
        }
        Some(other) => {
            return Err(
                cx.error("spec.resolution", format!("{other:?} is not one of NONE, STATIC, DNS, DNS_ROUND_ROBIN"))
            )
        }
    })
}

/// One endpoint, its address checked against `resolution`: an IP (or `unix://` path)
/// for STATIC, an IP or a DNS name for DNS and DNS_ROUND_ROBIN.
fn parse_endpoint(
    cx: &Context<'_>,
    field: &str,
    e: &WorkloadEntrySpec,
    resolution: Resolution,
    ports: &[ServiceEntryPort],
) -> Result<ServiceEntryEndpoint, Diagnostic> {
    let address = e.address.clone().unwrap_or_default();
    if address.is_empty() {
        return Err(cx.error(&format!("{field}.address"), "required"));
    }
    if address.starts_with("unix://") {
        return Err(
            cx.error(&format!("{field}.address"), "unix domain socket endpoints are not supported by meshd yet")
        );
    }
    let is_ip = address.parse::<IpAddr>().is_ok();
    match resolution {
        Resolution::Static if !is_ip => {
            return Err(cx.error(
                &format!("{field}.address"),
                format!("{address:?} is not an IP address (resolution STATIC needs endpoint IPs; use DNS for names)"),
            ))
        }
        Resolution::Dns | Resolution::DnsRoundRobin if !is_ip && (!check_host(&address) || address.contains('*')) => {
            return Err(cx.error(&format!("{field}.address"), format!("{address:?} is not an IP address or a DNS name")))
        }
        _ => {}
    }
    let mut endpoint_ports = BTreeMap::new();
    for (name, n) in &e.ports {
        if !ports.iter().any(|p| &p.name == name) {
            return Err(cx.error(
                &format!("{field}.ports.{name}"),
                format!("the entry has no port named {name:?} (spec.ports[].name)"),
            ));
        }
        endpoint_ports.insert(name.clone(), check_port(cx, &format!("{field}.ports.{name}"), *n)?);
    }
    let weight = match e.weight {
        None => None,
        Some(w) => Some(
            u32::try_from(w)
                .map_err(|_| cx.error(&format!("{field}.weight"), format!("weight {w} must not be negative")))?,
        ),
    };
    let locality = crate::model::locality::Locality::parse(&e.locality)
        .map_err(|err| cx.error(&format!("{field}.locality"), err.to_string()))?;
    Ok(ServiceEntryEndpoint { address, ports: endpoint_ports, labels: e.labels.clone(), weight, locality })
}

/// Istio's rules tying the resolution to the endpoints and hosts.
fn check_resolution(cx: &mut Context<'_>, spec: &ServiceEntrySpec, resolution: Resolution) -> Result<(), Diagnostic> {
    let has_endpoints = !spec.endpoints.is_empty() || spec.workload_selector.is_some();
    match resolution {
        Resolution::None if !spec.endpoints.is_empty() => Err(cx.error(
            "spec.endpoints",
            "resolution NONE takes no endpoints (traffic goes to where the app connected); use STATIC or DNS",
        )),
        Resolution::Dns | Resolution::DnsRoundRobin if !has_endpoints => {
            match spec.hosts.iter().position(|h| h.contains('*')) {
                Some(i) => Err(cx.error(
                    &format!("spec.hosts[{i}]"),
                    format!(
                        "{:?} is a wildcard: with resolution {} and no endpoints the hosts are resolved, so they \
                         must be names",
                        spec.hosts[i],
                        spec.resolution.as_deref().unwrap_or_default()
                    ),
                )),
                None => Ok(()),
            }
        }
        Resolution::DnsRoundRobin if spec.endpoints.len() > 1 => {
            Err(cx.error("spec.endpoints", "resolution DNS_ROUND_ROBIN takes at most one endpoint"))
        }
        Resolution::Static if !has_endpoints => {
            cx.warn("spec.endpoints", "resolution STATIC with no endpoints: requests to the entry's hosts fail (503)");
            Ok(())
        }
        _ => Ok(()),
    }
}

pub(super) fn parse_service_entry(cx: &mut Context<'_>, namespace: String) -> Result<ServiceEntry, Diagnostic> {
    let spec: ServiceEntrySpec = cx.field("spec")?;
    if spec.hosts.is_empty() {
        return Err(cx.error("spec.hosts", "at least one host is required"));
    }
    if !spec.export_to.iter().all(|e| e == "*") {
        // The entry's hosts, clusters and routes are every proxy's; a narrower export
        // would make them reachable from namespaces the rule keeps them from.
        return Err(cx.error(
            "spec.exportTo",
            "exportTo other than \"*\" on a ServiceEntry is not supported by meshd yet: every proxy would see the \
             entry; the object is refused",
        ));
    }
    for (i, h) in spec.hosts.iter().enumerate() {
        if !check_host(h) || h == "*" {
            return Err(cx.error(&format!("spec.hosts[{i}]"), format!("{h:?} is not a DNS host name")));
        }
    }
    for (i, a) in spec.addresses.iter().enumerate() {
        check_address(cx, &format!("spec.addresses[{i}]"), a)?;
    }
    let ports = parse_ports(cx, &spec.ports)?;
    if ports.is_empty() {
        cx.warn("spec.ports", "no ports: the entry adds nothing to the mesh");
    }
    let mesh_internal = match spec.location.as_deref() {
        None | Some("MESH_EXTERNAL") => false,
        Some("MESH_INTERNAL") => true,
        Some(other) => {
            return Err(cx.error("spec.location", format!("{other:?} is not one of MESH_EXTERNAL, MESH_INTERNAL")))
        }
    };
    let resolution = parse_resolution(cx, spec.resolution.as_deref())?;
    if !spec.endpoints.is_empty() && spec.workload_selector.is_some() {
        return Err(cx.error("spec.workloadSelector", "give either endpoints or a workloadSelector, not both"));
    }
    if spec.workload_selector.is_some() && resolution != Resolution::Static {
        return Err(cx.error("spec.workloadSelector", "a workloadSelector needs resolution STATIC (the pods' IPs)"));
    }
    check_resolution(cx, &spec, resolution)?;
    let mut endpoints = Vec::new();
    for (i, e) in spec.endpoints.iter().enumerate() {
        endpoints.push(parse_endpoint(cx, &format!("spec.endpoints[{i}]"), e, resolution, &ports)?);
    }
    Ok(ServiceEntry {
        namespace,
        name: cx.raw.name.clone(),
        hosts: spec.hosts,
        addresses: spec.addresses,
        ports,
        mesh_internal,
        resolution,
        endpoints,
        workload_selector: spec.workload_selector.map(|w| w.labels),
    })
}
