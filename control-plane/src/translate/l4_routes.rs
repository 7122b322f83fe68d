//! VirtualService `tcp` and `tls` rules → the hand-off listener of each TCP or TLS
//! service port (`<cluster IP>_<port>`, reached from virtualOutbound under capture).
//!
//! Rules it keeps (Istio's, `buildSidecarOutboundTCPTLSFilterChainOpts`):
//! - tcp rules apply to opaque TCP ports, tls rules to TLS ports (`tls-*`, `https-*`);
//!   the other kind on a port is left alone (and reported).
//! - A match applies to a sidecar when its `port` is the service port (or unset) and its
//!   `gateways` are unset or hold `mesh`.
//! - tcp: rules in order; a rule without matches, or with an applying match without
//!   `destinationSubnets`, takes everything left and ends the list; rules with subnets
//!   only take those. Without such a catch-all, the service's own cluster takes the rest.
//! - tls: each applying match is a filter chain on its SNI hosts (`server_names`, `*`:
//!   any) and subnets; a TLS inspector reads the SNI. Without applying matches, the
//!   service's own cluster takes everything; with some, an SNI nobody matches is closed.
//! - Envoy refuses two filter chains with the same conditions, so a (subnet, SNI) pair
//!   an earlier chain holds is left out of later ones (the first rule wins, as in Istio).
//! - Destinations of weight 0 get nothing; several destinations are weighted clusters.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{
    filter, listener_filter, Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use xds::Resource;

use crate::model::index::Index;
use crate::model::l4_route::sni_within;
use crate::model::{Cidr, L4Route, Protocol, Service, ServicePort, VirtualService};

use super::envoy::{any, socket_address};
use super::routes::destination_cluster;
use super::{cluster_name, ModelLookup, Problems};

/// One filter chain of a hand-off listener, before it is encoded.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Chain<'a> {
    /// Where it comes from: `spec.tcp[0]`, `spec.tls[1].match[0]`; empty for the
    /// service's own chain.
    pub field: String,
    /// The rule's index in `spec.tcp` / `spec.tls`.
    pub rule: usize,
    pub subnets: Vec<Cidr>,
    /// SNI names; empty: any (and no SNI at all).
    pub server_names: Vec<String>,
    /// None: the service's own cluster.
    pub route: Option<&'a L4Route>,
}

impl Chain<'_> {
    fn own() -> Chain<'static> {
        Chain { field: String::new(), rule: 0, subnets: Vec::new(), server_names: Vec::new(), route: None }
    }
}

/// The filter chains tcp `rules` make for service port `port`, in order.
pub(crate) fn tcp_chains(rules: &[L4Route], port: u16) -> Vec<Chain<'_>> {
    let mut out = Vec::new();
    let mut claimed = BTreeSet::new();
    for (i, rule) in rules.iter().enumerate() {
        let applying: Vec<_> = rule.matches.iter().filter(|m| m.applies_to(port)).collect();
        let chain = |subnets| Chain {
            field: format!("spec.tcp[{i}]"),
            rule: i,
            subnets,
            server_names: Vec::new(),
            route: Some(rule),
        };
        if rule.matches.is_empty() || applying.iter().any(|m| m.destination_subnets.is_empty()) {
            out.push(chain(Vec::new()));
            return out;
        }
        let subnets: Vec<Cidr> =
            applying.iter().flat_map(|m| &m.destination_subnets).copied().filter(|c| claimed.insert(*c)).collect();
        if !subnets.is_empty() {
            out.push(chain(subnets));
        }
    }
    out.push(Chain::own());
    out
}

/// The filter chains tls `rules` make for service port `port`, in order.
pub(crate) fn tls_chains(rules: &[L4Route], port: u16) -> Vec<Chain<'_>> {
    let mut out = Vec::new();
    // (subnet, SNI name) pairs taken; None: any.
    let mut claimed: BTreeSet<(Option<Cidr>, Option<&str>)> = BTreeSet::new();
    for (i, rule) in rules.iter().enumerate() {
        for (j, m) in rule.matches.iter().enumerate().filter(|(_, m)| m.applies_to(port)) {
            let names: Vec<Option<&str>> = if m.sni_hosts.iter().any(|h| h == "*") {
                vec![None]
            } else {
                m.sni_hosts.iter().map(|h| Some(h.as_str())).collect()
            };
            let prefixes: Vec<Option<Cidr>> = if m.destination_subnets.is_empty() {
                vec![None]
            } else {
                m.destination_subnets.iter().copied().map(Some).collect()
            };
            for prefix in prefixes {
                let fresh: Vec<Option<&str>> = names.iter().copied().filter(|n| claimed.insert((prefix, *n))).collect();
                if fresh.is_empty() {
                    continue;
                }
                let suffix = prefix.map(|p| format!("#{p}")).unwrap_or_default();
                out.push(Chain {
                    field: format!("spec.tls[{i}].match[{j}]{suffix}"),
                    rule: i,
                    subnets: prefix.into_iter().collect(),
                    server_names: fresh.into_iter().flatten().map(str::to_owned).collect(),
                    route: Some(rule),
                });
            }
        }
    }
    if out.is_empty() {
        out.push(Chain::own());
    }
    out
}

/// The hand-off listener of every TCP and TLS port of a service with a cluster IP,
/// with the rules of the VirtualService that governs its host.
pub(crate) fn listeners(
    model: &Index,
    lookup: &ModelLookup<'_>,
    vs_by_host: &BTreeMap<String, Vec<&VirtualService>>,
    problems: &mut Problems,
) -> Vec<Arc<Resource>> {
    report_rules_without_ports(model, vs_by_host, problems);
    let mut out = Vec::new();
    for service in model.services.values() {
        let Some(ip) = service.cluster_ip else { continue };
        let vs = vs_by_host.get(&service.hostname()).and_then(|vss| l4_rule_owner(vss));
        for sp in service.ports.iter().filter(|p| !p.protocol.is_http()) {
            let listener = hand_off_listener(model, lookup, service, ip, sp, vs, problems);
            out.push(Arc::new(Resource::from_message(listener.name.clone(), &listener)));
        }
    }
    out
}

fn hand_off_listener(
    model: &Index,
    lookup: &ModelLookup<'_>,
    service: &Service,
    ip: IpAddr,
    sp: &ServicePort,
    vs: Option<&VirtualService>,
    problems: &mut Problems,
) -> Listener {
    let name = format!("{ip}_{}", sp.port);
    let own = cluster_name(sp.port, None, &service.hostname());
    let chains = match (vs, sp.protocol) {
        (Some(vs), Protocol::Tls) => tls_chains(&vs.tls, sp.port),
        (Some(vs), _) => tcp_chains(&vs.tcp, sp.port),
        (None, _) => vec![Chain::own()],
    };
    let mut filter_chains = Vec::new();
    for chain in &chains {
        let filter = match (chain.route, vs) {
            (Some(rule), Some(vs)) => {
                let kind = if sp.protocol == Protocol::Tls { "tls" } else { "tcp" };
                let field = format!("spec.{kind}[{}]", chain.rule);
                // A destination whose port cannot be chosen (reported) leaves the chain out.
                let Some(weighted) = weighted_clusters(model, lookup, vs, rule, &field, sp.port, problems) else {
                    continue;
                };
                if weighted.len() == 1 {
                    let cluster = &weighted[0].0;
                    proxy_filter(cluster, tcp_proxy::ClusterSpecifier::Cluster(cluster.clone()))
                } else {
                    proxy_filter(&own, weighted_specifier(weighted))
                }
            }
            _ => proxy_filter(&own, tcp_proxy::ClusterSpecifier::Cluster(own.clone())),
        };
        let chain_name = if chain.field.is_empty() { name.clone() } else { format!("{name}|{}", chain.field) };
        let matched = !chain.subnets.is_empty() || !chain.server_names.is_empty();
        filter_chains.push(FilterChain {
            name: chain_name,
            filter_chain_match: matched.then(|| FilterChainMatch {
                prefix_ranges: chain.subnets.iter().map(cidr_range).collect(),
                server_names: chain.server_names.clone(),
                ..Default::default()
            }),
            filters: vec![filter],
            ..Default::default()
        });
    }
    let by_sni = chains.iter().any(|c| !c.server_names.is_empty());
    Listener {
        name: name.clone(),
        address: Some(socket_address(ip, sp.port)),
        bind_to_port: Some(BoolValue { value: false }),
        listener_filters: if by_sni { vec![tls_inspector()] } else { Vec::new() },
        filter_chains,
        ..Default::default()
    }
}

/// The clusters of `rule`'s destinations with a weight above 0, and their weights;
/// None when a destination's port cannot be chosen.
pub(crate) fn weighted_clusters(
    model: &Index,
    lookup: &ModelLookup<'_>,
    vs: &VirtualService,
    rule: &L4Route,
    field: &str,
    port: u16,
    problems: &mut Problems,
) -> Option<Vec<(String, u32)>> {
    let mut out = Vec::new();
    for (j, d) in rule.route.iter().enumerate() {
        let dfield = format!("{field}.route[{j}].destination");
        let cluster = destination_cluster(model, lookup, vs, &dfield, &d.destination, port, problems)?;
        if d.weight > 0 {
            out.push((cluster, d.weight));
        }
    }
    Some(out)
}

pub(crate) fn weighted_specifier(clusters: Vec<(String, u32)>) -> tcp_proxy::ClusterSpecifier {
    tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
        clusters: clusters
            .into_iter()
            .map(|(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight { name, weight, metadata_match: None })
            .collect(),
    })
}

/// A TCP proxy to the cluster(s) `cluster_specifier` names; stats under `stat_prefix`.
pub(crate) fn proxy_filter(stat_prefix: &str, cluster_specifier: tcp_proxy::ClusterSpecifier) -> Filter {
    let tcp = TcpProxy {
        stat_prefix: stat_prefix.to_owned(),
        cluster_specifier: Some(cluster_specifier),
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(any(tcp))),
    }
}

fn cidr_range(c: &Cidr) -> CidrRange {
    CidrRange {
        address_prefix: c.address.to_string(),
        prefix_len: Some(UInt32Value { value: u32::from(c.prefix_len) }),
    }
}

pub(crate) fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(TlsInspector::default()))),
        ..Default::default()
    }
}

/// The VirtualService whose `tcp` and `tls` rules govern a host: the first, in
/// precedence order, that has any. Hand-off listeners are shared by every proxy, so
/// such rules are exported everywhere (the parser refuses a narrower `exportTo`).
fn l4_rule_owner<'a>(vss: &[&'a VirtualService]) -> Option<&'a VirtualService> {
    vss.iter().copied().find(|vs| !vs.tcp.is_empty() || !vs.tls.is_empty())
}

/// Whether `host` of `vs` is there for its tls rules' SNI hosts (Istio requires each
/// SNI host among the hosts), so it need not be a service.
pub(crate) fn is_sni_host(vs: &VirtualService, host: &str) -> bool {
    vs.tls.iter().flat_map(|r| &r.matches).flat_map(|m| &m.sni_hosts).any(|sni| sni_within(sni, host))
}

/// Reports tcp and tls rules that no port of their hosts takes: tcp rules apply to
/// opaque TCP ports, tls rules to TLS ports.
fn report_rules_without_ports(
    model: &Index,
    vs_by_host: &BTreeMap<String, Vec<&VirtualService>>,
    problems: &mut Problems,
) {
    for (host, vs) in vs_by_host.iter().flat_map(|(host, vss)| vss.iter().map(move |vs| (host, *vs))) {
        let Some(service) = model.service_by_hostname(host) else { continue };
        for (kind, rules, protocol) in [("tcp", &vs.tcp, Protocol::Tcp), ("tls", &vs.tls, Protocol::Tls)] {
            if rules.is_empty() {
                continue;
            }
            if !service.ports.iter().any(|p| p.protocol == protocol) {
                problems.warn_vs(
                    vs,
                    &format!("spec.{kind}"),
                    format!(
                        "service {host} has no {} port, which {kind} rules apply to; they have no effect for it",
                        protocol_name(protocol)
                    ),
                );
                continue;
            }
            for (i, rule) in rules.iter().enumerate() {
                for (j, m) in rule.matches.iter().enumerate() {
                    let Some(p) = m.port else { continue };
                    let Some(sp) = service.ports.iter().find(|sp| sp.port == p && sp.protocol != protocol) else {
                        continue;
                    };
                    problems.warn_vs(
                        vs,
                        &format!("spec.{kind}[{i}].match[{j}].port"),
                        format!(
                            "port {p} of service {host} is {}; {kind} rules apply to {} ports only, so this match \
                             has no effect there",
                            protocol_name(sp.protocol),
                            protocol_name(protocol)
                        ),
                    );
                }
            }
        }
    }
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Http | Protocol::Http2 => "HTTP",
        Protocol::Tcp => "opaque TCP",
        Protocol::Tls => "TLS",
    }
}

#[cfg(test)]
#[path = "l4_routes_tests.rs"]
mod tests;
