//! ServiceEntry hosts in the mesh registry.
//!
//! Each host of an entry gets, per port, a cluster named as a service's
//! (`outbound|443||api.example.com`) whose kind follows `resolution`: EDS for `STATIC`
//! (the endpoints, or the pods a `workloadSelector` picks), STRICT_DNS for `DNS` (the
//! endpoints' addresses, else the host itself), LOGICAL_DNS for `DNS_ROUND_ROBIN`, and
//! ORIGINAL_DST for `NONE` (to where the app connected). The host's DestinationRule
//! shapes these clusters as a service's, and its subsets pick endpoints by their
//! labels. An HTTP port gets a virtual host (the host and the entry's IP addresses,
//! with `:port`) routed by VirtualServices as a service's; under capture a TCP port
//! gets a hand-off listener on each IP address of the entry.
//!
//! Rules it keeps:
//! - Hosts are taken as written: `api.example.com` is not a `svc.cluster.local` name.
//! - A host names one entry: a Service's hostname wins over an entry's host, an earlier
//!   entry (by namespace/name) over a later one; what loses is reported, never merged.
//! - An IP address answers for one entry or service (Envoy refuses a domain twice);
//!   with several hosts, the entry's addresses go with its first host.
//! - The explicit proxy cannot connect to an original destination (that is itself), so
//!   a `NONE` entry's routes there resolve the request's authority instead.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress, TypedExtensionConfig};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{route, route_action, Route, VirtualHost};
use envoy_types::pb::envoy::extensions::network::dns_resolver::getaddrinfo::v3::GetAddrInfoDnsResolverConfig;
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use xds::Resource;

use crate::model::index::Index;
use crate::model::{
    effective_policy, locality::Locality, resolve_host, selector_matches, DestinationRule, Labels, ObjectError,
    PolicySections, Protocol, Resolution, ServiceEntry, ServiceEntryPort, Severity,
};

use super::contain::Checker;
use super::dr_scope::{Built, DrViews};
use super::envoy::*;
use super::scoping::{self, HostPort, HostRoutes, Shapes};
use super::{cluster_name, domains, policy, HashPolicies, HostRules, ModelLookup, Problems, NO_LABELS};

fn warning(entry: &ServiceEntry, field: &str, message: String) -> ObjectError {
    ObjectError::at_object(Severity::Warning, "ServiceEntry", &entry.namespace, &entry.name, field, message)
}

/// Every ServiceEntry host with the entry that adds it, and warnings for the hosts left
/// out (a Service's hostname, or a host an earlier entry added).
pub(super) fn entries_by_host(model: &Index) -> (BTreeMap<String, &ServiceEntry>, Vec<ObjectError>) {
    let mut by_host: BTreeMap<String, &ServiceEntry> = BTreeMap::new();
    let mut problems = Vec::new();
    for entry in model.service_entries.values() {
        for (i, host) in entry.hosts.iter().enumerate() {
            let message = if let Some(s) = model.service_by_hostname(&resolve_host(host, &entry.namespace)) {
                format!(
                    "host {host} is Service {}/{}; the service stays as it is and this entry is ignored for it",
                    s.namespace, s.name
                )
            } else if let Some(first) = by_host.get(host) {
                format!(
                    "host {host} is already added by ServiceEntry {}/{}; this entry is ignored for it",
                    first.namespace, first.name
                )
            } else {
                by_host.insert(host.clone(), entry);
                continue;
            };
            problems.push(warning(entry, &format!("spec.hosts[{i}]"), message));
        }
    }
    (by_host, problems)
}

impl ModelLookup<'_> {
    /// `host` as a rule of `namespace` writes it, as a registry name: an entry's host as
    /// written, else a service name ([`resolve_host`]).
    pub(crate) fn resolve(&self, host: &str, namespace: &str) -> String {
        if self.entries.contains_key(host) {
            host.to_owned()
        } else {
            resolve_host(host, namespace)
        }
    }

    /// The ports (number and protocol) of a registry host: a Service's or an entry's.
    pub(crate) fn registry_ports(&self, model: &Index, host: &str) -> Option<Vec<(u16, Protocol)>> {
        if let Some(service) = model.service_by_hostname(host) {
            return Some(service.ports.iter().map(|p| (p.port, p.protocol)).collect());
        }
        let entry = self.entries.get(host)?;
        Some(entry.ports.iter().map(|p| (p.number, p.mesh_protocol)).collect())
    }
}

/// One endpoint of an entry's port: where to connect (an IP or a name), its weight and
/// labels.
struct Target<'a> {
    address: String,
    port: u16,
    weight: Option<u32>,
    labels: &'a Labels,
    /// Where it runs (for locality balancing; STATIC entries only).
    locality: Locality,
}

/// How an entry's endpoints are found: `workloadSelector` pods are IPs (as STATIC).
fn resolution(entry: &ServiceEntry) -> Resolution {
    if entry.workload_selector.is_some() {
        Resolution::Static
    } else {
        entry.resolution
    }
}

/// The endpoints of `port` of `entry` (for `host`): the selected ready pods, the listed
/// endpoints (each on its `ports` override, else `targetPort`, else the port), or for
/// DNS without endpoints the host itself.
fn targets<'a>(
    lookup: &ModelLookup<'a>,
    entry: &'a ServiceEntry,
    host: &str,
    port: &ServiceEntryPort,
) -> Vec<Target<'a>> {
    let default_port = port.target_port.unwrap_or(port.number);
    if let Some(selector) = &entry.workload_selector {
        let pods = lookup.selected_pods(&entry.namespace, selector);
        return pods
            .into_iter()
            .filter(|p| p.ready)
            .filter_map(|p| {
                Some(Target {
                    address: p.ip?.to_string(),
                    port: default_port,
                    weight: None,
                    labels: &p.labels,
                    locality: super::locality::endpoint_locality(lookup.model, Some(p), None),
                })
            })
            .collect();
    }
    if entry.endpoints.is_empty() && matches!(entry.resolution, Resolution::Dns | Resolution::DnsRoundRobin) {
        return vec![Target {
            address: host.to_owned(),
            port: default_port,
            weight: None,
            labels: &NO_LABELS,
            locality: Locality::default(),
        }];
    }
    entry
        .endpoints
        .iter()
        .map(|e| Target {
            address: e.address.clone(),
            port: e.ports.get(&port.name).copied().unwrap_or(default_port),
            weight: e.weight,
            labels: &e.labels,
            locality: e.locality.clone(),
        })
        .collect()
}

/// A socket address by IP or by name (a name only in DNS clusters).
fn named_address(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// The endpoints of `targets` with their weights (0 or unset: Envoy's default of 1).
fn weighted_assignment(name: &str, targets: &[&Target<'_>]) -> ClusterLoadAssignment {
    let lb_endpoints = targets.iter().map(|t| weighted_endpoint(t)).collect();
    ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        endpoints: vec![LocalityLbEndpoints { lb_endpoints, ..Default::default() }],
        ..Default::default()
    }
}

/// The endpoint of `target` with its weight (0 or unset: Envoy's default of 1).
fn weighted_endpoint(target: &Target<'_>) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(named_address(&target.address, target.port)),
            ..Default::default()
        })),
        load_balancing_weight: target.weight.filter(|w| *w > 0).map(|value| UInt32Value { value }),
        ..Default::default()
    }
}

/// A cluster that resolves its endpoints' names itself: STRICT_DNS (every address)
/// or LOGICAL_DNS (the first address, one connection target at a time). Names are
/// resolved by the system resolver (`/etc/hosts` applies), IPv4 first.
fn dns_cluster(name: &str, kind: cluster::DiscoveryType, assignment: ClusterLoadAssignment) -> Cluster {
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(kind as i32)),
        connect_timeout: Some(seconds(10)),
        dns_lookup_family: cluster::DnsLookupFamily::V4Preferred as i32,
        typed_dns_resolver_config: Some(TypedExtensionConfig {
            name: "envoy.network.dns_resolver.getaddrinfo".to_owned(),
            typed_config: Some(any(GetAddrInfoDnsResolverConfig::default())),
        }),
        load_assignment: Some(assignment),
        ..Default::default()
    }
}

/// The cluster `name` of an entry's port, with its policy, and the load assignment EDS
/// serves for it (STATIC only: locality balancing applies to those, see [`super::locality`]).
fn entry_cluster(
    name: &str,
    entry: &ServiceEntry,
    protocol: Protocol,
    policy: &PolicySections,
    targets: &[&Target<'_>],
    plans: &mut super::locality::Plans,
) -> (Cluster, Option<ClusterLoadAssignment>) {
    let http2 = protocol == Protocol::Http2;
    let (mut cluster, assignment) = match resolution(entry) {
        Resolution::Static => (eds_cluster(name, Default::default(), false), None),
        Resolution::Dns => {
            (dns_cluster(name, cluster::DiscoveryType::StrictDns, weighted_assignment(name, targets)), None)
        }
        Resolution::DnsRoundRobin => {
            (dns_cluster(name, cluster::DiscoveryType::LogicalDns, weighted_assignment(name, targets)), None)
        }
        Resolution::None => (original_dst_cluster(name, None), None),
    };
    if http2 {
        let (key, options) = upstream_http_options(true, None, None);
        cluster.typed_extension_protocol_options.insert(key, options);
    }
    policy::apply(&mut cluster, policy, protocol);
    if resolution(entry) == Resolution::None {
        // Envoy takes no other load balancer for an original-destination cluster.
        cluster.lb_policy = cluster::LbPolicy::ClusterProvided as i32;
        cluster.lb_config = None;
    }
    let assignment = if resolution(entry) == Resolution::Static {
        let located = targets.iter().map(|t| (t.locality.clone(), weighted_endpoint(t))).collect();
        Some(super::locality::assignment(name, policy, &mut cluster, located, plans))
    } else {
        assignment
    };
    (cluster, assignment)
}

/// The clusters (and EDS load assignments) of every entry host's ports and subsets, and
/// the hash policies of the consistent-hash ones, into `base` (or `views`, see
/// [`super::dr_scope`]).
pub(super) fn clusters(lookup: &ModelLookup<'_>, views: &mut DrViews, base: &mut Built, problems: &mut Problems) {
    for (host, &entry) in &lookup.entries {
        views.build_host(lookup, host, &entry.namespace, base, problems, |dr, out| {
            entry_clusters(lookup, entry, host, dr, out)
        });
    }
}

/// The clusters of entry `host` as DestinationRule `dr` shapes them: per port, one for
/// the whole host and one per subset.
fn entry_clusters(
    lookup: &ModelLookup<'_>,
    entry: &ServiceEntry,
    host: &str,
    dr: Option<&DestinationRule>,
    out: &mut Built,
) {
    let rule_policy = dr.and_then(|d| d.traffic_policy.as_deref());
    for port in &entry.ports {
        let all = targets(lookup, entry, host, port);
        let mut add = |name: String, policy: PolicySections, picked: Vec<&Target<'_>>| {
            let (cluster, assignment) =
                entry_cluster(&name, entry, port.mesh_protocol, &policy, &picked, &mut out.plans);
            if let Some(hash) = policy::hash_policy(policy.load_balancer.as_ref()) {
                out.hash_policies.insert(name.clone(), hash);
            }
            out.clusters.push(Arc::new(Resource::from_message(name.clone(), &cluster)));
            if let Some(cla) = assignment {
                out.endpoints.push(Arc::new(Resource::from_message(name, &cla)));
            }
        };
        add(cluster_name(port.number, None, host), effective_policy(rule_policy, None, port.number), {
            all.iter().collect()
        });
        for subset in dr.map(|d| d.subsets.as_slice()).unwrap_or_default() {
            let policy = effective_policy(rule_policy, subset.traffic_policy.as_ref(), port.number);
            let picked = all.iter().filter(|t| selector_matches(&subset.labels, t.labels)).collect();
            add(cluster_name(port.number, Some(&subset.name), host), policy, picked);
        }
    }
}

/// What entry hosts add to the route configurations and capture listeners.
#[derive(Default)]
pub(super) struct EntryHosts {
    pub virtual_hosts: Vec<HostRoutes>,
    pub http_ports: BTreeSet<u16>,
    pub listeners: Vec<Arc<Resource>>,
}

/// The IP addresses each entry answers on (by namespace/name): those in `addresses`
/// that are single IPs and no service's cluster IP or earlier entry's address. The
/// others are reported.
fn entry_ips<'a>(model: &'a Index, problems: &mut Problems) -> HashMap<(&'a str, &'a str), Vec<IpAddr>> {
    let mut owners: HashMap<IpAddr, String> = model
        .services
        .values()
        .filter_map(|s| Some((s.cluster_ip?, format!("Service {}/{}", s.namespace, s.name))))
        .collect();
    let mut out = HashMap::new();
    for entry in model.service_entries.values() {
        let mut ips = Vec::new();
        for (i, a) in entry.addresses.iter().enumerate() {
            let (ip, prefix) = a.split_once('/').unwrap_or((a, ""));
            let Ok(ip) = ip.parse::<IpAddr>() else { continue };
            let full = if ip.is_ipv4() { "32" } else { "128" };
            let message = if !prefix.is_empty() && prefix != full {
                format!("{a} is a range: meshd does not match traffic by address range yet, so it is not in effect")
            } else if let Some(owner) = owners.get(&ip) {
                format!("{ip} is already the address of {owner}; traffic to it goes there")
            } else {
                owners.insert(ip, format!("ServiceEntry {}/{}", entry.namespace, entry.name));
                ips.push(ip);
                continue;
            };
            problems.list.insert(warning(entry, &format!("spec.addresses[{i}]"), message));
        }
        out.insert((entry.namespace.as_str(), entry.name.as_str()), ips);
    }
    out
}

/// Whether `cluster` (`outbound|port|subset|host`) belongs to a `NONE` entry.
fn original_destination(lookup: &ModelLookup<'_>, cluster: &str) -> bool {
    let host = cluster.rsplit('|').next().unwrap_or_default();
    cluster.starts_with("outbound|") && lookup.entries.get(host).is_some_and(|e| resolution(e) == Resolution::None)
}

/// `routes` for the explicit proxy: routes to `NONE` entries go to the passthrough that
/// resolves the request's authority (an original destination would be the proxy).
fn by_authority(lookup: &ModelLookup<'_>, mut routes: Vec<Route>) -> Vec<Route> {
    for r in &mut routes {
        let Some(route::Action::Route(action)) = &mut r.action else { continue };
        match &mut action.cluster_specifier {
            Some(route_action::ClusterSpecifier::Cluster(name)) if original_destination(lookup, name) => {
                *name = PASSTHROUGH_AUTHORITY_CLUSTER.to_owned();
            }
            Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                for c in w.clusters.iter_mut().filter(|c| original_destination(lookup, &c.name)) {
                    c.name = PASSTHROUGH_AUTHORITY_CLUSTER.to_owned();
                }
            }
            _ => {}
        }
    }
    routes
}

/// The virtual host of an entry's host on `port`: the host and `ips`, with `:port`,
/// and bare with `bare`.
fn entry_virtual_host(host: &str, port: u16, ips: &[IpAddr], bare: bool) -> VirtualHost {
    let names = std::iter::once(host.to_owned()).chain(ips.iter().map(IpAddr::to_string)).collect();
    VirtualHost { name: format!("{host}:{port}"), domains: domains(names, port, bare), ..Default::default() }
}

/// The virtual host of an entry's HTTP port in the shapes callers need: the default
/// route and each VirtualService's routes (in precedence order, with whom they are
/// exported to). An entry answers to the same names from every namespace. Explicit
/// proxies get `by_authority`'s routes. Err holds what Envoy would say of a variant.
#[allow(clippy::too_many_arguments)]
fn entry_host_routes(
    lookup: &ModelLookup<'_>,
    entry: &ServiceEntry,
    host: &str,
    port: u16,
    ips: &[IpAddr],
    rules: &mut HostRules<'_, '_>,
    hash_policies: &HashPolicies,
    checker: &mut Checker,
) -> Result<HostRoutes, Arc<[crate::envoy_validate::Violation]>> {
    let explicit = entry_virtual_host(host, port, ips, port == 80);
    let per_port = entry_virtual_host(host, port, ips, true);
    let adapt = |routes: Vec<Route>| by_authority(lookup, routes);
    let spec = HostPort {
        hostname: host.to_owned(),
        namespace: entry.namespace.clone(),
        port,
        templates: Shapes {
            explicit_own: explicit.clone(),
            explicit_foreign: explicit,
            per_port_own: per_port.clone(),
            per_port_foreign: per_port,
        },
        explicit_routes: Some(&adapt),
    };
    let candidates = rules.by_host.get(host).map(Vec::as_slice).unwrap_or_default();
    let inputs = candidates
        .iter()
        .map(|vs| {
            let key = ((vs.namespace.clone(), vs.name.clone()), host.to_owned(), port);
            (vs.export_to.clone(), rules.routes.remove(&key))
        })
        .collect();
    scoping::host_routes(spec, inputs, hash_policies, &mut *rules.conditions, checker)
}

/// A hand-off listener for TCP to `ip:port` (under capture), to `cluster`.
fn tcp_listener(ip: IpAddr, port: u16, cluster: &str) -> Arc<Resource> {
    let name = format!("{ip}_{port}");
    let listener = Listener {
        name: name.clone(),
        address: Some(socket_address(ip, port)),
        bind_to_port: Some(BoolValue { value: false }),
        filter_chains: vec![filter_chain(&name, tcp_proxy_filter(cluster, cluster))],
        ..Default::default()
    };
    Arc::new(Resource::from_message(name, &listener))
}

/// The virtual hosts of the entry hosts' HTTP ports (routed by their VirtualService,
/// else to the port's cluster) and the hand-off listeners of their TCP ports.
pub(super) fn hosts(
    model: &Index,
    lookup: &ModelLookup<'_>,
    rules: &mut HostRules<'_, '_>,
    hash_policies: &HashPolicies,
    checker: &mut Checker,
    problems: &mut Problems,
) -> EntryHosts {
    let mut out = EntryHosts::default();
    let ips_by_entry = entry_ips(model, problems);
    let mut with_ips: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (host, &entry) in &lookup.entries {
        let key = (entry.namespace.as_str(), entry.name.as_str());
        // The entry's addresses go with the first of its hosts it owns.
        let ips: &[IpAddr] =
            if with_ips.insert(key) { ips_by_entry.get(&key).map(Vec::as_slice).unwrap_or_default() } else { &[] };
        for (k, port) in entry.ports.iter().enumerate() {
            let field = format!("spec.ports[{k}]");
            let cluster = cluster_name(port.number, None, host);
            if port.mesh_protocol == Protocol::Tcp {
                if entry.addresses.is_empty() {
                    let message = format!(
                        "TCP port {} has no address in spec.addresses: under capture, connections to it are not \
                         told apart from other destinations (they follow the outbound traffic policy)",
                        port.number
                    );
                    problems.list.insert(warning(entry, &field, message));
                }
                out.listeners.extend(ips.iter().map(|ip| tcp_listener(*ip, port.number, &cluster)));
                continue;
            }
            if [super::OUTBOUND_PORT, super::INBOUND_PORT].contains(&port.number) {
                let message = format!(
                    "port {} is the sidecar's capture port; captured traffic to it is not routed by host",
                    port.number
                );
                problems.list.insert(warning(entry, &field, message));
            } else {
                out.http_ports.insert(port.number);
            }
            match entry_host_routes(lookup, entry, host, port.number, ips, rules, hash_policies, checker) {
                Ok(host_routes) => out.virtual_hosts.push(host_routes),
                Err(refused) => {
                    for v in refused.iter() {
                        let message =
                            format!("Envoy would refuse the virtual host of {host} on this port ({v}); it is left out");
                        problems.list.insert(ObjectError::at_object(
                            Severity::Error,
                            "ServiceEntry",
                            &entry.namespace,
                            &entry.name,
                            &field,
                            message,
                        ));
                    }
                }
            }
        }
    }
    out
}

/// The entry behind a cluster of `host` on `port`, and the port's field.
pub(crate) fn cluster_origin(
    lookup: &ModelLookup<'_>,
    host: &str,
    port: &str,
) -> Option<(&'static str, String, String, String)> {
    let entry = lookup.entries.get(host)?;
    let i = entry.ports.iter().position(|p| p.number.to_string() == port).unwrap_or(0);
    Some(("ServiceEntry", entry.namespace.clone(), entry.name.clone(), format!("spec.ports[{i}]")))
}

/// The entry behind a TCP hand-off listener on `ip`:`port`.
pub(crate) fn listener_origin(model: &Index, ip: IpAddr, port: &str) -> Option<(&'static str, String, String, String)> {
    let entry = model
        .service_entries
        .values()
        .find(|e| e.addresses.iter().any(|a| a.split('/').next().and_then(|a| a.parse::<IpAddr>().ok()) == Some(ip)))?;
    let i = entry.ports.iter().position(|p| p.number.to_string() == port).unwrap_or(0);
    Some(("ServiceEntry", entry.namespace.clone(), entry.name.clone(), format!("spec.ports[{i}]")))
}
