use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, route, route_action, route_match, weighted_cluster, HeaderMatcher, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, RegexMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::{Duration, UInt32Value};
use envoy_types::util::pack_any;

use super::*;

fn route(match_: RouteMatch, action: RouteAction) -> Route {
    Route { r#match: Some(match_), action: Some(route::Action::Route(action)), ..Default::default() }
}

fn to_cluster(name: &str) -> RouteAction {
    RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(name.to_owned())),
        ..Default::default()
    }
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch { path_specifier: Some(route_match::PathSpecifier::Prefix(p.to_owned())), ..Default::default() }
}

fn route_config(routes: Vec<Route>) -> RouteConfiguration {
    RouteConfiguration {
        name: "outbound.9080".into(),
        virtual_hosts: vec![VirtualHost {
            name: "reviews:9080".into(),
            domains: vec!["reviews:9080".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn header(name: &str, pattern: string_matcher::MatchPattern) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(pattern),
            ignore_case: false,
        })),
        ..Default::default()
    }
}

fn paths(v: &[Violation]) -> Vec<&str> {
    v.iter().map(|v| v.path.as_str()).collect()
}

#[test]
fn a_valid_route_configuration_passes() {
    let rc = route_config(vec![route(prefix("/"), to_cluster("outbound|9080||reviews"))]);
    assert_eq!(check_message(&rc), vec![]);
}

#[test]
fn the_validate_rules_annotations_are_in_the_pool() {
    let rules = descriptor_pool().get_extension_by_name("validate.rules").expect("validate.rules");
    let field = descriptor_pool()
        .get_message_by_name("envoy.type.matcher.v3.RegexMatcher")
        .unwrap()
        .get_field_by_name("regex")
        .unwrap();
    assert!(field.options().has_extension(&rules), "protox kept the field option: {:?}", field.options());
}

#[test]
fn an_empty_header_prefix_is_caught_where_it_is() {
    let mut m = prefix("/");
    m.headers.push(header("x-user", string_matcher::MatchPattern::Prefix(String::new())));
    let v = check_message(&route_config(vec![route(m, to_cluster("c"))]));
    assert_eq!(paths(&v), ["virtual_hosts[0].routes[0].match.headers[0].string_match.prefix"], "{v:?}");
    assert!(v[0].message.contains("at least 1"), "{v:?}");
}

#[test]
fn an_empty_or_invalid_regex_is_caught() {
    let regex = |r: &str| {
        let m = RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::SafeRegex(RegexMatcher {
                regex: r.to_owned(),
                ..Default::default()
            })),
            ..Default::default()
        };
        check_message(&route_config(vec![route(m, to_cluster("c"))]))
    };
    assert_eq!(paths(&regex("")), ["virtual_hosts[0].routes[0].match.safe_regex.regex"]);
    assert_eq!(paths(&regex("((")), ["virtual_hosts[0].routes[0].match.safe_regex.regex"]);
    let huge = regex("(a{1000}){1000}");
    assert!(huge[0].message.contains("too large"), "{huge:?}");
    assert_eq!(regex("^/api/v[0-9]+$"), vec![]);
}

#[test]
fn weights_must_sum_to_a_positive_u32() {
    let weighted = |weights: &[u32]| {
        let action = RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters: weights
                    .iter()
                    .enumerate()
                    .map(|(i, w)| weighted_cluster::ClusterWeight {
                        name: format!("c{i}"),
                        weight: Some(UInt32Value { value: *w }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })),
            ..Default::default()
        };
        check_message(&route_config(vec![route(prefix("/"), action)]))
    };
    let over = weighted(&[u32::MAX, 1]);
    assert_eq!(paths(&over), ["virtual_hosts[0].routes[0].route.weighted_clusters.clusters"]);
    assert!(over[0].message.contains("4294967296"), "{over:?}");
    assert!(weighted(&[0, 0])[0].message.contains("sum to 0"));
    assert_eq!(weighted(&[u32::MAX - 1, 1]), vec![]);
    assert_eq!(paths(&weighted(&[])), ["virtual_hosts[0].routes[0].route.weighted_clusters.clusters"]);
}

#[test]
fn a_required_oneof_left_unset_is_caught() {
    let r = Route { r#match: Some(prefix("/")), action: None, ..Default::default() };
    let v = check_message(&route_config(vec![r]));
    assert_eq!(paths(&v), ["virtual_hosts[0].routes[0].action"], "{v:?}");
    assert!(v[0].message.contains("one of route, redirect"), "{v:?}");
}

#[test]
fn repeated_bounds_and_header_rules_apply() {
    let mut rc = route_config(vec![route(prefix("/"), to_cluster("c"))]);
    rc.virtual_hosts[0].domains.clear();
    rc.virtual_hosts[0].request_headers_to_add.push(HeaderValueOption {
        header: Some(HeaderValue { key: "x-bad\nname".into(), value: "v\r\n".into(), ..Default::default() }),
        ..Default::default()
    });
    let v = check_message(&rc);
    assert_eq!(
        paths(&v),
        [
            "virtual_hosts[0].domains",
            "virtual_hosts[0].request_headers_to_add[0].header.key",
            "virtual_hosts[0].request_headers_to_add[0].header.value",
        ],
        "{v:?}"
    );
}

#[test]
fn enums_durations_and_required_messages() {
    let cluster = Cluster {
        name: "c".into(),
        lb_policy: 99,
        connect_timeout: Some(Duration { seconds: -1, nanos: 0 }),
        ..Default::default()
    };
    let v = check_message(&cluster);
    assert_eq!(paths(&v), ["connect_timeout", "lb_policy"], "{v:?}");
    assert!(v[1].message.contains("not a defined value"), "{v:?}");

    // HeaderValueOption.header is `message.required`.
    let mut rc = route_config(vec![route(prefix("/"), to_cluster("c"))]);
    rc.request_headers_to_add.push(HeaderValueOption::default());
    assert_eq!(paths(&check_message(&rc)), ["request_headers_to_add[0].header"]);
}

#[test]
fn anys_are_opened_and_checked() {
    let hcm = HttpConnectionManager { stat_prefix: String::new(), ..Default::default() };
    let listener = Listener {
        name: "l".into(),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let v = check_message(&listener);
    assert!(v.iter().any(|v| v.path == "filter_chains[0].filters[0].typed_config.stat_prefix"), "{v:?}");
    assert!(v.iter().any(|v| v.path == "filter_chains[0].filters[0].typed_config.route_specifier"), "{v:?}");

    let unknown =
        envoy_types::pb::google::protobuf::Any { type_url: "type.googleapis.com/acme.X".into(), value: vec![] };
    assert!(check_any(&unknown)[0].message.contains("not in meshd's Envoy descriptor pool"));
    // Inside, the type is Envoy's to know: its content is left unchecked and listed.
    let mut inside = listener.clone();
    inside.filter_chains[0].filters[0].config_type = Some(filter::ConfigType::TypedConfig(unknown));
    assert_eq!(check_message(&inside), vec![]);
    assert!(unchecked_types().contains(&"acme.X".to_owned()));
}

#[test]
fn numeric_ranges_follow_protoc_gen_validate() {
    // Exclusive and inclusive bounds, and an inverted pair meaning "outside".
    assert_eq!(rules::range_for_test(5, Some(10), None, Some(0), None), None);
    assert!(rules::range_for_test(10, Some(10), None, Some(0), None).is_some());
    assert_eq!(rules::range_for_test(10, None, Some(10), None, Some(10)), None);
    assert!(rules::range_for_test(5, Some(0), None, Some(10), None).is_some());
    assert_eq!(rules::range_for_test(11, Some(0), None, Some(10), None), None);
    assert_eq!(rules::range_for_test(-1, Some(0), None, Some(10), None), None);
}

#[test]
fn filter_chains_must_match_different_connections() {
    use envoy_types::pb::envoy::config::core::v3::CidrRange;
    use envoy_types::pb::envoy::config::listener::v3::FilterChainMatch;
    let chain = |names: &[&str], ranges: &[&str]| FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            server_names: names.iter().map(|n| n.to_string()).collect(),
            prefix_ranges: ranges
                .iter()
                .map(|r| CidrRange { address_prefix: r.to_string(), prefix_len: Some(UInt32Value { value: 8 }) })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let listener =
        |chains: Vec<FilterChain>| Listener { name: "l".into(), filter_chains: chains, ..Default::default() };
    let distinct = listener(vec![chain(&["a.example"], &[]), chain(&["b.example"], &[]), chain(&[], &["10.0.0.0"])]);
    assert!(check_message(&distinct).is_empty(), "{:?}", check_message(&distinct));
    let overlapping = listener(vec![chain(&["a.example", "b.example"], &[]), chain(&["B.example"], &[])]);
    assert_eq!(paths(&check_message(&overlapping)), ["filter_chains[1].filter_chain_match"]);
    let same_range = listener(vec![chain(&[], &["10.0.0.0"]), chain(&[], &["10.0.0.0", "11.0.0.0"])]);
    assert_eq!(paths(&check_message(&same_range)), ["filter_chains[1].filter_chain_match"]);
}
