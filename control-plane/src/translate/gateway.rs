//! Ingress gateways (Istio's Gateway): the listeners and routes of a proxy started
//! with `meshctl bootstrap --gateway`.
//!
//! Rules it keeps:
//! - a gateway proxy gets the servers of every Gateway whose `spec.selector` matches its
//!   labels, in any namespace (as Istio), and no sidecar listener (no 15001, no 15006);
//! - one listener per (address, port): the server's `bind`, else the proxy's IP in
//!   explicit mode, else `0.0.0.0`. Plain HTTP servers share the route configuration
//!   `http.<port>`; each TLS-terminating server is a filter chain of its own, chosen by
//!   SNI (its hosts), with its own route configuration;
//! - a server's virtual hosts come from the VirtualServices whose `gateways` name its
//!   Gateway and whose hosts meet its hosts; a host no VirtualService routes gets Envoy's
//!   404, as in Istio. `httpsRedirect` answers every request with a 301 to https;
//! - a server meshd cannot serve (a missing or invalid Secret, a port another server
//!   uses for another protocol, SNI hosts another server already has) is reported at its
//!   field and left out; the Gateway's other servers stay.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::{filter, FilterChain, FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::{virtual_host::TlsRequirementType, RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::StripPortMode, HttpConnectionManager,
};
use envoy_types::pb::google::protobuf::BoolValue;
use prost::Message;
use xds::Resource;

use super::contain::Checker;
use super::envoy::{any, filter_chain, http_connection_manager, socket_address, RouteSource};
use super::gateway_l4;
use super::gateway_tls::{self, ServerCert};
use super::l4_routes::tls_inspector;
use super::routes::RouteSite;
use super::{policy, routes, HashPolicies, InterceptionMode, ModelLookup, Problems, ProxyClass};
use crate::model::index::Index;
use crate::model::{selector_matches, Gateway, GatewayServer, Labels, PortProtocol, ServerTlsMode, VirtualService};

/// One server of one Gateway, translated and ready to be placed on a listener.
#[derive(Debug)]
pub(crate) struct ServerPlan {
    /// The Gateway's namespace and name, and `spec.servers[i]`.
    gateway: (String, String),
    field: String,
    selector: Labels,
    port: u16,
    bind: Option<IpAddr>,
    /// `None`: plain HTTP.
    tls: Option<ServerCert>,
    /// SNI names of a TLS server (empty: any).
    server_names: Vec<String>,
    route_name: String,
    virtual_hosts: Vec<VirtualHost>,
    /// `Some`: not HTTP (no route configuration): TLS passed through or opaque TCP.
    l4: Option<L4Server>,
}

/// A server whose connections a TCP proxy forwards, routed by `tls` or `tcp` rules.
#[derive(Debug)]
enum L4Server {
    /// `tls.mode: PASSTHROUGH`: filter chains by SNI.
    Passthrough(Vec<FilterChain>),
    /// `TCP`, `MONGO`: one chain takes every connection.
    Tcp(Box<FilterChain>),
}

impl ServerPlan {
    /// Connections are chosen by SNI (TLS terminated or passed through).
    fn is_tls(&self) -> bool {
        self.tls.is_some() || matches!(self.l4, Some(L4Server::Passthrough(_)))
    }

    /// What the port carries, for conflicts: servers on one port agree on it.
    fn transport(&self) -> &'static str {
        match (&self.l4, self.is_tls()) {
            (Some(L4Server::Tcp(_)), _) => "opaque TCP",
            (_, true) => "TLS",
            (_, false) => "plain HTTP",
        }
    }
}

/// A server host (`ns/host`) split: which VirtualService namespaces it takes, and the host.
pub(crate) fn split_server_host<'a>(entry: &'a str, gateway_namespace: &'a str) -> (&'a str, &'a str) {
    match entry.split_once('/') {
        Some((".", host)) => (gateway_namespace, host),
        Some((ns, host)) => (ns, host),
        None => ("*", entry),
    }
}

/// Whether two hosts (each a DNS name, `*.suffix` or `*`) can name the same request,
/// and if so the narrower of the two (what the virtual host answers to).
pub(crate) fn intersect<'a>(a: &'a str, b: &'a str) -> Option<&'a str> {
    let covers = |wide: &str, narrow: &str| {
        wide == "*" || wide == narrow || wide.strip_prefix('*').is_some_and(|suffix| narrow.ends_with(suffix))
    };
    if covers(a, b) {
        Some(b)
    } else if covers(b, a) {
        Some(a)
    } else {
        None
    }
}

/// Whether `vs` binds to the Gateway `namespace/name` (`name` in the rule's namespace,
/// or `namespace/name`).
fn binds(vs: &VirtualService, gw: &Gateway) -> bool {
    gateway_l4::binds(&vs.gateways, &vs.namespace, gw)
}

/// Every Gateway server meshd can serve, translated once per build. Problems are
/// reported at the Gateway field (or VirtualService) that causes them.
pub(crate) fn plan(
    model: &Index,
    lookup: &ModelLookup<'_>,
    hash_policies: &HashPolicies,
    checker: &mut Checker,
    problems: &mut Problems,
) -> Vec<ServerPlan> {
    let mut plans: Vec<ServerPlan> = Vec::new();
    for gw in model.gateways.values() {
        for (i, server) in gw.servers.iter().enumerate() {
            let field = format!("spec.servers[{i}]");
            let l4 = match (server.protocol, server.tls.as_ref().map(|t| t.mode)) {
                (PortProtocol::Https | PortProtocol::Tls, Some(ServerTlsMode::Passthrough)) => {
                    let chains = gateway_l4::passthrough_chains(model, lookup, gw, (server, &field), problems);
                    if chains.is_empty() {
                        continue;
                    }
                    Some(L4Server::Passthrough(chains))
                }
                (PortProtocol::Tcp | PortProtocol::Mongo, _) => {
                    let Some(chain) = gateway_l4::tcp_chain(model, lookup, gw, (server, &field), problems) else {
                        continue;
                    };
                    Some(L4Server::Tcp(Box::new(chain)))
                }
                _ => None,
            };
            let tls = match l4 {
                Some(_) => None,
                None => match server_tls(model, gw, server, &field, problems) {
                    Some(tls) => tls,
                    None => continue,
                },
            };
            let route_name = match &tls {
                None => format!("http.{}", server.port),
                Some(_) => format!("https.{}.{}.{}.{}", server.port, server.port_name, gw.name, gw.namespace),
            };
            let virtual_hosts = match &server.tls {
                _ if l4.is_some() => Vec::new(),
                Some(t) if t.https_redirect && tls.is_none() => redirect_hosts(gw, server),
                _ => bound_hosts(model, lookup, hash_policies, gw, server, checker, problems),
            };
            let by_sni = tls.is_some() || matches!(l4, Some(L4Server::Passthrough(_)));
            let server_names = match by_sni {
                true if server.hosts.iter().all(|h| split_server_host(h, &gw.namespace).1 != "*") => {
                    let names: BTreeSet<&str> =
                        server.hosts.iter().map(|h| split_server_host(h, &gw.namespace).1).collect();
                    names.into_iter().map(str::to_owned).collect()
                }
                _ => Vec::new(),
            };
            let candidate = ServerPlan {
                gateway: (gw.namespace.clone(), gw.name.clone()),
                field,
                selector: gw.selector.clone(),
                port: server.port,
                bind: server.bind,
                tls,
                server_names,
                route_name,
                virtual_hosts,
                l4,
            };
            if let Some(message) = conflict(&plans, &candidate) {
                problems.report("Gateway", &gw.namespace, &gw.name, &format!("{}.port", candidate.field), message);
                continue;
            }
            plans.push(candidate);
        }
    }
    plans
}

/// The server's certificate (`Some(None)`: plain HTTP), or `None` when it cannot be
/// served (reported, or warned about when parsed).
fn server_tls(
    model: &Index,
    gw: &Gateway,
    server: &GatewayServer,
    field: &str,
    problems: &mut Problems,
) -> Option<Option<ServerCert>> {
    match server.protocol {
        PortProtocol::Http | PortProtocol::Http2 | PortProtocol::Grpc => Some(None),
        PortProtocol::Https => {
            let tls = server.tls.as_ref()?;
            if !matches!(tls.mode, ServerTlsMode::Simple | ServerTlsMode::Mutual) {
                return None;
            }
            match gateway_tls::server_cert(model, &gw.namespace, tls) {
                Ok(cert) => Some(Some(cert)),
                Err((sub_field, message)) => {
                    let message = format!("{message}; this server is left out");
                    problems.report("Gateway", &gw.namespace, &gw.name, &format!("{field}.tls.{sub_field}"), message);
                    None
                }
            }
        }
        // Warned about when parsed.
        PortProtocol::Tcp | PortProtocol::Tls | PortProtocol::Mongo => None,
    }
}

/// Why `candidate` cannot join servers already planned on proxies both would select:
/// one port carries plain HTTP or TLS, and two TLS servers cannot share SNI names.
/// Selectors one of which holds the other select the same proxies; others are sorted
/// out per proxy ([`listeners_and_routes`]).
fn conflict(plans: &[ServerPlan], candidate: &ServerPlan) -> Option<String> {
    let shared = |a: &Labels, b: &Labels| selector_matches(a, b) || selector_matches(b, a);
    plans
        .iter()
        .filter(|p| p.port == candidate.port && p.bind == candidate.bind && shared(&p.selector, &candidate.selector))
        .find_map(|p| {
            let other = format!("Gateway {}/{} {}", p.gateway.0, p.gateway.1, p.field);
            if p.transport() != candidate.transport() {
                Some(format!(
                    "port {} is already served by {other} as {}, on the same gateway proxies; this server is left out",
                    candidate.port,
                    p.transport()
                ))
            } else if p.transport() == "opaque TCP" {
                Some(format!(
                    "port {} is already served by {other} (one TCP server per port); this server is left out",
                    candidate.port
                ))
            } else if p.is_tls() && p.server_names == candidate.server_names {
                Some(format!(
                    "port {} with hosts {:?} is already served by {other} (TLS servers on one port need other SNI \
                     hosts); this server is left out",
                    candidate.port, candidate.server_names
                ))
            } else {
                None
            }
        })
}

/// An `httpsRedirect` server: every host answers with a 301 to https.
fn redirect_hosts(gw: &Gateway, server: &GatewayServer) -> Vec<VirtualHost> {
    let hosts: BTreeSet<&str> = server.hosts.iter().map(|h| split_server_host(h, &gw.namespace).1).collect();
    hosts
        .into_iter()
        .map(|host| VirtualHost {
            name: format!("{host}:{}", server.port),
            domains: vec![host.to_owned()],
            require_tls: TlsRequirementType::All as i32,
            ..Default::default()
        })
        .collect()
}

/// Virtual hosts from the VirtualServices bound to `gw` whose hosts meet the server's:
/// one per host, the first rule (by namespace/name) winning a host several name.
fn bound_hosts(
    model: &Index,
    lookup: &ModelLookup<'_>,
    hash_policies: &HashPolicies,
    gw: &Gateway,
    server: &GatewayServer,
    checker: &mut Checker,
    problems: &mut Problems,
) -> Vec<VirtualHost> {
    let mut by_domain: BTreeMap<String, (&VirtualService, VirtualHost)> = BTreeMap::new();
    for vs in model.virtual_services.values().filter(|vs| binds(vs, gw)) {
        let domains: BTreeSet<String> = gateway_l4::bound_names(vs, gw, server).into_iter().collect();
        if domains.is_empty() {
            continue;
        }
        let mut routes: Vec<_> =
            routes::virtual_service_routes_traced(model, lookup, vs, (server.port, RouteSite::Gateway(gw)), problems)
                .into_iter()
                .map(|(r, _)| r)
                .collect();
        policy::add_hash_policies(&mut routes, hash_policies);
        for domain in domains {
            if let Some((first, _)) = by_domain.get(&domain) {
                problems.warn_vs(
                    vs,
                    "spec.hosts",
                    format!(
                        "host {domain} on Gateway {}/{} port {} is already routed by VirtualService {}/{}; this rule is \
                         ignored for it",
                        gw.namespace, gw.name, server.port, first.namespace, first.name
                    ),
                );
                continue;
            }
            let vh = VirtualHost {
                name: format!("{domain}:{}", server.port),
                domains: vec![domain.clone()],
                routes: routes.clone(),
                ..Default::default()
            };
            let refused = checker.check("envoy.config.route.v3.VirtualHost", &vh.encode_to_vec());
            if let Some(v) = refused.first() {
                problems.warn_vs(
                    vs,
                    "spec.http",
                    format!(
                        "Envoy would refuse its routes on Gateway {}/{} ({v}); left out there",
                        gw.namespace, gw.name
                    ),
                );
                continue;
            }
            by_domain.insert(domain, (&**vs, vh));
        }
    }
    by_domain.into_values().map(|(_, vh)| vh).collect()
}

/// The gateway HTTP connection manager: routes from `route`, the port stripped from the
/// Host header before routing (a Gateway's hosts carry no port).
fn gateway_hcm(route: &str) -> envoy_types::pb::envoy::config::listener::v3::Filter {
    let mut hcm_filter = http_connection_manager(route, RouteSource::Rds(route.to_owned()), false);
    if let Some(filter::ConfigType::TypedConfig(typed)) = &mut hcm_filter.config_type {
        let mut hcm = HttpConnectionManager::decode(typed.value.as_slice()).expect("encoded just above");
        hcm.strip_port_mode = Some(StripPortMode::StripAnyHostPort(true));
        *typed = any(hcm);
    }
    hcm_filter
}

/// Whether two filter chains have the same conditions (no match is the empty one).
fn same_match(a: &FilterChain, b: &FilterChain) -> bool {
    a.filter_chain_match.clone().unwrap_or_default() == b.filter_chain_match.clone().unwrap_or_default()
}

/// The listeners and route configurations of one gateway proxy: the servers whose
/// Gateway selects it, one listener per (address, port).
pub(crate) fn listeners_and_routes(
    plans: &[ServerPlan],
    class: &ProxyClass,
) -> (Vec<Arc<Resource>>, Vec<Arc<Resource>>) {
    let default_ip = match (class.mode, class.ip) {
        (InterceptionMode::None, Some(ip)) => ip,
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let mut by_address: BTreeMap<(IpAddr, u16), Vec<&ServerPlan>> = BTreeMap::new();
    for p in plans.iter().filter(|p| selector_matches(&p.selector, &class.labels)) {
        by_address.entry((p.bind.unwrap_or(default_ip), p.port)).or_default().push(p);
    }
    let mut listeners = Vec::new();
    let mut route_configs: BTreeMap<String, Vec<VirtualHost>> = BTreeMap::new();
    for ((ip, port), servers) in by_address {
        // Gateways whose selectors differ but both match this proxy: the first server
        // decides plain or TLS, and the first of equal SNI names wins.
        let tls = servers[0].is_tls();
        let transport = servers[0].transport();
        let mut chains: Vec<FilterChain> = Vec::new();
        let mut seen_names: Vec<&[String]> = Vec::new();
        for s in servers {
            let taken = match &s.l4 {
                Some(L4Server::Tcp(_)) => !chains.is_empty(),
                _ => tls && seen_names.contains(&s.server_names.as_slice()),
            };
            if s.transport() != transport || taken {
                tracing::warn!(
                    gateway = %format!("{}/{}", s.gateway.0, s.gateway.1),
                    field = %s.field,
                    port,
                    "a gateway server conflicts with another on the same proxy; left out"
                );
                continue;
            }
            match &s.l4 {
                Some(L4Server::Tcp(chain)) => {
                    chains.push((**chain).clone());
                    continue;
                }
                Some(L4Server::Passthrough(by_sni)) => {
                    seen_names.push(&s.server_names);
                    // An SNI name another server's chain holds stays with it.
                    for chain in by_sni {
                        if !chains.iter().any(|c| same_match(c, chain)) {
                            chains.push(chain.clone());
                        }
                    }
                    continue;
                }
                None => {}
            }
            let vhs = route_configs.entry(s.route_name.clone()).or_default();
            for vh in &s.virtual_hosts {
                if !vhs.iter().any(|v| v.domains == vh.domains) {
                    vhs.push(vh.clone());
                }
            }
            if let Some(cert) = &s.tls {
                seen_names.push(&s.server_names);
                let mut chain = filter_chain(&s.route_name, gateway_hcm(&s.route_name));
                chain.filter_chain_match =
                    Some(FilterChainMatch { server_names: s.server_names.clone(), ..Default::default() });
                chain.transport_socket = Some(gateway_tls::transport_socket(cert));
                // A passthrough chain may already hold these names (Envoy refuses two
                // chains with the same conditions): the first server keeps them.
                if chains.iter().any(|c| same_match(c, &chain)) {
                    tracing::warn!(
                        gateway = %format!("{}/{}", s.gateway.0, s.gateway.1),
                        field = %s.field,
                        port,
                        "a gateway server's SNI names are already passed through by another server; left out"
                    );
                    continue;
                }
                chains.push(chain);
            } else if chains.is_empty() {
                chains.push(filter_chain(&s.route_name, gateway_hcm(&s.route_name)));
            }
        }
        let name = format!("{ip}_{port}");
        let listener = Listener {
            name: name.clone(),
            address: Some(socket_address(ip, port)),
            listener_filters: if tls { vec![tls_inspector()] } else { Vec::new() },
            filter_chains: chains,
            ..Default::default()
        };
        listeners.push(Arc::new(Resource::from_message(name, &listener)));
    }
    let routes = route_configs
        .into_iter()
        .map(|(name, virtual_hosts)| {
            let rc = RouteConfiguration {
                name: name.clone(),
                virtual_hosts,
                validate_clusters: Some(BoolValue { value: false }),
                ..Default::default()
            };
            Arc::new(Resource::from_message(name, &rc))
        })
        .collect();
    (listeners, routes)
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
