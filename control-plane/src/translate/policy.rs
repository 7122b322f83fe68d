//! A DestinationRule's traffic policy on an Envoy cluster (load balancer, circuit
//! breakers, connection options, outlier detection) and, for consistent hashing, the
//! hash policy of the routes that pick the cluster.
//!
//! Istio's defaults where a field is unset: circuit-breaker thresholds at their
//! maximum (2^32-1 connections, pending requests, requests and retries: no breaking;
//! Envoy's own defaults would be 1024 and 3 retries), a 10s connect timeout (Istio's
//! `meshConfig.connectTimeout`), Envoy's 1h HTTP idle timeout, no limit on requests per
//! connection, and no outlier detection.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    self, CommonLbConfig, LbPolicy, MaglevLbConfig, RingHashLbConfig,
};
use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers, CircuitBreakers, Cluster, OutlierDetection as PbOutlier, UpstreamConnectionOptions,
};
use envoy_types::pb::envoy::config::core::v3::{
    HttpProtocolOptions as CommonHttpOptions, RuntimeDouble, TcpKeepalive as PbKeepalive, UpstreamHttpProtocolOptions,
};
use envoy_types::pb::envoy::config::route::v3::route_action::{hash_policy, HashPolicy};
use envoy_types::pb::envoy::config::route::v3::{route, route_action, Route};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value, UInt64Value};

use crate::model::{
    ConnectionPool, HashKey, HashRing, LoadBalancer, OutlierDetection, PolicySections, Protocol, UpstreamTls, Warmup,
};

use super::envoy::{seconds, upstream_http_options};

mod tls {
    use envoy_types::pb::envoy::config::core::v3::{data_source, transport_socket, DataSource, TransportSocket};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context, subject_alt_name_matcher::SanType, CertificateValidationContext, CommonTlsContext,
        SubjectAltNameMatcher, TlsCertificate, UpstreamTlsContext,
    };
    use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};

    use crate::model::TlsOrigination;
    use crate::translate::envoy::any;

    /// The system's CA bundle, trusted when a rule names no `caCertificates` (Istio's
    /// first choice too). Envoy refuses SAN checks against its `system_root_certs`.
    pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

    fn file(path: &str) -> Option<DataSource> {
        Some(DataSource { specifier: Some(data_source::Specifier::Filename(path.to_owned())), ..Default::default() })
    }

    /// A subject alt name to accept: a URI (`spiffe://...`) or a DNS name.
    fn san(name: &str) -> SubjectAltNameMatcher {
        SubjectAltNameMatcher {
            san_type: if name.contains("://") { SanType::Uri } else { SanType::Dns } as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(name.to_owned())),
                ignore_case: false,
            }),
            oid: String::new(),
        }
    }

    /// Envoy's TLS transport socket for `t`: the CA file (or the system's roots), the
    /// accepted SANs, the client certificate for MUTUAL, the SNI.
    pub fn transport_socket(t: &TlsOrigination) -> TransportSocket {
        let validation = (!t.insecure_skip_verify).then(|| CertificateValidationContext {
            trusted_ca: file(t.ca_certificates.as_deref().unwrap_or(SYSTEM_CA_BUNDLE)),
            match_typed_subject_alt_names: t.subject_alt_names.iter().map(|s| san(s)).collect(),
            ..Default::default()
        });
        let context = UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificates: t
                    .client_certificate
                    .iter()
                    .map(|(cert, key)| TlsCertificate {
                        certificate_chain: file(cert),
                        private_key: file(key),
                        ..Default::default()
                    })
                    .collect(),
                validation_context_type: validation.map(common_tls_context::ValidationContextType::ValidationContext),
                ..Default::default()
            }),
            sni: t.sni.clone().unwrap_or_default(),
            ..Default::default()
        };
        TransportSocket {
            name: "envoy.transport_sockets.tls".to_owned(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(any(context))),
        }
    }
}

/// Istio's default for every circuit-breaker threshold: effectively none.
const NO_LIMIT: u32 = u32::MAX;

fn duration(d: std::time::Duration) -> PbDuration {
    PbDuration { seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nanos: d.subsec_nanos() as i32 }
}

fn u32_value(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

/// Applies `policy` to `cluster` (an EDS cluster of a service port speaking `protocol`).
pub fn apply(cluster: &mut Cluster, policy: &PolicySections, protocol: Protocol) {
    apply_load_balancer(cluster, policy.load_balancer.as_ref());
    if let Some(w) = &policy.warmup {
        apply_warmup(cluster, w);
    }
    let pool = policy.connection_pool.clone().unwrap_or_default();
    apply_connection_pool(cluster, &pool);
    if let Some(outlier) = &policy.outlier_detection {
        apply_outlier_detection(cluster, outlier);
    }
    let tls = match &policy.tls {
        Some(UpstreamTls::Originate(t)) => Some(t),
        _ => None,
    };
    if let Some(t) = tls {
        cluster.transport_socket = Some(tls::transport_socket(t));
    }
    // Upstream HTTP options: idle timeout and requests per connection from the pool; SNI
    // (and SAN check) from each request's host when TLS names no SNI, as Istio does.
    let common =
        (pool.idle_timeout.is_some() || pool.max_requests_per_connection.is_some()).then(|| CommonHttpOptions {
            idle_timeout: pool.idle_timeout.map(duration),
            max_requests_per_connection: pool.max_requests_per_connection.and_then(u32_value),
            ..Default::default()
        });
    let upstream = tls.filter(|t| t.sni.is_none() && protocol.is_http()).map(|t| UpstreamHttpProtocolOptions {
        auto_sni: true,
        auto_san_validation: t.subject_alt_names.is_empty() && !t.insecure_skip_verify,
        ..Default::default()
    });
    if common.is_some() || upstream.is_some() {
        let (key, options) = upstream_http_options(protocol == Protocol::Http2, common, upstream);
        cluster.typed_extension_protocol_options.insert(key, options);
    }
}

fn apply_load_balancer(cluster: &mut Cluster, lb: Option<&LoadBalancer>) {
    let policy = match lb {
        None | Some(LoadBalancer::RoundRobin) => LbPolicy::RoundRobin,
        Some(LoadBalancer::LeastRequest) => LbPolicy::LeastRequest,
        Some(LoadBalancer::Random) => LbPolicy::Random,
        Some(LoadBalancer::ConsistentHash(ch)) => match ch.ring {
            HashRing::RingHash { minimum_ring_size } => {
                cluster.lb_config = minimum_ring_size.map(|size| {
                    cluster::LbConfig::RingHashLbConfig(RingHashLbConfig {
                        minimum_ring_size: Some(UInt64Value { value: size }),
                        ..Default::default()
                    })
                });
                LbPolicy::RingHash
            }
            HashRing::Maglev { table_size } => {
                cluster.lb_config = table_size.map(|size| {
                    cluster::LbConfig::MaglevLbConfig(MaglevLbConfig { table_size: Some(UInt64Value { value: size }) })
                });
                LbPolicy::Maglev
            }
        },
    };
    cluster.lb_policy = policy as i32;
}

/// Envoy's slow start for the round robin or least request cluster (the parser leaves
/// warmup out for the other policies).
fn apply_warmup(cluster: &mut Cluster, warmup: &Warmup) {
    let slow_start = Some(cluster::SlowStartConfig {
        slow_start_window: Some(duration(warmup.duration)),
        aggression: Some(RuntimeDouble {
            default_value: warmup.aggression,
            runtime_key: "amime.lb.warmup.aggression".to_owned(),
        }),
        min_weight_percent: Some(Percent { value: warmup.minimum_percent }),
    });
    cluster.lb_config = if cluster.lb_policy == LbPolicy::LeastRequest as i32 {
        Some(cluster::LbConfig::LeastRequestLbConfig(cluster::LeastRequestLbConfig {
            slow_start_config: slow_start,
            ..Default::default()
        }))
    } else {
        Some(cluster::LbConfig::RoundRobinLbConfig(cluster::RoundRobinLbConfig { slow_start_config: slow_start }))
    };
}

fn apply_connection_pool(cluster: &mut Cluster, pool: &ConnectionPool) {
    let limit = |v: Option<u32>| u32_value(v.unwrap_or(NO_LIMIT));
    cluster.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![circuit_breakers::Thresholds {
            max_connections: limit(pool.max_connections),
            max_pending_requests: limit(pool.http1_max_pending_requests),
            max_requests: limit(pool.http2_max_requests),
            max_retries: limit(pool.max_retries),
            track_remaining: true,
            ..Default::default()
        }],
        ..Default::default()
    });
    cluster.connect_timeout = Some(pool.connect_timeout.map_or_else(|| seconds(10), duration));
    if let Some(k) = &pool.tcp_keepalive {
        let secs = |d: Option<std::time::Duration>| d.map(|d| UInt32Value { value: d.as_secs() as u32 });
        cluster.upstream_connection_options = Some(UpstreamConnectionOptions {
            tcp_keepalive: Some(PbKeepalive {
                keepalive_probes: k.probes.and_then(u32_value),
                keepalive_time: secs(k.time),
                keepalive_interval: secs(k.interval),
            }),
            ..Default::default()
        });
    }
}

/// Istio's reading: a count set to N > 0 ejects after N errors (enforced always), 0
/// turns that detector off; success-rate ejection is off; the panic threshold is
/// `minHealthPercent` (0 unless set: ejected hosts stay out even when few are left).
fn apply_outlier_detection(cluster: &mut Cluster, outlier: &OutlierDetection) {
    let enforcing = |n: Option<u32>| n.map(|n| UInt32Value { value: if n > 0 { 100 } else { 0 } });
    cluster.outlier_detection = Some(PbOutlier {
        consecutive_5xx: outlier.consecutive_5xx_errors.and_then(u32_value),
        enforcing_consecutive_5xx: enforcing(outlier.consecutive_5xx_errors),
        consecutive_gateway_failure: outlier.consecutive_gateway_errors.and_then(u32_value),
        enforcing_consecutive_gateway_failure: enforcing(outlier.consecutive_gateway_errors),
        enforcing_success_rate: u32_value(0),
        interval: outlier.interval.map(duration),
        base_ejection_time: outlier.base_ejection_time.map(duration),
        max_ejection_percent: outlier.max_ejection_percent.and_then(u32_value),
        ..Default::default()
    });
    cluster.common_lb_config = Some(CommonLbConfig {
        healthy_panic_threshold: Some(Percent { value: f64::from(outlier.min_health_percent.unwrap_or(0)) }),
        ..Default::default()
    });
}

/// The route hash policy a consistent-hash load balancer needs, if `lb` is one.
pub fn hash_policy(lb: Option<&LoadBalancer>) -> Option<HashPolicy> {
    let Some(LoadBalancer::ConsistentHash(ch)) = lb else { return None };
    let specifier = match &ch.key {
        HashKey::Header(name) => hash_policy::PolicySpecifier::Header(hash_policy::Header {
            header_name: name.clone(),
            ..Default::default()
        }),
        HashKey::Cookie { name, ttl, path } => hash_policy::PolicySpecifier::Cookie(hash_policy::Cookie {
            name: name.clone(),
            ttl: ttl.map(duration),
            path: path.clone().unwrap_or_default(),
            ..Default::default()
        }),
        HashKey::SourceIp => {
            hash_policy::PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties { source_ip: true })
        }
        HashKey::QueryParameter(name) => {
            hash_policy::PolicySpecifier::QueryParameter(hash_policy::QueryParameter { name: name.clone() })
        }
    };
    Some(HashPolicy { policy_specifier: Some(specifier), terminal: false })
}

/// Gives each route that picks a cluster in `by_cluster` that cluster's hash policy.
/// A route splitting traffic over weighted clusters takes the policy of the first of
/// them that has one (Envoy hashes once per route, before picking the cluster). As in
/// Istio, its retries then stay on the hashed host: a "try another host" predicate
/// would move a key's retry to another endpoint.
pub fn add_hash_policies(routes: &mut [Route], by_cluster: &HashMap<String, HashPolicy>) {
    if by_cluster.is_empty() {
        return;
    }
    for r in routes {
        let Some(route::Action::Route(action)) = &mut r.action else { continue };
        let policy = match &action.cluster_specifier {
            Some(route_action::ClusterSpecifier::Cluster(name)) => by_cluster.get(name),
            Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                w.clusters.iter().find_map(|c| by_cluster.get(&c.name))
            }
            _ => None,
        };
        if let Some(p) = policy {
            action.hash_policy = vec![p.clone()];
            if let Some(retry) = &mut action.retry_policy {
                retry.retry_host_predicate.clear();
                retry.host_selection_retry_max_attempts = 0;
            }
        }
    }
}
