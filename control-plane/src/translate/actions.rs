//! The actions of a VirtualService HTTP rule → Envoy route settings, with Istio's
//! defaults where the rule leaves a field unset:
//! - `timeout` unset: no timeout (Envoy's own default of 15s is turned off with 0);
//! - `retries` unset: Istio's default policy: 2 retries on
//!   `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`
//!   with status 503, each retry to another host than the ones tried
//!   (`previous_hosts`, up to 5 host selections);
//! - `retries.attempts: 0` (or `retries` without `attempts`): no retries;
//! - `fault`: the fault filter (in every outbound HTTP chain, before the router) gets
//!   the rule's delay and abort as per-route config; a share unset is 0%, as in Istio.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{header_value_option, HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::config::route::v3::{retry_policy, weighted_cluster, RetryPolicy, Route, RouteAction};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{fault_delay, FaultDelay};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{fault_abort, FaultAbort, HttpFault};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::r#type::v3::{fractional_percent, FractionalPercent};
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value};

use crate::model::{AbortStatus, Fault, HeaderOps, Headers, Retries, RouteActions};

use super::envoy::{any, CORS_FILTER, FAULT_FILTER};

/// Istio's default `retryOn`.
pub const DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
/// Istio's default number of retries (after the first attempt).
pub const DEFAULT_RETRIES: u32 = 2;
/// Istio's default retriable status code.
pub const DEFAULT_RETRIABLE_STATUS: u32 = 503;
/// Istio's default number of host selections per retry (with `previous_hosts`).
const HOST_SELECTION_ATTEMPTS: i64 = 5;

pub fn duration(d: std::time::Duration) -> Duration {
    Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// Sets the timeout, retry policy and rewrites of `action` from the rule's `actions`.
pub fn apply(action: &mut RouteAction, actions: &RouteActions) {
    action.timeout = Some(duration(actions.timeout.unwrap_or_default()));
    action.retry_policy = retry_policy(actions.retries.as_ref());
    if let Some(rw) = &actions.rewrite {
        super::http_actions::apply_rewrite(action, rw);
    }
}

/// The per-route configuration of the HTTP filters (by filter name) for `actions`.
pub fn per_filter_config(actions: &RouteActions) -> HashMap<String, Any> {
    let mut out = HashMap::new();
    if let Some(fault) = &actions.fault {
        out.insert(FAULT_FILTER.to_owned(), any(http_fault(fault)));
    }
    if let Some(cors) = &actions.cors {
        out.insert(CORS_FILTER.to_owned(), any(super::http_actions::cors_policy(cors)));
    }
    out
}

fn share(per_million: u32) -> Option<FractionalPercent> {
    Some(FractionalPercent { numerator: per_million, denominator: fractional_percent::DenominatorType::Million as i32 })
}

/// The fault filter's per-route config, as Istio builds it.
pub fn http_fault(fault: &Fault) -> HttpFault {
    HttpFault {
        delay: fault.delay.as_ref().map(|d| FaultDelay {
            percentage: share(d.per_million),
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(duration(d.fixed))),
        }),
        abort: fault.abort.as_ref().map(|a| FaultAbort {
            percentage: share(a.per_million),
            error_type: Some(match a.status {
                AbortStatus::Http(code) => fault_abort::ErrorType::HttpStatus(code),
                AbortStatus::Grpc(code) => fault_abort::ErrorType::GrpcStatus(code),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Envoy's header options for `ops`: `set` overwrites (or adds), `add` appends.
fn header_options(ops: &HeaderOps) -> Vec<HeaderValueOption> {
    use header_value_option::HeaderAppendAction::{AppendIfExistsOrAdd, OverwriteIfExistsOrAdd};
    let option =
        |(key, value): (&String, &String), action: header_value_option::HeaderAppendAction| HeaderValueOption {
            header: Some(HeaderValue { key: key.clone(), value: value.clone(), ..Default::default() }),
            append_action: action as i32,
            ..Default::default()
        };
    let set = ops.set.iter().map(|kv| option(kv, OverwriteIfExistsOrAdd));
    set.chain(ops.add.iter().map(|kv| option(kv, AppendIfExistsOrAdd))).collect()
}

/// Header edits of a route: the rule's, then (with one destination) the destination's.
pub fn route_headers(route: &mut Route, all: &[&Headers]) {
    for h in all {
        route.request_headers_to_add.extend(header_options(&h.request));
        route.request_headers_to_remove.extend(h.request.remove.iter().cloned());
        route.response_headers_to_add.extend(header_options(&h.response));
        route.response_headers_to_remove.extend(h.response.remove.iter().cloned());
    }
}

/// Header edits of one destination of a weighted split.
pub fn cluster_weight_headers(cw: &mut weighted_cluster::ClusterWeight, h: &Headers) {
    cw.request_headers_to_add = header_options(&h.request);
    cw.request_headers_to_remove = h.request.remove.clone();
    cw.response_headers_to_add = header_options(&h.response);
    cw.response_headers_to_remove = h.response.remove.clone();
}

/// Istio's default retry policy (for rules without `retries`, and services without rules).
pub fn default_retry_policy() -> RetryPolicy {
    RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.to_owned(),
        num_retries: Some(UInt32Value { value: DEFAULT_RETRIES }),
        retry_host_predicate: vec![previous_hosts()],
        host_selection_retry_max_attempts: HOST_SELECTION_ATTEMPTS,
        retriable_status_codes: vec![DEFAULT_RETRIABLE_STATUS],
        ..Default::default()
    }
}

fn previous_hosts() -> retry_policy::RetryHostPredicate {
    retry_policy::RetryHostPredicate {
        name: "envoy.retry_host_predicates.previous_hosts".to_owned(),
        config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(any(PreviousHostsPredicate {}))),
    }
}

/// The policy for `retries` as Istio builds it: its default, with the user's fields
/// over it; None (no retries) for `attempts: 0`.
pub fn retry_policy(retries: Option<&Retries>) -> Option<RetryPolicy> {
    let Some(r) = retries else { return Some(default_retry_policy()) };
    if r.attempts == 0 {
        return None;
    }
    let mut out = default_retry_policy();
    out.num_retries = Some(UInt32Value { value: r.attempts });
    if let Some(on) = &r.retry_on {
        out.retry_on = on.conditions.join(",");
        out.retriable_status_codes = on.status_codes.clone();
    }
    out.per_try_timeout = r.per_try_timeout.map(duration);
    if r.retry_remote_localities {
        out.retry_priority = Some(retry_policy::RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".to_owned(),
            config_type: Some(retry_policy::retry_priority::ConfigType::TypedConfig(any(PreviousPrioritiesConfig {
                update_frequency: 2,
            }))),
        });
    }
    if !r.ignore_previous_hosts {
        out.retry_host_predicate.clear();
        out.host_selection_retry_max_attempts = 0;
    }
    if let Some(base) = r.backoff {
        out.retry_back_off =
            Some(retry_policy::RetryBackOff { base_interval: Some(duration(base)), max_interval: None });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RetryOn;
    use std::time::Duration as StdDuration;

    #[test]
    fn unset_retries_get_istios_default() {
        let p = retry_policy(None).unwrap();
        assert_eq!(p.retry_on, DEFAULT_RETRY_ON);
        assert_eq!(p.num_retries.unwrap().value, 2);
        assert_eq!(p.retriable_status_codes, vec![503]);
        assert_eq!(p.retry_host_predicate.len(), 1);
        assert_eq!(p.host_selection_retry_max_attempts, 5);
    }

    #[test]
    fn zero_attempts_turn_retries_off() {
        assert_eq!(retry_policy(Some(&Retries { attempts: 0, ..Default::default() })), None);
    }

    #[test]
    fn user_fields_override_the_default() {
        let r = Retries {
            attempts: 3,
            per_try_timeout: Some(StdDuration::from_millis(1500)),
            retry_on: Some(RetryOn {
                conditions: vec!["5xx".into(), "retriable-status-codes".into()],
                status_codes: vec![409],
            }),
            retry_remote_localities: false,
            ignore_previous_hosts: false,
            backoff: Some(StdDuration::from_millis(50)),
        };
        let p = retry_policy(Some(&r)).unwrap();
        assert_eq!(p.num_retries.unwrap().value, 3);
        assert_eq!(p.retry_on, "5xx,retriable-status-codes");
        assert_eq!(p.retriable_status_codes, vec![409]);
        assert_eq!(p.per_try_timeout, Some(Duration { seconds: 1, nanos: 500_000_000 }));
        assert!(p.retry_host_predicate.is_empty());
        assert_eq!(p.retry_back_off.unwrap().base_interval, Some(Duration { seconds: 0, nanos: 50_000_000 }));
    }

    #[test]
    fn timeout_unset_is_zero() {
        let mut a = RouteAction::default();
        apply(&mut a, &RouteActions::default());
        assert_eq!(a.timeout, Some(Duration { seconds: 0, nanos: 0 }));
        apply(&mut a, &RouteActions { timeout: Some(StdDuration::from_millis(250)), ..Default::default() });
        assert_eq!(a.timeout, Some(Duration { seconds: 0, nanos: 250_000_000 }));
    }
}
