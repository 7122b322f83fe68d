//! What an HTTP rule does instead of (or besides) forwarding to its destinations:
//! Istio's `redirect`, `directResponse`, `delegate`, `rewrite`, `mirror`/`mirrors` and
//! `corsPolicy`, as plain data. Values are checked when the rule is read
//! (`parse::http_actions`); the translator applies Istio's defaults.

use super::{Destination, StringMatch};

/// Istio's `HTTPRedirect`: answer with a redirect instead of forwarding.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Redirect {
    /// The new path, or the new prefix (in place of the prefix the rule matched).
    pub path: Option<RedirectPath>,
    /// The new authority (host).
    pub authority: Option<String>,
    pub port: Option<RedirectPort>,
    /// The new scheme (`http`, `https`).
    pub scheme: Option<String>,
    /// 301 (the default), 302, 303, 307 or 308.
    pub code: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RedirectPath {
    /// `uri`: the whole path is replaced.
    Whole(String),
    /// `prefixRewrite`: the matched prefix is replaced.
    Prefix(String),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RedirectPort {
    /// `port`.
    Number(u16),
    /// `derivePort: FROM_PROTOCOL_DEFAULT`: 80 for http, 443 for https.
    ProtocolDefault,
    /// `derivePort: FROM_REQUEST_PORT`: the port the request was sent to.
    RequestPort,
}

/// Istio's `HTTPDirectResponse`: answer with a fixed status and body.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectResponse {
    pub status: u32,
    pub body: Option<ResponseBody>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ResponseBody {
    Text(String),
    /// `body.bytes`, decoded from base64.
    Bytes(Vec<u8>),
}

/// Istio's `Delegate`: the rule takes the HTTP rules of another VirtualService (one
/// without hosts).
#[derive(Clone, Debug, PartialEq)]
pub struct Delegate {
    pub name: String,
    /// The root's namespace when unset.
    pub namespace: String,
}

/// Istio's `HTTPRewrite`: what the destination is asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rewrite {
    /// `uri`: replaces the prefix the rule matched (the whole path for an exact or
    /// regex match).
    pub uri: Option<String>,
    /// `authority`: the Host the destination sees.
    pub authority: Option<String>,
    /// `uriRegexRewrite`: (RE2 pattern, substitution).
    pub regex: Option<(String, String)>,
}

/// One mirror: a copy of a share of the requests goes to `destination` too (its
/// answer is dropped).
#[derive(Clone, Debug, PartialEq)]
pub struct Mirror {
    pub destination: Destination,
    /// The share mirrored, in millionths.
    pub per_million: u32,
    /// Where in the rule it came from (`mirror`, `mirrors[1]`), for diagnostics.
    pub field: String,
}

/// Istio's `CorsPolicy`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CorsPolicy {
    pub allow_origins: Vec<StringMatch>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    /// Whole seconds.
    pub max_age: Option<u64>,
    pub allow_credentials: Option<bool>,
    /// `unmatchedPreflights: IGNORE` answers preflights from origins not allowed
    /// itself (without CORS headers); the default (`FORWARD`) forwards them.
    pub forward_unmatched_preflights: bool,
}
