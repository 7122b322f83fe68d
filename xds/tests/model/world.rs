//! Snapshots drawn from a seed: a few EDS and static clusters, their endpoints,
//! listeners and the routes they refer to; sometimes a resource Envoy would reject.

use std::sync::Arc;

use xds::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig};
use xds::pb::envoy::config::cluster::v3::Cluster;
use xds::pb::google::protobuf::Any;
use xds::{Resource, ResourceSet, ResourceType, Snapshot};

use crate::rng::Rng;

/// Marks a resource the simulated Envoy rejects.
pub const BAD: &str = "bad";

/// The body of a non-cluster resource: `name|reference|content`.
pub struct Body {
    pub name: String,
    /// The route a listener refers to (empty otherwise).
    pub reference: String,
    pub bad: bool,
}

impl Body {
    pub fn encode(name: &str, reference: &str, content: &str) -> Vec<u8> {
        format!("{name}|{reference}|{content}").into_bytes()
    }

    pub fn parse(bytes: &[u8]) -> Body {
        let text = std::str::from_utf8(bytes).expect("utf-8 body");
        let mut parts = text.splitn(3, '|');
        let name = parts.next().unwrap_or_default().to_owned();
        let reference = parts.next().unwrap_or_default().to_owned();
        let content = parts.next().unwrap_or_default();
        Body { name, reference, bad: content == BAD }
    }
}

fn opaque(ty: ResourceType, name: &str, reference: &str, content: &str) -> Arc<Resource> {
    let body = Any { type_url: ty.type_url().into(), value: Body::encode(name, reference, content) };
    Arc::new(Resource::new(name, body))
}

fn cluster(name: &str, eds_service: Option<&str>, lb: i32, bad: bool) -> Arc<Resource> {
    let cluster = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(match eds_service {
            Some(_) => DiscoveryType::Eds as i32,
            None => DiscoveryType::Static as i32,
        })),
        eds_cluster_config: eds_service.map(|s| EdsClusterConfig { service_name: s.to_owned(), ..Default::default() }),
        lb_policy: lb,
        alt_stat_name: if bad { BAD.into() } else { String::new() },
        ..Default::default()
    };
    Arc::new(Resource::from_message(name, &cluster))
}

/// A consistent snapshot (every EDS cluster has its assignment, every listener's route
/// exists) drawn from `seed`; with `allow_bad`, one resource in five snapshots is one
/// Envoy rejects.
pub fn snapshot(seed: u64, allow_bad: bool) -> Arc<Snapshot> {
    let mut rng = Rng::new(seed);
    let bad_slot = (allow_bad && rng.below(5) == 0).then(|| rng.below(4));
    let mut clusters = Vec::new();
    let mut endpoints = Vec::new();
    for i in 0..4 {
        if rng.below(4) == 0 {
            continue;
        }
        let name = format!("c{i}");
        let bad = bad_slot == Some(0) && i == 0;
        match rng.below(3) {
            0 => clusters.push(cluster(&name, None, rng.below(2) as i32, bad)),
            kind => {
                let service = if kind == 1 { String::new() } else { format!("svc-{i}") };
                clusters.push(cluster(&name, Some(&service), rng.below(3) as i32, bad));
                let eds_name = if service.is_empty() { name.clone() } else { service };
                let content = if bad_slot == Some(1) && i == 1 { BAD.into() } else { format!("ep{}", rng.below(3)) };
                endpoints.push(opaque(ResourceType::ClusterLoadAssignment, &eds_name, "", &content));
            }
        }
    }
    // An assignment no cluster uses (Envoy never asks for it).
    endpoints.push(opaque(ResourceType::ClusterLoadAssignment, "unused", "", &format!("ep{}", rng.below(3))));
    let mut listeners = Vec::new();
    let mut routes = Vec::new();
    for i in 0..3 {
        if rng.below(3) == 0 {
            continue;
        }
        let route = format!("r{}", rng.below(3));
        let content = if bad_slot == Some(2) && i == 0 { BAD.into() } else { format!("l{}", rng.below(2)) };
        listeners.push(opaque(ResourceType::Listener, &format!("l{i}"), &route, &content));
    }
    for r in 0..3 {
        let content = if bad_slot == Some(3) && r == 0 { BAD.into() } else { format!("rc{}", rng.below(3)) };
        routes.push(opaque(ResourceType::RouteConfiguration, &format!("r{r}"), "", &content));
    }
    Arc::new(
        Snapshot::new()
            .with(ResourceType::Cluster, Arc::new(ResourceSet::new(clusters)))
            .with(ResourceType::ClusterLoadAssignment, Arc::new(ResourceSet::new(endpoints)))
            .with(ResourceType::Listener, Arc::new(ResourceSet::new(listeners)))
            .with(ResourceType::RouteConfiguration, Arc::new(ResourceSet::new(routes))),
    )
}

/// Whether the snapshot holds a resource Envoy would reject among those it would ask
/// for (assignments of its clusters, routes of its listeners).
pub fn has_needed_bad(snapshot: &Snapshot) -> bool {
    let bad_body = |r: &Arc<Resource>| Body::parse(&r.body().value).bad;
    let clusters = snapshot.set(ResourceType::Cluster);
    let bad_cluster = clusters.iter().any(|r| {
        use prost::Message;
        Cluster::decode(r.body().value.as_slice()).expect("cluster").alt_stat_name == BAD
    });
    let bad_endpoints = clusters
        .endpoint_names()
        .iter()
        .any(|n| snapshot.set(ResourceType::ClusterLoadAssignment).get(n).is_some_and(bad_body));
    let listeners = snapshot.set(ResourceType::Listener);
    let bad_listener = listeners.iter().any(bad_body);
    let bad_route = listeners.iter().any(|l| {
        let route = Body::parse(&l.body().value).reference;
        snapshot.set(ResourceType::RouteConfiguration).get(&route).is_some_and(bad_body)
    });
    bad_cluster || bad_endpoints || bad_listener || bad_route
}
