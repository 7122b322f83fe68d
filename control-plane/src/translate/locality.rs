//! Locality-aware load balancing (a DestinationRule's `localityLbSetting`) on EDS.
//!
//! A cluster whose effective policy turns locality balancing on ([`active`]) gets its
//! endpoints grouped by locality, and each caller's locality then decides the groups'
//! priorities (failover) or weights (distribute), as Istio's `ApplyLocalityLoadBalancer`
//! does. The build keeps the grouped assignment of those clusters as a [`Plan`];
//! [`LocalityEndpoints::for_caller`] derives the load assignments of one caller locality
//! from them once and shares them with every proxy of that locality.
//!
//! Rules it keeps:
//! - Without locality balancing (no outlier detection, `enabled: false`) or with one
//!   locality only under failover, a cluster's assignment is the one every proxy shares,
//!   exactly as before: the common case stays one shared EDS set.
//! - Priorities run from 0 without gaps (Envoy's rule); locality weights are at least 1.
//! - `distribute` sets the cluster's locality-weighted balancing, without which Envoy
//!   ignores locality weights.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::cluster::v3::cluster::common_lb_config::{
    LocalityConfigSpecifier, LocalityWeightedLbConfig,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Locality as PbLocality;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints};
use envoy_types::pb::google::protobuf::UInt32Value;
use xds::{Resource, ResourceSet};

use crate::model::index::Index;
use crate::model::locality::{locality_matches, pod_locality, Distribute, Locality, LocalityLb, RegionFailover};
use crate::model::{Pod, PolicySections};

/// The locality balancing a cluster with `policy` gets, as Istio decides it: the rule's
/// `distribute` always; failover (its `failover` list, or none with the mesh default,
/// which is enabled) only with outlier detection; nothing with `enabled: false`.
pub fn active(policy: &PolicySections) -> Option<LocalityLb> {
    let outlier = policy.outlier_detection.is_some();
    match &policy.locality_lb {
        Some(LocalityLb::Disabled) => None,
        Some(LocalityLb::Distribute(d)) => Some(LocalityLb::Distribute(d.clone())),
        Some(LocalityLb::Failover(f)) => outlier.then(|| LocalityLb::Failover(f.clone())),
        None => outlier.then(|| LocalityLb::Failover(Vec::new())),
    }
}

/// Istio's `LbPriority`: 0 same subzone, 1 same zone, 2 same region, 3 elsewhere.
fn closeness(caller: &Locality, endpoint: &Locality) -> u32 {
    match (caller.region == endpoint.region, caller.zone == endpoint.zone, caller.subzone == endpoint.subzone) {
        (true, true, true) => 0,
        (true, true, false) => 1,
        (true, false, _) => 2,
        (false, _, _) => 3,
    }
}

/// The priority of each group of endpoints (by locality) for a caller in `caller`:
/// by closeness, with the caller region's `failover` region before the other regions;
/// renumbered from 0 without gaps.
pub fn failover_priorities(caller: &Locality, groups: &[Locality], failover: &[RegionFailover]) -> Vec<u32> {
    let raw: Vec<u32> = groups
        .iter()
        .map(|g| {
            let p = closeness(caller, g);
            match failover.iter().find(|f| f.from == caller.region) {
                Some(f) if p == 3 && g.region != f.to => 4,
                _ => p,
            }
        })
        .collect();
    let used: BTreeSet<u32> = raw.iter().copied().collect();
    let rank: BTreeMap<u32, u32> = used.into_iter().zip(0..).collect();
    raw.iter().map(|p| rank[p]).collect()
}

/// The weight of each group (by locality, with its endpoints' total weight) for a caller
/// in `caller`, Istio's `applyLocalityWeights`: `None` when no `from` matches the caller
/// (the groups keep their weights); else, per group, its share of the first destination
/// pattern that matches it (split over the groups that pattern matches, by their
/// weights), or `None` for a group no pattern matches (it gets no traffic).
pub fn distribute_weights(
    caller: &Locality,
    groups: &[(Locality, u32)],
    distribute: &[Distribute],
) -> Option<Vec<Option<u32>>> {
    let rule = distribute.iter().find(|d| locality_matches(caller, &d.from))?;
    let mut weights: Vec<Option<u32>> = vec![None; groups.len()];
    let mut taken = vec![false; groups.len()];
    for (pattern, share) in &rule.to {
        let picked: Vec<usize> =
            (0..groups.len()).filter(|&i| !taken[i] && locality_matches(&groups[i].0, pattern)).collect();
        let total: u64 = picked.iter().map(|&i| u64::from(groups[i].1)).sum();
        for &i in &picked {
            taken[i] = true;
            let w = (u64::from(groups[i].1) * u64::from(*share)).div_ceil(total.max(1));
            weights[i] = Some(u32::try_from(w.max(1)).unwrap_or(u32::MAX));
        }
    }
    Some(weights)
}

/// A locality-aware cluster's endpoints grouped by locality, and how callers weigh them.
#[derive(Debug)]
pub struct Plan {
    base: ClusterLoadAssignment,
    localities: Vec<Locality>,
    lb: LocalityLb,
}

impl Plan {
    /// The assignment a caller in `caller` gets.
    pub fn for_caller(&self, caller: &Locality) -> ClusterLoadAssignment {
        let mut cla = self.base.clone();
        match &self.lb {
            LocalityLb::Failover(failover) => {
                let priorities = failover_priorities(caller, &self.localities, failover);
                for (group, p) in cla.endpoints.iter_mut().zip(priorities) {
                    group.priority = p;
                }
            }
            LocalityLb::Distribute(distribute) => {
                let groups: Vec<(Locality, u32)> = self
                    .localities
                    .iter()
                    .zip(&cla.endpoints)
                    .map(|(l, g)| (l.clone(), g.load_balancing_weight.as_ref().map_or(1, |w| w.value)))
                    .collect();
                if let Some(weights) = distribute_weights(caller, &groups, distribute) {
                    for (group, w) in cla.endpoints.iter_mut().zip(weights) {
                        match w {
                            Some(value) => group.load_balancing_weight = Some(UInt32Value { value }),
                            None => group.lb_endpoints.clear(),
                        }
                    }
                }
            }
            LocalityLb::Disabled => {}
        }
        cla
    }
}

/// Where a Kubernetes endpoint runs, as Istio reads it: its pod's `istio-locality`
/// label, else the topology labels of its Node (the pod's `spec.nodeName`, else the
/// EndpointSlice endpoint's `nodeName`), else unknown.
pub fn endpoint_locality(model: &Index, pod: Option<&Pod>, node_name: Option<&str>) -> Locality {
    if let Some(l) = pod.and_then(|p| pod_locality(&p.labels)) {
        return l;
    }
    pod.and_then(|p| p.node_name.as_deref())
        .or(node_name)
        .and_then(|n| model.nodes.get(n))
        .and_then(|n| n.locality.clone())
        .unwrap_or_default()
}

/// The locality of the proxy of a pod of `namespace` with one of `ips`, from the pod
/// meshd knows (its `istio-locality` label, else its Node's labels), for a sidecar whose
/// bootstrap names none; `None` when meshd knows no such pod or no locality for it.
pub fn pod_ip_locality(model: &Index, namespace: &str, ips: &[std::net::IpAddr]) -> Option<Locality> {
    let pod = Index::in_namespace(&model.pods, namespace).find(|p| p.ip.is_some_and(|ip| ips.contains(&ip)))?;
    Some(endpoint_locality(model, Some(&**pod), None)).filter(|l| !l.is_empty())
}

/// A service endpoint at `address` in `locality`.
pub fn located_endpoint(address: SocketAddr, locality: &Locality) -> (Locality, LbEndpoint) {
    (locality.clone(), super::envoy::lb_endpoint_at(address))
}

fn pb_locality(l: &Locality) -> PbLocality {
    PbLocality { region: l.region.clone(), zone: l.zone.clone(), sub_zone: l.subzone.clone() }
}

/// The load assignment of cluster `name` (whose cluster is `cluster`, with `policy`) over
/// `endpoints` with their localities. Locality-aware: grouped by locality, the plan
/// kept in `plans`, and the cluster set to weigh localities for `distribute`. Otherwise
/// one group, as every cluster had before locality balancing.
pub fn assignment(
    name: &str,
    policy: &PolicySections,
    cluster: &mut Cluster,
    endpoints: Vec<(Locality, LbEndpoint)>,
    plans: &mut Plans,
) -> ClusterLoadAssignment {
    let lb = active(policy);
    let mut groups: BTreeMap<Locality, Vec<LbEndpoint>> = BTreeMap::new();
    for (l, e) in &endpoints {
        groups.entry(l.clone()).or_default().push(e.clone());
    }
    let lb = match lb {
        Some(LocalityLb::Failover(_)) if groups.len() < 2 => None,
        other => other,
    };
    let Some(lb) = lb else {
        let lb_endpoints = endpoints.into_iter().map(|(_, e)| e).collect();
        return ClusterLoadAssignment {
            cluster_name: name.to_owned(),
            endpoints: vec![LocalityLbEndpoints { lb_endpoints, ..Default::default() }],
            ..Default::default()
        };
    };
    let distribute = matches!(lb, LocalityLb::Distribute(_));
    if distribute {
        cluster.common_lb_config.get_or_insert_with(Default::default).locality_config_specifier =
            Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(LocalityWeightedLbConfig {}));
    }
    let localities: Vec<Locality> = groups.keys().cloned().collect();
    let endpoints = groups
        .into_iter()
        .map(|(l, lb_endpoints)| {
            let weight: u32 =
                lb_endpoints.iter().map(|e| e.load_balancing_weight.as_ref().map_or(1, |w| w.value)).sum();
            LocalityLbEndpoints {
                locality: (!l.is_empty()).then(|| pb_locality(&l)),
                load_balancing_weight: distribute.then_some(UInt32Value { value: weight.max(1) }),
                lb_endpoints,
                ..Default::default()
            }
        })
        .collect();
    let base = ClusterLoadAssignment { cluster_name: name.to_owned(), endpoints, ..Default::default() };
    plans.0.insert(name.to_owned(), Plan { base: base.clone(), localities, lb });
    base
}

/// The plans of one build, by cluster name.
#[derive(Debug, Default)]
pub struct Plans(BTreeMap<String, Plan>);

impl Plans {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The load assignments per caller locality, built on first use from one build's plans.
#[derive(Debug, Default)]
pub struct LocalityEndpoints {
    plans: Plans,
    /// By the shared set's address (each DestinationRule view has its own, kept for the
    /// build's life) and the caller's locality.
    by_caller: Mutex<BTreeMap<(usize, Locality), Arc<ResourceSet>>>,
}

impl LocalityEndpoints {
    pub fn new(plans: Plans) -> LocalityEndpoints {
        LocalityEndpoints { plans, by_caller: Mutex::new(BTreeMap::new()) }
    }

    /// `shared` (the build's assignments) with each locality-aware cluster's as a caller
    /// in `caller` gets it; `shared` itself when no cluster is locality-aware.
    pub fn for_caller(&self, shared: &Arc<ResourceSet>, caller: &Locality) -> Arc<ResourceSet> {
        if self.plans.0.is_empty() {
            return shared.clone();
        }
        let key = (Arc::as_ptr(shared) as usize, caller.clone());
        let mut cache = crate::sync::lock(&self.by_caller);
        if let Some(set) = cache.get(&key) {
            return set.clone();
        }
        let resources = shared.iter().map(|r| match self.plans.0.get(r.name()) {
            Some(plan) => Arc::new(Resource::from_message(r.name().to_owned(), &plan.for_caller(caller))),
            None => r.clone(),
        });
        let set = Arc::new(ResourceSet::new(resources));
        cache.insert(key, set.clone());
        set
    }
}

#[cfg(test)]
#[path = "locality_tests.rs"]
mod tests;
