//! RateLimit (`networking.amime.dev/v1`): its fields, and how they are read and checked.
//! The field tables are this kind's [`super::istio_api`]; a rule's `match` is Istio's
//! `HTTPMatchRequest`, read as a VirtualService's is.

use serde::Deserialize;

use super::duration::parse_duration;
use super::istio_api::HTTP_MATCH;
use super::schema::{leaf, read, Message, Shape};
use super::virtual_service::{parse_http_match, HttpMatchSpec};
use super::*;
use crate::model::rate_limit::{DEFAULT_STATUS, MIN_FILL_INTERVAL};

pub(super) static RATE_LIMIT: Message = Message {
    fields: &[
        read("selector", Shape::Message(&SELECTOR)),
        read("tokenBucket", Shape::Message(&TOKEN_BUCKET)),
        read("rules", Shape::List(&RULE)),
        leaf("statusCode"),
        leaf("xRateLimitHeaders"),
    ],
};

static SELECTOR: Message = Message { fields: &[leaf("matchLabels")] };

static TOKEN_BUCKET: Message = Message { fields: &[leaf("maxTokens"), leaf("tokensPerFill"), leaf("fillInterval")] };

static RULE: Message = Message {
    fields: &[
        leaf("name"),
        read("match", Shape::Message(&HTTP_MATCH)),
        read("tokenBucket", Shape::Message(&TOKEN_BUCKET)),
    ],
};

/// The statuses Envoy's `HttpStatus` accepts from 400 up (its `StatusCode` enum; any
/// other value is refused by Envoy, and below 400 it answers 429 instead).
const ENVOY_ERROR_STATUSES: &[u16] = &[
    400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 423, 424, 426,
    428, 429, 431, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
];

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RateLimitSpec {
    selector: Option<SelectorSpec>,
    token_bucket: Option<TokenBucketSpec>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
    status_code: Option<i64>,
    #[serde(default)]
    x_rate_limit_headers: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SelectorSpec {
    #[serde(default)]
    match_labels: Labels,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenBucketSpec {
    max_tokens: Option<i64>,
    tokens_per_fill: Option<i64>,
    fill_interval: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleSpec {
    name: Option<String>,
    #[serde(rename = "match")]
    matched: Option<HttpMatchSpec>,
    token_bucket: Option<TokenBucketSpec>,
}

fn count(cx: &Context<'_>, field: &str, value: Option<i64>) -> Result<Option<u32>, Diagnostic> {
    match value {
        None => Ok(None),
        Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(cx.error(field, format!("{n} must be between 1 and {}", u32::MAX))),
    }
}

/// A `tokenBucket` (`field` names it). `tokensPerFill` defaults to `maxTokens`: a full
/// bucket every `fillInterval`, that is `maxTokens` requests per interval.
fn token_bucket(cx: &Context<'_>, field: &str, spec: &TokenBucketSpec) -> Result<TokenBucket, Diagnostic> {
    let max_tokens = count(cx, &format!("{field}.maxTokens"), spec.max_tokens)?
        .ok_or_else(|| cx.error(&format!("{field}.maxTokens"), "required"))?;
    let tokens_per_fill = count(cx, &format!("{field}.tokensPerFill"), spec.tokens_per_fill)?.unwrap_or(max_tokens);
    let interval_field = format!("{field}.fillInterval");
    let text = spec.fill_interval.as_deref().ok_or_else(|| cx.error(&interval_field, "required"))?;
    let fill_interval = parse_duration(cx, &interval_field, text, false)?;
    if fill_interval < MIN_FILL_INTERVAL {
        return Err(cx.error(&interval_field, format!("{text:?}: Envoy refills a bucket at most every 50ms")));
    }
    Ok(TokenBucket { max_tokens, tokens_per_fill, fill_interval })
}

fn status_code(cx: &Context<'_>, code: Option<i64>) -> Result<u16, Diagnostic> {
    let Some(code) = code else { return Ok(DEFAULT_STATUS) };
    match u16::try_from(code).ok().filter(|c| ENVOY_ERROR_STATUSES.contains(c)) {
        Some(c) => Ok(c),
        None => Err(cx.error(
            "spec.statusCode",
            format!("{code} is not an HTTP error status Envoy can answer with (400-511, a registered code)"),
        )),
    }
}

fn rule(cx: &mut Context<'_>, field: &str, spec: &RuleSpec) -> Result<RateLimitRule, Diagnostic> {
    if let Some(name) = &spec.name {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(cx.error(&format!("{field}.name"), format!("{name:?}: use letters, digits, '-', '_' and '.'")));
        }
    }
    let matched = spec.matched.as_ref().ok_or_else(|| {
        cx.error(&format!("{field}.match"), "required (the requests that count against this rule's bucket)")
    })?;
    let bucket = spec.token_bucket.as_ref().ok_or_else(|| cx.error(&format!("{field}.tokenBucket"), "required"))?;
    let mf = format!("{field}.match");
    let parsed = parse_http_match(cx, &mf, matched, &[])?;
    let source = [
        (!parsed.source_labels.is_empty(), "sourceLabels"),
        (parsed.source_namespace.is_some(), "sourceNamespace"),
        (!parsed.gateways.is_empty(), "gateways"),
    ];
    if let Some((_, name)) = source.iter().find(|(set, _)| *set) {
        return Err(cx.error(
            &format!("{mf}.{name}"),
            "is not supported in a RateLimit rule: the bucket is the called sidecar's, for every caller",
        ));
    }
    Ok(RateLimitRule {
        name: spec.name.clone(),
        matched: parsed,
        bucket: token_bucket(cx, &format!("{field}.tokenBucket"), bucket)?,
    })
}

pub(super) fn parse_rate_limit(cx: &mut Context<'_>, namespace: String) -> Result<RateLimit, Diagnostic> {
    schema::check(cx, cx.raw.body.get("spec").unwrap_or(&Value::Null), &RATE_LIMIT, "spec")?;
    let raw_rules = cx.raw.body.pointer("/spec/rules").and_then(Value::as_array).cloned().unwrap_or_default();
    if let Some(i) = raw_rules.iter().position(|r| r.get("match").is_some_and(Value::is_array)) {
        return Err(cx.error(
            &format!("spec.rules[{i}].match"),
            "one match per rule (a mapping, not a list as in a VirtualService); for \"this or that\", write two rules",
        ));
    }
    let spec: RateLimitSpec = cx.field("spec")?;
    let bucket = match &spec.token_bucket {
        Some(b) => Some(token_bucket(cx, "spec.tokenBucket", b)?),
        None => None,
    };
    if bucket.is_none() && spec.rules.is_empty() {
        return Err(cx.error("spec.tokenBucket", "required when there are no rules (nothing would be limited)"));
    }
    let mut rules = Vec::new();
    for (i, r) in spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        if let Some(name) = &r.name {
            if spec.rules[..i].iter().any(|earlier| earlier.name.as_ref() == Some(name)) {
                return Err(cx.error(&format!("{field}.name"), format!("{name:?} names an earlier rule too")));
            }
        }
        rules.push(rule(cx, &field, r)?);
    }
    Ok(RateLimit {
        namespace,
        name: cx.raw.name.clone(),
        selector: spec.selector.unwrap_or_default().match_labels,
        bucket,
        rules,
        status_code: status_code(cx, spec.status_code)?,
        x_rate_limit_headers: spec.x_rate_limit_headers,
    })
}
