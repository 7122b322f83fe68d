//! The readable tables of `meshctl proxy-config`: Envoy resources decoded with
//! envoy-types and summed up in the columns an operator looks for. Pure functions of
//! the decoded resources.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, HealthStatus};
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment, LbEndpoint};
use envoy_types::pb::envoy::config::listener::v3::{filter, FilterChain, FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, route, route_action, route_match, HeaderMatcher, Route, RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use crate::output::Table;

/// Decodes an `Any` of type `M`; `None` for another type or bytes that do not decode.
pub fn unpack<M: Message + Name + Default>(any: &Any) -> Option<M> {
    (any.type_url == M::type_url()).then(|| M::decode(any.value.as_slice()).ok()).flatten()
}

/// Endpoint counts of one assignment: all, and those Envoy sends traffic to (HEALTHY,
/// or UNKNOWN: no health checking says otherwise).
fn endpoint_counts(cla: &ClusterLoadAssignment) -> (usize, usize) {
    let all: Vec<&LbEndpoint> = cla.endpoints.iter().flat_map(|l| &l.lb_endpoints).collect();
    let serving = all
        .iter()
        .filter(|e| {
            matches!(HealthStatus::try_from(e.health_status), Ok(HealthStatus::Healthy | HealthStatus::Unknown))
        })
        .count();
    (all.len(), serving)
}

fn discovery_type(c: &Cluster) -> String {
    match &c.cluster_discovery_type {
        Some(cluster::ClusterDiscoveryType::Type(t)) => {
            cluster::DiscoveryType::try_from(*t).map_or_else(|_| t.to_string(), |t| t.as_str_name().to_owned())
        }
        Some(cluster::ClusterDiscoveryType::ClusterType(custom)) => custom.name.clone(),
        None => "STATIC".to_owned(),
    }
}

/// The ClusterLoadAssignment an EDS cluster waits for.
fn eds_name(c: &Cluster) -> &str {
    match &c.eds_cluster_config {
        Some(eds) if !eds.service_name.is_empty() => &eds.service_name,
        _ => &c.name,
    }
}

/// Clusters with their endpoint counts: from EDS for EDS clusters, from the inline
/// assignment otherwise ("-" when meshd sent none).
pub fn clusters(clusters: &[Cluster], assignments: &[ClusterLoadAssignment]) -> Table {
    let by_name: BTreeMap<&str, &ClusterLoadAssignment> =
        assignments.iter().map(|a| (a.cluster_name.as_str(), a)).collect();
    let mut table = Table::new(&["NAME", "TYPE", "ENDPOINTS", "HEALTHY"]);
    for c in clusters {
        let kind = discovery_type(c);
        let cla = if kind == "EDS" { by_name.get(eds_name(c)).copied() } else { c.load_assignment.as_ref() };
        let (all, serving) = match cla.map(endpoint_counts) {
            Some((all, serving)) => (all.to_string(), serving.to_string()),
            None if kind == "EDS" => ("not sent".to_owned(), "-".to_owned()),
            None => ("-".to_owned(), "-".to_owned()),
        };
        table.row(vec![c.name.clone(), kind, all, serving]);
    }
    table
}

fn socket(address: Option<&Address>) -> (String, String) {
    match address.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(s)) => {
            let port = match s.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => p.to_string(),
                Some(socket_address::PortSpecifier::NamedPort(ref n)) => n.clone(),
                None => "-".to_owned(),
            };
            (s.address.clone(), port)
        }
        Some(address::Address::Pipe(p)) => (format!("unix:{}", p.path), "-".to_owned()),
        Some(address::Address::EnvoyInternalAddress(_)) => ("internal".to_owned(), "-".to_owned()),
        None => ("-".to_owned(), "-".to_owned()),
    }
}

/// What a filter chain matches, in short: "ALL" when it matches every connection.
fn chain_match(m: Option<&FilterChainMatch>) -> String {
    let Some(m) = m else { return "ALL".to_owned() };
    let mut parts = Vec::new();
    if let Some(port) = &m.destination_port {
        parts.push(format!("port {}", port.value));
    }
    if !m.prefix_ranges.is_empty() {
        let ranges: Vec<String> = m
            .prefix_ranges
            .iter()
            .map(|r| format!("{}/{}", r.address_prefix, r.prefix_len.as_ref().map_or(32, |l| l.value)))
            .collect();
        parts.push(format!("to {}", ranges.join(",")));
    }
    if !m.transport_protocol.is_empty() {
        parts.push(m.transport_protocol.clone());
    }
    if !m.application_protocols.is_empty() {
        parts.push(m.application_protocols.join(","));
    }
    if !m.server_names.is_empty() {
        parts.push(format!("sni {}", m.server_names.join(",")));
    }
    if parts.is_empty() {
        "ALL".to_owned()
    } else {
        parts.join("; ")
    }
}

fn weights<'a>(pairs: impl Iterator<Item = (&'a str, u32)>) -> String {
    pairs.map(|(name, weight)| format!("{name} {weight}")).collect::<Vec<_>>().join(", ")
}

/// Where a filter chain sends what it accepts.
fn chain_destination(chain: &FilterChain) -> String {
    let mut out = Vec::new();
    for f in &chain.filters {
        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            out.push(f.name.clone());
            continue;
        };
        if let Some(hcm) = unpack::<HttpConnectionManager>(any) {
            out.push(match hcm.route_specifier {
                Some(http_connection_manager::RouteSpecifier::Rds(rds)) => format!("Route: {}", rds.route_config_name),
                Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) => {
                    format!("Inline route: {}", rc.name)
                }
                _ => "HTTP".to_owned(),
            });
        } else if let Some(tcp) = unpack::<TcpProxy>(any) {
            out.push(match tcp.cluster_specifier {
                Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => format!("Cluster: {c}"),
                Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
                    format!("Clusters: {}", weights(w.clusters.iter().map(|c| (c.name.as_str(), c.weight))))
                }
                None => "TCP".to_owned(),
            });
        } else {
            out.push(f.name.clone());
        }
    }
    if out.is_empty() {
        "-".to_owned()
    } else {
        out.join(", ")
    }
}

/// Listeners, one row per filter chain (and one for the default chain).
pub fn listeners(listeners: &[Listener]) -> Table {
    let mut table = Table::new(&["NAME", "ADDRESS", "PORT", "MATCH", "DESTINATION"]);
    for l in listeners {
        let (address, port) = socket(l.address.as_ref());
        let chains = l.filter_chains.iter().map(|c| (chain_match(c.filter_chain_match.as_ref()), c));
        let default = l.default_filter_chain.as_ref().map(|c| ("default chain".to_owned(), c));
        let mut any = false;
        for (matched, chain) in chains.chain(default) {
            any = true;
            table.row(vec![l.name.clone(), address.clone(), port.clone(), matched, chain_destination(chain)]);
        }
        if !any {
            table.row(vec![l.name.clone(), address, port, "-".to_owned(), "no filter chains".to_owned()]);
        }
    }
    table
}

fn route_match(r: &Route) -> String {
    let Some(m) = &r.r#match else { return "-".to_owned() };
    let mut parts = vec![match &m.path_specifier {
        Some(route_match::PathSpecifier::Prefix(p)) => format!("{p}*"),
        Some(route_match::PathSpecifier::Path(p)) => p.clone(),
        Some(route_match::PathSpecifier::SafeRegex(re)) => format!("regex {}", re.regex),
        Some(route_match::PathSpecifier::PathSeparatedPrefix(p)) => format!("{p}/*"),
        Some(_) => "other".to_owned(),
        None => "*".to_owned(),
    }];
    parts.extend(m.headers.iter().map(header_match));
    for q in &m.query_parameters {
        parts.push(format!("query {}", q.name));
    }
    parts.join(" ")
}

/// One header condition: `header NAME=value` (exact), `=value*` (prefix), `~regex`,
/// `present`; `not ` before an inverted one. Two routes on one header differ by value.
fn header_match(h: &HeaderMatcher) -> String {
    use header_matcher::HeaderMatchSpecifier as Spec;
    use string_matcher::MatchPattern;
    let condition = match &h.header_match_specifier {
        Some(Spec::StringMatch(StringMatcher { match_pattern: Some(pattern), .. })) => match pattern {
            MatchPattern::Exact(v) => format!("={v}"),
            MatchPattern::Prefix(v) => format!("={v}*"),
            MatchPattern::Suffix(v) => format!("=*{v}"),
            MatchPattern::Contains(v) => format!("=*{v}*"),
            MatchPattern::SafeRegex(re) => format!("~{}", re.regex),
            MatchPattern::Custom(c) => format!(" {}", c.name),
        },
        Some(Spec::PresentMatch(true)) => " present".to_owned(),
        Some(Spec::PresentMatch(false)) => " absent".to_owned(),
        Some(Spec::RangeMatch(r)) => format!(" in [{}, {})", r.start, r.end),
        // The deprecated forms meshd never sends: the name alone.
        _ => String::new(),
    };
    let not = if h.invert_match { "not " } else { "" };
    format!("{not}header {}{condition}", h.name)
}

fn route_destination(r: &Route) -> String {
    match &r.action {
        Some(route::Action::Route(action)) => match &action.cluster_specifier {
            Some(route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
            Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                weights(w.clusters.iter().map(|c| (c.name.as_str(), c.weight.as_ref().map_or(0, |w| w.value))))
            }
            Some(route_action::ClusterSpecifier::ClusterHeader(h)) => format!("cluster from header {h}"),
            _ => "-".to_owned(),
        },
        Some(route::Action::Redirect(_)) => "redirect".to_owned(),
        Some(route::Action::DirectResponse(d)) => format!("direct response {}", d.status),
        _ => "-".to_owned(),
    }
}

/// Routes, one row per route of each virtual host.
pub fn routes(configs: &[RouteConfiguration]) -> Table {
    let mut table = Table::new(&["NAME", "VIRTUAL HOST", "DOMAINS", "MATCH", "DESTINATION"]);
    for rc in configs {
        for vh in &rc.virtual_hosts {
            let domains = match vh.domains.as_slice() {
                [] => "-".to_owned(),
                [one] => one.clone(),
                [first, rest @ ..] => format!("{first} +{} more", rest.len()),
            };
            for r in &vh.routes {
                table.row(vec![
                    rc.name.clone(),
                    vh.name.clone(),
                    domains.clone(),
                    route_match(r),
                    route_destination(r),
                ]);
            }
            if vh.routes.is_empty() {
                table.row(vec![rc.name.clone(), vh.name.clone(), domains, "-".to_owned(), "no routes".to_owned()]);
            }
        }
        if rc.virtual_hosts.is_empty() {
            let cells = [rc.name.as_str(), "-", "-", "-", "no virtual hosts"];
            table.row(cells.map(str::to_owned).to_vec());
        }
    }
    table
}

/// Endpoints, one row per endpoint of each assignment.
pub fn endpoints(assignments: &[ClusterLoadAssignment]) -> Table {
    let mut table = Table::new(&["CLUSTER", "ADDRESS", "HEALTH", "WEIGHT"]);
    for cla in assignments {
        for locality in &cla.endpoints {
            for e in &locality.lb_endpoints {
                let address = match &e.host_identifier {
                    Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => match socket(ep.address.as_ref()) {
                        (a, p) if p == "-" => a,
                        (a, p) => format!("{a}:{p}"),
                    },
                    _ => "-".to_owned(),
                };
                let health = HealthStatus::try_from(e.health_status)
                    .map_or_else(|_| e.health_status.to_string(), |h| h.as_str_name().to_owned());
                let weight = e.load_balancing_weight.as_ref().map_or("1".to_owned(), |w| w.value.to_string());
                table.row(vec![cla.cluster_name.clone(), address, health, weight]);
            }
        }
        if cla.endpoints.iter().all(|l| l.lb_endpoints.is_empty()) {
            let cells = [cla.cluster_name.as_str(), "none", "-", "-"];
            table.row(cells.map(str::to_owned).to_vec());
        }
    }
    table
}

/// Secrets: their names and what they hold (never the key material).
pub fn secrets(secrets: &[Secret]) -> Table {
    let mut table = Table::new(&["NAME", "TYPE"]);
    for s in secrets {
        let kind = match &s.r#type {
            Some(secret::Type::TlsCertificate(_)) => "tls_certificate",
            Some(secret::Type::ValidationContext(_)) => "validation_context",
            Some(secret::Type::SessionTicketKeys(_)) => "session_ticket_keys",
            Some(secret::Type::GenericSecret(_)) => "generic_secret",
            None => "-",
        };
        table.row(vec![s.name.clone(), kind.to_owned()]);
    }
    table
}

#[cfg(test)]
#[path = "tables_tests.rs"]
mod tests;
