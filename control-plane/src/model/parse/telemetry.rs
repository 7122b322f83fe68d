//! Telemetry (`telemetry.istio.io/v1`, `v1alpha1`, and `telemetry.amime.dev/v1`): the
//! field table and the parser.
//!
//! meshd reads one `accessLogging` entry and one `tracing` entry (several would need
//! `match` to tell them apart, which meshd does not implement). An access-log filter is a
//! response-code comparison (`response.code >= 400`); any other CEL expression refuses the
//! object, since logging what it should not (or nothing) is not what was asked.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::schema::{leaf, read, unsupported, Message, Shape};
use super::*;
use crate::model::telemetry::{AccessLogging, CodeComparison, CustomTag, ResponseCodeFilter, Telemetry, Tracing};

use Shape::{List, Map};

const fn msg(m: &'static Message) -> Shape {
    Shape::Message(m)
}

pub(super) static TELEMETRY: Message = Message {
    fields: &[
        read("selector", msg(&SELECTOR)),
        unsupported("targetRef", Shape::Leaf, "would apply it to every workload of the namespace"),
        unsupported("targetRefs", Shape::Leaf, "would apply it to every workload of the namespace"),
        read("tracing", List(&TRACING)),
        unsupported(
            "metrics",
            Shape::Leaf,
            "would leave Envoy's metrics as they are (meshd does not configure metrics by Telemetry)",
        ),
        read("accessLogging", List(&ACCESS_LOGGING)),
    ],
};

static SELECTOR: Message = Message { fields: &[leaf("matchLabels")] };

static PROVIDER_REF: Message = Message { fields: &[leaf("name")] };

const BOTH_DIRECTIONS: &str = "would apply it to both directions (client and server)";

static TRACING: Message = Message {
    fields: &[
        unsupported("match", Shape::Leaf, BOTH_DIRECTIONS),
        read("providers", List(&PROVIDER_REF)),
        leaf("randomSamplingPercentage"),
        leaf("disableSpanReporting"),
        read("customTags", Map(&CUSTOM_TAG)),
        unsupported("useRequestIdForTraceSampling", Shape::Leaf, "would sample by another rule than asked"),
        unsupported("enableIstioTags", Shape::Leaf, "would tag spans otherwise than asked"),
    ],
};

static CUSTOM_TAG: Message = Message {
    fields: &[read("literal", msg(&LITERAL)), read("environment", msg(&FROM_NAME)), read("header", msg(&FROM_NAME))],
};

static LITERAL: Message = Message { fields: &[leaf("value")] };
static FROM_NAME: Message = Message { fields: &[leaf("name"), leaf("defaultValue")] };

static ACCESS_LOGGING: Message = Message {
    fields: &[
        unsupported("match", Shape::Leaf, BOTH_DIRECTIONS),
        read("providers", List(&PROVIDER_REF)),
        leaf("disabled"),
        read("filter", msg(&FILTER)),
    ],
};

static FILTER: Message = Message { fields: &[leaf("expression")] };

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TelemetrySpec {
    selector: Option<SelectorSpec>,
    #[serde(default)]
    tracing: Vec<TracingSpec>,
    #[serde(default)]
    access_logging: Vec<AccessLoggingSpec>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SelectorSpec {
    #[serde(default)]
    match_labels: Labels,
}

#[derive(Deserialize)]
struct ProviderRef {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TracingSpec {
    providers: Option<Vec<ProviderRef>>,
    random_sampling_percentage: Option<f64>,
    disable_span_reporting: Option<bool>,
    custom_tags: Option<BTreeMap<String, CustomTagSpec>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomTagSpec {
    literal: Option<LiteralSpec>,
    environment: Option<FromNameSpec>,
    header: Option<FromNameSpec>,
}

#[derive(Deserialize)]
struct LiteralSpec {
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FromNameSpec {
    #[serde(default)]
    name: String,
    default_value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessLoggingSpec {
    providers: Option<Vec<ProviderRef>>,
    disabled: Option<bool>,
    filter: Option<FilterSpec>,
}

#[derive(Deserialize)]
struct FilterSpec {
    #[serde(default)]
    expression: String,
}

pub(super) fn parse_telemetry(cx: &mut Context<'_>, namespace: String) -> Result<Telemetry, Diagnostic> {
    let spec: TelemetrySpec = cx.field("spec")?;
    let selector = spec.selector.map(|s| s.match_labels).filter(|l| !l.is_empty());
    if spec.access_logging.len() > 1 {
        return Err(cx.error(
            "spec.accessLogging[1]",
            "meshd reads one accessLogging entry (several need `match`, which meshd does not implement)",
        ));
    }
    if spec.tracing.len() > 1 {
        return Err(cx.error(
            "spec.tracing[1]",
            "meshd reads one tracing entry (several need `match`, which meshd does not implement)",
        ));
    }
    let access_logging = match spec.access_logging.into_iter().next() {
        None => None,
        Some(a) => Some(AccessLogging {
            providers: providers(cx, "spec.accessLogging[0].providers", a.providers)?,
            disabled: a.disabled,
            filter: match a.filter {
                None => None,
                Some(f) => Some(
                    parse_code_filter(&f.expression)
                        .map_err(|m| cx.error("spec.accessLogging[0].filter.expression", m))?,
                ),
            },
        }),
    };
    let tracing = match spec.tracing.into_iter().next() {
        None => None,
        Some(t) => Some(parse_tracing(cx, t)?),
    };
    Ok(Telemetry { namespace, name: cx.raw.name.clone(), selector, access_logging, tracing })
}

fn providers(cx: &Context<'_>, field: &str, list: Option<Vec<ProviderRef>>) -> Result<Option<Vec<String>>, Diagnostic> {
    let Some(list) = list else { return Ok(None) };
    let mut out = Vec::new();
    for (i, p) in list.into_iter().enumerate() {
        if p.name.is_empty() {
            return Err(cx.error(&format!("{field}[{i}].name"), "required"));
        }
        out.push(p.name);
    }
    Ok(Some(out))
}

fn parse_tracing(cx: &Context<'_>, t: TracingSpec) -> Result<Tracing, Diagnostic> {
    let at = "spec.tracing[0]";
    let providers = providers(cx, &format!("{at}.providers"), t.providers)?;
    if providers.as_ref().is_some_and(|p| p.len() > 1) {
        return Err(cx.error(&format!("{at}.providers"), "Envoy sends spans to one tracer: name one provider"));
    }
    let sampling_millionths = match t.random_sampling_percentage {
        None => None,
        Some(v) => Some(crate::model::telemetry::percent_millionths(v).ok_or_else(|| {
            cx.error(&format!("{at}.randomSamplingPercentage"), format!("{v} is not a percentage between 0 and 100"))
        })?),
    };
    let custom_tags = match t.custom_tags {
        None => None,
        Some(tags) => {
            let mut out = BTreeMap::new();
            for (name, tag) in tags {
                let field = format!("{at}.customTags.{name}");
                out.insert(name, custom_tag(cx, &field, tag)?);
            }
            Some(out)
        }
    };
    Ok(Tracing { providers, sampling_millionths, disable_span_reporting: t.disable_span_reporting, custom_tags })
}

fn custom_tag(cx: &Context<'_>, field: &str, tag: CustomTagSpec) -> Result<CustomTag, Diagnostic> {
    let named = |kind: &str, f: FromNameSpec| {
        if f.name.is_empty() {
            return Err(cx.error(&format!("{field}.{kind}.name"), "required"));
        }
        Ok((f.name, f.default_value))
    };
    match (tag.literal, tag.environment, tag.header) {
        (Some(l), None, None) => Ok(CustomTag::Literal(l.value)),
        (None, Some(e), None) => {
            let (name, default_value) = named("environment", e)?;
            Ok(CustomTag::Environment { name, default_value })
        }
        (None, None, Some(h)) => {
            let (name, default_value) = named("header", h)?;
            Ok(CustomTag::Header { name: name.to_ascii_lowercase(), default_value })
        }
        _ => Err(cx.error(field, "a custom tag has exactly one of literal, environment, header")),
    }
}

/// `response.code OP N` (also `N OP response.code`, and Istio's `response.code` spelled
/// `response.code`); any other CEL is refused with what meshd evaluates.
pub(crate) fn parse_code_filter(expression: &str) -> Result<ResponseCodeFilter, String> {
    let refuse = || {
        format!(
            "{expression:?}: meshd evaluates only a response-code comparison such as `response.code >= 400` \
             (==, !=, >=, >, <=, <); other CEL is not supported"
        )
    };
    let e = expression.trim();
    let ops = [
        (">=", CodeComparison::Ge),
        ("<=", CodeComparison::Le),
        ("==", CodeComparison::Eq),
        ("!=", CodeComparison::Ne),
        (">", CodeComparison::Gt),
        ("<", CodeComparison::Lt),
    ];
    let (op_text, op) = ops.iter().find(|(t, _)| e.contains(t)).ok_or_else(refuse)?;
    let (left, right) = e.split_once(op_text).ok_or_else(refuse)?;
    let (left, right) = (left.trim(), right.trim());
    let flip = |op: CodeComparison| match op {
        CodeComparison::Ge => CodeComparison::Le,
        CodeComparison::Le => CodeComparison::Ge,
        CodeComparison::Gt => CodeComparison::Lt,
        CodeComparison::Lt => CodeComparison::Gt,
        other => other,
    };
    let (op, number) = match (left, right) {
        ("response.code", n) => (*op, n),
        (n, "response.code") => (flip(*op), n),
        _ => return Err(refuse()),
    };
    let code: u32 = number.parse().map_err(|_| refuse())?;
    if code > 999 {
        return Err(format!("{expression:?}: {code} is not an HTTP status code"));
    }
    Ok(ResponseCodeFilter { op, code })
}

#[cfg(test)]
#[path = "telemetry_tests.rs"]
mod tests;
