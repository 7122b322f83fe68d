//! Clusters warming for their endpoints; delta wildcard plus names.

use super::*;

/// An EDS cluster named `name` whose load-balancing policy is `lb` (a change that
/// leaves its endpoints alone).
fn eds_cluster(name: &str, service_name: &str, lb: i32) -> Arc<Resource> {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig};
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    let cluster = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig { service_name: service_name.into(), ..Default::default() }),
        lb_policy: lb,
        ..Default::default()
    };
    Arc::new(Resource::from_message(name, &cluster))
}

fn cluster_snapshot(lb: i32) -> Arc<Snapshot> {
    let clusters = ResourceSet::new([eds_cluster("a", "", lb), eds_cluster("b", "b-endpoints", 0)]);
    let endpoints = ResourceSet::new([mk_resource("a", "1"), mk_resource("b-endpoints", "1")]);
    Arc::new(
        Snapshot::new().with(CDS, Arc::new(clusters)).with(EDS, Arc::new(endpoints)).with(LDS, mk_set(&[("l", "1")])),
    )
}

fn proxy_state(h: &Harness) -> crate::status::ProxyState {
    h.conn.status.report().state
}

#[test]
fn a_changed_eds_cluster_gets_its_endpoints_again_in_the_next_response() {
    use crate::status::ProxyState;
    for api in [XdsApi::StateOfTheWorld, XdsApi::Delta] {
        let mut h = Harness::new(api);
        h.snapshot(&cluster_snapshot(0));
        for (ty, names) in [(CDS, &[][..]), (EDS, &["a", "b-endpoints"]), (LDS, &[])] {
            let r = match api {
                XdsApi::StateOfTheWorld => one(h.sotw(sotw_req(ty, names, "", ""))),
                XdsApi::Delta => one(h.delta(delta_req(ty, names, &[], ""))),
            };
            match api {
                XdsApi::StateOfTheWorld => h.sotw_ack(&r, names),
                XdsApi::Delta => h.delta_ack(&r),
            };
        }
        assert_eq!(proxy_state(&h), ProxyState::Synced, "{api:?}");

        // Only cluster a's load balancer changes; no endpoint changes.
        let out = h.snapshot(&cluster_snapshot(1));
        assert_eq!(out.iter().map(ty_of).collect::<Vec<_>>(), [CDS, EDS], "{api:?}");
        let resent = match api {
            XdsApi::StateOfTheWorld => sotw_bodies(&out[1]),
            XdsApi::Delta => delta_names(&out[1]),
        };
        assert_eq!(resent, [if api == XdsApi::Delta { "a" } else { "a:1" }], "{api:?}: only the changed cluster's");
        // CDS acknowledged, EDS not yet: the cluster is still warming in Envoy.
        match api {
            XdsApi::StateOfTheWorld => h.sotw_ack(&out[0], &[]),
            XdsApi::Delta => h.delta_ack(&out[0]),
        };
        assert_eq!(h.state(CDS), SyncState::Synced);
        assert_eq!(h.state(EDS), SyncState::Stale, "{api:?}: same version, new nonce, not acknowledged");
        assert_ne!(proxy_state(&h), ProxyState::Synced, "{api:?}");
        match api {
            XdsApi::StateOfTheWorld => h.sotw_ack(&out[1], &["a", "b-endpoints"]),
            XdsApi::Delta => h.delta_ack(&out[1]),
        };
        assert_eq!(proxy_state(&h), ProxyState::Synced, "{api:?}");
        // Nothing is resent when nothing changes.
        assert!(h.snapshot(&cluster_snapshot(1)).is_empty());
    }
}

#[test]
fn a_cluster_whose_endpoints_are_not_subscribed_is_warming() {
    use crate::status::ProxyState;
    let mut h = Harness::new(XdsApi::Delta);
    h.snapshot(&cluster_snapshot(0));
    let r = one(h.delta(delta_req(CDS, &[], &[], "")));
    h.delta_ack(&r);
    assert_eq!(h.state(CDS), SyncState::Synced);
    assert_eq!(proxy_state(&h), ProxyState::Warming, "no EDS subscription yet");
    let r = one(h.delta(delta_req(EDS, &["a"], &[], "")));
    h.delta_ack(&r);
    assert_eq!(h.conn.status.report().endpoints_not_subscribed, 1);
    assert_eq!(proxy_state(&h), ProxyState::Warming, "b-endpoints not subscribed");
    let r = one(h.delta(delta_req(EDS, &["b-endpoints"], &[], "")));
    h.delta_ack(&r);
    assert_eq!(proxy_state(&h), ProxyState::Synced);
}

#[test]
fn cluster_endpoint_names_come_from_the_encoded_cluster() {
    assert_eq!(eds_cluster("a", "", 0).endpoints_name().map(|n| &**n), Some("a"));
    assert_eq!(eds_cluster("b", "svc", 0).endpoints_name().map(|n| &**n), Some("svc"));
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    let dns = Cluster {
        name: "c".into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32)),
        ..Default::default()
    };
    assert_eq!(Resource::from_message("c", &dns).endpoints_name(), None);
    assert_eq!(mk_resource("d", "x").endpoints_name(), None, "not a cluster");
}

// ---------------------------------------------------------------------------
// Delta: wildcard and names together
// ---------------------------------------------------------------------------

#[test]
fn delta_wildcard_and_explicit_names_together() {
    let mut h = Harness::new(XdsApi::Delta);
    h.snapshot(&mk_snapshot(&[(LDS, &[("a", "1"), ("b", "1"), ("c", "1")])]));
    // Explicit names first, then the wildcard too: what the names did not cover is sent.
    let r = one(h.delta(delta_req(LDS, &["a"], &[], "")));
    assert_eq!(delta_names(&r), ["a"]);
    h.delta_ack(&r);
    let r = one(h.delta(delta_req(LDS, &["*", "missing"], &[], r.nonce())));
    assert_eq!(delta_names(&r), ["b", "c"]);
    assert_eq!(delta_removed(&r), ["missing"]);
    h.delta_ack(&r);
    assert_eq!(h.status(LDS).resource_count, 3);
    // Dropping the wildcard keeps the names: a change to a is still sent, to b not.
    assert!(h.delta(delta_req(LDS, &[], &["*"], r.nonce())).is_empty());
    let r = one(h.snapshot(&mk_snapshot(&[(LDS, &[("a", "2"), ("b", "2"), ("c", "1")])])));
    assert_eq!(delta_names(&r), ["a"]);
    h.delta_ack(&r);
    // Back to wildcard: b and c, which the proxy dropped with the wildcard, come again.
    let r = one(h.delta(delta_req(LDS, &["*"], &[], r.nonce())));
    assert_eq!(delta_names(&r), ["b", "c"]);
}
