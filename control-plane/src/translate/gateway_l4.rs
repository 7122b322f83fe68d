//! Gateway servers that do not speak HTTP: TLS passed through by SNI (`tls.mode:
//! PASSTHROUGH`, protocol `TLS` or `HTTPS`) and opaque TCP (`TCP`, `MONGO`), routed by
//! the `tls` and `tcp` rules of the VirtualServices bound to the Gateway.
//!
//! Rules it keeps (Istio's, `buildGatewayNetworkFiltersFromTCPRoutes` and
//! `...FromTLSRoutes`):
//! - a VirtualService applies when it names the Gateway in `gateways` and one of its
//!   hosts meets one of the server's hosts (`namespace/host` entries limit the rule's
//!   namespace, as for HTTP);
//! - a match applies when its `gateways` are unset (the VirtualService's) or name this
//!   Gateway, and its `port` is unset or the server's;
//! - tls: each applying match is a filter chain on its SNI hosts, narrowed to the
//!   server's hosts (`*.example.com` within `*`); an SNI an earlier chain holds (of this
//!   server or another on the port) stays with it; a connection whose SNI no chain names
//!   is closed; a server no rule routes is reported and left out;
//! - tcp: the first rule with an applying match (or without matches) takes every
//!   connection to the port; a server no rule takes is reported and left out.

use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy;

use super::gateway::{intersect, split_server_host};
use super::l4_routes::{proxy_filter, weighted_clusters, weighted_specifier};
use super::{ModelLookup, Problems};
use crate::model::index::Index;
use crate::model::{resolve_host, Gateway, GatewayServer, L4Match, L4Route, VirtualService};

/// Whether `vs` names the Gateway `gw` in `gateways` (the name alone means the rule's
/// namespace).
pub(crate) fn binds(gateways: &[String], vs_namespace: &str, gw: &Gateway) -> bool {
    gateways.iter().any(|g| match g.split_once('/') {
        Some((ns, n)) => ns == gw.namespace && n == gw.name,
        None => vs_namespace == gw.namespace && g == &gw.name,
    })
}

/// Whether match `m` of a rule of `vs` applies to `server` of `gw`.
fn match_applies(m: &L4Match, vs: &VirtualService, gw: &Gateway, server: &GatewayServer) -> bool {
    let bound = if m.gateways.is_empty() { true } else { binds(&m.gateways, &vs.namespace, gw) };
    bound && m.port.is_none_or(|p| p == server.port)
}

/// The server hosts `vs`'s hosts meet (the narrower of each pair): the domains of its
/// virtual hosts on an HTTP server, the SNI names it may route on a TLS one.
pub(crate) fn bound_names(vs: &VirtualService, gw: &Gateway, server: &GatewayServer) -> Vec<String> {
    let mut names = Vec::new();
    for h in &vs.hosts {
        let host = resolve_host(h, &vs.namespace);
        for entry in &server.hosts {
            let (ns, server_host) = split_server_host(entry, &gw.namespace);
            if ns != "*" && ns != vs.namespace {
                continue;
            }
            if let Some(name) = intersect(server_host, &host) {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// The VirtualServices bound to `gw` whose hosts meet `server`'s, in precedence order
/// (namespace/name), with the names they meet.
fn bound_rules<'a>(model: &'a Index, gw: &Gateway, server: &GatewayServer) -> Vec<(&'a VirtualService, Vec<String>)> {
    model
        .virtual_services
        .values()
        .filter(|vs| binds(&vs.gateways, &vs.namespace, gw))
        .map(|vs| (&**vs, bound_names(vs, gw, server)))
        .filter(|(_, names)| !names.is_empty())
        .collect()
}

/// A filter chain proxying to `rule`'s destinations; None when a destination's port
/// cannot be chosen (reported).
fn proxy_chain(
    model: &Index,
    lookup: &ModelLookup<'_>,
    vs: &VirtualService,
    (rule, field): (&L4Route, &str),
    port: u16,
    problems: &mut Problems,
) -> Option<FilterChain> {
    let weighted = weighted_clusters(model, lookup, vs, rule, field, port, problems)?;
    let filter = match weighted.as_slice() {
        [] => {
            problems.warn_vs(
                vs,
                &format!("{field}.route"),
                "every destination has weight 0; the rule is left out".to_owned(),
            );
            return None;
        }
        [(cluster, _)] => proxy_filter(cluster, tcp_proxy::ClusterSpecifier::Cluster(cluster.clone())),
        _ => proxy_filter(&format!("{}.{}", vs.namespace, vs.name), weighted_specifier(weighted)),
    };
    Some(FilterChain {
        name: format!("{}/{}|{field}", vs.namespace, vs.name),
        filters: vec![filter],
        ..Default::default()
    })
}

/// The filter chains of a PASSTHROUGH server: one per applying tls match, on the SNI
/// names it shares with the server, each name once.
pub(crate) fn passthrough_chains(
    model: &Index,
    lookup: &ModelLookup<'_>,
    gw: &Gateway,
    (server, server_field): (&GatewayServer, &str),
    problems: &mut Problems,
) -> Vec<FilterChain> {
    let mut chains = Vec::new();
    let mut claimed: Vec<String> = Vec::new();
    for (vs, server_names) in bound_rules(model, gw, server) {
        for (i, rule) in vs.tls.iter().enumerate() {
            for (j, m) in rule.matches.iter().enumerate().filter(|(_, m)| match_applies(m, vs, gw, server)) {
                let mut names = Vec::new();
                for sni in &m.sni_hosts {
                    for server_name in &server_names {
                        if let Some(name) = intersect(server_name, sni) {
                            if !claimed.iter().any(|c| c == name) && !names.iter().any(|n| n == name) {
                                names.push(name.to_owned());
                            }
                        }
                    }
                }
                if names.is_empty() {
                    continue;
                }
                let field = format!("spec.tls[{i}]");
                let Some(mut chain) = proxy_chain(model, lookup, vs, (rule, &field), server.port, problems) else {
                    continue;
                };
                chain.name = format!("{}.match[{j}]", chain.name);
                // `*` (any name) is a chain without SNI condition.
                let any = names.iter().any(|n| n == "*");
                chain.filter_chain_match =
                    (!any).then(|| FilterChainMatch { server_names: names.clone(), ..Default::default() });
                claimed.extend(names);
                chains.push(chain);
            }
        }
    }
    if chains.is_empty() {
        problems.report(
            "Gateway",
            &gw.namespace,
            &gw.name,
            &format!("{server_field}.hosts"),
            format!(
                "no VirtualService bound to this Gateway has a tls rule for these hosts on port {}; the server is \
                 left out",
                server.port
            ),
        );
    }
    chains
}

/// The filter chain of a TCP server: the first applying tcp rule of the first bound
/// VirtualService that has one.
pub(crate) fn tcp_chain(
    model: &Index,
    lookup: &ModelLookup<'_>,
    gw: &Gateway,
    (server, server_field): (&GatewayServer, &str),
    problems: &mut Problems,
) -> Option<FilterChain> {
    for (vs, _) in bound_rules(model, gw, server) {
        let applying =
            vs.tcp.iter().enumerate().find(|(_, rule)| {
                rule.matches.is_empty() || rule.matches.iter().any(|m| match_applies(m, vs, gw, server))
            });
        if let Some((i, rule)) = applying {
            let field = format!("spec.tcp[{i}]");
            return proxy_chain(model, lookup, vs, (rule, &field), server.port, problems);
        }
    }
    problems.report(
        "Gateway",
        &gw.namespace,
        &gw.name,
        &format!("{server_field}.hosts"),
        format!(
            "no VirtualService bound to this Gateway has a tcp rule for these hosts on port {}; the server is left out",
            server.port
        ),
    );
    None
}

#[cfg(test)]
#[path = "gateway_l4_tests.rs"]
mod tests;
