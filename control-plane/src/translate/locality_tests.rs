use super::*;
use crate::model::OutlierDetection;

fn l(text: &str) -> Locality {
    Locality::parse(text).unwrap()
}

fn ls(texts: &[&str]) -> Vec<Locality> {
    texts.iter().map(|t| l(t)).collect()
}

fn fo(from: &str, to: &str) -> RegionFailover {
    RegionFailover { from: from.to_owned(), to: to.to_owned() }
}

#[test]
fn failover_priorities_follow_how_much_of_the_locality_matches() {
    let groups = ls(&["r1/z1/s1", "r1/z1/s2", "r1/z2", "r2/z1", "r3/z1", ""]);
    type Case<'a> = (&'a str, Vec<RegionFailover>, [u32; 6]);
    let cases: Vec<Case<'_>> = vec![
        // Same subzone 0, same zone 1, same region 2, elsewhere 3 (and nowhere = elsewhere).
        ("r1/z1/s1", vec![], [0, 1, 2, 3, 3, 3]),
        // No exact match: the priorities close up from 0.
        ("r1/z1/s9", vec![], [0, 0, 1, 2, 2, 2]),
        ("r1/z2", vec![], [1, 1, 0, 2, 2, 2]),
        // r1 fails over to r3 before the other regions.
        ("r1/z1/s1", vec![fo("r1", "r3")], [0, 1, 2, 4, 3, 4]),
        // A failover of another region changes nothing.
        ("r1/z1/s1", vec![fo("r2", "r3")], [0, 1, 2, 3, 3, 3]),
        ("r2/z1", vec![fo("r2", "r1")], [3, 3, 3, 0, 4, 4]),
        // A caller without locality is nearest to the endpoints without one.
        ("", vec![], [1, 1, 1, 1, 1, 0]),
    ];
    for (caller, failover, want) in cases {
        let got = failover_priorities(&l(caller), &groups, &failover);
        // Renumbered without gaps: compare the order.
        let rank = |v: &[u32]| -> Vec<usize> {
            let distinct: BTreeSet<u32> = v.iter().copied().collect();
            v.iter().map(|x| distinct.iter().position(|d| d == x).unwrap()).collect()
        };
        assert_eq!(rank(&got), rank(&want), "caller {caller:?}, failover {failover:?}: {got:?}");
        let max = *got.iter().max().unwrap() as usize;
        assert_eq!(got.iter().copied().collect::<BTreeSet<_>>().len(), max + 1, "no gaps: {got:?}");
    }
}

#[test]
fn distribute_splits_each_share_over_the_groups_it_matches() {
    let dist = |from: &str, to: &[(&str, u32)]| Distribute {
        from: from.to_owned(),
        to: to.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
    };
    let rules = vec![dist("r1/z1/*", &[("r1/z1/*", 80), ("r1/z2/*", 20)]), dist("r2/*", &[("r1/*", 100)])];
    let groups = vec![(l("r1/z1/a"), 1), (l("r1/z1/b"), 3), (l("r1/z2"), 2), (l("r2/z1"), 5)];
    type Case<'a> = (&'a str, Option<Vec<Option<u32>>>);
    let cases: Vec<Case<'_>> = vec![
        // 80 over z1's groups by their weights (1:3), 20 to z2, r2 left out.
        ("r1/z1/a", Some(vec![Some(20), Some(60), Some(20), None])),
        // r2 callers send everything to r1, split 1:3:2.
        ("r2/z9", Some(vec![Some(17), Some(50), Some(34), None])),
        // No rule for r3: the weights stay.
        ("r3", None),
    ];
    for (caller, want) in cases {
        assert_eq!(distribute_weights(&l(caller), &groups, &rules), want, "caller {caller}");
    }
}

fn endpoint(port: u32) -> LbEndpoint {
    use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, Endpoint};
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(crate::translate::envoy::socket_address("127.0.0.1".parse().unwrap(), port as u16)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[test]
fn only_locality_aware_clusters_are_planned_per_caller() {
    let outlier = PolicySections { outlier_detection: Some(OutlierDetection::default()), ..Default::default() };
    let two = || vec![(l("r1/z1"), endpoint(1)), (l("r1/z2"), endpoint(2))];
    let one = || vec![(l("r1/z1"), endpoint(1)), (l("r1/z1"), endpoint(2))];
    let disabled = PolicySections { locality_lb: Some(LocalityLb::Disabled), ..outlier.clone() };
    let cases = [
        ("no outlier detection", PolicySections::default(), two(), false),
        ("enabled: false", disabled, two(), false),
        ("one locality", outlier.clone(), one(), false),
        ("default failover", outlier.clone(), two(), true),
    ];
    for (what, policy, endpoints, planned) in cases {
        let mut plans = Plans::default();
        let mut cluster = Cluster::default();
        let cla = assignment("c", &policy, &mut cluster, endpoints, &mut plans);
        assert_eq!(plans.0.contains_key("c"), planned, "{what}");
        assert_eq!(cla.endpoints.len(), if planned { 2 } else { 1 }, "{what}");
    }
    // Failover: the caller's zone first.
    let mut plans = Plans::default();
    assignment("c", &outlier, &mut Cluster::default(), two(), &mut plans);
    let cla = plans.0["c"].for_caller(&l("r1/z2"));
    let by_zone: Vec<(String, u32)> =
        cla.endpoints.iter().map(|g| (g.locality.clone().unwrap().zone, g.priority)).collect();
    assert_eq!(by_zone, [("z1".to_owned(), 1), ("z2".to_owned(), 0)]);
    // Distribute weighs localities on the cluster.
    let to = [("r1/z1".to_owned(), 80), ("r1/z2".to_owned(), 20)].into_iter().collect();
    let policy = PolicySections {
        locality_lb: Some(LocalityLb::Distribute(vec![Distribute { from: "r1".to_owned(), to }])),
        ..Default::default()
    };
    let mut cluster = Cluster::default();
    assignment("c", &policy, &mut cluster, two(), &mut plans);
    assert!(cluster.common_lb_config.unwrap().locality_config_specifier.is_some());
    let weights: Vec<u32> =
        plans.0["c"].for_caller(&l("r1/z1")).endpoints.iter().map(|g| g.load_balancing_weight.unwrap().value).collect();
    assert_eq!(weights, [80, 20]);
}

#[test]
fn kubernetes_endpoints_take_the_pod_label_else_their_node() {
    use crate::model::locality::Node;
    use crate::model::{MeshObject, Pod};
    let mut index = Index::new();
    for (name, locality) in [("n1", Some("r1/z1")), ("n2", None)] {
        index.apply(MeshObject::Node(Node { name: name.into(), locality: locality.map(l) }));
    }
    let pod = |labels: &[(&str, &str)], node: Option<&str>| Pod {
        namespace: "ns".into(),
        name: "p".into(),
        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ip: None,
        service_account: "default".into(),
        ports: Vec::new(),
        ready: true,
        node_name: node.map(str::to_owned),
    };
    let cases = [
        (Some(pod(&[("istio-locality", "r9.z9")], Some("n1"))), None, "r9/z9"),
        (Some(pod(&[], Some("n1"))), None, "r1/z1"),
        (Some(pod(&[], Some("n2"))), None, ""),
        (Some(pod(&[], None)), Some("n1"), "r1/z1"),
        (None, Some("n1"), "r1/z1"),
        (None, Some("unknown"), ""),
    ];
    for (pod, node, want) in cases {
        assert_eq!(endpoint_locality(&index, pod.as_ref(), node).to_string(), want, "{pod:?} {node:?}");
    }
    // A sidecar without a locality of its own is placed by its pod (found by IP).
    let ip: std::net::IpAddr = "10.0.0.7".parse().unwrap();
    index.apply(MeshObject::Pod(Pod { ip: Some(ip), ..pod(&[], Some("n1")) }));
    assert_eq!(pod_ip_locality(&index, "ns", &[ip]).map(|l| l.to_string()).as_deref(), Some("r1/z1"));
    assert_eq!(pod_ip_locality(&index, "other", &[ip]), None);
    assert_eq!(pod_ip_locality(&index, "ns", &["10.0.0.8".parse().unwrap()]), None);
}
