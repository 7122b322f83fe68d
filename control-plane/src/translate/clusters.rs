//! Clusters and load assignments: the ones every proxy gets, and per service port and
//! subset an EDS cluster shaped by the DestinationRule the proxy uses, its endpoints
//! grouped by locality.

use super::*;

/// The clusters every proxy gets (passthrough, blackhole) and, per service port and
/// subset, an EDS cluster with its load assignment and traffic policy; and the hash
/// policy routes to each consistent-hash cluster need. Hosts whose DestinationRule
/// depends on the proxy go to `views` instead.
pub(super) fn clusters_and_endpoints(
    model: &Index,
    lookup: &ModelLookup<'_>,
    views: &mut DrViews,
    problems: &mut Problems,
) -> Built {
    let mut base = Built::default();
    for c in [
        original_dst_cluster(PASSTHROUGH_CLUSTER, None),
        forward_proxy_cluster(PASSTHROUGH_AUTHORITY_CLUSTER),
        original_dst_cluster(
            INBOUND_PASSTHROUGH_CLUSTER,
            Some(IpAddr::V4(INBOUND_SOURCE_IP.parse::<Ipv4Addr>().expect("valid"))),
        ),
        blackhole_cluster(),
    ] {
        base.clusters.push(Arc::new(Resource::from_message(c.name.clone(), &c)));
    }
    for service in model.services.values() {
        views.build_host(lookup, &service.hostname(), &service.namespace, &mut base, problems, |dr, out| {
            service_clusters(model, lookup, service, dr, out)
        });
    }
    base
}

/// The clusters of `service` as DestinationRule `dr` shapes them: per port, one for the
/// whole service and one per subset, endpoints grouped by locality ([`locality`]).
fn service_clusters(
    model: &Index,
    lookup: &ModelLookup<'_>,
    service: &Service,
    dr: Option<&DestinationRule>,
    out: &mut Built,
) {
    let host = service.hostname();
    let rule_policy = dr.and_then(|d| d.traffic_policy.as_deref());
    for sp in &service.ports {
        let http2 = sp.protocol == Protocol::Http2;
        let all = service_endpoints(model, lookup, service, sp.port);
        let mut add = |name: String,
                       policy: PolicySections,
                       eps: Vec<&(SocketAddr, &Labels, crate::model::locality::Locality)>| {
            let mut cluster = eds_cluster(&name, Default::default(), http2);
            policy::apply(&mut cluster, &policy, sp.protocol);
            if let Some(hash) = policy::hash_policy(policy.load_balancer.as_ref()) {
                out.hash_policies.insert(name.clone(), hash);
            }
            let located = eps.iter().map(|(a, _, l)| locality::located_endpoint(*a, l)).collect();
            let cla = locality::assignment(&name, &policy, &mut cluster, located, &mut out.plans);
            out.clusters.push(Arc::new(Resource::from_message(name.clone(), &cluster)));
            out.endpoints.push(Arc::new(Resource::from_message(name, &cla)));
        };
        let own_policy = effective_policy(rule_policy, None, sp.port);
        add(cluster_name(sp.port, None, &host), own_policy, all.iter().collect());
        for subset in dr.map(|d| d.subsets.as_slice()).unwrap_or_default() {
            let policy = effective_policy(rule_policy, subset.traffic_policy.as_ref(), sp.port);
            let eps = all.iter().filter(|(_, l, _)| selector_matches(&subset.labels, l)).collect();
            add(cluster_name(sp.port, Some(&subset.name), &host), policy, eps);
        }
    }
}

/// Leaves out the clusters and load assignments Envoy would refuse, each with its pair.
pub(super) fn keep_accepted_clusters(
    clusters: &mut Vec<Arc<Resource>>,
    endpoints: &mut Vec<Arc<Resource>>,
    model: &Index,
    lookup: &ModelLookup<'_>,
    checker: &mut Checker,
    problems: &mut Problems,
) {
    let origin = |name: &str| contain::cluster_origin(model, lookup, name);
    let refused = contain::keep_accepted(clusters, "envoy.config.cluster.v3.Cluster", checker, problems, origin);
    endpoints.retain(|e| !refused.iter().any(|r| r == e.name()));
    let message = "envoy.config.endpoint.v3.ClusterLoadAssignment";
    let refused = contain::keep_accepted(endpoints, message, checker, problems, origin);
    clusters.retain(|c| !refused.iter().any(|r| r == c.name()));
}

/// Endpoints of `service` on `port` (by target port), each with the labels of the pod
/// behind it (for subsets) and its locality.
fn service_endpoints<'a>(
    model: &'a Index,
    lookup: &ModelLookup<'a>,
    service: &Service,
    port: u16,
) -> Vec<(SocketAddr, &'a Labels, crate::model::locality::Locality)> {
    let Some(sp) = service.ports.iter().find(|p| p.port == port) else { return Vec::new() };
    let slices = lookup.slices_by_service.get(&(service.namespace.as_str(), service.name.as_str()));
    let mut out = BTreeMap::new();
    if let Some(slices) = slices {
        for slice in slices {
            let Some(&(_, target)) = slice.ports.iter().find(|(name, _)| *name == sp.name) else { continue };
            for e in slice.endpoints.iter().filter(|e| e.ready) {
                let pod = e.pod.as_ref().and_then(|p| model.pods.get(&(service.namespace.clone(), p.clone())));
                let labels = pod.map_or(&NO_LABELS, |p| &p.labels);
                let locality = locality::endpoint_locality(model, pod.map(|p| &**p), e.node_name.as_deref());
                for ip in &e.addresses {
                    out.insert(SocketAddr::new(*ip, target), (labels, locality.clone()));
                }
            }
        }
    } else if let Some(selector) = &service.selector {
        for pod in lookup.selected_pods(&service.namespace, selector) {
            if !pod.ready {
                continue;
            }
            let (Some(ip), Some(target)) = (pod.ip, pod.resolve_port(&sp.target_port)) else { continue };
            out.insert(SocketAddr::new(ip, target), (&pod.labels, locality::endpoint_locality(model, Some(pod), None)));
        }
    }
    out.into_iter().map(|(a, (labels, l))| (a, labels, l)).collect()
}
