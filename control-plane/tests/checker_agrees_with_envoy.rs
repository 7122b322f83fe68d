//! The generic checker (`control_plane::envoy_validate`) against real Envoy: every
//! resource meshd makes of the fixtures passes it, and each resource it refuses is
//! one `envoy --mode validate` refuses too, whatever the parser lets through.

mod common;

use std::net::IpAddr;

use control_plane::envoy_validate::{check_any, check_message, unchecked_types};
use control_plane::translate::{InterceptionMode, ProxyClass};
use envoy_types::pb::envoy::config::bootstrap::v3::{bootstrap, Bootstrap};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, route, route_action, route_match, weighted_cluster, HeaderMatcher, QueryParameterMatcher, Route,
    RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, RegexMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::UInt32Value;
use xds::ResourceType;

#[test]
fn every_resource_meshd_makes_of_the_fixtures_passes_the_checker() {
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    for (fixture, namespace, app) in [("rich", "bookinfo", "ratings"), ("adversarial", "edge", "alpha")] {
        let mesh = common::mesh_from(fixture);
        for mode in [InterceptionMode::None, InterceptionMode::Redirect] {
            let class = ProxyClass {
                namespace: namespace.into(),
                mode,
                ip: if mode == InterceptionMode::None { ip("127.0.10.21") } else { None },
                labels: [("app".to_string(), app.to_string())].into_iter().collect(),
                kind: Default::default(),
                locality: Default::default(),
            };
            let snapshot = mesh.proxy_snapshot(&class);
            for ty in [
                ResourceType::Cluster,
                ResourceType::ClusterLoadAssignment,
                ResourceType::Listener,
                ResourceType::RouteConfiguration,
            ] {
                for r in snapshot.set(ty).iter() {
                    let v = check_any(r.body());
                    assert!(
                        v.is_empty(),
                        "{fixture} {mode:?}: {} {} breaks Envoy's rules: {v:#?}",
                        r.body().type_url,
                        r.name()
                    );
                }
            }
        }
    }
}

/// Every type meshd packs in an `Any` is in the pool, so its content was checked.
#[test]
fn every_type_meshd_makes_is_in_the_descriptor_pool() {
    every_resource_meshd_makes_of_the_fixtures_passes_the_checker();
    assert_eq!(unchecked_types(), Vec::<String>::new(), "add their .proto files to control-plane/build.rs");
}

fn string_match(p: string_matcher::MatchPattern) -> Option<header_matcher::HeaderMatchSpecifier> {
    Some(header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
        match_pattern: Some(p),
        ignore_case: false,
    }))
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher { regex: r.to_owned(), ..Default::default() }
}

fn weights(ws: &[u32]) -> route_action::ClusterSpecifier {
    route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
        clusters: ws
            .iter()
            .enumerate()
            .map(|(i, w)| weighted_cluster::ClusterWeight {
                name: format!("c{i}"),
                weight: Some(UInt32Value { value: *w }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

/// One route to `c0`, changed by `f`.
fn route_config(f: impl FnOnce(&mut Route)) -> RouteConfiguration {
    let mut route = Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("c0".into())),
            ..Default::default()
        })),
        ..Default::default()
    };
    f(&mut route);
    RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![VirtualHost {
            name: "vh".into(),
            domains: vec!["*".into()],
            routes: vec![route],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn match_of(route: &mut Route) -> &mut RouteMatch {
    route.r#match.as_mut().unwrap()
}

fn action_of(route: &mut Route) -> &mut RouteAction {
    match &mut route.action {
        Some(route::Action::Route(a)) => a,
        _ => unreachable!(),
    }
}

fn header(name: &str, spec: Option<header_matcher::HeaderMatchSpecifier>) -> HeaderMatcher {
    HeaderMatcher { name: name.into(), header_match_specifier: spec, ..Default::default() }
}

/// Envoy's verdict on `rc`, inlined in a listener's HTTP connection manager.
fn envoy_accepts(rc: RouteConfiguration, file: &std::path::Path) -> Result<(), String> {
    use control_plane::translate::envoy::{filter_chain, http_connection_manager, socket_address, RouteSource};
    let listener = Listener {
        name: "l".into(),
        address: Some(socket_address(IpAddr::from([127, 0, 0, 1]), 15999)),
        filter_chains: vec![filter_chain("l", http_connection_manager("l", RouteSource::Inline(Box::new(rc)), false))],
        ..Default::default()
    };
    let clusters =
        (0..3).map(|i| control_plane::translate::envoy::eds_cluster(&format!("c{i}"), Default::default(), false));
    let clusters = clusters
        .map(|mut c| {
            c.eds_cluster_config = None;
            c.cluster_discovery_type =
                Some(envoy_types::pb::envoy::config::cluster::v3::cluster::ClusterDiscoveryType::Type(
                    envoy_types::pb::envoy::config::cluster::v3::cluster::DiscoveryType::Static as i32,
                ));
            c
        })
        .collect();
    let bootstrap = Bootstrap {
        node: Some(Node { id: "checker".into(), cluster: "checker".into(), ..Default::default() }),
        static_resources: Some(bootstrap::StaticResources {
            listeners: vec![listener],
            clusters,
            ..Default::default()
        }),
        ..Default::default()
    };
    common::envoy::envoy_validate(&bootstrap, file)
}

#[test]
fn what_the_checker_refuses_envoy_refuses() {
    use string_matcher::MatchPattern;
    type Case = (&'static str, Box<dyn FnOnce(&mut Route)>);
    let cases: Vec<Case> = vec![
        (
            "weights summing over u32::MAX",
            Box::new(|r| action_of(r).cluster_specifier = Some(weights(&[i32::MAX as u32; 3]))),
        ),
        ("weights summing to 0", Box::new(|r| action_of(r).cluster_specifier = Some(weights(&[0, 0])))),
        (
            "empty header prefix",
            Box::new(|r| match_of(r).headers.push(header("x-user", string_match(MatchPattern::Prefix(String::new()))))),
        ),
        (
            "empty header regex",
            Box::new(|r| match_of(r).headers.push(header("x-user", string_match(MatchPattern::SafeRegex(regex("")))))),
        ),
        (
            "empty uri regex",
            Box::new(|r| match_of(r).path_specifier = Some(route_match::PathSpecifier::SafeRegex(regex("")))),
        ),
        (
            "invalid uri regex",
            Box::new(|r| match_of(r).path_specifier = Some(route_match::PathSpecifier::SafeRegex(regex("((")))),
        ),
        (
            "huge regex",
            Box::new(|r| {
                match_of(r).path_specifier = Some(route_match::PathSpecifier::SafeRegex(regex("(a{1000}){1000}")))
            }),
        ),
        (
            "empty header name",
            Box::new(|r| {
                match_of(r).headers.push(header("", Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true))))
            }),
        ),
        (
            "header name with CR/LF",
            Box::new(|r| {
                match_of(r)
                    .headers
                    .push(header("x-a\r\nb", Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true))))
            }),
        ),
        (
            "empty query parameter name",
            Box::new(|r| {
                match_of(r).query_parameters.push(QueryParameterMatcher { name: String::new(), ..Default::default() })
            }),
        ),
        (
            "empty cluster name",
            Box::new(|r| action_of(r).cluster_specifier = Some(route_action::ClusterSpecifier::Cluster(String::new()))),
        ),
        ("route without a match", Box::new(|r| r.r#match = None)),
        ("route without an action", Box::new(|r| r.action = None)),
    ];
    let dir = std::env::temp_dir().join(format!("amime-checker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(check_message(&route_config(|_| {})), vec![]);
    envoy_accepts(route_config(|_| {}), &dir.join("good.pb")).expect("the unchanged route is valid");
    for (i, (what, change)) in cases.into_iter().enumerate() {
        let rc = route_config(change);
        let violations = check_message(&rc);
        assert!(!violations.is_empty(), "{what}: the checker lets it through");
        let envoy = envoy_accepts(rc, &dir.join(format!("case-{i}.pb")));
        assert!(envoy.is_err(), "{what}: Envoy accepts what the checker refuses ({violations:?})");
    }
    // Across virtual hosts: a domain twice (in any case) in one route configuration.
    let mut twice = route_config(|_| {});
    let mut other = twice.virtual_hosts[0].clone();
    other.name = "other".into();
    other.domains = vec!["Reviews:9080".into(), "*".into()];
    twice.virtual_hosts[0].domains = vec!["reviews:9080".into()];
    twice.virtual_hosts.push(other);
    let violations = check_message(&twice);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].path, "virtual_hosts[1].domains[0]");
    assert!(envoy_accepts(twice, &dir.join("twice.pb")).is_err(), "Envoy accepts a domain twice");
    std::fs::remove_dir_all(&dir).unwrap();
}
