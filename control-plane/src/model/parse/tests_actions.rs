//! Table tests of the route actions (`timeout`, `retries`, ...): what is read, and
//! each invalid value refused with its field named.

use std::time::Duration;

use super::*;

fn parse_rule(rule: &str) -> Result<Parsed, Diagnostic> {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: ns}}\n\
         spec:\n  hosts: [r]\n  http: [{{{rule}, route: [{{destination: {{host: r}}}}]}}]\n"
    );
    let value: Value = serde_yaml::from_str(&yaml).expect("test YAML parses");
    parse_object(&RawObject::from_value(value)?)
}

fn actions(rule: &str) -> RouteActions {
    match parse_rule(rule) {
        Ok(Parsed::Object(MeshObject::VirtualService(vs), warnings)) => {
            assert!(warnings.is_empty(), "{rule}: {warnings:?}");
            vs.http[0].actions.clone()
        }
        other => panic!("{rule}: {other:?}"),
    }
}

#[test]
fn timeouts_and_retries_are_read() {
    assert_eq!(actions("name: a").timeout, None);
    assert_eq!(actions("timeout: 1.5s").timeout, Some(Duration::from_millis(1500)));
    assert_eq!(actions("timeout: 250ms").timeout, Some(Duration::from_millis(250)));
    assert_eq!(actions("timeout: 0s").timeout, Some(Duration::ZERO));
    assert_eq!(actions("name: a").retries, None);
    let r = actions("retries: {attempts: 3, perTryTimeout: 2s, retryOn: 'gateway-error, 503,connect-failure'}")
        .retries
        .unwrap();
    assert_eq!(r.attempts, 3);
    assert_eq!(r.per_try_timeout, Some(Duration::from_secs(2)));
    let on = r.retry_on.unwrap();
    assert_eq!(on.conditions, ["gateway-error", "connect-failure", "retriable-status-codes"]);
    assert_eq!(on.status_codes, [503]);
    assert!(r.ignore_previous_hosts);
    let r = actions("retries: {attempts: 0}").retries.unwrap();
    assert_eq!(r.attempts, 0);
    let r = actions("retries: {attempts: 2, retryIgnorePreviousHosts: false, backoff: 100ms}").retries.unwrap();
    assert!(!r.ignore_previous_hosts);
    assert_eq!(r.backoff, Some(Duration::from_millis(100)));
}

#[test]
fn faults_are_read() {
    let f = actions("fault: {delay: {fixedDelay: 5s, percentage: {value: 12.5}}, abort: {httpStatus: 418, percentage: {value: 0.01}}}")
        .fault
        .unwrap();
    assert_eq!(f.delay, Some(FaultDelay { fixed: Duration::from_secs(5), per_million: 125_000 }));
    assert_eq!(f.abort, Some(FaultAbort { status: AbortStatus::Http(418), per_million: 100 }));
    let f = actions("fault: {delay: {fixedDelay: 1s, percent: 20}}").fault.unwrap();
    assert_eq!(f.delay.unwrap().per_million, 200_000);
    let f = actions("fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}").fault.unwrap();
    assert_eq!(f.abort.unwrap().status, AbortStatus::Grpc(14));
    // No percentage: nothing is injected (as in Istio), with a warning saying so.
    match parse_rule("fault: {abort: {httpStatus: 500}}") {
        Ok(Parsed::Object(_, warnings)) => {
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert_eq!(warnings[0].field, "spec.http[0].fault.abort.percentage");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn header_edits_are_read_in_lower_case() {
    let h = actions(
        "headers: {request: {set: {X-A: '1'}, add: {x-b: two words}, remove: [X-C]}, response: {remove: [server]}}",
    )
    .headers;
    assert_eq!(h.request.set.get("x-a").map(String::as_str), Some("1"));
    assert_eq!(h.request.add.get("x-b").map(String::as_str), Some("two words"));
    assert_eq!(h.request.remove, ["x-c"]);
    assert_eq!(h.response.remove, ["server"]);
}

#[test]
fn invalid_actions_name_the_field() {
    let cases = [
        ("timeout: -1s", "spec.http[0].timeout", "negative"),
        ("timeout: '5'", "spec.http[0].timeout", "unit is missing"),
        ("timeout: 5", "spec.http[0].timeout", "expected a string"),
        ("timeout: 5 sec", "spec.http[0].timeout", "unknown unit"),
        ("timeout: 1.0005s", "spec.http[0].timeout", "millisecond precision"),
        ("retries: {attempts: -1}", "spec.http[0].retries.attempts", "between 0"),
        ("retries: {attempts: 2, perTryTimeout: 0s}", "spec.http[0].retries.perTryTimeout", "at least 1ms"),
        ("retries: {attempts: 2, perTryTimeout: soon}", "spec.http[0].retries.perTryTimeout", "not a duration"),
        ("retries: {attempts: 2, retryOn: '5xx,conect-failure'}", "spec.http[0].retries.retryOn", "connect-failure"),
        ("retries: {attempts: 2, retryOn: 'on-error'}", "spec.http[0].retries.retryOn", "not a retry condition"),
        ("retries: {attempts: 2, retryOn: '5xx,,reset'}", "spec.http[0].retries.retryOn", "empty entry"),
        ("retries: {attempts: 2, retryOn: '700'}", "spec.http[0].retries.retryOn", "status code"),
        ("retries: {attempts: 2, backoff: -5ms}", "spec.http[0].retries.backoff", "negative"),
        ("retries: {attempts: 2, retryOn: 5xx, tries: 3}", "spec.http[0].retries.tries", "unknown field"),
        ("fault: {}", "spec.http[0].fault", "delay, an abort"),
        ("fault: {delay: {percentage: {value: 5}}}", "spec.http[0].fault.delay.fixedDelay", "required"),
        (
            "fault: {delay: {fixedDelay: -2s, percentage: {value: 5}}}",
            "spec.http[0].fault.delay.fixedDelay",
            "negative",
        ),
        (
            "fault: {delay: {fixedDelay: 2s, percentage: {value: 101}}}",
            "spec.http[0].fault.delay.percentage.value",
            "between 0 and 100",
        ),
        (
            "fault: {delay: {fixedDelay: 2s, percentage: {value: -1}}}",
            "spec.http[0].fault.delay.percentage.value",
            "between 0 and 100",
        ),
        ("fault: {delay: {fixedDelay: 2s, percent: 150}}", "spec.http[0].fault.delay.percent", "between 0 and 100"),
        ("fault: {delay: {exponentialDelay: 2s}}", "spec.http[0].fault.delay.exponentialDelay", "not supported"),
        ("fault: {abort: {httpStatus: 700, percentage: {value: 5}}}", "spec.http[0].fault.abort.httpStatus", "200-599"),
        ("fault: {abort: {httpStatus: 100, percentage: {value: 5}}}", "spec.http[0].fault.abort.httpStatus", "200-599"),
        ("fault: {abort: {grpcStatus: UNAVAILIBLE}}", "spec.http[0].fault.abort.grpcStatus", "UNAVAILABLE"),
        ("fault: {abort: {httpStatus: 503, grpcStatus: INTERNAL}}", "spec.http[0].fault.abort", "only one"),
        ("fault: {abort: {percentage: {value: 5}}}", "spec.http[0].fault.abort", "httpStatus or grpcStatus"),
        ("fault: {abort: {http2Error: x}}", "spec.http[0].fault.abort.http2Error", "not supported"),
        ("headers: {request: {set: {'bad name': x}}}", "spec.http[0].headers.request.set.bad name", "RFC 7230"),
        ("headers: {request: {set: {':path': /x}}}", "spec.http[0].headers.request.set.:path", "RFC 7230"),
        ("headers: {request: {set: {Host: x}}}", "spec.http[0].headers.request.set.Host", "rewrite.authority"),
        ("headers: {request: {remove: [host]}}", "spec.http[0].headers.request.remove[0]", "rewrite.authority"),
        ("headers: {response: {add: {x-a: '50%'}}}", "spec.http[0].headers.response.add.x-a", "variable"),
        ("headers: {request: {set: {x-a: '1', X-A: '2'}}}", "spec.http[0].headers.request.set.x-a", "twice"),
        ("headers: {request: {sett: {x-a: '1'}}}", "spec.http[0].headers.request.sett", "did you mean `set`"),
    ];
    for (rule, field, message) in cases {
        match parse_rule(rule) {
            Err(e) => {
                assert_eq!(e.field, field, "field for {rule}: {e}");
                assert!(e.message.contains(message), "message for {rule}: {e}");
            }
            Ok(p) => panic!("accepted {rule}: {p:?}"),
        }
    }
}
