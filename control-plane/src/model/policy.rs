//! DestinationRule traffic policies as plain data: load balancing, connection pools
//! (circuit breaking) and outlier detection, and how Istio merges the policies of a
//! rule, a subset and a port into the one a cluster gets ([`effective_policy`]).

use std::collections::BTreeMap;
use std::time::Duration;

/// How a cluster picks an endpoint (Istio's `loadBalancer`).
#[derive(Clone, Debug, PartialEq)]
pub enum LoadBalancer {
    RoundRobin,
    LeastRequest,
    Random,
    ConsistentHash(ConsistentHash),
}

/// What a request is hashed on.
#[derive(Clone, Debug, PartialEq)]
pub enum HashKey {
    /// A request header (name in lower case).
    Header(String),
    /// A cookie; with `ttl`, Envoy sets it when the request has none.
    Cookie {
        name: String,
        ttl: Option<Duration>,
        path: Option<String>,
    },
    /// The client's IP address.
    SourceIp,
    QueryParameter(String),
}

/// The consistent-hash algorithm.
#[derive(Clone, Debug, PartialEq)]
pub enum HashRing {
    /// Ketama ring hash (Istio's default); `None`: Envoy's default size (1024).
    RingHash { minimum_ring_size: Option<u64> },
    /// Maglev; `None`: Envoy's default table size (65537).
    Maglev { table_size: Option<u64> },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConsistentHash {
    pub key: HashKey,
    pub ring: HashRing,
}

/// TCP keepalive probes on upstream connections; `None` fields use the OS settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TcpKeepalive {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

/// Istio's `connectionPool`. `None` (and, as in Istio, 0) means Istio's default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionPool {
    pub max_connections: Option<u32>,
    pub connect_timeout: Option<Duration>,
    pub tcp_keepalive: Option<TcpKeepalive>,
    pub http1_max_pending_requests: Option<u32>,
    pub http2_max_requests: Option<u32>,
    pub max_requests_per_connection: Option<u32>,
    pub max_retries: Option<u32>,
    pub idle_timeout: Option<Duration>,
}

/// Istio's `outlierDetection`. `None` means Envoy's (and Istio's) default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutlierDetection {
    pub consecutive_5xx_errors: Option<u32>,
    pub consecutive_gateway_errors: Option<u32>,
    pub interval: Option<Duration>,
    pub base_ejection_time: Option<Duration>,
    pub max_ejection_percent: Option<u32>,
    pub min_health_percent: Option<u32>,
}

/// TLS from the sidecar to the destination (Istio's `tls`). Certificates are files on
/// the proxy's filesystem, as in Istio's `caCertificates`/`clientCertificate`/`privateKey`.
#[derive(Clone, Debug, PartialEq)]
pub enum UpstreamTls {
    /// `DISABLE`, and `ISTIO_MUTUAL` until mesh mTLS lands: plaintext.
    Disable,
    /// `SIMPLE` (no client certificate) or `MUTUAL` (with one).
    Originate(TlsOrigination),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsOrigination {
    /// `(certificate chain, private key)` files, for `MUTUAL`.
    pub client_certificate: Option<(String, String)>,
    /// CA bundle file; `None`: the system bundle, `/etc/ssl/certs/ca-certificates.crt`.
    pub ca_certificates: Option<String>,
    /// `None`: from each request's host (Envoy's auto SNI) on HTTP ports.
    pub sni: Option<String>,
    pub subject_alt_names: Vec<String>,
    pub insecure_skip_verify: bool,
}

/// Istio's `loadBalancer.warmup` (or the older `warmupDurationSecs`): an endpoint that
/// just joined starts with a small share of the requests, growing to its full share over
/// `duration` (Envoy's slow start). Round robin and least request only.
#[derive(Clone, Debug, PartialEq)]
pub struct Warmup {
    pub duration: Duration,
    /// The share a new endpoint starts with, in percent of its full weight (Istio: 10).
    pub minimum_percent: f64,
    /// How fast the share grows: 1 is linear, more is faster at first (Istio: 1).
    pub aggression: f64,
}

/// The parts of a policy that replace each other whole when policies merge.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicySections {
    pub load_balancer: Option<LoadBalancer>,
    /// Part of the `loadBalancer` section: it merges together with `load_balancer`.
    pub warmup: Option<Warmup>,
    /// Part of the `loadBalancer` section too (`localityLbSetting`); `None`: the mesh's
    /// default (see [`super::locality`]).
    pub locality_lb: Option<super::locality::LocalityLb>,
    pub connection_pool: Option<ConnectionPool>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<UpstreamTls>,
}

impl PolicySections {
    /// `self` with every section `over` sets replacing ours (Istio's subset override).
    fn overridden_by(&self, over: &PolicySections) -> PolicySections {
        // `loadBalancer` is one section: a subset that sets it replaces the policy and the warmup.
        let balancer = if over.load_balancer.is_some() || over.warmup.is_some() || over.locality_lb.is_some() {
            over
        } else {
            self
        };
        PolicySections {
            load_balancer: balancer.load_balancer.clone(),
            warmup: balancer.warmup.clone(),
            locality_lb: balancer.locality_lb.clone(),
            connection_pool: over.connection_pool.clone().or_else(|| self.connection_pool.clone()),
            outlier_detection: over.outlier_detection.clone().or_else(|| self.outlier_detection.clone()),
            tls: over.tls.clone().or_else(|| self.tls.clone()),
        }
    }
}

/// A DestinationRule's (or subset's) `trafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrafficPolicy {
    pub sections: PolicySections,
    /// `portLevelSettings` by port number.
    pub port_level: BTreeMap<u16, PolicySections>,
}

impl TrafficPolicy {
    /// The policy for `port`: its port-level settings if it has some (whole: they do
    /// not inherit from the rule's level), else the rule's level.
    fn for_port(&self, port: u16) -> PolicySections {
        self.port_level.get(&port).cloned().unwrap_or_else(|| self.sections.clone())
    }
}

/// The policy a cluster of `port` gets, as Istio computes it (`MergeTrafficPolicy`):
/// the rule's policy for the port; then each section the subset sets replaces the
/// rule's; then the subset's port-level settings, if it has some for this port,
/// replace everything (unset sections fall back to the defaults, not to the rule's).
pub fn effective_policy(rule: Option<&TrafficPolicy>, subset: Option<&TrafficPolicy>, port: u16) -> PolicySections {
    let base = rule.map(|r| r.for_port(port)).unwrap_or_default();
    match subset {
        None => base,
        Some(s) => match s.port_level.get(&port) {
            Some(port_level) => port_level.clone(),
            None => base.overridden_by(&s.sections),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb(lb: LoadBalancer) -> PolicySections {
        PolicySections { load_balancer: Some(lb), ..Default::default() }
    }

    fn pool(max: u32) -> ConnectionPool {
        ConnectionPool { max_connections: Some(max), ..Default::default() }
    }

    #[test]
    fn policies_merge_as_istio_merges_them() {
        let rule = TrafficPolicy {
            sections: PolicySections {
                load_balancer: Some(LoadBalancer::Random),
                connection_pool: Some(pool(10)),
                outlier_detection: None,
                tls: None,
                warmup: None,
                locality_lb: None,
            },
            port_level: [(8080, lb(LoadBalancer::LeastRequest))].into_iter().collect(),
        };
        let subset = TrafficPolicy {
            sections: PolicySections { connection_pool: Some(pool(1)), ..Default::default() },
            port_level: [(9090, lb(LoadBalancer::RoundRobin))].into_iter().collect(),
        };
        let cases = [
            // No subset: the rule's level, or its port-level settings whole.
            (None, 80, rule.sections.clone()),
            (None, 8080, lb(LoadBalancer::LeastRequest)),
            // A subset replaces the sections it sets, keeps the others.
            (
                Some(&subset),
                80,
                PolicySections {
                    load_balancer: Some(LoadBalancer::Random),
                    connection_pool: Some(pool(1)),
                    outlier_detection: None,
                    tls: None,
                    warmup: None,
                    locality_lb: None,
                },
            ),
            (
                Some(&subset),
                8080,
                PolicySections {
                    load_balancer: Some(LoadBalancer::LeastRequest),
                    connection_pool: Some(pool(1)),
                    outlier_detection: None,
                    tls: None,
                    warmup: None,
                    locality_lb: None,
                },
            ),
            // The subset's port-level settings replace everything.
            (Some(&subset), 9090, lb(LoadBalancer::RoundRobin)),
        ];
        for (subset, port, want) in cases {
            assert_eq!(effective_policy(Some(&rule), subset, port), want, "port {port}, subset {}", subset.is_some());
        }
        assert_eq!(effective_policy(None, None, 80), PolicySections::default());
    }
}
