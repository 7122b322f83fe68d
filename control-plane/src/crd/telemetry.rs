//! Telemetry (`telemetry.amime.dev/v1`): access logging and tracing for the whole mesh
//! (meshd's root namespace, no selector), a namespace, or the workloads a selector picks.
//! Field names and meanings are Istio's (`telemetry.istio.io/v1`), so an Istio Telemetry is
//! accepted after changing `apiVersion`. Fields meshd does not implement (`targetRef`,
//! `targetRefs`, `metrics`, `match`, ...) are in the schema as free-form values: the parser
//! refuses them, naming the field, in the object's status.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::destination_rule::WorkloadSelector;
use super::status::MeshStatus;

/// A value the API server keeps as given (an object of fields meshd does not implement).
/// Fields with a custom schema are optional only by `serde(default)` (schemars cannot see
/// the `Option` through `schema_with`).
fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "nullable": true, "x-kubernetes-preserve-unknown-fields": true})
}

/// A list of [`free_form`] values.
fn free_form_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "nullable": true,
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

/// Access logging and tracing of the workloads it applies to. The narrowest Telemetry
/// wins per field: a workload's (selector), else its namespace's (no selector), else the
/// mesh's (root namespace), else the mesh config's defaults.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "telemetry.amime.dev",
    version = "v1",
    kind = "Telemetry",
    plural = "telemetries",
    namespaced,
    doc = "Telemetry of telemetry.amime.dev (Istio's telemetry.istio.io/v1 fields): access logging and tracing for the mesh (root namespace), a namespace or the workloads a selector picks. meshd reports in status.conditions (type Accepted) whether it put the object in effect.",
    status = "MeshStatus",
    category = "amime",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status","description":"Whether meshd put the object in effect"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySpec {
    /// The workloads (pods of this namespace) it applies to. Default: every workload of
    /// the namespace (of the whole mesh in the root namespace).
    pub selector: Option<WorkloadSelector>,
    /// Istio's policy attachment to a Gateway or Service. Not supported by meshd: the
    /// object is refused.
    #[serde(default)]
    #[schemars(schema_with = "free_form")]
    pub target_ref: Option<Value>,
    /// Istio's policy attachment to Gateways or Services. Not supported by meshd: the
    /// object is refused.
    #[serde(default)]
    #[schemars(schema_with = "free_form_list")]
    pub target_refs: Option<Vec<Value>>,
    /// Tracing settings; meshd reads one entry.
    pub tracing: Option<Vec<TelemetryTracing>>,
    /// Metrics overrides. Not supported by meshd (it does not configure metrics by
    /// Telemetry): the object is refused.
    #[serde(default)]
    #[schemars(schema_with = "free_form_list")]
    pub metrics: Option<Vec<Value>>,
    /// Access-log settings; meshd reads one entry.
    pub access_logging: Option<Vec<TelemetryAccessLogging>>,
}

/// A provider, by its name in the mesh config's `extensionProviders` (or `envoy`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProviderRef {
    /// The provider's name. Required.
    pub name: String,
}

/// How requests of the selected workloads are traced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryTracing {
    /// Client or server side only. Not supported by meshd: the object is refused.
    #[serde(rename = "match")]
    #[serde(default)]
    #[schemars(schema_with = "free_form")]
    pub match_: Option<Value>,
    /// The tracing provider (one: Envoy sends spans to one tracer). Default: the mesh
    /// config's `defaultProviders.tracing`.
    pub providers: Option<Vec<ProviderRef>>,
    /// Percentage of requests traced, 0 to 100 (fractions allowed). Default: the broader
    /// Telemetry's, else the mesh config's `defaultConfig.tracing.sampling`.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub random_sampling_percentage: Option<f64>,
    /// Trace (propagate headers, decide sampling) but send no spans.
    pub disable_span_reporting: Option<bool>,
    /// Tags added to every span, by tag name.
    pub custom_tags: Option<BTreeMap<String, TelemetryCustomTag>>,
    /// Not supported by meshd: the object is refused.
    pub use_request_id_for_trace_sampling: Option<bool>,
    /// Not supported by meshd: the object is refused.
    pub enable_istio_tags: Option<bool>,
}

/// Where a custom tag's value comes from: set one of `literal`, `environment`, `header`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TelemetryCustomTag {
    /// A fixed value.
    pub literal: Option<TagLiteral>,
    /// An environment variable of the proxy.
    pub environment: Option<TagFromName>,
    /// A request header.
    pub header: Option<TagFromName>,
}

/// A fixed tag value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TagLiteral {
    /// The value.
    pub value: Option<String>,
}

/// A tag value read by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TagFromName {
    /// The environment variable's or header's name. Required.
    pub name: String,
    /// The value when it is absent.
    pub default_value: Option<String>,
}

/// How requests of the selected workloads are logged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryAccessLogging {
    /// Client or server side only. Not supported by meshd: the object is refused.
    #[serde(rename = "match")]
    #[serde(default)]
    #[schemars(schema_with = "free_form")]
    pub match_: Option<Value>,
    /// The access-log providers. Default: the broader Telemetry's, else the mesh config's
    /// (`defaultProviders.accessLogging`, else `envoy` when `accessLogFile` is set).
    pub providers: Option<Vec<ProviderRef>>,
    /// Turn access logging off for the selected workloads.
    pub disabled: Option<bool>,
    /// Which requests are logged.
    pub filter: Option<AccessLogFilter>,
}

/// Which requests are logged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AccessLogFilter {
    /// A response-code comparison such as `response.code >= 400` (==, !=, >=, >, <=, <);
    /// meshd refuses other CEL expressions.
    pub expression: Option<String>,
}
