//! Routes that depend on the caller (tests/fixtures/scoping): what each caller gets,
//! and that proxies meeting the same conditions share one route set.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use control_plane::model::Labels;
use control_plane::translate::MeshConfig;
use envoy_types::pb::envoy::config::route::v3::{route, route_action, RouteConfiguration};
use prost::Message;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The clusters (or `[header]` edits) of each route of virtual host `vh` in the explicit
/// route configuration `mesh` gives a caller of `namespace` with `labels`.
fn routes_of(mesh: &MeshConfig, namespace: &str, labels: &Labels, vh: &str) -> Vec<String> {
    let set = mesh.routes_for(namespace, labels);
    let rc = set.iter().find(|r| r.name() == "outbound.explicit").expect("explicit route configuration");
    let rc = RouteConfiguration::decode(rc.body().value.as_slice()).expect("decodes");
    let host = rc.virtual_hosts.iter().find(|v| v.name == vh).unwrap_or_else(|| panic!("no virtual host {vh}"));
    host.routes
        .iter()
        .map(|r| {
            let Some(route::Action::Route(a)) = &r.action else { return "not a route".into() };
            let Some(route_action::ClusterSpecifier::Cluster(c)) = &a.cluster_specifier else {
                return "weighted".into();
            };
            let headers = r.request_headers_to_add.iter().map(|h| h.header.as_ref().unwrap().key.clone());
            std::iter::once(c.clone()).chain(headers).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

const REVIEWS: &str = "reviews.bookinfo.svc.cluster.local:9080";
const PRODUCTPAGE: &str = "productpage.bookinfo.svc.cluster.local:9080";

fn subset(s: &str) -> String {
    format!("outbound|9080|{s}|reviews.bookinfo.svc.cluster.local")
}

#[test]
fn source_labels_and_namespace_pick_the_routes_of_each_caller() {
    let mesh = common::mesh_from("scoping");
    let v2 = labels(&[("app", "productpage"), ("version", "v2"), ("pod-template-hash", "abc")]);
    let v1 = labels(&[("app", "productpage"), ("version", "v1")]);
    // productpage v2 matches the first rule; the gateway-only match is skipped by all.
    assert_eq!(routes_of(&mesh, "bookinfo", &v2, REVIEWS), [subset("v2"), subset("v3"), subset("v1")]);
    assert_eq!(routes_of(&mesh, "bookinfo", &v1, REVIEWS), [subset("v3"), subset("v1")]);
    assert_eq!(routes_of(&mesh, "front", &v1, REVIEWS), [subset("v3"), subset("v3"), subset("v1")]);
}

#[test]
fn a_rule_exported_to_its_namespace_only_leaves_other_callers_the_default_route() {
    let mesh = common::mesh_from("scoping");
    let cluster = "outbound|9080||productpage.bookinfo.svc.cluster.local";
    assert_eq!(routes_of(&mesh, "bookinfo", &Labels::new(), PRODUCTPAGE), [format!("{cluster} x-scope")]);
    assert_eq!(routes_of(&mesh, "front", &Labels::new(), PRODUCTPAGE), [cluster.to_owned()]);
}

#[test]
fn proxies_that_meet_the_same_conditions_share_one_route_set() {
    let mesh = common::mesh_from("scoping");
    let mut distinct = BTreeSet::new();
    for i in 0..10_000 {
        let namespace = if i % 2 == 0 { "bookinfo" } else { "front" };
        let version = ["v1", "v2", "v3"][i % 3];
        let l = labels(&[("app", "productpage"), ("version", version), ("pod", &format!("p{}", i % 97))]);
        distinct.insert(Arc::as_ptr(&mesh.routes_for(namespace, &l)) as usize);
    }
    // Two namespaces, each split by the one label condition (productpage v2 or not):
    // the pod names vary, the route sets do not.
    assert_eq!(distinct.len(), 4);
}
