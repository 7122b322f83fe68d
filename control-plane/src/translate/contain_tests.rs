//! Containment, on models built directly (not through the parser, so these hold
//! whatever the parser accepts): a refused VirtualService is reported at its field,
//! keeps its last good version, and costs nothing to the rest of the mesh.

use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::{route, route_action, RouteConfiguration};
use prost::Message;
use xds::ResourceType;

use super::*;
use crate::model::{
    Destination, HeaderMatch, HttpMatch, HttpRoute, MeshObject, Protocol, RouteDestination, Service, ServicePort,
    StringMatch, TargetPort,
};
use crate::translate::{InterceptionMode, MeshConfig, MeshSettings, ProxyClass};

fn service(name: &str, ip: &str) -> MeshObject {
    MeshObject::Service(Service {
        namespace: "default".into(),
        name: name.into(),
        cluster_ip: Some(ip.parse().unwrap()),
        selector: Some([("app".to_string(), name.to_string())].into()),
        ports: vec![ServicePort {
            name: "http".into(),
            port: 9080,
            target_port: TargetPort::Number(9080),
            protocol: Protocol::Http,
        }],
    })
}

fn dest(host: &str, weight: u32) -> RouteDestination {
    RouteDestination {
        destination: Destination { host: host.into(), subset: None, port: None },
        weight,
        headers: Default::default(),
    }
}

fn vs(http: Vec<HttpRoute>) -> MeshObject {
    MeshObject::VirtualService(VirtualService {
        namespace: "default".into(),
        name: "reviews-rule".into(),
        hosts: vec!["reviews".into()],
        gateways: vec![],
        http,
        tcp: vec![],
        tls: vec![],
        export_to: Default::default(),
    })
}

fn rule(matches: Vec<HttpMatch>, route: Vec<RouteDestination>) -> HttpRoute {
    HttpRoute { matches, route, ..Default::default() }
}

fn header_match(name: &str, m: StringMatch) -> HttpMatch {
    HttpMatch { headers: [(name.to_string(), HeaderMatch::Value(m))].into(), ..Default::default() }
}

/// ratings to v2 only for `x-user: jason`: a valid rule.
fn good_rule() -> MeshObject {
    vs(vec![
        rule(vec![header_match("x-user", StringMatch::Exact("jason".into()))], vec![dest("ratings", 100)]),
        rule(vec![], vec![dest("reviews", 100)]),
    ])
}

fn model(rule: MeshObject) -> Arc<Index> {
    let mut index = Index::new();
    index.apply(service("reviews", "10.96.0.10"));
    index.apply(service("ratings", "10.96.0.11"));
    index.apply(rule);
    Arc::new(index)
}

/// The per-port route configuration a proxy in `default` gets, decoded.
fn routes_of(mesh: &MeshConfig) -> RouteConfiguration {
    let class = ProxyClass {
        namespace: "default".into(),
        mode: InterceptionMode::Redirect,
        ip: Some("10.0.0.1".parse().unwrap()),
        labels: Default::default(),
        kind: Default::default(),
        locality: Default::default(),
    };
    let snapshot = mesh.proxy_snapshot(&class);
    let set = snapshot.set(ResourceType::RouteConfiguration);
    RouteConfiguration::decode(set.get("outbound.9080").unwrap().body().value.as_slice()).unwrap()
}

/// Cluster names of the routes of `host`'s virtual host.
fn targets(rc: &RouteConfiguration, host: &str) -> Vec<String> {
    let vh = rc.virtual_hosts.iter().find(|vh| vh.name.starts_with(host)).unwrap();
    vh.routes
        .iter()
        .map(|r| match &r.action {
            Some(route::Action::Route(a)) => match &a.cluster_specifier {
                Some(route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
                Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                    w.clusters.iter().map(|c| c.name.clone()).collect::<Vec<_>>().join("+")
                }
                _ => String::new(),
            },
            _ => String::new(),
        })
        .collect()
}

fn errors(mesh: &MeshConfig) -> Vec<&ObjectError> {
    mesh.problems.iter().filter(|p| p.severity == Severity::Error).collect()
}

/// The three rules of issue 5 that froze routing for the whole mesh.
fn broken_rules() -> Vec<(&'static str, MeshObject, &'static str)> {
    vec![
        (
            "weights over u32::MAX",
            vs(vec![rule(vec![], vec![dest("reviews", u32::MAX), dest("ratings", 1)])]),
            "spec.http[0].route",
        ),
        (
            "empty header prefix",
            vs(vec![rule(
                vec![header_match("x-user", StringMatch::Prefix(String::new()))],
                vec![dest("reviews", 100)],
            )]),
            "spec.http[0].match[0].headers.x-user.prefix",
        ),
        (
            "empty uri regex",
            vs(vec![rule(
                vec![HttpMatch { uri: Some(StringMatch::Regex(String::new())), ..Default::default() }],
                vec![dest("reviews", 100)],
            )]),
            "spec.http[0].match[0].uri.regex",
        ),
    ]
}

#[test]
fn a_refused_rule_is_reported_at_its_field_and_left_out() {
    for (what, broken, field) in broken_rules() {
        let mesh = MeshConfig::build(model(broken), &MeshSettings::default());
        let errors = errors(&mesh);
        assert_eq!(errors.len(), 1, "{what}: {errors:#?}");
        let e = errors[0];
        assert_eq!(
            (e.kind.as_deref(), e.name.as_deref(), e.field.as_str()),
            (Some("VirtualService"), Some("reviews-rule"), field),
            "{what}: {e:#?}"
        );
        assert!(e.message.contains("routes["), "{what}: the Envoy path is in the message: {}", e.message);
        assert!(e.message.contains("left out"), "{what}: {}", e.message);
        // No earlier version: reviews gets the default route; ratings is untouched.
        let rc = routes_of(&mesh);
        assert_eq!(targets(&rc, "reviews"), ["outbound|9080||reviews.default.svc.cluster.local"], "{what}");
        assert_eq!(targets(&rc, "ratings"), ["outbound|9080||ratings.default.svc.cluster.local"], "{what}");
        assert!(crate::envoy_validate::check_message(&rc).is_empty(), "{what}: the pushed routes pass");
    }
}

#[test]
fn a_refused_rule_keeps_its_last_good_version() {
    let good = MeshConfig::build(model(good_rule()), &MeshSettings::default());
    assert!(errors(&good).is_empty(), "{:#?}", good.problems);
    let good_targets = targets(&routes_of(&good), "reviews");
    assert_eq!(good_targets.len(), 2);
    for (what, broken, field) in broken_rules() {
        let mesh = MeshConfig::build_after(model(broken), &MeshSettings::default(), Some(&good));
        assert_eq!(targets(&routes_of(&mesh), "reviews"), good_targets, "{what}");
        let e = errors(&mesh)[0];
        assert_eq!(e.field, field, "{what}");
        assert!(e.message.contains("last accepted version stays in effect"), "{what}: {}", e.message);
    }
}

#[test]
fn the_last_good_version_is_forgotten_with_the_object() {
    let good = MeshConfig::build(model(good_rule()), &MeshSettings::default());
    let mut without = (*model(good_rule())).clone();
    without.virtual_services.clear();
    let gone = MeshConfig::build_after(Arc::new(without), &MeshSettings::default(), Some(&good));
    let (_, broken, _) = broken_rules().remove(0);
    let mesh = MeshConfig::build_after(model(broken), &MeshSettings::default(), Some(&gone));
    assert!(errors(&mesh)[0].message.contains("left out"), "{:#?}", mesh.problems);
}

#[test]
fn verdicts_are_cached_by_content() {
    let first = MeshConfig::build(model(good_rule()), &MeshSettings::default());
    assert!(first.checks.checked > 0);
    let again = MeshConfig::build_after(model(good_rule()), &MeshSettings::default(), Some(&first));
    assert_eq!(again.checks.checked, 0, "{:?}", again.checks);
    assert_eq!(again.checks.cached, first.checks.checked + first.checks.cached);
    // One changed rule: only its own pieces are checked again.
    let (_, broken, _) = broken_rules().remove(1);
    let changed = MeshConfig::build_after(model(broken), &MeshSettings::default(), Some(&again));
    assert!(changed.checks.checked <= 3, "{:?}", changed.checks);
    assert_eq!(changed.checks.refused, 1, "{:?}", changed.checks);
}

#[test]
fn violation_paths_map_to_user_fields() {
    let origin = RouteOrigin {
        http: 2,
        matched: Some(1),
        headers: vec!["headers.x-user".into(), "withoutHeaders.x-debug".into(), "method".into()],
        query_params: vec!["queryParams.q".into()],
        destinations: vec![0, 2],
        source: None,
    };
    let origins = [RouteOrigin::default(), origin];
    let cases = [
        ("routes[1].match.headers[0].string_match.prefix", "spec.http[2].match[1].headers.x-user.prefix"),
        (
            "routes[1].match.headers[1].string_match.safe_regex.regex",
            "spec.http[2].match[1].withoutHeaders.x-debug.regex",
        ),
        ("routes[1].match.headers[2].name", "spec.http[2].match[1].method"),
        ("routes[1].match.query_parameters[0].string_match.exact", "spec.http[2].match[1].queryParams.q.exact"),
        ("routes[1].match.safe_regex.regex", "spec.http[2].match[1].uri.regex"),
        ("routes[1].match.prefix", "spec.http[2].match[1].uri.prefix"),
        ("routes[1].match.path", "spec.http[2].match[1].uri.exact"),
        ("routes[1].route.weighted_clusters.clusters", "spec.http[2].route"),
        ("routes[1].route.weighted_clusters.clusters[1].weight", "spec.http[2].route[2].weight"),
        ("routes[1].route.weighted_clusters.clusters[1].name", "spec.http[2].route[2].destination"),
        ("routes[1].name", "spec.http[2].name"),
        ("routes[0].match.prefix", "spec.http[0]"),
        ("routes[9].match", "spec.http"),
    ];
    for (path, want) in cases {
        assert_eq!(user_field(&origins, path), want, "{path}");
    }
}
