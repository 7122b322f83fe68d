//! Small constructors for the Envoy messages the translator emits. Plain functions,
//! no mesh knowledge: names and addresses in, protobufs out.

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, socket_address, Address, AggregatedConfigSource, ApiVersion, BindConfig, ConfigSource,
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CoreHttpProtocolOptions, SocketAddress,
    UpstreamHttpProtocolOptions,
};
use envoy_types::pb::envoy::config::core::v3::{
    data_source, substitution_format_string, DataSource, SubstitutionFormatString, TypedExtensionConfig,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, listener_filter, Filter, FilterChain, ListenerFilter};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_match, DirectResponseAction, Route, RouteConfiguration, RouteMatch,
};
use envoy_types::pb::envoy::extensions::clusters::dynamic_forward_proxy::v3::{
    cluster_config, ClusterConfig as ForwardProxyClusterConfig,
};
use envoy_types::pb::envoy::extensions::common::dynamic_forward_proxy::v3::DnsCacheConfig;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::dynamic_forward_proxy::v3::{
    filter_config, FilterConfig as ForwardProxyFilterConfig,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use envoy_types::pb::envoy::extensions::network::dns_resolver::getaddrinfo::v3::GetAddrInfoDnsResolverConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{http_protocol_options, HttpProtocolOptions};
use envoy_types::pb::google::protobuf::{Any, Duration};
use envoy_types::util::pack_any;

pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
pub const PASSTHROUGH_AUTHORITY_CLUSTER: &str = "PassthroughAuthorityCluster";
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
/// Name of the DNS cache shared by the forward-proxy filter and cluster (they must agree).
const FORWARD_PROXY_DNS_CACHE: &str = "amime_passthrough_dns";
/// Source address of inbound traffic from the sidecar to its app, exempted from capture.
pub const INBOUND_SOURCE_IP: &str = "127.0.0.6";

pub fn any<M: prost::Message + prost::Name>(m: M) -> Any {
    pack_any(m)
}

pub fn seconds(s: i64) -> Duration {
    Duration { seconds: s, nanos: 0 }
}

pub fn socket_address(ip: IpAddr, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

pub fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// An EDS cluster fed over ADS.
pub fn eds_cluster(name: &str, lb_policy: cluster::LbPolicy, http2: bool) -> Cluster {
    let mut c = Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(cluster::EdsClusterConfig { eds_config: Some(ads()), service_name: String::new() }),
        connect_timeout: Some(seconds(10)),
        lb_policy: lb_policy as i32,
        ..Default::default()
    };
    if http2 {
        let (key, options) = upstream_http_options(true, None, None);
        c.typed_extension_protocol_options.insert(key, options);
    }
    c
}

/// A cluster's upstream HTTP options (key and value of `typed_extension_protocol_options`):
/// HTTP/2 or HTTP/1.1 to the endpoints, with `common` options (idle timeout, requests per
/// connection).
pub fn upstream_http_options(
    http2: bool,
    common: Option<CoreHttpProtocolOptions>,
    upstream: Option<UpstreamHttpProtocolOptions>,
) -> (String, Any) {
    use http_protocol_options::explicit_http_config::ProtocolConfig;
    let protocol_config = if http2 {
        ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions::default())
    } else {
        ProtocolConfig::HttpProtocolOptions(Http1ProtocolOptions::default())
    };
    let options = HttpProtocolOptions {
        common_http_protocol_options: common,
        upstream_http_protocol_options: upstream,
        upstream_protocol_options: Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            http_protocol_options::ExplicitHttpConfig { protocol_config: Some(protocol_config) },
        )),
        ..Default::default()
    };
    ("envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(), any(options))
}

/// A cluster that connects to each connection's original destination; with `bind`,
/// upstream connections come from that address.
pub fn original_dst_cluster(name: &str, bind: Option<IpAddr>) -> Cluster {
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::OriginalDst as i32)),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(seconds(10)),
        upstream_bind_config: bind.map(|ip| BindConfig {
            source_address: Some(match socket_address(ip, 0).address {
                Some(address::Address::SocketAddress(sa)) => sa,
                _ => unreachable!("socket_address builds a socket address"),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A static cluster with no endpoints: every request to it fails fast.
pub fn blackhole_cluster() -> Cluster {
    Cluster {
        name: BLACKHOLE_CLUSTER.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Static as i32)),
        connect_timeout: Some(seconds(10)),
        ..Default::default()
    }
}

/// The DNS cache of the explicit proxy's passthrough: names resolved by the system
/// resolver (`getaddrinfo`, so `/etc/hosts` and search domains apply as they would for the
/// app), IPv4 first.
fn forward_proxy_dns_cache() -> DnsCacheConfig {
    DnsCacheConfig {
        name: FORWARD_PROXY_DNS_CACHE.to_owned(),
        dns_lookup_family: envoy_types::pb::envoy::config::cluster::v3::cluster::DnsLookupFamily::V4Preferred as i32,
        typed_dns_resolver_config: Some(TypedExtensionConfig {
            name: "envoy.network.dns_resolver.getaddrinfo".to_owned(),
            typed_config: Some(any(GetAddrInfoDnsResolverConfig::default())),
        }),
        ..Default::default()
    }
}

/// A cluster that connects to each request's `:authority`, resolving names itself
/// (Envoy's dynamic forward proxy). Used with [`forward_proxy_filter`].
pub fn forward_proxy_cluster(name: &str) -> Cluster {
    let config = ForwardProxyClusterConfig {
        cluster_implementation_specifier: Some(cluster_config::ClusterImplementationSpecifier::DnsCacheConfig(
            forward_proxy_dns_cache(),
        )),
        ..Default::default()
    };
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::ClusterType(cluster::CustomClusterType {
            name: "envoy.clusters.dynamic_forward_proxy".to_owned(),
            typed_config: Some(any(config)),
        })),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(seconds(10)),
        ..Default::default()
    }
}

/// The HTTP filter that resolves `:authority` for routes to a [`forward_proxy_cluster`];
/// it lets requests to any other cluster through untouched.
fn forward_proxy_filter() -> HttpFilter {
    let config = ForwardProxyFilterConfig {
        implementation_specifier: Some(filter_config::ImplementationSpecifier::DnsCacheConfig(
            forward_proxy_dns_cache(),
        )),
        ..Default::default()
    };
    HttpFilter {
        name: "envoy.filters.http.dynamic_forward_proxy".to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(config))),
        ..Default::default()
    }
}

/// A route matching every path that answers `status` itself, with `body_format` as the
/// body (Envoy's substitution format: `%REQ(:authority)%` names the requested host).
pub fn direct_response_route(name: &str, status: u32, body_format: &str) -> Route {
    Route {
        name: name.to_owned(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status,
            body: None,
            body_format: Some(SubstitutionFormatString {
                format: Some(substitution_format_string::Format::TextFormatSource(DataSource {
                    specifier: Some(data_source::Specifier::InlineString(body_format.to_owned())),
                    ..Default::default()
                })),
                content_type: "text/plain".to_owned(),
                ..Default::default()
            }),
        })),
        ..Default::default()
    }
}

pub fn load_assignment(cluster_name: &str, endpoints: &[SocketAddr]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints.iter().map(|a| lb_endpoint_at(*a)).collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An endpoint of a load assignment at `address`.
pub fn lb_endpoint_at(address: SocketAddr) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(address.ip(), address.port())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn original_dst_listener_filter() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.original_dst".to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(OriginalDst::default()))),
        ..Default::default()
    }
}

/// Name of the fault-injection filter; routes configure it in `typed_per_filter_config`.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";

/// The fault filter with no fault of its own: only routes with a `fault` inject any.
fn fault_filter() -> HttpFilter {
    HttpFilter {
        name: FAULT_FILTER.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(HttpFault::default()))),
        ..Default::default()
    }
}

/// Name of the CORS filter; routes with a `corsPolicy` configure it in `typed_per_filter_config`.
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// The CORS filter with no policy of its own: only routes with a `corsPolicy` answer
/// preflights and add CORS headers.
fn cors_filter() -> HttpFilter {
    HttpFilter {
        name: CORS_FILTER.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(Cors::default()))),
        ..Default::default()
    }
}

fn router_filter() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(Router::default()))),
        ..Default::default()
    }
}

/// Where an HTTP connection manager gets its routes.
pub enum RouteSource {
    Rds(String),
    Inline(Box<RouteConfiguration>),
}

/// An HTTP connection manager. With `forward_proxy`, routes to a [`forward_proxy_cluster`]
/// resolve the request's host (the explicit proxy's passthrough).
pub fn http_connection_manager(stat_prefix: &str, routes: RouteSource, forward_proxy: bool) -> Filter {
    http_connection_manager_with(stat_prefix, routes, forward_proxy, Vec::new())
}

/// [`http_connection_manager`] with `extra` HTTP filters just before the router.
pub fn http_connection_manager_with(
    stat_prefix: &str,
    routes: RouteSource,
    forward_proxy: bool,
    extra: Vec<HttpFilter>,
) -> Filter {
    // Routes from RDS (outbound, VirtualService rules) may answer CORS preflights and
    // inject faults, before anything else is done with the request (Istio's order).
    let mut http_filters = Vec::new();
    if matches!(routes, RouteSource::Rds(_)) {
        http_filters.push(cors_filter());
        http_filters.push(fault_filter());
    }
    if forward_proxy {
        http_filters.push(forward_proxy_filter());
    }
    http_filters.extend(extra);
    http_filters.push(router_filter());
    let route_specifier = match routes {
        RouteSource::Rds(name) => {
            http_connection_manager::RouteSpecifier::Rds(Rds { config_source: Some(ads()), route_config_name: name })
        }
        RouteSource::Inline(rc) => http_connection_manager::RouteSpecifier::RouteConfig(*rc),
    };
    let hcm = HttpConnectionManager {
        stat_prefix: stat_prefix.to_owned(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(route_specifier),
        http_filters,
        // Websockets work by default, as in Istio.
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".to_owned(),
            ..Default::default()
        }],
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.http_connection_manager".to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(any(hcm))),
    }
}

pub fn tcp_proxy_filter(stat_prefix: &str, cluster: &str) -> Filter {
    let tcp = TcpProxy {
        stat_prefix: stat_prefix.to_owned(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_owned())),
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(any(tcp))),
    }
}

pub fn filter_chain(name: &str, filter: Filter) -> FilterChain {
    FilterChain { name: name.to_owned(), filters: vec![filter], ..Default::default() }
}
