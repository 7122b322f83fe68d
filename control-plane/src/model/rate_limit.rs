//! RateLimit (`networking.amime.dev/v1`): a local token bucket enforced by the sidecars
//! of the workloads it selects, on the requests they receive (inbound, per sidecar
//! instance, as Envoy's local rate limiter is). Plain data; parsed in
//! [`super::parse`], translated in `translate::rate_limit`.

use std::time::Duration;

use super::{HttpMatch, Labels};

/// Envoy refuses a token bucket refilled more often than this.
pub const MIN_FILL_INTERVAL: Duration = Duration::from_millis(50);

/// The status a limited request gets when `statusCode` is unset.
pub const DEFAULT_STATUS: u16 = 429;

/// A token bucket: it holds at most `max_tokens`, each request takes one, and
/// `tokens_per_fill` come back every `fill_interval`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenBucket {
    pub max_tokens: u32,
    pub tokens_per_fill: u32,
    pub fill_interval: Duration,
}

/// A rule of a RateLimit: the requests `matched` selects count against the rule's own
/// `bucket` instead of the workload's.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitRule {
    pub name: Option<String>,
    pub matched: HttpMatch,
    pub bucket: TokenBucket,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    pub namespace: String,
    pub name: String,
    /// `selector.matchLabels`: the workloads of the namespace whose sidecars enforce it.
    /// Empty: every workload of the namespace.
    pub selector: Labels,
    /// `tokenBucket`: the bucket of every request no rule matches. None: those
    /// requests are not limited.
    pub bucket: Option<TokenBucket>,
    pub rules: Vec<RateLimitRule>,
    /// `statusCode`: the status of a limited request (default [`DEFAULT_STATUS`]).
    pub status_code: u16,
    /// `xRateLimitHeaders`: responses carry `x-ratelimit-limit`, `-remaining`, `-reset`.
    pub x_rate_limit_headers: bool,
}
