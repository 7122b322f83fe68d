//! The actions of a VirtualService HTTP rule besides `route`: `timeout` and `retries`.
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
}

pub(super) fn parse_actions(cx: &Context<'_>, field: &str, spec: ActionSpecs<'_>) -> Result<RouteActions, Diagnostic> {
    let timeout = match spec.timeout {
        Some(t) => Some(parse_duration(cx, &format!("{field}.timeout"), t, true)?),
        None => None,
    };
    let retries = match spec.retries {
        Some(r) => Some(parse_retries(cx, &format!("{field}.retries"), r)?),
        None => None,
    };
    Ok(RouteActions { timeout, retries })
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
