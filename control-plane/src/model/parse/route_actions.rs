//! The actions of a VirtualService HTTP rule besides `route`: `timeout`, `retries`, `fault`,
//! `headers` (also on each destination).
//! Values are checked here (every error names its field); Istio's defaults for unset
//! fields are applied by the translator.

use serde::Deserialize;

use super::duration::parse_duration;
use super::*;

/// Retry conditions Istio accepts in `retryOn` (Envoy's `x-envoy-retry-on` and
/// `x-envoy-retry-grpc-on` names); any other word is a typo Envoy would ignore.
pub const RETRY_ON_CONDITIONS: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct RetrySpec {
    attempts: Option<i64>,
    per_try_timeout: Option<String>,
    retry_on: Option<String>,
    retry_remote_localities: Option<bool>,
    retry_ignore_previous_hosts: Option<bool>,
    backoff: Option<String>,
}

/// The fields of one `HTTPRoute` this module reads.
pub(super) struct ActionSpecs<'a> {
    pub timeout: Option<&'a str>,
    pub retries: Option<&'a RetrySpec>,
    pub fault: Option<&'a FaultSpec>,
    pub headers: Option<&'a HeadersSpec>,
}

pub(super) fn parse_actions(
    cx: &mut Context<'_>,
    field: &str,
    spec: ActionSpecs<'_>,
) -> Result<RouteActions, Diagnostic> {
    let timeout = match spec.timeout {
        Some(t) => Some(parse_duration(cx, &format!("{field}.timeout"), t, true)?),
        None => None,
    };
    let retries = match spec.retries {
        Some(r) => Some(parse_retries(cx, &format!("{field}.retries"), r)?),
        None => None,
    };
    let fault = match spec.fault {
        Some(f) => Some(parse_fault(cx, &format!("{field}.fault"), f)?),
        None => None,
    };
    let headers = parse_headers(cx, &format!("{field}.headers"), spec.headers)?;
    Ok(RouteActions { timeout, retries, fault, headers, ..Default::default() })
}

fn parse_retries(cx: &Context<'_>, field: &str, spec: &RetrySpec) -> Result<Retries, Diagnostic> {
    let attempts = match spec.attempts {
        None => 0,
        Some(n) => u32::try_from(n).ok().filter(|n| i32::try_from(*n).is_ok()).ok_or_else(|| {
            cx.error(&format!("{field}.attempts"), format!("attempts {n} must be between 0 and {}", i32::MAX))
        })?,
    };
    let duration = |name: &str, text: &Option<String>| match text {
        Some(t) => parse_duration(cx, &format!("{field}.{name}"), t, false).map(Some),
        None => Ok(None),
    };
    let retry_on = match &spec.retry_on {
        Some(text) if !text.trim().is_empty() => Some(parse_retry_on(cx, &format!("{field}.retryOn"), text)?),
        _ => None,
    };
    Ok(Retries {
        attempts,
        per_try_timeout: duration("perTryTimeout", &spec.per_try_timeout)?,
        retry_on,
        retry_remote_localities: spec.retry_remote_localities.unwrap_or(false),
        ignore_previous_hosts: spec.retry_ignore_previous_hosts.unwrap_or(true),
        backoff: duration("backoff", &spec.backoff)?,
    })
}

/// `retryOn` as Istio reads it: a comma-separated list of conditions and HTTP status
/// codes (a status code implies `retriable-status-codes`).
fn parse_retry_on(cx: &Context<'_>, field: &str, text: &str) -> Result<RetryOn, Diagnostic> {
    let mut out = RetryOn::default();
    for word in text.split(',').map(str::trim) {
        if word.is_empty() {
            return Err(cx.error(field, format!("{text:?} has an empty entry")));
        }
        if word.bytes().all(|b| b.is_ascii_digit()) {
            match word.parse::<u32>() {
                Ok(code) if (100..=599).contains(&code) => {
                    if !out.status_codes.contains(&code) {
                        out.status_codes.push(code);
                    }
                }
                _ => return Err(cx.error(field, format!("{word} is not an HTTP status code (100-599)"))),
            }
        } else if RETRY_ON_CONDITIONS.contains(&word) {
            if !out.conditions.iter().any(|c| c == word) {
                out.conditions.push(word.to_owned());
            }
        } else {
            let hint = match schema::suggest(word, RETRY_ON_CONDITIONS.iter().copied()) {
                Some(s) => format!("; did you mean {s:?}?"),
                None => format!(" (known: {})", RETRY_ON_CONDITIONS.join(", ")),
            };
            return Err(cx.error(field, format!("{word:?} is not a retry condition{hint}")));
        }
    }
    if !out.status_codes.is_empty() && !out.conditions.iter().any(|c| c == "retriable-status-codes") {
        out.conditions.push("retriable-status-codes".to_owned());
    }
    Ok(out)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct FaultSpec {
    delay: Option<DelaySpec>,
    abort: Option<AbortSpec>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DelaySpec {
    fixed_delay: Option<String>,
    exponential_delay: Option<String>,
    percent: Option<i64>,
    percentage: Option<PercentSpec>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AbortSpec {
    http_status: Option<i64>,
    grpc_status: Option<String>,
    http2_error: Option<String>,
    percentage: Option<PercentSpec>,
}

#[derive(Deserialize, Default, Clone)]
pub(super) struct PercentSpec {
    value: Option<f64>,
}

/// gRPC status codes by name, as Istio's `grpcStatus` writes them.
const GRPC_CODES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A percentage (0-100, fractions allowed) in millionths; None when unset.
pub(super) fn per_million(
    cx: &Context<'_>,
    field: &str,
    spec: &Option<PercentSpec>,
) -> Result<Option<u32>, Diagnostic> {
    let Some(value) = spec.as_ref().map(|p| p.value.unwrap_or(0.0)) else { return Ok(None) };
    if !(0.0..=100.0).contains(&value) {
        return Err(cx.error(&format!("{field}.value"), format!("percentage {value} must be between 0 and 100")));
    }
    Ok(Some((value * 10_000.0).round() as u32))
}

pub(super) fn parse_fault(cx: &mut Context<'_>, field: &str, spec: &FaultSpec) -> Result<Fault, Diagnostic> {
    if spec.delay.is_none() && spec.abort.is_none() {
        return Err(cx.error(field, "give a delay, an abort or both"));
    }
    let delay = match &spec.delay {
        Some(d) => Some(parse_delay(cx, &format!("{field}.delay"), d)?),
        None => None,
    };
    let abort = match &spec.abort {
        Some(a) => Some(parse_abort(cx, &format!("{field}.abort"), a)?),
        None => None,
    };
    Ok(Fault { delay, abort })
}

fn parse_delay(cx: &mut Context<'_>, field: &str, spec: &DelaySpec) -> Result<FaultDelay, Diagnostic> {
    if spec.exponential_delay.is_some() {
        return Err(cx.error(
            &format!("{field}.exponentialDelay"),
            "exponentialDelay is not supported (by Istio either); use fixedDelay",
        ));
    }
    let text = spec.fixed_delay.as_deref().ok_or_else(|| cx.error(&format!("{field}.fixedDelay"), "required"))?;
    let fixed = parse_duration(cx, &format!("{field}.fixedDelay"), text, false)?;
    let per_million = match (per_million(cx, &format!("{field}.percentage"), &spec.percentage)?, spec.percent) {
        (Some(p), _) => p,
        (None, Some(p)) if (0..=100).contains(&p) => p as u32 * 10_000,
        (None, Some(p)) => {
            return Err(cx.error(&format!("{field}.percent"), format!("percent {p} must be between 0 and 100")))
        }
        (None, None) => {
            cx.warn(&format!("{field}.percentage"), "no percentage: no request is delayed (as in Istio)");
            0
        }
    };
    Ok(FaultDelay { fixed, per_million })
}

fn parse_abort(cx: &mut Context<'_>, field: &str, spec: &AbortSpec) -> Result<FaultAbort, Diagnostic> {
    if spec.http2_error.is_some() {
        return Err(cx.error(&format!("{field}.http2Error"), "http2Error is not supported (by Istio either)"));
    }
    let status = match (spec.http_status, &spec.grpc_status) {
        (Some(_), Some(_)) => return Err(cx.error(field, "set only one of httpStatus and grpcStatus")),
        (Some(code), None) if (200..=599).contains(&code) => AbortStatus::Http(code as u32),
        (Some(code), None) => {
            return Err(cx.error(&format!("{field}.httpStatus"), format!("{code} is not an HTTP status (200-599)")))
        }
        (None, Some(name)) => AbortStatus::Grpc(grpc_code(cx, &format!("{field}.grpcStatus"), name)?),
        (None, None) => return Err(cx.error(field, "give httpStatus or grpcStatus")),
    };
    let per_million = match per_million(cx, &format!("{field}.percentage"), &spec.percentage)? {
        Some(p) => p,
        None => {
            cx.warn(&format!("{field}.percentage"), "no percentage: no request is aborted (as in Istio)");
            0
        }
    };
    Ok(FaultAbort { status, per_million })
}

fn grpc_code(cx: &Context<'_>, field: &str, name: &str) -> Result<u32, Diagnostic> {
    if let Some(i) = GRPC_CODES.iter().position(|c| *c == name) {
        return Ok(i as u32);
    }
    let hint = match schema::suggest(name, GRPC_CODES.iter().copied()) {
        Some(s) => format!("; did you mean {s:?}?"),
        None => format!(" (one of {})", GRPC_CODES.join(", ")),
    };
    Err(cx.error(field, format!("{name:?} is not a gRPC status{hint}")))
}

#[derive(Deserialize, Default)]
pub(super) struct HeadersSpec {
    request: Option<HeaderOpsSpec>,
    response: Option<HeaderOpsSpec>,
}

#[derive(Deserialize, Default)]
struct HeaderOpsSpec {
    #[serde(default)]
    set: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    add: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

pub(super) fn parse_headers(cx: &Context<'_>, field: &str, spec: Option<&HeadersSpec>) -> Result<Headers, Diagnostic> {
    let Some(spec) = spec else { return Ok(Headers::default()) };
    Ok(Headers {
        request: parse_header_ops(cx, &format!("{field}.request"), spec.request.as_ref())?,
        response: parse_header_ops(cx, &format!("{field}.response"), spec.response.as_ref())?,
    })
}

fn parse_header_ops(cx: &Context<'_>, field: &str, spec: Option<&HeaderOpsSpec>) -> Result<HeaderOps, Diagnostic> {
    let Some(spec) = spec else { return Ok(HeaderOps::default()) };
    let values = |op: &str, map: &std::collections::BTreeMap<String, String>| {
        let mut out = std::collections::BTreeMap::new();
        for (name, value) in map {
            let f = format!("{field}.{op}.{name}");
            let lower = editable_header(cx, &f, name)?;
            if value.contains(['\r', '\n', '\0']) {
                return Err(cx.error(&f, "a header value cannot hold CR, LF or NUL"));
            }
            if value.contains('%') {
                return Err(cx.error(
                    &f,
                    "`%` in a header value would be read by Envoy as a variable (%NAME%), which meshd does not \
                     support yet",
                ));
            }
            if out.insert(lower.clone(), value.clone()).is_some() {
                return Err(cx.error(&f, format!("header {lower:?} is listed twice (names are case-insensitive)")));
            }
        }
        Ok(out)
    };
    let mut remove = Vec::new();
    for (i, name) in spec.remove.iter().enumerate() {
        let lower = editable_header(cx, &format!("{field}.remove[{i}]"), name)?;
        if !remove.contains(&lower) {
            remove.push(lower);
        }
    }
    Ok(HeaderOps { set: values("set", &spec.set)?, add: values("add", &spec.add)?, remove })
}

/// A header name Envoy lets routes edit: an RFC 7230 token, not a pseudo-header and not
/// `host` (Envoy refuses to edit those; Istio's `rewrite.authority` changes the host).
fn editable_header(cx: &Context<'_>, field: &str, name: &str) -> Result<String, Diagnostic> {
    let token = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(cx.error(field, format!("{name:?} is not a header name that can be edited (an RFC 7230 token)")));
    }
    let lower = name.to_ascii_lowercase();
    if lower == "host" {
        return Err(
            cx.error(field, "the host header cannot be edited this way (Envoy refuses it); use rewrite.authority")
        );
    }
    Ok(lower)
}
