//! A DestinationRule's `trafficPolicy` (top level, per subset and per port): load
//! balancer, connection pool and outlier detection, each value checked here so that
//! Envoy never sees one it would reject (NACK).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::*;
use crate::model::{
    ConnectionPool, ConsistentHash, HashKey, HashRing, LoadBalancer, OutlierDetection, PolicySections, TcpKeepalive,
    TlsOrigination, TrafficPolicy, UpstreamTls, Warmup,
};

/// Envoy's upper bound on `RingHashLbConfig.minimum_ring_size` (and maximum size).
const MAX_RING_SIZE: i64 = 8_388_608;
/// Envoy's upper bound on `MaglevLbConfig.table_size`.
const MAX_MAGLEV_TABLE: i64 = 5_000_011;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct TrafficPolicySpec {
    load_balancer: Option<LoadBalancerSpec>,
    connection_pool: Option<ConnectionPoolSpec>,
    outlier_detection: Option<OutlierSpec>,
    tls: Option<TlsSpec>,
    #[serde(default)]
    port_level_settings: Vec<PortPolicySpec>,
}

/// The sections of a [`TrafficPolicySpec`] or [`PortPolicySpec`] (serde's `flatten`
/// would lose the field path of errors).
struct SectionsSpec<'a> {
    load_balancer: &'a Option<LoadBalancerSpec>,
    connection_pool: &'a Option<ConnectionPoolSpec>,
    outlier_detection: &'a Option<OutlierSpec>,
    tls: &'a Option<TlsSpec>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TlsSpec {
    mode: Option<String>,
    client_certificate: Option<String>,
    private_key: Option<String>,
    ca_certificates: Option<String>,
    #[serde(default)]
    subject_alt_names: Vec<String>,
    sni: Option<String>,
    insecure_skip_verify: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PortPolicySpec {
    port: Option<PortSpec>,
    load_balancer: Option<LoadBalancerSpec>,
    connection_pool: Option<ConnectionPoolSpec>,
    outlier_detection: Option<OutlierSpec>,
    tls: Option<TlsSpec>,
}

#[derive(Deserialize, Default)]
struct PortSpec {
    number: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LoadBalancerSpec {
    simple: Option<String>,
    consistent_hash: Option<ConsistentHashSpec>,
    warmup: Option<WarmupSpec>,
    warmup_duration_secs: Option<String>,
    locality_lb_setting: Option<super::locality::LocalityLbSpec>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WarmupSpec {
    duration: Option<String>,
    minimum_percent: Option<f64>,
    aggression: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ConsistentHashSpec {
    http_header_name: Option<String>,
    http_cookie: Option<CookieSpec>,
    use_source_ip: Option<bool>,
    http_query_parameter_name: Option<String>,
    ring_hash: Option<RingHashSpec>,
    maglev: Option<MaglevSpec>,
    minimum_ring_size: Option<i64>,
}

#[derive(Deserialize, Default)]
struct CookieSpec {
    #[serde(default)]
    name: String,
    path: Option<String>,
    ttl: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RingHashSpec {
    minimum_ring_size: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct MaglevSpec {
    table_size: Option<i64>,
}

#[derive(Deserialize, Default)]
struct ConnectionPoolSpec {
    tcp: Option<TcpPoolSpec>,
    http: Option<HttpPoolSpec>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TcpPoolSpec {
    max_connections: Option<i64>,
    connect_timeout: Option<String>,
    tcp_keepalive: Option<KeepaliveSpec>,
}

#[derive(Deserialize, Default)]
struct KeepaliveSpec {
    probes: Option<i64>,
    time: Option<String>,
    interval: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct HttpPoolSpec {
    http1_max_pending_requests: Option<i64>,
    http2_max_requests: Option<i64>,
    max_requests_per_connection: Option<i64>,
    max_retries: Option<i64>,
    idle_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OutlierSpec {
    #[serde(rename = "consecutive5xxErrors")]
    consecutive_5xx_errors: Option<i64>,
    consecutive_gateway_errors: Option<i64>,
    interval: Option<String>,
    base_ejection_time: Option<String>,
    max_ejection_percent: Option<i64>,
    min_health_percent: Option<i64>,
}

/// A count in `0..=max`, or an error naming `field`.
fn count(cx: &Context<'_>, field: &str, value: Option<i64>, max: i64) -> Result<Option<u32>, Diagnostic> {
    match value {
        None => Ok(None),
        Some(v) if (0..=max).contains(&v) => Ok(Some(u32::try_from(v).expect("in range"))),
        Some(v) => Err(cx.error(field, format!("{v} is out of range 0-{max}"))),
    }
}

/// A count where 0 means "the default" (Istio's reading of the connection pool's
/// counters).
fn limit(cx: &Context<'_>, field: &str, value: Option<i64>) -> Result<Option<u32>, Diagnostic> {
    Ok(count(cx, field, value, i64::from(i32::MAX))?.filter(|v| *v > 0))
}

/// A duration in Go's notation (`1h`, `30s`, `1.5s`, `100ms`) of at least `min`.
fn duration(cx: &Context<'_>, field: &str, value: Option<&str>, min: Duration) -> Result<Option<Duration>, Diagnostic> {
    let Some(text) = value else { return Ok(None) };
    let d = parse_duration(text)
        .ok_or_else(|| cx.error(field, format!("{text:?} is not a duration (like 30s, 1.5s, 100ms or 1h)")))?;
    if d < min {
        return Err(cx.error(field, format!("{text} is shorter than the minimum, {min:?}")));
    }
    Ok(Some(d))
}

/// Parses Go's duration notation (`1h`, `30s`, `1.5s`, `100ms`), with the reader route
/// actions use.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    super::duration::duration(text).ok()
}

fn parse_consistent_hash(
    cx: &Context<'_>,
    field: &str,
    spec: &ConsistentHashSpec,
) -> Result<ConsistentHash, Diagnostic> {
    let mut keys = Vec::new();
    if let Some(h) = &spec.http_header_name {
        if h.is_empty() {
            return Err(cx.error(&format!("{field}.httpHeaderName"), "must not be empty"));
        }
        keys.push(("httpHeaderName", HashKey::Header(h.to_ascii_lowercase())));
    }
    if let Some(c) = &spec.http_cookie {
        let cfield = format!("{field}.httpCookie");
        if c.name.is_empty() {
            return Err(cx.error(&format!("{cfield}.name"), "required"));
        }
        let ttl = duration(cx, &format!("{cfield}.ttl"), c.ttl.as_deref(), Duration::ZERO)?;
        keys.push(("httpCookie", HashKey::Cookie { name: c.name.clone(), ttl, path: c.path.clone() }));
    }
    if spec.use_source_ip == Some(true) {
        keys.push(("useSourceIp", HashKey::SourceIp));
    }
    if let Some(q) = &spec.http_query_parameter_name {
        if q.is_empty() {
            return Err(cx.error(&format!("{field}.httpQueryParameterName"), "must not be empty"));
        }
        keys.push(("httpQueryParameterName", HashKey::QueryParameter(q.clone())));
    }
    let key = match keys.len() {
        0 => {
            return Err(cx.error(
                field,
                "name what to hash: one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
            ))
        }
        1 => keys.remove(0).1,
        _ => {
            let names: Vec<&str> = keys.iter().map(|(n, _)| *n).collect();
            return Err(cx.error(field, format!("{} are set; a consistent hash takes one key", names.join(" and "))));
        }
    };
    let ring = match (&spec.ring_hash, &spec.maglev) {
        (Some(_), Some(_)) => return Err(cx.error(field, "ringHash and maglev are both set; choose one")),
        (None, Some(m)) => {
            let f = format!("{field}.maglev.tableSize");
            let table_size = count(cx, &f, m.table_size, MAX_MAGLEV_TABLE)?.map(u64::from);
            if let Some(n) = table_size.filter(|n| !is_prime(*n)) {
                return Err(cx.error(&f, format!("{n} is not a prime number (Envoy requires one)")));
            }
            HashRing::Maglev { table_size }
        }
        (ring_hash, None) => {
            let (f, size) = match ring_hash {
                Some(r) => (format!("{field}.ringHash.minimumRingSize"), r.minimum_ring_size),
                None => (format!("{field}.minimumRingSize"), spec.minimum_ring_size),
            };
            HashRing::RingHash {
                minimum_ring_size: count(cx, &f, size, MAX_RING_SIZE)?.filter(|n| *n > 0).map(u64::from),
            }
        }
    };
    Ok(ConsistentHash { key, ring })
}

/// Istio's `ClientTLSSettings`. Certificates from Kubernetes secrets (`credentialName`)
/// are refused by the schema (they need SDS); `ISTIO_MUTUAL` is a warning: without mesh
/// mTLS both sidecars speak plaintext, which is what the connection stays.
fn parse_tls(cx: &mut Context<'_>, field: &str, spec: &TlsSpec) -> Result<UpstreamTls, Diagnostic> {
    let f = |name: &str| format!("{field}.{name}");
    let non_empty = |name: &str, v: &Option<String>| -> Result<Option<String>, Diagnostic> {
        match v {
            Some(s) if s.trim().is_empty() => Err(cx.error(&f(name), "must not be empty")),
            other => Ok(other.clone()),
        }
    };
    let path = |name: &str, v: &Option<String>| -> Result<Option<String>, Diagnostic> {
        let v = non_empty(name, v)?;
        match &v {
            Some(p) if !p.starts_with('/') || p.len() > 4096 || p.chars().any(char::is_control) => {
                Err(cx.error(&f(name), format!("{p:?} is not an absolute file path (on the proxy)")))
            }
            _ => Ok(v),
        }
    };
    let client_certificate = path("clientCertificate", &spec.client_certificate)?;
    let private_key = path("privateKey", &spec.private_key)?;
    let ca_certificates = path("caCertificates", &spec.ca_certificates)?;
    let sni = non_empty("sni", &spec.sni)?;
    if let Some(name) = sni.as_ref().filter(|s| s.len() > 255 || s.chars().any(|c| c.is_control() || c.is_whitespace()))
    {
        return Err(cx.error(&f("sni"), format!("{name:?} is not a server name (at most 255 characters, no spaces)")));
    }
    for (i, san) in spec.subject_alt_names.iter().enumerate() {
        if san.is_empty() || san.chars().any(char::is_control) {
            return Err(cx.error(&f(&format!("subjectAltNames[{i}]")), format!("{san:?} is not a name")));
        }
    }
    let mut origination = TlsOrigination {
        client_certificate: None,
        ca_certificates,
        sni,
        subject_alt_names: spec.subject_alt_names.clone(),
        insecure_skip_verify: spec.insecure_skip_verify.unwrap_or(false),
    };
    match spec.mode.as_deref() {
        None | Some("DISABLE") => Ok(UpstreamTls::Disable),
        Some("SIMPLE") => Ok(UpstreamTls::Originate(origination)),
        Some("MUTUAL") => match (client_certificate, private_key) {
            (Some(cert), Some(key)) => {
                origination.client_certificate = Some((cert, key));
                Ok(UpstreamTls::Originate(origination))
            }
            (None, _) => Err(cx.error(&f("clientCertificate"), "required with mode MUTUAL (a file path)")),
            (_, None) => Err(cx.error(&f("privateKey"), "required with mode MUTUAL (a file path)")),
        },
        Some("ISTIO_MUTUAL") => {
            cx.warn(
                &f("mode"),
                "ISTIO_MUTUAL is not implemented by meshd yet (it comes with mesh mTLS); connections to this \
                 host stay plaintext, as the destination's sidecar expects",
            );
            Ok(UpstreamTls::Disable)
        }
        Some(other) => {
            Err(cx.error(&f("mode"), format!("{other:?} is not one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL")))
        }
    }
}

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

fn parse_load_balancer(
    cx: &Context<'_>,
    field: &str,
    spec: &LoadBalancerSpec,
) -> Result<Option<LoadBalancer>, Diagnostic> {
    let simple = match spec.simple.as_deref() {
        None | Some("UNSPECIFIED") => None,
        Some("ROUND_ROBIN") => Some(LoadBalancer::RoundRobin),
        Some("LEAST_REQUEST" | "LEAST_CONN") => Some(LoadBalancer::LeastRequest),
        Some("RANDOM") => Some(LoadBalancer::Random),
        Some("PASSTHROUGH") => {
            return Err(cx.error(
                &format!("{field}.simple"),
                "PASSTHROUGH (connect to the address the caller asked for, skipping load balancing) is not \
                 supported: requests would be balanced over the service's endpoints instead",
            ))
        }
        Some(other) => {
            return Err(cx.error(
                &format!("{field}.simple"),
                format!("{other:?} is not one of ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM"),
            ))
        }
    };
    match (&spec.consistent_hash, simple) {
        (Some(_), Some(_)) => {
            Err(cx.error(field, "simple and consistentHash are both set; a load balancer is one or the other"))
        }
        (Some(ch), None) => {
            Ok(Some(LoadBalancer::ConsistentHash(parse_consistent_hash(cx, &format!("{field}.consistentHash"), ch)?)))
        }
        (None, simple) => Ok(simple),
    }
}

/// `warmup` (or the older `warmupDurationSecs`), with Istio's defaults (10% to start,
/// aggression 1) and checks (Envoy divides by the aggression: it must be above 0).
fn parse_warmup(
    cx: &mut Context<'_>,
    field: &str,
    spec: &LoadBalancerSpec,
    balancer: Option<&LoadBalancer>,
) -> Result<Option<Warmup>, Diagnostic> {
    let warmup = match (&spec.warmup, &spec.warmup_duration_secs) {
        (None, None) => return Ok(None),
        (Some(w), old) => {
            if old.is_some() {
                cx.warn(&format!("{field}.warmupDurationSecs"), "warmup is also set and takes precedence");
            }
            let f = |name: &str| format!("{field}.warmup.{name}");
            let Some(d) = duration(cx, &f("duration"), w.duration.as_deref(), Duration::from_millis(1))? else {
                return Err(cx.error(&f("duration"), "required"));
            };
            let minimum_percent = w.minimum_percent.unwrap_or(10.0);
            if !(0.0..=100.0).contains(&minimum_percent) {
                return Err(cx.error(&f("minimumPercent"), format!("{minimum_percent} is out of range 0-100")));
            }
            let aggression = w.aggression.unwrap_or(1.0);
            if !(aggression > 0.0 && aggression.is_finite()) {
                return Err(cx.error(&f("aggression"), format!("{aggression} must be above 0 (1 is linear)")));
            }
            Warmup { duration: d, minimum_percent, aggression }
        }
        (None, Some(old)) => {
            let f = format!("{field}.warmupDurationSecs");
            let d = duration(cx, &f, Some(old), Duration::from_millis(1))?.expect("given");
            Warmup { duration: d, minimum_percent: 10.0, aggression: 1.0 }
        }
    };
    if matches!(balancer, Some(LoadBalancer::Random | LoadBalancer::ConsistentHash(_))) {
        cx.warn(
            &format!("{field}.warmup"),
            "warmup applies to ROUND_ROBIN and LEAST_REQUEST only; new endpoints of this policy get their full \
             share at once",
        );
        return Ok(None);
    }
    Ok(Some(warmup))
}

fn parse_connection_pool(
    cx: &Context<'_>,
    field: &str,
    spec: &ConnectionPoolSpec,
) -> Result<ConnectionPool, Diagnostic> {
    let mut pool = ConnectionPool::default();
    if let Some(tcp) = &spec.tcp {
        let f = |name: &str| format!("{field}.tcp.{name}");
        pool.max_connections = limit(cx, &f("maxConnections"), tcp.max_connections)?;
        pool.connect_timeout =
            duration(cx, &f("connectTimeout"), tcp.connect_timeout.as_deref(), Duration::from_millis(1))?;
        if let Some(k) = &tcp.tcp_keepalive {
            let kf = |name: &str| format!("{field}.tcp.tcpKeepalive.{name}");
            pool.tcp_keepalive = Some(TcpKeepalive {
                probes: limit(cx, &kf("probes"), k.probes)?,
                // Envoy counts keepalive times in whole seconds.
                time: duration(cx, &kf("time"), k.time.as_deref(), Duration::from_secs(1))?,
                interval: duration(cx, &kf("interval"), k.interval.as_deref(), Duration::from_secs(1))?,
            });
        }
    }
    if let Some(http) = &spec.http {
        let f = |name: &str| format!("{field}.http.{name}");
        pool.http1_max_pending_requests = limit(cx, &f("http1MaxPendingRequests"), http.http1_max_pending_requests)?;
        pool.http2_max_requests = limit(cx, &f("http2MaxRequests"), http.http2_max_requests)?;
        pool.max_requests_per_connection = limit(cx, &f("maxRequestsPerConnection"), http.max_requests_per_connection)?;
        pool.max_retries = limit(cx, &f("maxRetries"), http.max_retries)?;
        pool.idle_timeout = duration(cx, &f("idleTimeout"), http.idle_timeout.as_deref(), Duration::from_millis(1))?;
    }
    Ok(pool)
}

fn parse_outlier(cx: &Context<'_>, field: &str, spec: &OutlierSpec) -> Result<OutlierDetection, Diagnostic> {
    let f = |name: &str| format!("{field}.{name}");
    let at_least_1ms = Duration::from_millis(1);
    Ok(OutlierDetection {
        consecutive_5xx_errors: count(
            cx,
            &f("consecutive5xxErrors"),
            spec.consecutive_5xx_errors,
            i64::from(u32::MAX),
        )?,
        consecutive_gateway_errors: count(
            cx,
            &f("consecutiveGatewayErrors"),
            spec.consecutive_gateway_errors,
            i64::from(u32::MAX),
        )?,
        interval: duration(cx, &f("interval"), spec.interval.as_deref(), at_least_1ms)?,
        base_ejection_time: duration(cx, &f("baseEjectionTime"), spec.base_ejection_time.as_deref(), at_least_1ms)?,
        max_ejection_percent: count(cx, &f("maxEjectionPercent"), spec.max_ejection_percent, 100)?,
        min_health_percent: count(cx, &f("minHealthPercent"), spec.min_health_percent, 100)?,
    })
}

fn parse_sections(cx: &mut Context<'_>, field: &str, spec: SectionsSpec<'_>) -> Result<PolicySections, Diagnostic> {
    let lb_field = format!("{field}.loadBalancer");
    let load_balancer = match spec.load_balancer {
        Some(lb) => parse_load_balancer(cx, &lb_field, lb)?,
        None => None,
    };
    let warmup = match spec.load_balancer {
        Some(lb) => parse_warmup(cx, &lb_field, lb, load_balancer.as_ref())?,
        None => None,
    };
    let locality_lb = match spec.load_balancer.as_ref().and_then(|lb| lb.locality_lb_setting.as_ref()) {
        Some(l) => Some(super::locality::parse_locality_lb(
            cx,
            &format!("{lb_field}.localityLbSetting"),
            l,
            spec.outlier_detection.is_some(),
        )?),
        None => None,
    };
    Ok(PolicySections {
        load_balancer,
        warmup,
        locality_lb,
        connection_pool: match spec.connection_pool {
            Some(p) => Some(parse_connection_pool(cx, &format!("{field}.connectionPool"), p)?),
            None => None,
        },
        outlier_detection: match spec.outlier_detection {
            Some(o) => Some(parse_outlier(cx, &format!("{field}.outlierDetection"), o)?),
            None => None,
        },
        tls: match spec.tls {
            Some(t) => Some(parse_tls(cx, &format!("{field}.tls"), t)?),
            None => None,
        },
    })
}

pub(super) fn parse_traffic_policy(
    cx: &mut Context<'_>,
    field: &str,
    spec: &TrafficPolicySpec,
) -> Result<TrafficPolicy, Diagnostic> {
    let sections = SectionsSpec {
        load_balancer: &spec.load_balancer,
        connection_pool: &spec.connection_pool,
        outlier_detection: &spec.outlier_detection,
        tls: &spec.tls,
    };
    let sections = parse_sections(cx, field, sections)?;
    let mut port_level = BTreeMap::new();
    for (i, p) in spec.port_level_settings.iter().enumerate() {
        let pfield = format!("{field}.portLevelSettings[{i}]");
        let Some(number) = p.port.as_ref().and_then(|p| p.number) else {
            return Err(cx.error(&format!("{pfield}.port.number"), "required"));
        };
        let port = check_port(cx, &format!("{pfield}.port.number"), number)?;
        if port_level.contains_key(&port) {
            return Err(cx.error(&format!("{pfield}.port.number"), format!("port {port} has settings twice")));
        }
        let sections = SectionsSpec {
            load_balancer: &p.load_balancer,
            connection_pool: &p.connection_pool,
            outlier_detection: &p.outlier_detection,
            tls: &p.tls,
        };
        port_level.insert(port, parse_sections(cx, &pfield, sections)?);
    }
    Ok(TrafficPolicy { sections, port_level })
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_go_notation() {
        let ok = [
            ("30s", Duration::from_secs(30)),
            ("1.5s", Duration::from_millis(1500)),
            ("100ms", Duration::from_millis(100)),
            ("1h30m", Duration::from_secs(5400)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("250us", Duration::from_micros(250)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Some(want), "{text}");
        }
        for bad in ["", "10", "s", "1d", "-1s", "1.2.3s", "ten seconds"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
