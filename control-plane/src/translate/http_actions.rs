//! Istio's `redirect`, `directResponse`, `rewrite`, mirrors and `corsPolicy` → Envoy
//! route settings, as Istio builds them:
//! - `redirect`: a `RedirectAction`; `redirectCode` unset is 301; `derivePort:
//!   FROM_REQUEST_PORT` is the port the route serves, `FROM_PROTOCOL_DEFAULT` 443 for
//!   `https` and 80 otherwise (Envoy then leaves the default port out of `Location`);
//! - `directResponse`: a `DirectResponseAction` with the body inline;
//! - `rewrite.uri`: `prefix_rewrite` (Envoy replaces the prefix a prefix match
//!   matched, and the whole path after an exact or regex match); `authority`:
//!   `host_rewrite_literal`; `uriRegexRewrite`: `regex_rewrite`;
//! - mirrors: `request_mirror_policies` with the share as `runtime_fraction` (100% when
//!   unset) and `trace_sampled: false`;
//! - `corsPolicy`: the CORS filter's per-route `CorsPolicy` (filter enabled 100%,
//!   preflights from other origins forwarded unless `unmatchedPreflights: IGNORE`).

use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource, RuntimeFractionalPercent};
use envoy_types::pb::envoy::config::route::v3::{
    redirect_action, route_action, DirectResponseAction, RedirectAction, RouteAction,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCors;
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatchAndSubstitute, RegexMatcher};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent, FractionalPercent};
use envoy_types::pb::google::protobuf::BoolValue;

use crate::model::{CorsPolicy, DirectResponse, Redirect, RedirectPath, RedirectPort, ResponseBody, Rewrite};

/// The redirect answering requests a route serving `port` takes.
pub fn redirect_action(r: &Redirect, port: u16) -> RedirectAction {
    use redirect_action::{PathRewriteSpecifier, RedirectResponseCode as Code, SchemeRewriteSpecifier};
    let response_code = match r.code {
        302 => Code::Found,
        303 => Code::SeeOther,
        307 => Code::TemporaryRedirect,
        308 => Code::PermanentRedirect,
        _ => Code::MovedPermanently,
    };
    let port_redirect = match r.port {
        None => 0,
        Some(RedirectPort::Number(p)) => u32::from(p),
        Some(RedirectPort::RequestPort) => u32::from(port),
        Some(RedirectPort::ProtocolDefault) if r.scheme.as_deref() == Some("https") => 443,
        Some(RedirectPort::ProtocolDefault) => 80,
    };
    RedirectAction {
        host_redirect: r.authority.clone().unwrap_or_default(),
        port_redirect,
        response_code: response_code as i32,
        strip_query: false,
        scheme_rewrite_specifier: r.scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
        path_rewrite_specifier: r.path.as_ref().map(|p| match p {
            RedirectPath::Whole(uri) => PathRewriteSpecifier::PathRedirect(uri.clone()),
            RedirectPath::Prefix(prefix) => PathRewriteSpecifier::PrefixRewrite(prefix.clone()),
        }),
    }
}

pub fn direct_response_action(d: &DirectResponse) -> DirectResponseAction {
    let specifier = d.body.as_ref().map(|b| match b {
        ResponseBody::Text(s) => data_source::Specifier::InlineString(s.clone()),
        ResponseBody::Bytes(b) => data_source::Specifier::InlineBytes(b.clone()),
    });
    DirectResponseAction {
        status: d.status,
        body: specifier.map(|s| DataSource { specifier: Some(s), ..Default::default() }),
        body_format: None,
    }
}

/// Sets what the destination is asked for.
pub fn apply_rewrite(action: &mut RouteAction, rw: &Rewrite) {
    if let Some(uri) = &rw.uri {
        action.prefix_rewrite = uri.clone();
    }
    if let Some((pattern, substitution)) = &rw.regex {
        action.regex_rewrite = Some(RegexMatchAndSubstitute {
            pattern: Some(RegexMatcher { regex: pattern.clone(), ..Default::default() }),
            substitution: substitution.clone(),
        });
    }
    if let Some(authority) = &rw.authority {
        action.host_rewrite_specifier = Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(authority.clone()));
    }
}

/// Mirror `per_million` of the requests to `cluster`.
pub fn mirror_policy(cluster: String, per_million: u32) -> route_action::RequestMirrorPolicy {
    route_action::RequestMirrorPolicy {
        cluster,
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: per_million,
                denominator: fractional_percent::DenominatorType::Million as i32,
            }),
            runtime_key: String::new(),
        }),
        trace_sampled: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// The CORS filter's per-route policy.
pub fn cors_policy(c: &CorsPolicy) -> EnvoyCors {
    EnvoyCors {
        allow_origin_string_match: c.allow_origins.iter().map(|m| super::routes::string_matcher(m, false)).collect(),
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c.max_age.map(|s| s.to_string()).unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(|value| BoolValue { value }),
        filter_enabled: Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: 100,
                denominator: fractional_percent::DenominatorType::Hundred as i32,
            }),
            runtime_key: String::new(),
        }),
        forward_not_matching_preflights: Some(BoolValue { value: c.forward_unmatched_preflights }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_defaults_and_ports_follow_istio() {
        let r = Redirect { code: 301, ..Default::default() };
        let a = redirect_action(&r, 9080);
        assert_eq!((a.response_code, a.port_redirect, a.host_redirect.as_str()), (0, 0, ""));
        assert!(a.path_rewrite_specifier.is_none() && a.scheme_rewrite_specifier.is_none());
        let cases = [
            (Some(RedirectPort::RequestPort), None, 9080),
            (Some(RedirectPort::ProtocolDefault), None, 80),
            (Some(RedirectPort::ProtocolDefault), Some("https"), 443),
            (Some(RedirectPort::Number(8443)), Some("https"), 8443),
        ];
        for (port, scheme, want) in cases {
            let r = Redirect { port, scheme: scheme.map(str::to_owned), code: 308, ..Default::default() };
            let a = redirect_action(&r, 9080);
            assert_eq!(a.port_redirect, want, "{port:?} {scheme:?}");
            assert_eq!(a.response_code, redirect_action::RedirectResponseCode::PermanentRedirect as i32);
        }
    }
}
