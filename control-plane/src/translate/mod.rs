//! The translator: a pure function from the mesh model and a proxy's identity to
//! Envoy resources.
//!
//! [`MeshConfig::build`] translates everything that does not depend on the proxy
//! once (clusters, endpoints, per-service routes); [`MeshConfig::proxy_snapshot`]
//! then assembles one proxy's view from shared pieces, so ten thousand proxies in one
//! namespace share one set of clusters, endpoints and routes. Output is deterministic
//! (ordered maps; content-derived versions).

pub mod envoy;
pub mod routes;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use envoy_types::pb::envoy::config::listener::v3::{FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use xds::{Resource, ResourceSet, ResourceType, Snapshot};

use crate::model::index::Index;
use crate::model::{
    resolve_host, selector_matches, DestinationRule, Labels, LoadBalancer, ObjectError, Protocol, Service,
    Severity, VirtualService,
};
use envoy::*;

/// Port of the outbound listener (explicit proxy / capture target).
pub const OUTBOUND_PORT: u16 = 15001;
/// Port of the inbound capture listener.
pub const INBOUND_PORT: u16 = 15006;
/// Name of the route configuration used by the explicit-proxy listener.
pub const EXPLICIT_ROUTE_NAME: &str = "outbound.explicit";

/// Istio-style cluster name: `outbound|9080|v1|reviews.bookinfo.svc.cluster.local`.
pub fn cluster_name(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

/// How the sidecar gets traffic (MISSION §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum InterceptionMode {
    /// iptables capture: outbound to 15001 (original destination), inbound to 15006.
    Redirect,
    /// Explicit HTTP proxy on `<ip>:15001`; no capture.
    None,
}

/// What the translator needs to know of a proxy. Proxies with equal `ProxyClass`
/// get the same snapshot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProxyClass {
    pub namespace: String,
    pub mode: InterceptionMode,
    /// The first instance IP: where the explicit listener binds, and the inbound
    /// destination under capture.
    pub ip: IpAddr,
    /// Workload labels (used for inbound; left empty in explicit mode).
    pub labels: Labels,
}

/// Problems found while translating, reported by object and field.
#[derive(Debug, Default)]
pub struct Problems {
    pub list: BTreeSet<ObjectError>,
}

impl Problems {
    fn report(&mut self, kind: &str, namespace: &str, name: &str, field: &str, message: String) {
        self.list.insert(ObjectError {
            severity: Severity::Warning,
            file: None,
            document: None,
            kind: Some(kind.to_owned()),
            namespace: Some(namespace.to_owned()),
            name: Some(name.to_owned()),
            field: field.to_owned(),
            message,
        });
    }

    pub fn warn_vs(&mut self, vs: &VirtualService, field: &str, message: String) {
        self.report("VirtualService", &vs.namespace, &vs.name, field, message);
    }
}

/// Everything translated from one model version, shared by all proxies.
#[derive(Debug)]
pub struct MeshConfig {
    model: Arc<Index>,
    clusters: Arc<ResourceSet>,
    endpoints: Arc<ResourceSet>,
    /// Routes per (service hostname, port), namespace-independent.
    service_routes: BTreeMap<(String, u16), Arc<Vec<Route>>>,
    /// Shared outbound listeners for capture mode (per-port hand-off targets).
    capture_listeners: Vec<Arc<Resource>>,
    /// Route configurations per proxy namespace, built on first use.
    routes_by_namespace: Mutex<BTreeMap<String, Arc<ResourceSet>>>,
    pub problems: Vec<ObjectError>,
}

fn lb_policy(lb: Option<LoadBalancer>) -> LbPolicy {
    match lb {
        None | Some(LoadBalancer::RoundRobin) => LbPolicy::RoundRobin,
        Some(LoadBalancer::LeastRequest) => LbPolicy::LeastRequest,
        Some(LoadBalancer::Random) => LbPolicy::Random,
        // PASSTHROUGH (connect to the caller's destination) needs an original-dst
        // cluster per service; until then it balances like ROUND_ROBIN.
        Some(LoadBalancer::Passthrough) => LbPolicy::RoundRobin,
    }
}

/// The DestinationRule that applies to `service`: one in the service's namespace
/// first, else the first by namespace/name. Others for the same host are reported.
fn destination_rule_for<'a>(model: &'a Index, service: &Service, problems: &mut Problems) -> Option<&'a DestinationRule> {
    let host = service.hostname();
    let mut candidates: Vec<&DestinationRule> =
        model.destination_rules.values().map(|d| &**d).filter(|d| resolve_host(&d.host, &d.namespace) == host).collect();
    candidates.sort_by_key(|d| (d.namespace != service.namespace, d.namespace.clone(), d.name.clone()));
    let chosen = candidates.first().copied();
    for other in candidates.iter().skip(1) {
        let chosen = chosen.expect("non-empty");
        problems.report(
            "DestinationRule",
            &other.namespace,
            &other.name,
            "spec.host",
            format!("host {host} already has DestinationRule {}/{}; this one is ignored", chosen.namespace, chosen.name),
        );
    }
    chosen
}

/// Endpoints of `service` on `port` (by target port), each with the labels of the pod
/// behind it (for subsets).
fn service_endpoints(model: &Index, service: &Service, port: u16) -> Vec<(SocketAddr, Labels)> {
    let Some(sp) = service.ports.iter().find(|p| p.port == port) else { return Vec::new() };
    let slices: Vec<_> = model
        .endpoint_slices
        .values()
        .filter(|s| s.namespace == service.namespace && s.service == service.name)
        .collect();
    let mut out = BTreeMap::new();
    if !slices.is_empty() {
        for slice in slices {
            let Some(&(_, target)) = slice.ports.iter().find(|(name, _)| *name == sp.name) else { continue };
            for e in slice.endpoints.iter().filter(|e| e.ready) {
                let labels = e
                    .pod
                    .as_ref()
                    .and_then(|p| model.pods.get(&(service.namespace.clone(), p.clone())))
                    .map(|p| p.labels.clone())
                    .unwrap_or_default();
                for ip in &e.addresses {
                    out.insert(SocketAddr::new(*ip, target), labels.clone());
                }
            }
        }
    } else if let Some(selector) = &service.selector {
        for pod in model.pods.values() {
            if pod.namespace != service.namespace || !pod.ready || !selector_matches(selector, &pod.labels) {
                continue;
            }
            let (Some(ip), Some(target)) = (pod.ip, pod.resolve_port(&sp.target_port)) else { continue };
            out.insert(SocketAddr::new(ip, target), pod.labels.clone());
        }
    }
    out.into_iter().collect()
}

impl MeshConfig {
    pub fn build(model: Arc<Index>) -> MeshConfig {
        let mut problems = Problems::default();
        let mut clusters: Vec<Arc<Resource>> = Vec::new();
        let mut endpoints: Vec<Arc<Resource>> = Vec::new();

        for c in [
            original_dst_cluster(PASSTHROUGH_CLUSTER, false, None),
            original_dst_cluster(PASSTHROUGH_AUTHORITY_CLUSTER, true, None),
            original_dst_cluster(INBOUND_PASSTHROUGH_CLUSTER, false, Some(IpAddr::V4(INBOUND_SOURCE_IP.parse::<Ipv4Addr>().expect("valid")))),
            blackhole_cluster(),
        ] {
            clusters.push(Arc::new(Resource::from_message(c.name.clone(), &c)));
        }

        for service in model.services.values() {
            let host = service.hostname();
            let dr = destination_rule_for(&model, service, &mut problems);
            let default_lb = dr.and_then(|d| d.traffic_policy.as_ref()).and_then(|t| t.load_balancer);
            for sp in &service.ports {
                let http2 = sp.protocol == Protocol::Http2;
                let all = service_endpoints(&model, service, sp.port);
                let mut add = |name: String, lb: Option<LoadBalancer>, eps: Vec<SocketAddr>| {
                    let cluster = eds_cluster(&name, lb_policy(lb), http2);
                    clusters.push(Arc::new(Resource::from_message(name.clone(), &cluster)));
                    let cla = load_assignment(&name, &eps);
                    endpoints.push(Arc::new(Resource::from_message(name, &cla)));
                };
                add(cluster_name(sp.port, None, &host), default_lb, all.iter().map(|(a, _)| *a).collect());
                for subset in dr.map(|d| d.subsets.as_slice()).unwrap_or_default() {
                    let lb = subset.traffic_policy.as_ref().and_then(|t| t.load_balancer).or(default_lb);
                    let eps = all.iter().filter(|(_, l)| selector_matches(&subset.labels, l)).map(|(a, _)| *a).collect();
                    add(cluster_name(sp.port, Some(&subset.name), &host), lb, eps);
                }
            }
        }

        // Which VirtualService governs each host (the first by namespace/name).
        let mut vs_by_host: BTreeMap<String, &VirtualService> = BTreeMap::new();
        for vs in model.virtual_services.values() {
            if !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == "mesh") {
                continue;
            }
            for (i, h) in vs.hosts.iter().enumerate() {
                let host = resolve_host(h, &vs.namespace);
                if model.service_by_hostname(&host).is_none() {
                    problems.warn_vs(vs, &format!("spec.hosts[{i}]"), format!("host {host} is not a known service; the rule has no effect"));
                    continue;
                }
                match vs_by_host.get(&host) {
                    Some(first) => problems.warn_vs(
                        vs,
                        &format!("spec.hosts[{i}]"),
                        format!("host {host} is already routed by VirtualService {}/{}; this rule is ignored for it", first.namespace, first.name),
                    ),
                    None => {
                        vs_by_host.insert(host, vs);
                    }
                }
            }
        }

        let mut service_routes = BTreeMap::new();
        let mut http_ports = BTreeSet::new();
        let mut capture_listeners = Vec::new();
        for service in model.services.values() {
            let host = service.hostname();
            for sp in &service.ports {
                match sp.protocol {
                    Protocol::Http | Protocol::Http2 => {
                        if [OUTBOUND_PORT, INBOUND_PORT].contains(&sp.port) {
                            // A 0.0.0.0:15001 hand-off listener would clash with the
                            // capture listener itself, and Envoy would reject both.
                            problems.report(
                                "Service",
                                &service.namespace,
                                &service.name,
                                "spec.ports",
                                format!("port {} is the sidecar's capture port; captured traffic to it is not routed by host", sp.port),
                            );
                        } else {
                            http_ports.insert(sp.port);
                        }
                        let routes = match vs_by_host.get(&host) {
                            Some(vs) => routes::virtual_service_routes(&model, vs, sp.port, &mut problems),
                            None => vec![routes::default_route(&cluster_name(sp.port, None, &host))],
                        };
                        service_routes.insert((host.clone(), sp.port), Arc::new(routes));
                    }
                    Protocol::Tcp => {
                        let Some(ip) = service.cluster_ip else { continue };
                        let name = format!("{ip}_{}", sp.port);
                        let cluster = cluster_name(sp.port, None, &host);
                        let listener = Listener {
                            name: name.clone(),
                            address: Some(socket_address(ip, sp.port)),
                            bind_to_port: Some(BoolValue { value: false }),
                            filter_chains: vec![filter_chain(&name, tcp_proxy_filter(&cluster, &cluster))],
                            ..Default::default()
                        };
                        capture_listeners.push(Arc::new(Resource::from_message(name, &listener)));
                    }
                }
            }
        }
        for port in http_ports {
            let name = format!("0.0.0.0_{port}");
            let listener = Listener {
                name: name.clone(),
                address: Some(socket_address(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)),
                bind_to_port: Some(BoolValue { value: false }),
                filter_chains: vec![filter_chain(
                    &name,
                    http_connection_manager(&format!("outbound_{port}"), RouteSource::Rds(format!("outbound.{port}"))),
                )],
                ..Default::default()
            };
            capture_listeners.push(Arc::new(Resource::from_message(name, &listener)));
        }

        MeshConfig {
            model,
            clusters: Arc::new(ResourceSet::new(clusters)),
            endpoints: Arc::new(ResourceSet::new(endpoints)),
            service_routes,
            capture_listeners,
            routes_by_namespace: Mutex::new(BTreeMap::new()),
            problems: problems.list.into_iter().collect(),
        }
    }

    pub fn model(&self) -> &Arc<Index> {
        &self.model
    }

    pub fn clusters(&self) -> &Arc<ResourceSet> {
        &self.clusters
    }

    pub fn endpoints(&self) -> &Arc<ResourceSet> {
        &self.endpoints
    }

    /// Virtual hosts for every HTTP service port, as seen from `namespace`: the short
    /// name only for services of that namespace. With `port` set, only that port's
    /// services and domains both with and without `:port`; without, every port with
    /// `:port` (and bare names for port 80).
    fn virtual_hosts(&self, namespace: &str, port: Option<u16>, passthrough: &str) -> Vec<VirtualHost> {
        let mut seen = BTreeSet::new();
        let mut vhosts = Vec::new();
        for ((host, p), routes) in &self.service_routes {
            if port.is_some_and(|want| want != *p) {
                continue;
            }
            let Some(service) = self.model.service_by_hostname(host) else { continue };
            let mut names = vec![host.clone(), format!("{}.{}.svc", service.name, service.namespace), format!("{}.{}", service.name, service.namespace)];
            if service.namespace == namespace {
                names.push(service.name.clone());
            }
            if let Some(ip) = service.cluster_ip {
                names.push(ip.to_string());
            }
            let mut domains = Vec::new();
            for n in names {
                let with_port = if n.contains(':') { format!("[{n}]:{p}") } else { format!("{n}:{p}") };
                for d in [Some(with_port), (port.is_some() || *p == 80).then_some(n)].into_iter().flatten() {
                    // Envoy rejects a route configuration with a domain twice.
                    if seen.insert(d.clone()) {
                        domains.push(d);
                    }
                }
            }
            if domains.is_empty() {
                continue;
            }
            vhosts.push(VirtualHost {
                name: format!("{host}:{p}"),
                domains,
                routes: (**routes).clone(),
                ..Default::default()
            });
        }
        vhosts.push(VirtualHost {
            name: "passthrough".to_owned(),
            domains: vec!["*".to_owned()],
            routes: vec![routes::default_route(passthrough)],
            ..Default::default()
        });
        vhosts
    }

    /// Route configurations for proxies in `namespace` (explicit and per-port).
    pub fn routes_for(&self, namespace: &str) -> Arc<ResourceSet> {
        let mut cache = self.routes_by_namespace.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = cache.get(namespace) {
            return set.clone();
        }
        let mut resources = Vec::new();
        let explicit = RouteConfiguration {
            name: EXPLICIT_ROUTE_NAME.to_owned(),
            virtual_hosts: self.virtual_hosts(namespace, None, PASSTHROUGH_AUTHORITY_CLUSTER),
            validate_clusters: Some(BoolValue { value: false }),
            ..Default::default()
        };
        resources.push(Arc::new(Resource::from_message(explicit.name.clone(), &explicit)));
        let ports: BTreeSet<u16> = self.service_routes.keys().map(|(_, p)| *p).collect();
        for port in ports {
            let rc = RouteConfiguration {
                name: format!("outbound.{port}"),
                virtual_hosts: self.virtual_hosts(namespace, Some(port), PASSTHROUGH_CLUSTER),
                validate_clusters: Some(BoolValue { value: false }),
                ..Default::default()
            };
            resources.push(Arc::new(Resource::from_message(rc.name.clone(), &rc)));
        }
        let set = Arc::new(ResourceSet::new(resources));
        cache.insert(namespace.to_owned(), set.clone());
        set
    }

    /// Listeners of one proxy class.
    pub fn listeners_for(&self, class: &ProxyClass) -> Arc<ResourceSet> {
        match class.mode {
            InterceptionMode::None => {
                let listener = Listener {
                    name: "outbound".to_owned(),
                    address: Some(socket_address(class.ip, OUTBOUND_PORT)),
                    filter_chains: vec![filter_chain(
                        "outbound",
                        http_connection_manager("outbound", RouteSource::Rds(EXPLICIT_ROUTE_NAME.to_owned())),
                    )],
                    ..Default::default()
                };
                Arc::new(ResourceSet::new([Arc::new(Resource::from_message("outbound", &listener))]))
            }
            InterceptionMode::Redirect => {
                let mut all = self.capture_listeners.clone();
                let outbound = Listener {
                    name: "virtualOutbound".to_owned(),
                    address: Some(socket_address(IpAddr::V4(Ipv4Addr::UNSPECIFIED), OUTBOUND_PORT)),
                    use_original_dst: Some(BoolValue { value: true }),
                    listener_filters: vec![original_dst_listener_filter()],
                    default_filter_chain: Some(filter_chain(
                        "PassthroughFilterChain",
                        tcp_proxy_filter(PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER),
                    )),
                    ..Default::default()
                };
                all.push(Arc::new(Resource::from_message(outbound.name.clone(), &outbound)));
                all.push(Arc::new(Resource::from_message("virtualInbound", &self.inbound_listener(class))));
                Arc::new(ResourceSet::new(all))
            }
        }
    }

    /// 15006: HTTP for the ports of services that select this workload, TCP
    /// passthrough for everything else; all to the original destination.
    fn inbound_listener(&self, class: &ProxyClass) -> Listener {
        let mut ports = BTreeSet::new();
        let pod = self.model.pods.values().find(|p| p.namespace == class.namespace && p.ip == Some(class.ip));
        for service in self.model.services.values() {
            let Some(selector) = &service.selector else { continue };
            if service.namespace != class.namespace || !selector_matches(selector, &class.labels) {
                continue;
            }
            for sp in service.ports.iter().filter(|p| p.protocol != Protocol::Tcp) {
                let target = match pod {
                    Some(pod) => pod.resolve_port(&sp.target_port),
                    None => match &sp.target_port {
                        crate::model::TargetPort::Number(n) => Some(*n),
                        crate::model::TargetPort::Name(_) => None,
                    },
                };
                if let Some(t) = target {
                    ports.insert(t);
                }
            }
        }
        let filter_chains = ports
            .into_iter()
            .map(|port| {
                let rc = RouteConfiguration {
                    name: format!("inbound|{port}"),
                    virtual_hosts: vec![VirtualHost {
                        name: format!("inbound|{port}"),
                        domains: vec!["*".to_owned()],
                        routes: vec![routes::default_route(INBOUND_PASSTHROUGH_CLUSTER)],
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                let mut chain = filter_chain(
                    &format!("inbound|{port}"),
                    http_connection_manager(&format!("inbound_{port}"), RouteSource::Inline(Box::new(rc))),
                );
                chain.filter_chain_match =
                    Some(FilterChainMatch { destination_port: Some(UInt32Value { value: u32::from(port) }), ..Default::default() });
                chain
            })
            .collect();
        Listener {
            name: "virtualInbound".to_owned(),
            address: Some(socket_address(IpAddr::V4(Ipv4Addr::UNSPECIFIED), INBOUND_PORT)),
            listener_filters: vec![original_dst_listener_filter()],
            filter_chains,
            default_filter_chain: Some(filter_chain(
                "InboundPassthroughFilterChain",
                tcp_proxy_filter(INBOUND_PASSTHROUGH_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER),
            )),
            ..Default::default()
        }
    }

    /// Everything one proxy class should have.
    pub fn proxy_snapshot(&self, class: &ProxyClass) -> Snapshot {
        Snapshot::new()
            .with(ResourceType::Cluster, self.clusters.clone())
            .with(ResourceType::ClusterLoadAssignment, self.endpoints.clone())
            .with(ResourceType::Listener, self.listeners_for(class))
            .with(ResourceType::RouteConfiguration, self.routes_for(&class.namespace))
    }
}
