//! The translator: a pure function from the mesh model and a proxy's identity to
//! Envoy resources.
//!
//! [`MeshConfig::build`] translates everything that does not depend on the proxy
//! once (clusters, endpoints, per-service routes); [`MeshConfig::proxy_snapshot`]
//! then assembles one proxy's view from shared pieces, so ten thousand proxies in one
//! namespace share one set of clusters, endpoints and routes (route sets vary only by
//! the source conditions a workload meets, see [`scoping`]; cluster sets only by the
//! DestinationRules a proxy uses where that depends on it, see [`dr_scope`]). Output
//! is deterministic (ordered maps; content-derived versions).

pub mod actions;
mod clusters;
pub mod contain;
pub mod delegate;
pub mod dr_scope;
pub mod envoy;
mod gateway;
mod gateway_l4;
pub mod gateway_tls;
pub mod http_actions;
mod l4_routes;
pub mod locality;
pub mod policy;
pub mod rate_limit;
pub mod routes;
pub mod scoping;
pub mod service_entry;
pub mod telemetry;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};
use prost::Message;
use xds::{Resource, ResourceSet, ResourceType, Snapshot};

use crate::model::index::Index;
use crate::model::{
    effective_policy, selector_matches, DestinationRule, EndpointSlice, Labels, ObjectError, Pod, PolicySections,
    Protocol, Service, ServiceEntry, Severity, VirtualService,
};
use clusters::{clusters_and_endpoints, keep_accepted_clusters};
use contain::{CheckStats, Checker, Containment};
use dr_scope::{Built, DrViews};
use envoy::*;
use scoping::{encode_virtual_host, Caller, Conditions, HostRoutes};

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

/// How the sidecar gets traffic (MISSION §4); its home is the bootstrap's contract.
pub use injector::node_metadata::InterceptionMode;
/// Sidecar or ingress gateway; its home is the bootstrap's contract too.
pub use injector::node_metadata::ProxyKind;

/// What the translator needs to know of a proxy. Proxies with equal `ProxyClass`
/// get the same snapshot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProxyClass {
    pub namespace: String,
    pub mode: InterceptionMode,
    /// Where the explicit listener binds (the first instance IP). `None` under capture:
    /// there every listener binds the wildcard address inside the pod, so the replicas
    /// of one workload share one class and one snapshot.
    pub ip: Option<IpAddr>,
    /// Workload labels: inbound listeners, and rules that select workloads (`sourceLabels`,
    /// `selector`s). Replicas share them, so they still share one class under capture.
    /// A gateway's labels are what Gateways' `spec.selector` match.
    pub labels: Labels,
    /// A gateway gets only its Gateways' listeners, no sidecar ones.
    pub kind: ProxyKind,
    /// Where the proxy runs: locality-aware clusters' endpoints depend on it
    /// ([`locality`]); proxies of one locality share them.
    pub locality: crate::model::locality::Locality,
}

/// Where traffic to destinations outside the mesh registry goes (Istio's
/// `meshConfig.outboundTrafficPolicy.mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OutboundTrafficPolicy {
    /// Passed through to where the client sent it (by IP, or by name in explicit mode).
    #[default]
    AllowAny,
    /// Blocked: HTTP gets a 502 saying why, other TCP is closed.
    RegistryOnly,
}

impl OutboundTrafficPolicy {
    /// The body of the 502 a blocked HTTP request gets (an Envoy format string).
    pub const BLOCKED_BODY: &'static str = "amime: %REQ(:authority)% is not a service of the mesh and \
        outboundTrafficPolicy is REGISTRY_ONLY: request blocked\n";
}

impl std::str::FromStr for OutboundTrafficPolicy {
    type Err = String;

    /// Istio's spelling (`ALLOW_ANY`, `REGISTRY_ONLY`), in any case, `-` or `_`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().replace('-', "_").as_str() {
            "ALLOW_ANY" => Ok(OutboundTrafficPolicy::AllowAny),
            "REGISTRY_ONLY" => Ok(OutboundTrafficPolicy::RegistryOnly),
            _ => Err(format!("{s:?} is not ALLOW_ANY or REGISTRY_ONLY")),
        }
    }
}

impl std::fmt::Display for OutboundTrafficPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutboundTrafficPolicy::AllowAny => "ALLOW_ANY",
            OutboundTrafficPolicy::RegistryOnly => "REGISTRY_ONLY",
        })
    }
}

/// Mesh-wide settings that are not objects of the model (Istio keeps them in MeshConfig).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshSettings {
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Access-log and tracing defaults and providers (`--mesh-config`).
    pub telemetry: crate::mesh_config::MeshTelemetry,
    /// Where mesh-wide Telemetry objects live.
    pub root_namespace: String,
}

impl Default for MeshSettings {
    fn default() -> Self {
        MeshSettings {
            outbound_traffic_policy: OutboundTrafficPolicy::default(),
            telemetry: Default::default(),
            root_namespace: crate::mesh_config::DEFAULT_ROOT_NAMESPACE.to_owned(),
        }
    }
}

/// Problems found while translating, reported by object and field.
#[derive(Debug, Default)]
pub struct Problems {
    pub list: BTreeSet<ObjectError>,
}

impl Problems {
    fn report(&mut self, kind: &str, namespace: &str, name: &str, field: &str, message: String) {
        self.list.insert(ObjectError::at_object(Severity::Warning, kind, namespace, name, field, message));
    }

    pub fn warn_vs(&mut self, vs: &VirtualService, field: &str, message: String) {
        self.report("VirtualService", &vs.namespace, &vs.name, field, message);
    }
}

/// Everything translated from one model version, shared by all proxies.
#[derive(Debug)]
pub struct MeshConfig {
    model: Arc<Index>,
    settings: MeshSettings,
    clusters: Arc<ResourceSet>,
    endpoints: Arc<ResourceSet>,
    /// The hosts whose DestinationRule depends on the proxy, and the cluster sets per
    /// view ([`dr_scope`]).
    dr_views: DrViews,
    /// `endpoints` as each caller locality gets them, where locality balancing applies.
    locality_endpoints: locality::LocalityEndpoints,
    /// Every HTTP service port's virtual host, encoded once per build in the four
    /// shapes a route configuration needs (and the variants callers may need, see
    /// [`scoping`]); ordered by (hostname, port).
    virtual_hosts: Vec<HostRoutes>,
    /// The source conditions of the rules' matches (`sourceLabels`, `sourceNamespace`).
    conditions: Conditions,
    /// Listeners every capture-mode proxy shares: virtualOutbound and its per-port
    /// and per-VIP hand-off targets.
    capture_listeners: Vec<Arc<Resource>>,
    /// Every Gateway server meshd serves, for the gateway proxies their Gateways select.
    gateway_servers: Vec<gateway::ServerPlan>,
    /// Route configurations per caller (namespace, source conditions met), built on
    /// first use.
    routes_by_caller: Mutex<BTreeMap<Caller, Arc<ResourceSet>>>,
    /// `capture_listeners` with each telemetry profile in use, built on first use.
    capture_by_profile: Mutex<BTreeMap<telemetry::TelemetryProfile, Vec<Arc<Resource>>>>,
    pub problems: Vec<ObjectError>,
    /// Verdicts and last good objects, handed from each build to the next.
    containment: Arc<Containment>,
    /// What checking the pieces against Envoy's constraints cost this build.
    pub checks: CheckStats,
}

/// Lookup tables built once per translation, so per-service work does not scan the
/// whole model.
pub(crate) struct ModelLookup<'a> {
    model: &'a Index,
    /// Pods by (namespace, label key, label value).
    pods_by_label: HashMap<(&'a str, &'a str, &'a str), Vec<&'a Pod>>,
    pods_by_namespace: HashMap<&'a str, Vec<&'a Pod>>,
    slices_by_service: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    /// DestinationRules by the hostname they resolve to.
    rules_by_host: HashMap<String, Vec<&'a DestinationRule>>,
    /// ServiceEntry hosts and the entry that adds each ([`service_entry`]).
    entries: BTreeMap<String, &'a ServiceEntry>,
    /// Entry hosts left out (another entry's or a service's), as warnings.
    entry_problems: Vec<ObjectError>,
}

impl<'a> ModelLookup<'a> {
    fn new(model: &'a Index) -> ModelLookup<'a> {
        let (entries, entry_problems) = service_entry::entries_by_host(model);
        let mut lookup = ModelLookup {
            model,
            pods_by_label: HashMap::new(),
            pods_by_namespace: HashMap::new(),
            slices_by_service: HashMap::new(),
            rules_by_host: HashMap::new(),
            entries,
            entry_problems,
        };
        for pod in model.pods.values() {
            lookup.pods_by_namespace.entry(pod.namespace.as_str()).or_default().push(pod);
            for (k, v) in &pod.labels {
                lookup.pods_by_label.entry((pod.namespace.as_str(), k.as_str(), v.as_str())).or_default().push(pod);
            }
        }
        for slice in model.endpoint_slices.values() {
            lookup.slices_by_service.entry((slice.namespace.as_str(), slice.service.as_str())).or_default().push(slice);
        }
        for dr in model.destination_rules.values() {
            let host = lookup.resolve(&dr.host, &dr.namespace);
            lookup.rules_by_host.entry(host).or_default().push(dr);
        }
        lookup
    }

    /// Pods of `namespace` that `selector` picks.
    fn selected_pods(&self, namespace: &str, selector: &Labels) -> Vec<&'a Pod> {
        let candidates = match selector.iter().next() {
            Some((k, v)) => self.pods_by_label.get(&(namespace, k.as_str(), v.as_str())),
            None => self.pods_by_namespace.get(namespace),
        };
        candidates.into_iter().flatten().copied().filter(|p| selector_matches(selector, &p.labels)).collect()
    }

    /// Whether some DestinationRule defines `subset` for `host`.
    pub(crate) fn subset_defined(&self, host: &str, subset: &str) -> bool {
        self.rules_by_host
            .get(host)
            .is_some_and(|rules| rules.iter().any(|dr| dr.subsets.iter().any(|s| s.name == subset)))
    }
}

static NO_LABELS: Labels = Labels::new();

/// The virtual host of `service` on `port`: answers to the FQDN, `name.namespace.svc`,
/// `name.namespace`, the short name (`own`: from the service's namespace) and the
/// cluster IP (`with_ip`), each with `:port`, and also bare with `bare`.
fn virtual_host(service: &Service, port: u16, routes: Vec<Route>, own: bool, bare: bool, with_ip: bool) -> VirtualHost {
    let host = service.hostname();
    let mut names = vec![
        host.clone(),
        format!("{}.{}.svc", service.name, service.namespace),
        format!("{}.{}", service.name, service.namespace),
    ];
    if own {
        names.push(service.name.clone());
    }
    if let (true, Some(ip)) = (with_ip, service.cluster_ip) {
        names.push(ip.to_string());
    }
    VirtualHost { name: format!("{host}:{port}"), domains: domains(names, port, bare), routes, ..Default::default() }
}

/// Virtual-host domains for `names` (hosts or IPs) on `port`: each with `:port` (IPv6 in
/// brackets), and also bare with `bare`.
fn domains(names: Vec<String>, port: u16, bare: bool) -> Vec<String> {
    let mut domains = Vec::with_capacity(names.len() * 2);
    for n in names {
        domains.push(if n.contains(':') { format!("[{n}]:{port}") } else { format!("{n}:{port}") });
        if bare {
            domains.push(n);
        }
    }
    domains
}

impl MeshConfig {
    /// Translates `model` with nothing remembered from an earlier build.
    pub fn build(model: Arc<Index>, settings: &MeshSettings) -> MeshConfig {
        MeshConfig::build_after(model, settings, None)
    }

    /// Translates `model`, reusing what `previous` checked and the last good
    /// version of each object it accepted (see [`contain`]).
    pub fn build_after(model: Arc<Index>, settings: &MeshSettings, previous: Option<&MeshConfig>) -> MeshConfig {
        let containment = previous.map(|p| p.containment.clone()).unwrap_or_default();
        let mut checker = Checker::start(&containment);
        let mut problems = Problems::default();
        let lookup = ModelLookup::new(&model);
        problems.list.extend(lookup.entry_problems.iter().cloned());
        let mut dr_views = DrViews::new(&settings.root_namespace);
        let mut built = clusters_and_endpoints(&model, &lookup, &mut dr_views, &mut problems);
        service_entry::clusters(&lookup, &mut dr_views, &mut built, &mut problems);
        let Built { mut clusters, mut endpoints, hash_policies, plans } = built;
        let vs_by_host = virtual_services_by_host(&model, &lookup, &mut problems);
        rate_limit::report_conflicts(&model, &mut problems);
        for c in telemetry::collector_clusters(&model, &settings.telemetry, &mut problems) {
            clusters.push(Arc::new(Resource::from_message(c.name.clone(), &c)));
        }
        telemetry::check(&model, &settings.telemetry, &mut problems);
        let mut vs_routes = contain::virtual_service_routes(&model, &lookup, &vs_by_host, &mut checker, &mut problems);
        let mut conditions = Conditions::default();
        let mut rules = HostRules { by_host: &vs_by_host, routes: &mut vs_routes, conditions: &mut conditions };
        let (mut virtual_hosts, mut http_ports) =
            service_hosts(&model, &mut rules, &hash_policies, &mut checker, &mut problems);
        let entries = service_entry::hosts(&model, &lookup, &mut rules, &hash_policies, &mut checker, &mut problems);
        virtual_hosts.extend(entries.virtual_hosts);
        http_ports.extend(entries.http_ports);
        let mut capture_listeners = l4_routes::listeners(&model, &lookup, &vs_by_host, &mut problems);
        capture_listeners.extend(entries.listeners);
        capture_listeners.extend(outbound_capture_listeners(settings, http_ports));
        let gateway_servers = gateway::plan(&model, &lookup, &hash_policies, &mut checker, &mut problems);

        let mut keep = |clusters: &mut Vec<Arc<Resource>>, endpoints: &mut Vec<Arc<Resource>>| {
            keep_accepted_clusters(clusters, endpoints, &model, &lookup, &mut checker, &mut problems)
        };
        keep(&mut clusters, &mut endpoints);
        dr_views.retain(&mut keep);
        contain::keep_accepted(
            &mut capture_listeners,
            "envoy.config.listener.v3.Listener",
            &mut checker,
            &mut problems,
            |name| contain::listener_origin(&model, name),
        );
        drop(lookup);
        let checks = checker.finish(&containment, &model);

        virtual_hosts.sort_by(|a, b| (&a.hostname, a.port).cmp(&(&b.hostname, b.port)));
        MeshConfig {
            model,
            settings: settings.clone(),
            clusters: Arc::new(ResourceSet::new(clusters)),
            endpoints: Arc::new(ResourceSet::new(endpoints)),
            dr_views,
            locality_endpoints: locality::LocalityEndpoints::new(plans),
            virtual_hosts,
            conditions,
            capture_listeners,
            gateway_servers,
            routes_by_caller: Mutex::new(BTreeMap::new()),
            capture_by_profile: Mutex::new(BTreeMap::new()),
            problems: problems.list.into_iter().collect(),
            containment,
            checks,
        }
    }

    /// The model this configuration was translated from.
    pub fn model(&self) -> &Arc<Index> {
        &self.model
    }

    pub fn clusters(&self) -> &Arc<ResourceSet> {
        &self.clusters
    }

    pub fn endpoints(&self) -> &Arc<ResourceSet> {
        &self.endpoints
    }

    /// Clusters and load assignments for proxies in `namespace` whose workloads have
    /// `labels`: the shared sets, with the DestinationRules the proxy sees applied to the
    /// hosts whose rule depends on the proxy; one pair per view ([`dr_scope`]).
    pub fn clusters_for(&self, namespace: &str, labels: &Labels) -> dr_scope::ClusterSets {
        self.dr_views.sets_for(namespace, labels, (&self.clusters, &self.endpoints))
    }

    /// [`Self::clusters_for`] the proxy's namespace and labels, with locality-aware
    /// clusters' endpoints ordered for its locality ([`locality`]).
    fn clusters_for_class(&self, class: &ProxyClass) -> dr_scope::ClusterSets {
        let (clusters, endpoints) = self.clusters_for(&class.namespace, &class.labels);
        (clusters, self.locality_endpoints.for_caller(&endpoints, &class.locality))
    }

    /// Route configurations (explicit and per-port) for proxies in `namespace` whose
    /// workloads have `labels`, assembled from the virtual hosts encoded once per build;
    /// shared by every proxy that meets the same source conditions (see [`scoping`]).
    pub fn routes_for(&self, namespace: &str, labels: &Labels) -> Arc<ResourceSet> {
        let caller = self.conditions.caller(namespace, labels);
        let mut cache = crate::sync::lock(&self.routes_by_caller);
        if let Some(set) = cache.get(&caller) {
            return set.clone();
        }
        let assemble = |name: &str, port: Option<u16>, passthrough: &str| {
            let mut bytes = RouteConfiguration {
                name: name.to_owned(),
                validate_clusters: Some(BoolValue { value: false }),
                ..Default::default()
            }
            .encode_to_vec();
            for vh in self.virtual_hosts.iter().filter(|vh| port.is_none_or(|p| p == vh.port)) {
                bytes.extend_from_slice(&vh.encoded_for(&caller, port.is_some()));
            }
            // Everything not in the registry, named as Istio names it.
            bytes.extend(encode_virtual_host(&match self.settings.outbound_traffic_policy {
                OutboundTrafficPolicy::AllowAny => VirtualHost {
                    name: "allow_any".to_owned(),
                    domains: vec!["*".to_owned()],
                    routes: vec![routes::default_route(passthrough)],
                    ..Default::default()
                },
                OutboundTrafficPolicy::RegistryOnly => VirtualHost {
                    name: "block_all".to_owned(),
                    domains: vec!["*".to_owned()],
                    routes: vec![direct_response_route("block_all", 502, OutboundTrafficPolicy::BLOCKED_BODY)],
                    ..Default::default()
                },
            }));
            let any = Any { type_url: <RouteConfiguration as prost::Name>::type_url(), value: bytes };
            Arc::new(Resource::new(name, any))
        };
        let mut resources = vec![assemble(EXPLICIT_ROUTE_NAME, None, PASSTHROUGH_AUTHORITY_CLUSTER)];
        let ports: BTreeSet<u16> = self.virtual_hosts.iter().map(|vh| vh.port).collect();
        for port in ports {
            resources.push(assemble(&format!("outbound.{port}"), Some(port), PASSTHROUGH_CLUSTER));
        }
        let set = Arc::new(ResourceSet::new(resources));
        cache.insert(caller, set.clone());
        set
    }

    /// The shared capture listeners with `profile` applied (themselves when it is empty).
    fn capture_listeners_for(&self, profile: &telemetry::TelemetryProfile) -> Vec<Arc<Resource>> {
        if profile.is_empty() {
            return self.capture_listeners.clone();
        }
        let mut cache = crate::sync::lock(&self.capture_by_profile);
        let built = cache.entry(profile.clone()).or_insert_with(|| {
            self.capture_listeners
                .iter()
                .map(|r| match Listener::decode(r.body().value.as_slice()) {
                    Ok(mut listener) => {
                        let direction = envoy_types::pb::envoy::config::core::v3::TrafficDirection::Outbound;
                        telemetry::apply(&mut listener, profile, direction);
                        Arc::new(Resource::from_message(r.name().to_owned(), &listener))
                    }
                    Err(_) => r.clone(),
                })
                .collect()
        });
        built.clone()
    }

    /// Listeners of one proxy class.
    pub fn listeners_for(&self, class: &ProxyClass) -> Arc<ResourceSet> {
        use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
        let profile =
            telemetry::profile_for(&self.model, &self.settings.telemetry, &self.settings.root_namespace, class);
        match class.mode {
            InterceptionMode::None => {
                rate_limit::warn_explicit(&self.model, &class.namespace, &class.labels);
                let mut listener = Listener {
                    name: "outbound".to_owned(),
                    address: Some(socket_address(class.ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), OUTBOUND_PORT)),
                    filter_chains: vec![filter_chain(
                        "outbound",
                        http_connection_manager("outbound", RouteSource::Rds(EXPLICIT_ROUTE_NAME.to_owned()), true),
                    )],
                    ..Default::default()
                };
                telemetry::apply(&mut listener, &profile, TrafficDirection::Outbound);
                Arc::new(ResourceSet::new([Arc::new(Resource::from_message("outbound", &listener))]))
            }
            InterceptionMode::Redirect => {
                // The shared capture listeners (virtualOutbound and the hand-off
                // targets) plus this workload's own inbound listener.
                let mut all = self.capture_listeners_for(&profile);
                let mut inbound = self.inbound_listener(class);
                telemetry::apply(&mut inbound, &profile, TrafficDirection::Inbound);
                all.push(Arc::new(Resource::from_message("virtualInbound", &inbound)));
                Arc::new(ResourceSet::new(all))
            }
        }
    }

    /// 15006: HTTP for the ports of services that select this workload, TCP
    /// passthrough for everything else; all to the original destination.
    fn inbound_listener(&self, class: &ProxyClass) -> Listener {
        let mut ports = BTreeSet::new();
        // Named target ports resolve on a pod of this workload (same labels): replicas
        // share their pod template, so any one of them answers for all.
        // Named target ports resolve on the pods of this workload: those with exactly
        // its labels, else (a bootstrap may carry fewer labels than the pod) those its
        // labels select. Replicas share a pod template, so any that knows the name will do.
        let in_namespace = || Index::in_namespace(&self.model.pods, &class.namespace);
        let mut workload: Vec<&Pod> = in_namespace().filter(|p| p.labels == class.labels).map(|p| &**p).collect();
        if workload.is_empty() && !class.labels.is_empty() {
            workload = in_namespace().filter(|p| selector_matches(&class.labels, &p.labels)).map(|p| &**p).collect();
        }
        for service in Index::in_namespace(&self.model.services, &class.namespace) {
            let Some(selector) = &service.selector else { continue };
            if !selector_matches(selector, &class.labels) {
                continue;
            }
            for sp in service.ports.iter().filter(|p| p.protocol.is_http()) {
                let target = match &sp.target_port {
                    crate::model::TargetPort::Number(n) => Some(*n),
                    named => workload.iter().find_map(|pod| pod.resolve_port(named)),
                };
                if let Some(t) = target {
                    ports.insert(t);
                }
            }
        }
        // 15006 is the blackhole's (below), never a service port's.
        ports.remove(&INBOUND_PORT);
        let limit = rate_limit::for_workload(&self.model, &class.namespace, &class.labels);
        let hand_offs = ports.into_iter().map(|port| {
            let passthrough = routes::default_route(INBOUND_PASSTHROUGH_CLUSTER);
            let (filters, routes) = match limit {
                Some(rl) => {
                    let (filter, routes) = rate_limit::inbound(rl, port, passthrough);
                    (vec![filter], routes)
                }
                None => (Vec::new(), vec![passthrough]),
            };
            let rc = RouteConfiguration {
                name: format!("inbound|{port}"),
                virtual_hosts: vec![VirtualHost {
                    name: format!("inbound|{port}"),
                    domains: vec!["*".to_owned()],
                    routes,
                    ..Default::default()
                }],
                ..Default::default()
            };
            let routes = RouteSource::Inline(Box::new(rc));
            let mut chain = filter_chain(
                &format!("inbound|{port}"),
                http_connection_manager_with(&format!("inbound_{port}"), routes, false, filters),
            );
            chain.filter_chain_match = Some(FilterChainMatch {
                destination_port: Some(UInt32Value { value: u32::from(port) }),
                ..Default::default()
            });
            chain
        });
        // A connection whose destination is 15006 itself (straight to the pod's 15006, which
        // the capture leaves alone) would be passed through to 15006 again, without end.
        let filter_chains = std::iter::once(capture_port_blackhole("virtualInbound-blackhole", INBOUND_PORT))
            .chain(hand_offs)
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

    /// Everything one proxy class should have. A gateway gets its Gateways' listeners
    /// and routes instead of a sidecar's.
    pub fn proxy_snapshot(&self, class: &ProxyClass) -> Snapshot {
        let (clusters, endpoints) = self.clusters_for_class(class);
        if class.kind == ProxyKind::Gateway {
            let (listeners, routes) = gateway::listeners_and_routes(&self.gateway_servers, class);
            return Snapshot::new()
                .with(ResourceType::Cluster, clusters)
                .with(ResourceType::ClusterLoadAssignment, endpoints)
                .with(ResourceType::Listener, Arc::new(ResourceSet::new(listeners)))
                .with(ResourceType::RouteConfiguration, Arc::new(ResourceSet::new(routes)));
        }
        Snapshot::new()
            .with(ResourceType::Cluster, clusters)
            .with(ResourceType::ClusterLoadAssignment, endpoints)
            .with(ResourceType::Listener, self.listeners_for(class))
            .with(ResourceType::RouteConfiguration, self.routes_for(&class.namespace, &class.labels))
    }
}

/// The route hash policy of each consistent-hash cluster, by cluster name.
type HashPolicies = HashMap<String, envoy_types::pb::envoy::config::route::v3::route_action::HashPolicy>;

/// The VirtualServices that may govern each registry host (services and ServiceEntry
/// hosts), in precedence order (by namespace/name): for a proxy, the first exported to
/// its namespace does. A rule that an earlier one hides from every namespace it is
/// exported to, and rules for hosts outside the registry, are reported.
fn virtual_services_by_host<'a>(
    model: &'a Index,
    lookup: &ModelLookup<'_>,
    problems: &mut Problems,
) -> BTreeMap<String, Vec<&'a VirtualService>> {
    let mut vs_by_host: BTreeMap<String, Vec<&VirtualService>> = BTreeMap::new();
    for vs in model.virtual_services.values() {
        if !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == "mesh") {
            continue;
        }
        for (i, h) in vs.hosts.iter().enumerate() {
            let host = lookup.resolve(h, &vs.namespace);
            if lookup.registry_ports(model, &host).is_none() {
                if l4_routes::is_sni_host(vs, h) {
                    continue;
                }
                problems.warn_vs(
                    vs,
                    &format!("spec.hosts[{i}]"),
                    format!("host {host} is not a known service; the rule has no effect"),
                );
                continue;
            }
            let earlier = vs_by_host.entry(host.clone()).or_default();
            if vs.export_to.shadowed_by(earlier.iter().map(|e| &e.export_to)) {
                let first = earlier[0];
                problems.warn_vs(
                    vs,
                    &format!("spec.hosts[{i}]"),
                    format!(
                        "host {host} is already routed by VirtualService {}/{} for every namespace this rule is \
                         exported to; this rule is ignored for it",
                        first.namespace, first.name
                    ),
                );
            } else {
                earlier.push(vs);
            }
        }
    }

    vs_by_host
}

/// The VirtualServices of each host and their translated routes, for [`service_hosts`].
struct HostRules<'a, 'm> {
    by_host: &'a BTreeMap<String, Vec<&'m VirtualService>>,
    routes: &'a mut contain::RoutesByRule,
    conditions: &'a mut Conditions,
}

/// Every HTTP service port's virtual host (encoded once per build in the shapes route
/// configurations need) and the HTTP ports in use.
fn service_hosts(
    model: &Index,
    rules: &mut HostRules<'_, '_>,
    hash_policies: &HashPolicies,
    checker: &mut Checker,
    problems: &mut Problems,
) -> (Vec<HostRoutes>, BTreeSet<u16>) {
    let mut virtual_hosts = Vec::new();
    let mut http_ports = BTreeSet::new();
    // A cluster IP answers for one service only: Envoy rejects a domain twice.
    let mut ip_owners: HashMap<IpAddr, &Service> = HashMap::new();
    for service in model.services.values() {
        let host = service.hostname();
        let owns_ip = match service.cluster_ip {
            None => false,
            Some(ip) => match ip_owners.get(&ip) {
                Some(owner) => {
                    problems.report(
                        "Service",
                        &service.namespace,
                        &service.name,
                        "spec.clusterIP",
                        format!(
                            "cluster IP {ip} is already used by Service {}/{}; requests by IP go there",
                            owner.namespace, owner.name
                        ),
                    );
                    false
                }
                None => {
                    ip_owners.insert(ip, service);
                    true
                }
            },
        };
        for (port_index, sp) in service.ports.iter().enumerate() {
            match sp.protocol {
                Protocol::Http | Protocol::Http2 => {
                    if [OUTBOUND_PORT, INBOUND_PORT].contains(&sp.port) {
                        // A 0.0.0.0:15001 hand-off listener would clash with the
                        // capture listener itself, and Envoy would reject both.
                        problems.report(
                            "Service",
                            &service.namespace,
                            &service.name,
                            &format!("spec.ports[{port_index}].port"),
                            format!(
                                "port {} is the sidecar's capture port; captured traffic to it is not routed by host",
                                sp.port
                            ),
                        );
                    } else {
                        http_ports.insert(sp.port);
                    }
                    let candidates = rules.by_host.get(&host).map(Vec::as_slice).unwrap_or_default();
                    let inputs = candidates
                        .iter()
                        .map(|vs| {
                            let key = ((vs.namespace.clone(), vs.name.clone()), host.clone(), sp.port);
                            (vs.export_to.clone(), rules.routes.remove(&key))
                        })
                        .collect();
                    let built = scoping::host_routes(
                        scoping::HostPort::service(service, sp.port, owns_ip),
                        inputs,
                        hash_policies,
                        &mut *rules.conditions,
                        checker,
                    );
                    match built {
                        Ok(host_routes) => virtual_hosts.push(host_routes),
                        Err(refused) => contain::report_service(problems, service, port_index, &refused),
                    }
                }
                // Their hand-off listeners come from l4_routes.
                Protocol::Tcp | Protocol::Tls => {}
            }
        }
    }
    (virtual_hosts, http_ports)
}

/// A filter chain that drops connections whose (original) destination port is `port`, a
/// capture listener's own: passing them through would connect the listener to itself, again
/// and again (Istio's `virtualInbound-blackhole` / `virtualOutbound-blackhole`).
fn capture_port_blackhole(name: &str, port: u16) -> FilterChain {
    let mut chain = filter_chain(name, tcp_proxy_filter(BLACKHOLE_CLUSTER, BLACKHOLE_CLUSTER));
    chain.filter_chain_match =
        Some(FilterChainMatch { destination_port: Some(UInt32Value { value: u32::from(port) }), ..Default::default() });
    chain
}

/// The capture listeners every transparent proxy shares: virtualOutbound (its default
/// chain per the outbound traffic policy) and one hand-off target per HTTP port.
fn outbound_capture_listeners(settings: &MeshSettings, http_ports: BTreeSet<u16>) -> Vec<Arc<Resource>> {
    let mut capture_listeners = Vec::new();
    let virtual_outbound = Listener {
        name: "virtualOutbound".to_owned(),
        address: Some(socket_address(IpAddr::V4(Ipv4Addr::UNSPECIFIED), OUTBOUND_PORT)),
        use_original_dst: Some(BoolValue { value: true }),
        listener_filters: vec![original_dst_listener_filter()],
        // A connection whose destination is 15001 itself (the pod's own 15001, or
        // 127.0.0.1:15001, neither captured) would be passed through to 15001 again.
        filter_chains: vec![capture_port_blackhole("virtualOutbound-blackhole", OUTBOUND_PORT)],
        default_filter_chain: Some(match settings.outbound_traffic_policy {
            OutboundTrafficPolicy::AllowAny => {
                filter_chain("PassthroughFilterChain", tcp_proxy_filter(PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER))
            }
            OutboundTrafficPolicy::RegistryOnly => {
                filter_chain("BlackHoleFilterChain", tcp_proxy_filter(BLACKHOLE_CLUSTER, BLACKHOLE_CLUSTER))
            }
        }),
        ..Default::default()
    };
    capture_listeners.push(Arc::new(Resource::from_message(virtual_outbound.name.clone(), &virtual_outbound)));
    for port in http_ports {
        let name = format!("0.0.0.0_{port}");
        let listener = Listener {
            name: name.clone(),
            address: Some(socket_address(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)),
            bind_to_port: Some(BoolValue { value: false }),
            filter_chains: vec![filter_chain(
                &name,
                http_connection_manager(
                    &format!("outbound_{port}"),
                    RouteSource::Rds(format!("outbound.{port}")),
                    false,
                ),
            )],
            ..Default::default()
        };
        capture_listeners.push(Arc::new(Resource::from_message(name, &listener)));
    }

    capture_listeners
}
