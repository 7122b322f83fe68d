//! `localityLbSetting` and endpoint localities: what is read, and each refusal naming
//! the field.

use super::tests::{dr, parse_yaml, refused};
use super::*;
use crate::model::locality::{Distribute, Locality, LocalityLb, RegionFailover};

/// The rule's top-level locality setting and its warnings.
fn setting(spec: &str) -> (Option<LocalityLb>, Vec<Diagnostic>) {
    match parse_yaml(&dr(spec)) {
        Ok(Parsed::Object(MeshObject::DestinationRule(rule), warnings)) => {
            (rule.traffic_policy.and_then(|t| t.sections.locality_lb.clone()), warnings)
        }
        other => panic!("{spec}: {other:?}"),
    }
}

const OUTLIER: &str = "outlierDetection: {consecutive5xxErrors: 1}";

#[test]
fn locality_settings_are_read() {
    let (lb, warnings) = setting(&format!(
        "trafficPolicy: {{{OUTLIER}, loadBalancer: {{localityLbSetting: {{failover: [{{from: r1, to: r2}}]}}}}}}"
    ));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(lb, Some(LocalityLb::Failover(vec![RegionFailover { from: "r1".into(), to: "r2".into() }])));
    let (lb, _) = setting(
        "trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: 'r1/z1/*', to: {'r1/z1/*': 80, 'r1/z2/*': 20}}]}}}",
    );
    let to = [("r1/z1/*".to_owned(), 80), ("r1/z2/*".to_owned(), 20)].into_iter().collect();
    assert_eq!(lb, Some(LocalityLb::Distribute(vec![Distribute { from: "r1/z1/*".into(), to }])));
    let (lb, _) = setting("trafficPolicy: {loadBalancer: {localityLbSetting: {enabled: false}}}");
    assert_eq!(lb, Some(LocalityLb::Disabled));
    let (lb, _) = setting("trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN, localityLbSetting: {enabled: true}}}");
    assert_eq!(lb, Some(LocalityLb::Failover(Vec::new())));
    // Failover without outlier detection never happens: said so.
    let (_, warnings) = setting("trafficPolicy: {loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r2}]}}}");
    let fields: Vec<_> = warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(fields, ["spec.trafficPolicy.loadBalancer.localityLbSetting.failover"]);
}

#[test]
fn bad_locality_settings_name_the_field() {
    let lb =
        |setting: &str| dr(&format!("trafficPolicy: {{{OUTLIER}, loadBalancer: {{localityLbSetting: {setting}}}}}"));
    let f = "spec.trafficPolicy.loadBalancer.localityLbSetting";
    refused(&[
        (lb("{distribute: [{from: r1, to: {r1: 100}}], failover: [{from: r1, to: r2}]}"), f, "both set"),
        (lb("{distribute: [{from: r1, to: {r1: 70, r2: 20}}]}"), &format!("{f}.distribute[0].to"), "add up to 90"),
        (lb("{distribute: [{from: r1, to: {r1: 0, r2: 100}}]}"), &format!("{f}.distribute[0].to.r1"), "1-100"),
        (lb("{distribute: [{from: 'r1/*/z', to: {r1: 100}}]}"), &format!("{f}.distribute[0].from"), "wildcard"),
        (lb("{distribute: [{from: 'r1//z', to: {r1: 100}}]}"), &format!("{f}.distribute[0].from"), "region/zone"),
        (lb("{distribute: [{from: r1, to: {'a b': 100}}]}"), &format!("{f}.distribute[0].to.a b"), "letters"),
        (
            lb("{distribute: [{from: r1, to: {r1: 100}}, {from: r1, to: {r2: 100}}]}"),
            &format!("{f}.distribute[1].from"),
            "twice",
        ),
        (lb("{distribute: [{from: r1}]}"), &format!("{f}.distribute[0].to"), "required"),
        (lb("{failover: [{from: r1, to: r1}]}"), &format!("{f}.failover[0]"), "another region"),
        (lb("{failover: [{from: r1/z1, to: r2}]}"), &format!("{f}.failover[0].from"), "region only"),
        (lb("{failover: [{from: r1, to: '*'}]}"), &format!("{f}.failover[0].to"), "region only"),
        (lb("{failover: [{from: r1}]}"), &format!("{f}.failover[0].to"), "required"),
        (lb("{failoverPriority: [topology.istio.io/network]}"), &format!("{f}.failoverPriority"), "labels"),
    ]);
}

#[test]
fn endpoint_localities_are_read_and_checked() {
    let entry = |locality: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: e, namespace: ns}}\nspec: {{hosts: [a.example], resolution: STATIC, ports: [{{number: 80, name: http}}], endpoints: [{{address: 192.0.2.1, locality: '{locality}'}}]}}\n"
        )
    };
    match parse_yaml(&entry("r1/z1/s1")) {
        Ok(Parsed::Object(MeshObject::ServiceEntry(e), warnings)) => {
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_eq!(e.endpoints[0].locality, Locality::parse("r1/z1/s1").unwrap());
        }
        other => panic!("{other:?}"),
    }
    refused(&[
        (entry("r1/z1/s1/x"), "spec.endpoints[0].locality", "more than three"),
        (entry("r1//s1"), "spec.endpoints[0].locality", "empty part"),
    ]);
}

#[test]
fn nodes_give_their_topology_and_pods_their_node() {
    let node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n  labels: {topology.kubernetes.io/region: r1, topology.kubernetes.io/zone: z1, topology.istio.io/subzone: s1, kubernetes.io/os: linux}\nspec: {podCIDR: 10.0.0.0/24}\nstatus: {}\n";
    match parse_yaml(node) {
        Ok(Parsed::Object(MeshObject::Node(n), warnings)) => {
            assert!(warnings.is_empty(), "{warnings:?}");
            let locality = n.locality.map(|l| l.to_string());
            assert_eq!((n.name.as_str(), locality.as_deref()), ("n1", Some("r1/z1/s1")));
        }
        other => panic!("{other:?}"),
    }
    // A Node without topology labels has no locality, and no namespace.
    match parse_yaml("apiVersion: v1\nkind: Node\nmetadata: {name: n2}\n") {
        Ok(Parsed::Object(o @ MeshObject::Node(_), _)) => {
            assert_eq!(o.key().namespace, "");
            let MeshObject::Node(n) = o else { unreachable!() };
            assert_eq!(n.locality, None);
        }
        other => panic!("{other:?}"),
    }
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\nspec: {nodeName: n1, containers: []}\n";
    match parse_yaml(pod) {
        Ok(Parsed::Object(MeshObject::Pod(p), _)) => assert_eq!(p.node_name.as_deref(), Some("n1")),
        other => panic!("{other:?}"),
    }
}
