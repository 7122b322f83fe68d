//! Clusters that depend on the caller (tests/fixtures/dr-scope): which DestinationRule
//! each caller's clusters follow, and that proxies with the same view share one set.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use control_plane::model::Labels;
use control_plane::translate::MeshConfig;
use envoy_types::pb::envoy::config::cluster::v3::{cluster::LbPolicy, Cluster};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use prost::Message;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Istio's connection limit when none is set.
const NO_LIMIT: u32 = u32::MAX;

fn reviews(subset: &str) -> String {
    format!("outbound|9080|{subset}|reviews.bookinfo.svc.cluster.local")
}

/// For a caller of `namespace` with `labels`: the reviews clusters it gets (by name:
/// `|v1|` before `||`),
/// each with its load-balancing policy, connection limit and endpoint addresses.
fn reviews_clusters(mesh: &MeshConfig, namespace: &str, labels: &Labels) -> Vec<(String, LbPolicy, u32, Vec<String>)> {
    let (clusters, endpoints) = mesh.clusters_for(namespace, labels);
    clusters
        .iter()
        .filter(|r| r.name().ends_with("|reviews.bookinfo.svc.cluster.local"))
        .map(|r| {
            let cluster = Cluster::decode(r.body().value.as_slice()).expect("decodes");
            let max_connections = cluster
                .circuit_breakers
                .as_ref()
                .and_then(|cb| cb.thresholds.first().and_then(|t| t.max_connections.map(|v| v.value)))
                .unwrap_or(0);
            let cla = endpoints.get(r.name()).expect("its load assignment");
            let cla = ClusterLoadAssignment::decode(cla.body().value.as_slice()).expect("decodes");
            let addresses = cla
                .endpoints
                .iter()
                .flat_map(|l| &l.lb_endpoints)
                .map(|e| format!("{:?}", e.host_identifier).split('"').nth(1).unwrap_or_default().to_owned())
                .collect();
            (r.name().to_owned(), cluster.lb_policy(), max_connections, addresses)
        })
        .collect()
}

#[test]
fn each_caller_gets_the_destination_rule_istio_would_pick() {
    let mesh = common::mesh_from("dr-scope");
    let ips = |ips: &[&str]| ips.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let all = ips(&["127.0.10.11", "127.0.10.12", "127.0.10.13"]);
    // bookinfo: its own rule (exportTo "."): a connection limit, subsets v1 and v2.
    assert_eq!(
        reviews_clusters(&mesh, "bookinfo", &labels(&[("app", "productpage")])),
        [
            (reviews("v1"), LbPolicy::RoundRobin, 10, ips(&["127.0.10.11"])),
            (reviews("v2"), LbPolicy::RoundRobin, 10, ips(&["127.0.10.12"])),
            (reviews(""), LbPolicy::RoundRobin, 10, all.clone()),
        ]
    );
    // front: its own catch-all rule (least request, subset v1 only): no v2, so the route
    // to v2 finds no cluster there (Envoy answers 503).
    let web = labels(&[("app", "web")]);
    assert_eq!(
        reviews_clusters(&mesh, "front", &web),
        [
            (reviews("v1"), LbPolicy::LeastRequest, NO_LIMIT, ips(&["127.0.10.11"])),
            (reviews(""), LbPolicy::LeastRequest, NO_LIMIT, all.clone()),
        ]
    );
    // front's canary workloads: the workloadSelector rule, whose v2 is reviews-v3.
    let canary = labels(&[("app", "web"), ("track", "canary")]);
    assert_eq!(
        reviews_clusters(&mesh, "front", &canary),
        [
            (reviews("v2"), LbPolicy::RingHash, NO_LIMIT, ips(&["127.0.10.13"])),
            (reviews(""), LbPolicy::RingHash, NO_LIMIT, all.clone())
        ]
    );
    // A third namespace sees neither namespace's private rules: no rule at all.
    assert_eq!(reviews_clusters(&mesh, "elsewhere", &canary), [(reviews(""), LbPolicy::RoundRobin, NO_LIMIT, all)]);
    // The route to v2 is warned about: front's catch-all rule does not define it.
    let problems: Vec<String> = mesh.problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect();
    assert_eq!(
        problems,
        ["spec.http[0].route[0].destination.subset: subset \"v2\" of host reviews.bookinfo.svc.cluster.local is \
          defined by DestinationRules bookinfo/reviews, front/reviews-canary but not by front/reviews; callers using \
          those (or no rule) get 503"]
    );
}

#[test]
fn proxies_with_the_same_view_share_one_cluster_set() {
    let mesh = common::mesh_from("dr-scope");
    let mut distinct = BTreeSet::new();
    for i in 0..10_000 {
        let namespace = if i % 2 == 0 { "bookinfo" } else { "front" };
        let track = ["stable", "canary", "canary"][i % 3];
        let l = labels(&[("app", "web"), ("track", track), ("pod", &format!("p{}", i % 97))]);
        let (clusters, endpoints) = mesh.clusters_for(namespace, &l);
        distinct.insert((Arc::as_ptr(&clusters) as usize, Arc::as_ptr(&endpoints) as usize));
    }
    // bookinfo (its rule for everyone), front stable, front canary: the pod names and
    // tracks vary, the views do not.
    assert_eq!(distinct.len(), 3);
}

#[test]
fn without_scoped_rules_every_proxy_shares_the_mesh_wide_sets() {
    let mesh = common::mesh_from("scoping");
    for (namespace, l) in [("bookinfo", labels(&[("app", "a")])), ("front", Labels::new())] {
        let (clusters, endpoints) = mesh.clusters_for(namespace, &l);
        assert!(Arc::ptr_eq(&clusters, mesh.clusters()) && Arc::ptr_eq(&endpoints, mesh.endpoints()));
    }
}
