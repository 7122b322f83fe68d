use super::*;
use envoy_types::pb::envoy::config::core::v3::SocketAddress;
use envoy_types::pb::envoy::config::endpoint::v3::{Endpoint, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::listener::v3::Filter;
use envoy_types::pb::envoy::config::route::v3::{
    weighted_cluster::ClusterWeight, HeaderMatcher, RouteAction, RouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds;
use envoy_types::pb::google::protobuf::UInt32Value;

fn pack<M: Message + Name>(m: &M) -> Any {
    Any { type_url: M::type_url(), value: m.encode_to_vec() }
}

fn addr(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn cla(name: &str, endpoints: &[(&str, HealthStatus)]) -> ClusterLoadAssignment {
    let lb_endpoints = endpoints
        .iter()
        .map(|(ip, health)| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(addr(ip, 9080)),
                ..Default::default()
            })),
            health_status: *health as i32,
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints { lb_endpoints, ..Default::default() }],
        ..Default::default()
    }
}

fn cluster(name: &str, kind: cluster::DiscoveryType) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(kind as i32)),
        ..Default::default()
    }
}

/// The rendered table with runs of spaces squeezed, one string per line.
fn rows(table: Table) -> Vec<String> {
    table.render().lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
}

#[test]
fn clusters_count_their_endpoints_and_those_serving() {
    let clusters = [
        cluster("a", cluster::DiscoveryType::Eds),
        cluster("b", cluster::DiscoveryType::Eds),
        cluster("BlackHole", cluster::DiscoveryType::Static),
    ];
    let assignments = [cla("a", &[("10.0.0.1", HealthStatus::Healthy), ("10.0.0.2", HealthStatus::Unhealthy)])];
    assert_eq!(
        rows(super::clusters(&clusters, &assignments)),
        ["NAME TYPE ENDPOINTS HEALTHY", "a EDS 2 1", "b EDS not sent -", "BlackHole STATIC - -"]
    );
}

#[test]
fn listeners_show_one_row_per_filter_chain_and_where_it_goes() {
    let hcm = HttpConnectionManager {
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            route_config_name: "8080".into(),
            config_source: None,
        })),
        ..Default::default()
    };
    let tcp =
        TcpProxy { cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("db".into())), ..Default::default() };
    let chain = |m: Option<FilterChainMatch>, any: Any| FilterChain {
        filter_chain_match: m,
        filters: vec![Filter { name: "f".into(), config_type: Some(filter::ConfigType::TypedConfig(any)) }],
        ..Default::default()
    };
    let listener = Listener {
        name: "virtualInbound".into(),
        address: Some(addr("0.0.0.0", 15006)),
        filter_chains: vec![
            chain(
                Some(FilterChainMatch {
                    destination_port: Some(UInt32Value { value: 8080 }),
                    transport_protocol: "raw_buffer".into(),
                    ..Default::default()
                }),
                pack(&hcm),
            ),
            chain(None, pack(&tcp)),
        ],
        ..Default::default()
    };
    let empty = Listener { name: "empty".into(), ..Default::default() };
    assert_eq!(
        rows(listeners(&[listener, empty])),
        [
            "NAME ADDRESS PORT MATCH DESTINATION",
            "virtualInbound 0.0.0.0 15006 port 8080; raw_buffer Route: 8080",
            "virtualInbound 0.0.0.0 15006 ALL Cluster: db",
            "empty - - - no filter chains",
        ]
    );
}

#[test]
fn routes_show_matches_and_weighted_destinations() {
    let weighted = |pairs: &[(&str, u32)]| {
        route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: pairs
                .iter()
                .map(|(n, w)| ClusterWeight {
                    name: (*n).into(),
                    weight: Some(UInt32Value { value: *w }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    };
    let route = |m: RouteMatch, spec: route_action::ClusterSpecifier| Route {
        r#match: Some(m),
        action: Some(route::Action::Route(RouteAction { cluster_specifier: Some(spec), ..Default::default() })),
        ..Default::default()
    };
    let jason = RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
        headers: vec![HeaderMatcher { name: "end-user".into(), ..Default::default() }],
        ..Default::default()
    };
    let rest = RouteMatch { path_specifier: Some(route_match::PathSpecifier::Path("/x".into())), ..Default::default() };
    let rc = RouteConfiguration {
        name: "9080".into(),
        virtual_hosts: vec![VirtualHost {
            name: "reviews:9080".into(),
            domains: vec!["reviews".into(), "reviews:9080".into()],
            routes: vec![
                route(jason, route_action::ClusterSpecifier::Cluster("v2".into())),
                route(rest, weighted(&[("v1", 50), ("v3", 50)])),
            ],
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(
        rows(routes(&[rc])),
        [
            "NAME VIRTUAL HOST DOMAINS MATCH DESTINATION",
            "9080 reviews:9080 reviews +1 more /* header end-user v2",
            "9080 reviews:9080 reviews +1 more /x v1 50, v3 50",
        ]
    );
}

#[test]
fn endpoints_and_secrets_list_one_row_each() {
    let assignments = [cla("a", &[("10.0.0.1", HealthStatus::Healthy)]), cla("none", &[])];
    assert_eq!(
        rows(endpoints(&assignments)),
        ["CLUSTER ADDRESS HEALTH WEIGHT", "a 10.0.0.1:9080 HEALTHY 1", "none none - -"]
    );
    let secret = Secret { name: "default".into(), ..Default::default() };
    assert_eq!(rows(secrets(&[secret])), ["NAME TYPE", "default -"]);
}

#[test]
fn unpack_checks_the_type_url() {
    let tcp = TcpProxy { stat_prefix: "x".into(), ..Default::default() };
    assert_eq!(unpack::<TcpProxy>(&pack(&tcp)), Some(tcp.clone()));
    assert_eq!(unpack::<HttpConnectionManager>(&pack(&tcp)), None);
}

#[test]
fn header_matches_show_their_values() {
    use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
    use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, RegexMatcher, StringMatcher};
    let string = |p: MatchPattern| {
        HeaderMatchSpecifier::StringMatch(StringMatcher { match_pattern: Some(p), ..Default::default() })
    };
    let header = |spec: HeaderMatchSpecifier, invert: bool| HeaderMatcher {
        name: "end-user".into(),
        header_match_specifier: Some(spec),
        invert_match: invert,
        ..Default::default()
    };
    let route = |h: HeaderMatcher| Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            headers: vec![h],
            ..Default::default()
        }),
        ..Default::default()
    };
    let cases = [
        (header(string(MatchPattern::Exact("jason".into())), false), "/* header end-user=jason"),
        (header(string(MatchPattern::Exact("bob".into())), false), "/* header end-user=bob"),
        (header(string(MatchPattern::Prefix("ja".into())), false), "/* header end-user=ja*"),
        (
            header(string(MatchPattern::SafeRegex(RegexMatcher { regex: "j.*".into(), ..Default::default() })), false),
            "/* header end-user~j.*",
        ),
        (header(HeaderMatchSpecifier::PresentMatch(true), false), "/* header end-user present"),
        (header(HeaderMatchSpecifier::PresentMatch(true), true), "/* not header end-user present"),
        (header(string(MatchPattern::Exact("jason".into())), true), "/* not header end-user=jason"),
    ];
    for (h, want) in cases {
        assert_eq!(route_match(&route(h)), want);
    }
}
