//! Istio's `Telemetry` kind as plain data: access logging and tracing for the whole mesh
//! (the root namespace, no selector), a namespace (no selector) or the workloads a
//! selector picks. See [`crate::translate::telemetry`] for how they combine.

use std::collections::BTreeMap;

use super::Labels;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Telemetry {
    pub namespace: String,
    pub name: String,
    /// `selector.matchLabels`; `None`: the whole namespace.
    pub selector: Option<Labels>,
    /// The `accessLogging` entry, if any (meshd reads one).
    pub access_logging: Option<AccessLogging>,
    /// The `tracing` entry, if any (meshd reads one).
    pub tracing: Option<Tracing>,
}

/// A comparison of the response code (the only access-log filter meshd evaluates).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CodeComparison {
    Eq,
    Ne,
    Ge,
    Gt,
    Le,
    Lt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResponseCodeFilter {
    pub op: CodeComparison,
    pub code: u32,
}

/// Fields left unset inherit from the broader Telemetry (or the mesh config).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessLogging {
    pub providers: Option<Vec<String>>,
    pub disabled: Option<bool>,
    pub filter: Option<ResponseCodeFilter>,
}

/// Where a custom span tag's value comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CustomTag {
    Literal(String),
    Header { name: String, default_value: Option<String> },
    Environment { name: String, default_value: Option<String> },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracing {
    pub providers: Option<Vec<String>>,
    /// `randomSamplingPercentage` in millionths.
    pub sampling_millionths: Option<u32>,
    pub disable_span_reporting: Option<bool>,
    pub custom_tags: Option<BTreeMap<String, CustomTag>>,
}

/// A percentage (0-100, fractions allowed) in millionths, if it is one.
pub fn percent_millionths(value: f64) -> Option<u32> {
    (0.0..=100.0).contains(&value).then(|| (value * 10_000.0).round() as u32)
}
