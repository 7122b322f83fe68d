//! A VirtualService's `tcp` and `tls` rules, checked as Istio's validation checks them
//! (`validateTCPRoute`, `validateTLSRoute`): tls rules need matches and SNI hosts
//! within the VirtualService's hosts; both need a route with sound weights.

use serde::Deserialize;

use super::virtual_service::{route_destinations, RouteDestinationSpec};
use super::*;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct L4RouteSpec {
    #[serde(rename = "match", default)]
    matches: Vec<L4MatchSpec>,
    #[serde(default)]
    route: Vec<RouteDestinationSpec>,
}

/// `sourceLabels` and `sourceNamespace` are refused by the schema (istio_api.rs),
/// `sourceSubnet` only warned about: Istio does not evaluate it either.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct L4MatchSpec {
    #[serde(default)]
    sni_hosts: Vec<String>,
    #[serde(default)]
    destination_subnets: Vec<String>,
    port: Option<i64>,
    #[serde(default)]
    gateways: Vec<String>,
}

pub(super) fn parse_tcp(cx: &mut Context<'_>, specs: &[L4RouteSpec]) -> Result<Vec<L4Route>, Diagnostic> {
    let mut out = Vec::new();
    for (i, r) in specs.iter().enumerate() {
        let field = format!("spec.tcp[{i}]");
        let mut matches = Vec::new();
        for (j, m) in r.matches.iter().enumerate() {
            matches.push(l4_match(cx, &format!("{field}.match[{j}]"), m)?);
        }
        out.push(L4Route { matches, route: route_destinations(cx, &field, &r.route)? });
    }
    Ok(out)
}

pub(super) fn parse_tls(
    cx: &mut Context<'_>,
    specs: &[L4RouteSpec],
    hosts: &[String],
) -> Result<Vec<L4Route>, Diagnostic> {
    let mut out = Vec::new();
    for (i, r) in specs.iter().enumerate() {
        let field = format!("spec.tls[{i}]");
        if r.matches.is_empty() {
            return Err(cx.error(&format!("{field}.match"), "a tls rule needs at least one match (with sniHosts)"));
        }
        let mut matches = Vec::new();
        for (j, m) in r.matches.iter().enumerate() {
            let mf = format!("{field}.match[{j}]");
            if m.sni_hosts.is_empty() {
                return Err(cx.error(&format!("{mf}.sniHosts"), "at least one SNI host is required"));
            }
            for (k, sni) in m.sni_hosts.iter().enumerate() {
                sni_host(cx, &format!("{mf}.sniHosts[{k}]"), sni, hosts)?;
            }
            matches.push(l4_match(cx, &mf, m)?);
        }
        out.push(L4Route { matches, route: route_destinations(cx, &field, &r.route)? });
    }
    Ok(out)
}

fn l4_match(cx: &mut Context<'_>, field: &str, m: &L4MatchSpec) -> Result<L4Match, Diagnostic> {
    let mut destination_subnets = Vec::new();
    for (k, subnet) in m.destination_subnets.iter().enumerate() {
        let cidr = Cidr::parse(subnet).ok_or_else(|| {
            cx.error(
                &format!("{field}.destinationSubnets[{k}]"),
                format!("{subnet:?} is not an IP address or CIDR range"),
            )
        })?;
        destination_subnets.push(cidr);
    }
    let port = match m.port {
        Some(p) => Some(check_port(cx, &format!("{field}.port"), p)?),
        None => None,
    };
    for (k, g) in m.gateways.iter().enumerate() {
        if g.is_empty() {
            return Err(cx.error(&format!("{field}.gateways[{k}]"), "must not be empty"));
        }
    }
    Ok(L4Match { sni_hosts: m.sni_hosts.clone(), destination_subnets, port, gateways: m.gateways.clone() })
}

/// An SNI host: a DNS name, `*.` and a DNS name, or `*`; and, as Istio requires, within
/// one of the VirtualService's hosts.
fn sni_host(cx: &Context<'_>, field: &str, sni: &str, hosts: &[String]) -> Result<(), Diagnostic> {
    let name = sni.strip_prefix("*.").unwrap_or(sni);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if sni != "*" && (name.len() > 253 || !name.split('.').all(label_ok)) {
        return Err(
            cx.error(field, format!("{sni:?} is not a DNS name (a `*.` prefix or a lone `*` may stand for any)"))
        );
    }
    if hosts.iter().any(|h| crate::model::l4_route::sni_within(sni, h)) {
        return Ok(());
    }
    Err(cx.error(
        field,
        format!("the SNI host {sni:?} is not within any of the VirtualService's hosts ({})", hosts.join(", ")),
    ))
}
