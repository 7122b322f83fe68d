//! RateLimit: a local token bucket that the sidecars of the selected workloads enforce
//! on the requests they receive. Amime's own kind (Istio does this with an EnvoyFilter
//! patching in `envoy.filters.http.local_ratelimit`); no Istio counterpart.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::destination_rule::WorkloadSelector;
use super::status::MeshStatus;
use super::virtual_service::HttpMatchRequest;

/// Limits the requests the selected workloads receive: a token bucket per sidecar (and
/// per inbound port), requests over it answered with 429; rules give matching requests
/// a bucket of their own.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.amime.dev",
    version = "v1",
    kind = "RateLimit",
    namespaced,
    doc = "RateLimit of networking.amime.dev: a local token bucket that the sidecars of the selected workloads enforce on the requests they receive (Envoy's local rate limiter, per sidecar instance and inbound port; under capture only). meshd reports in status.conditions (type Accepted) whether it put the object in effect.",
    status = "MeshStatus",
    category = "amime",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status","description":"Whether meshd put the limit in effect"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.tokenBucket.maxTokens","description":"The workload bucket's size"}"#,
    printcolumn = r#"{"name":"Interval","type":"string","jsonPath":".spec.tokenBucket.fillInterval","description":"How often the workload bucket is refilled"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// The workloads (pods of this namespace) whose sidecars enforce the limit. Default:
    /// every workload of the namespace. Where several RateLimits select a workload, the
    /// one with the most labels wins, then the first by name.
    pub selector: Option<WorkloadSelector>,
    /// The bucket of every request no rule matches. Unset: only rules limit. Required
    /// when there are no rules.
    pub token_bucket: Option<TokenBucket>,
    /// Requests that count against a bucket of their own instead of the workload's;
    /// the first rule that matches takes the request.
    pub rules: Option<Vec<RateLimitRule>>,
    /// The status of a limited request: 429 by default; a 4xx or 5xx code.
    #[schemars(range(min = 400, max = 599))]
    pub status_code: Option<u32>,
    /// Add `x-ratelimit-limit`, `x-ratelimit-remaining` and `x-ratelimit-reset` to the
    /// responses (draft RFC version 03). Default: false.
    pub x_rate_limit_headers: Option<bool>,
}

/// A token bucket: at most `maxTokens`; each request takes one; `tokensPerFill` come
/// back every `fillInterval`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenBucket {
    /// The bucket's size: how many requests may come in a burst. Required, at least 1.
    #[schemars(range(min = 1))]
    pub max_tokens: u32,
    /// Tokens added every `fillInterval`. Default: `maxTokens` (a full bucket every
    /// interval).
    #[schemars(range(min = 1))]
    pub tokens_per_fill: Option<u32>,
    /// How often tokens are added, a duration such as `1s` or `500ms`; at least 50ms.
    /// Required.
    pub fill_interval: String,
}

/// Requests with a bucket of their own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitRule {
    /// A name for the rule, in the sidecar's statistics (`rate_limit_<RateLimit>_<rule>`).
    pub name: Option<String>,
    /// Which requests, as in a VirtualService's `match` (one condition set; `port` is
    /// the workload's port the request arrives on). Required.
    #[serde(rename = "match")]
    pub match_: HttpMatchRequest,
    /// The rule's bucket. Required.
    pub token_bucket: TokenBucket,
}
