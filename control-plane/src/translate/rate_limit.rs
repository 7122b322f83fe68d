//! RateLimit → Envoy's local rate limiter (`envoy.filters.http.local_ratelimit`) on the
//! inbound HTTP connection managers of the workloads it selects.
//!
//! Rules it keeps:
//! - one RateLimit per workload: the one with the narrowest selector (most labels),
//!   then the first by name; the others selecting the same workload are reported,
//!   naming the one in force ([`report_conflicts`]);
//! - the workload's bucket is the filter's own (Envoy keeps one per filter, so one per
//!   inbound port, per sidecar instance); without one the filter is present but not
//!   enabled, so only rules limit;
//! - each rule is one inbound route ahead of the passthrough route, with its own
//!   bucket in `typed_per_filter_config` (a route's bucket is the route's alone, and
//!   replaces the workload's for the requests it takes);
//! - only sidecars under capture have inbound listeners: an explicit-mode proxy a
//!   RateLimit selects enforces nothing, which is logged ([`warn_explicit`]).

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::route::v3::Route;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::XRateLimitHeadersRfcVersion;
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{http_filter, HttpFilter};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent, FractionalPercent, HttpStatus, TokenBucket as Bucket};
use envoy_types::pb::google::protobuf::{Duration, UInt32Value};

use crate::model::index::Index;
use crate::model::{selector_matches, Labels, RateLimit, TokenBucket};

use super::envoy::any;
use super::routes::route_match;
use super::Problems;

/// The filter's name in the inbound HTTP connection managers (and the key of its
/// per-route configuration).
pub const RATE_LIMIT_FILTER: &str = "envoy.filters.http.local_ratelimit";

/// Orders the RateLimits that select one workload: the first is in force.
fn precedence(rl: &RateLimit) -> (std::cmp::Reverse<usize>, &str) {
    (std::cmp::Reverse(rl.selector.len()), rl.name.as_str())
}

/// The RateLimits of `namespace` that select a workload with `labels`, the one in
/// force first.
fn selecting<'a>(model: &'a Index, namespace: &str, labels: &Labels) -> Vec<&'a RateLimit> {
    // RateLimits are few: a scan costs less than a lookup table.
    let mut found: Vec<&RateLimit> = model
        .rate_limits
        .values()
        .map(|rl| &**rl)
        .filter(|rl| rl.namespace == namespace && selector_matches(&rl.selector, labels))
        .collect();
    found.sort_by(|a, b| precedence(a).cmp(&precedence(b)));
    found
}

/// The RateLimit in force for a workload of `namespace` with `labels`.
pub fn for_workload<'a>(model: &'a Index, namespace: &str, labels: &Labels) -> Option<&'a RateLimit> {
    selecting(model, namespace, labels).into_iter().next()
}

/// Reports each RateLimit that selects a pod another one governs (Istio's rule for
/// overlapping selectors: the narrowest wins, then the first by name).
pub fn report_conflicts(model: &Index, problems: &mut Problems) {
    if model.rate_limits.is_empty() {
        return;
    }
    let mut seen = BTreeSet::new();
    for pod in model.pods.values() {
        let found = selecting(model, &pod.namespace, &pod.labels);
        let Some((winner, losers)) = found.split_first() else { continue };
        for loser in losers {
            if !seen.insert((loser.namespace.clone(), loser.name.clone(), winner.name.clone())) {
                continue;
            }
            problems.report(
                "RateLimit",
                &loser.namespace,
                &loser.name,
                "spec.selector",
                format!(
                    "selects workloads (pod {}) that RateLimit {}/{} also selects; that one is in force there \
                     (narrower selector, or first by name) and this one is ignored for them",
                    pod.name, winner.namespace, winner.name
                ),
            );
        }
    }
}

/// Logs that an explicit-mode proxy, which has no inbound listener, does not enforce
/// the RateLimit that selects it.
pub fn warn_explicit(model: &Index, namespace: &str, labels: &Labels) {
    if let Some(rl) = for_workload(model, namespace, labels) {
        tracing::warn!(
            namespace,
            rate_limit = %rl.name,
            "a RateLimit selects an explicit-mode proxy, which has no inbound listener: not enforced there \
             (RateLimits are enforced by sidecars under capture)"
        );
    }
}

fn bucket(b: &TokenBucket) -> Bucket {
    Bucket {
        max_tokens: b.max_tokens,
        tokens_per_fill: Some(UInt32Value { value: b.tokens_per_fill }),
        fill_interval: Some(Duration {
            seconds: b.fill_interval.as_secs() as i64,
            nanos: b.fill_interval.subsec_nanos() as i32,
        }),
    }
}

fn all_requests(runtime_key: &str) -> RuntimeFractionalPercent {
    RuntimeFractionalPercent {
        default_value: Some(FractionalPercent {
            numerator: 100,
            denominator: fractional_percent::DenominatorType::Hundred as i32,
        }),
        runtime_key: runtime_key.to_owned(),
    }
}

/// The limiter's configuration with `limit` (None: present, limiting nothing).
fn local_rate_limit(rl: &RateLimit, stat_prefix: String, limit: Option<&TokenBucket>) -> LocalRateLimit {
    let enabled = limit.is_some();
    LocalRateLimit {
        stat_prefix,
        status: (rl.status_code != crate::model::rate_limit::DEFAULT_STATUS)
            .then_some(HttpStatus { code: i32::from(rl.status_code) }),
        token_bucket: limit.map(bucket),
        filter_enabled: enabled.then(|| all_requests("local_rate_limit_enabled")),
        filter_enforced: enabled.then(|| all_requests("local_rate_limit_enforced")),
        enable_x_ratelimit_headers: if rl.x_rate_limit_headers && enabled {
            XRateLimitHeadersRfcVersion::DraftVersion03 as i32
        } else {
            XRateLimitHeadersRfcVersion::Off as i32
        },
        ..Default::default()
    }
}

/// What `rl` adds to the inbound HTTP connection manager of `port`: its filter (to go
/// before the router) and its rules' routes, which go before `passthrough`.
pub fn inbound(rl: &RateLimit, port: u16, passthrough: Route) -> (HttpFilter, Vec<Route>) {
    let filter = HttpFilter {
        name: RATE_LIMIT_FILTER.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(local_rate_limit(
            rl,
            format!("rate_limit_{}", rl.name),
            rl.bucket.as_ref(),
        )))),
        ..Default::default()
    };
    let mut routes = Vec::new();
    for (i, rule) in rl.rules.iter().enumerate() {
        if rule.matched.port.is_some_and(|p| p != port) {
            continue;
        }
        let name = rule.name.clone().unwrap_or_else(|| format!("rule-{i}"));
        let config = local_rate_limit(rl, format!("rate_limit_{}_{name}", rl.name), Some(&rule.bucket));
        routes.push(Route {
            name,
            r#match: Some(route_match(&rule.matched)),
            typed_per_filter_config: [(RATE_LIMIT_FILTER.to_owned(), any(config))].into_iter().collect(),
            ..passthrough.clone()
        });
    }
    routes.push(passthrough);
    (filter, routes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HttpMatch, MeshObject, Pod, RateLimitRule, StringMatch};
    use prost::Message;
    use std::time::Duration as StdDuration;

    fn rl(name: &str, selector: &[(&str, &str)]) -> RateLimit {
        RateLimit {
            namespace: "ns".into(),
            name: name.into(),
            selector: selector.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            bucket: Some(TokenBucket { max_tokens: 3, tokens_per_fill: 3, fill_interval: StdDuration::from_secs(1) }),
            rules: Vec::new(),
            status_code: 429,
            x_rate_limit_headers: false,
        }
    }

    fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            namespace: "ns".into(),
            name: name.into(),
            labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            ip: None,
            service_account: "default".into(),
            ports: Vec::new(),
            ready: true,
            node_name: None,
        }
    }

    #[test]
    fn the_narrowest_selector_then_the_first_name_is_in_force_and_the_others_are_reported() {
        let mut model = Index::new();
        for o in [
            MeshObject::RateLimit(rl("a-namespace", &[])),
            MeshObject::RateLimit(rl("z-reviews", &[("app", "reviews")])),
            MeshObject::RateLimit(rl("b-reviews-v1", &[("app", "reviews"), ("version", "v1")])),
            MeshObject::RateLimit(rl("c-reviews", &[("app", "reviews")])),
            MeshObject::Pod(pod("reviews-v1", &[("app", "reviews"), ("version", "v1")])),
            MeshObject::Pod(pod("reviews-v2", &[("app", "reviews"), ("version", "v2")])),
            MeshObject::Pod(pod("ratings", &[("app", "ratings")])),
        ] {
            model.apply(o);
        }
        let labels = |l: &[(&str, &str)]| pod("x", l).labels;
        let cases = [
            (labels(&[("app", "reviews"), ("version", "v1")]), Some("b-reviews-v1")),
            (labels(&[("app", "reviews"), ("version", "v2")]), Some("c-reviews")),
            (labels(&[("app", "ratings")]), Some("a-namespace")),
        ];
        for (labels, want) in cases {
            assert_eq!(for_workload(&model, "ns", &labels).map(|r| r.name.as_str()), want, "{labels:?}");
        }
        assert_eq!(for_workload(&model, "other", &labels(&[])), None);
        let mut problems = Problems::default();
        report_conflicts(&model, &mut problems);
        let got: BTreeSet<(String, String)> = problems
            .list
            .iter()
            .map(|p| {
                let winner = p.message.split("RateLimit ns/").nth(1).unwrap().split(' ').next().unwrap();
                (p.name.clone().unwrap(), winner.to_owned())
            })
            .collect();
        let want = [
            ("a-namespace", "b-reviews-v1"),
            ("a-namespace", "c-reviews"),
            ("c-reviews", "b-reviews-v1"),
            ("z-reviews", "b-reviews-v1"),
            ("z-reviews", "c-reviews"),
        ];
        assert_eq!(got, want.iter().map(|(l, w)| ((*l).to_owned(), (*w).to_owned())).collect());
    }

    #[test]
    fn rules_become_routes_ahead_of_the_passthrough_on_their_port() {
        let mut limit = rl("r", &[]);
        limit.bucket = None;
        let only = |port| HttpMatch { uri: Some(StringMatch::Prefix("/api".into())), port, ..Default::default() };
        let bucket = TokenBucket { max_tokens: 1, tokens_per_fill: 1, fill_interval: StdDuration::from_millis(500) };
        limit.rules = vec![
            RateLimitRule { name: Some("api".into()), matched: only(None), bucket: bucket.clone() },
            RateLimitRule { name: None, matched: only(Some(9080)), bucket },
        ];
        let passthrough = super::super::routes::default_route("InboundPassthroughCluster");
        let names = |port| inbound(&limit, port, passthrough.clone()).1.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(names(9080), ["api", "rule-1", "default"]);
        assert_eq!(names(8080), ["api", "default"]);
        let (filter, routes) = inbound(&limit, 9080, passthrough.clone());
        let Some(http_filter::ConfigType::TypedConfig(config)) = filter.config_type else { panic!("typed") };
        let config = LocalRateLimit::decode(config.value.as_slice()).unwrap();
        assert_eq!((config.token_bucket, config.filter_enabled), (None, None), "no workload bucket: not enabled");
        let per_route =
            LocalRateLimit::decode(routes[0].typed_per_filter_config[RATE_LIMIT_FILTER].value.as_slice()).unwrap();
        assert_eq!(per_route.token_bucket.unwrap().max_tokens, 1);
        assert_eq!(per_route.filter_enforced.unwrap().default_value.unwrap().numerator, 100);
        assert_eq!(routes[0].action, passthrough.action);
    }
}
