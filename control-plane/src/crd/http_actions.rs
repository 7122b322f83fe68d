//! What an HTTP route does besides forwarding: redirects, direct responses,
//! delegation, rewrites, retries, faults, mirroring and CORS (Istio's messages of
//! the same names).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{at_most_one_of, Destination, Percent, StringMatch};

/// Answer with an HTTP redirect (301 by default) instead of forwarding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = redirect_port_one_of)]
pub struct HttpRedirect {
    /// Replace the path with this value in the redirect.
    pub uri: Option<String>,
    /// Replace the prefix the rule matched with this value in the redirect's path
    /// (instead of replacing the whole path with `uri`).
    pub prefix_rewrite: Option<String>,
    /// Replace the authority (host) with this value in the redirect.
    pub authority: Option<String>,
    /// Redirect to this port.
    #[schemars(range(max = 65535))]
    pub port: Option<u32>,
    /// Choose the redirect port from the scheme: `FROM_PROTOCOL_DEFAULT` (80 or 443) or
    /// `FROM_REQUEST_PORT`.
    #[schemars(extend("enum" = ["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"]))]
    pub derive_port: Option<String>,
    /// Replace the scheme (`http`, `https`) in the redirect.
    pub scheme: Option<String>,
    /// The HTTP status of the redirect. Default: 301.
    pub redirect_code: Option<u32>,
}

fn redirect_port_one_of(schema: &mut schemars::Schema) {
    at_most_one_of(schema, &["port", "derivePort"]);
}

/// Answer with a fixed response instead of forwarding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HttpDirectResponse {
    /// The HTTP status of the response. Required.
    pub status: u32,
    /// The response body.
    pub body: Option<HttpBody>,
}

/// A response body: set `string` or `bytes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = body_one_of)]
pub struct HttpBody {
    /// The body as text.
    pub string: Option<String>,
    /// The body as base64-encoded bytes.
    #[schemars(extend("format" = "byte"))]
    pub bytes: Option<String>,
}

fn body_one_of(schema: &mut schemars::Schema) {
    at_most_one_of(schema, &["string", "bytes"]);
}

/// Another VirtualService whose HTTP routes take over the matched requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Delegate {
    /// Name of the delegate VirtualService.
    pub name: Option<String>,
    /// Namespace of the delegate VirtualService. Default: this rule's namespace.
    pub namespace: Option<String>,
}

/// Changes to the request before it is forwarded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRewrite {
    /// Replace the matched part of the path (the whole path for an `exact` match, the
    /// prefix for a `prefix` match) with this value.
    pub uri: Option<String>,
    /// Replace the authority (`Host` header) with this value.
    pub authority: Option<String>,
    /// Rewrite the path with a regular expression (not with `uri`).
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// A regular-expression rewrite of the path.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RegexRewrite {
    /// RE2 regular expression to match in the path.
    #[serde(rename = "match")]
    pub match_: Option<String>,
    /// The replacement; may refer to capture groups (`\1`).
    pub rewrite: Option<String>,
}

/// When and how often failed requests are retried.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetry {
    /// Number of retries (not counting the first attempt). 0 (the default when
    /// `retries` is given) turns retries off; without `retries` the route gets 2.
    pub attempts: Option<i32>,
    /// Timeout of each attempt, as a duration (`2s`, at least 1ms). Default: the
    /// route's timeout.
    pub per_try_timeout: Option<String>,
    /// Comma-separated conditions that trigger a retry (Envoy's `x-envoy-retry-on`
    /// and `x-envoy-retry-grpc-on` values, and HTTP status codes, e.g.
    /// `connect-failure,refused-stream,503`). An unknown condition refuses the object.
    /// Default: Istio's (see `attempts`), with status 503.
    pub retry_on: Option<String>,
    /// Retry on endpoints in other localities. Default: false.
    pub retry_remote_localities: Option<bool>,
    /// Avoid endpoints already tried. Default: true.
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base interval between retries, as a duration. Default: Envoy's 25ms.
    pub backoff: Option<String>,
}

/// Faults injected into requests, to test how clients cope.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HttpFaultInjection {
    /// Delay requests before forwarding them.
    pub delay: Option<Delay>,
    /// Answer requests with an error instead of forwarding them.
    pub abort: Option<Abort>,
}

/// A delay injected before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = delay_one_of)]
pub struct Delay {
    /// How long to delay, as a duration (`5s`).
    pub fixed_delay: Option<String>,
    /// Not implemented by Istio either: the object is refused.
    pub exponential_delay: Option<String>,
    /// Deprecated: use `percentage`. Percentage (integer) of requests delayed.
    pub percent: Option<i32>,
    /// Percentage of requests delayed (0-100). Default: none is delayed, as in Istio.
    pub percentage: Option<Percent>,
}

fn delay_one_of(schema: &mut schemars::Schema) {
    at_most_one_of(schema, &["fixedDelay", "exponentialDelay"]);
}

/// An error answered instead of forwarding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = abort_one_of)]
pub struct Abort {
    /// HTTP status to answer with (200-599, e.g. 503).
    pub http_status: Option<i32>,
    /// gRPC status to answer with (e.g. `UNAVAILABLE`).
    pub grpc_status: Option<String>,
    /// HTTP/2 error to reset the stream with. Not implemented by Istio either: the
    /// object is refused.
    pub http2_error: Option<String>,
    /// Percentage of requests aborted (0-100). Default: none is aborted, as in Istio.
    pub percentage: Option<Percent>,
}

fn abort_one_of(schema: &mut schemars::Schema) {
    at_most_one_of(schema, &["httpStatus", "grpcStatus", "http2Error"]);
}

/// One mirror destination and the share of requests copied to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HttpMirrorPolicy {
    /// Where copies of the requests go. Required.
    pub destination: Destination,
    /// Percentage of requests mirrored. Default: 100.
    pub percentage: Option<Percent>,
}

/// Cross-origin resource sharing (CORS) answers for browsers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorsPolicy {
    /// Deprecated: use `allowOrigins`. Exact origins allowed.
    pub allow_origin: Option<Vec<String>>,
    /// Origins allowed to make cross-origin requests, each matched as a StringMatch.
    pub allow_origins: Option<Vec<StringMatch>>,
    /// Methods allowed (`Access-Control-Allow-Methods`).
    pub allow_methods: Option<Vec<String>>,
    /// Request headers allowed (`Access-Control-Allow-Headers`).
    pub allow_headers: Option<Vec<String>>,
    /// Response headers browsers may read (`Access-Control-Expose-Headers`).
    pub expose_headers: Option<Vec<String>>,
    /// How long browsers may cache the preflight answer, as a duration (`24h`).
    pub max_age: Option<String>,
    /// Whether credentials are allowed (`Access-Control-Allow-Credentials`).
    pub allow_credentials: Option<bool>,
    /// What to do with preflight requests from origins not allowed: `FORWARD` them to
    /// the destination or `IGNORE` them. Default: `FORWARD`.
    #[schemars(extend("enum" = ["UNSPECIFIED", "FORWARD", "IGNORE"]))]
    pub unmatched_preflights: Option<String>,
}
