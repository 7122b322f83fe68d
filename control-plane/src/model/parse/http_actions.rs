//! The HTTP rule fields that answer instead of forwarding (`redirect`, `directResponse`),
//! hand the rule to another VirtualService (`delegate`), or shape what is forwarded
//! (`rewrite`, `mirror`/`mirrors`, `corsPolicy`). Every value is checked here, with the
//! field named; Istio's defaults are applied by the translator.

use serde::Deserialize;

use super::duration::parse_duration;
use super::route_actions::{per_million, PercentSpec};
use super::virtual_service::{check_regex, parse_destination, string_match, DestinationSpec, StringMatchSpec};
use super::*;

/// Envoy's default limit on a direct response body (`max_direct_response_body_size_bytes`).
pub const MAX_DIRECT_BODY: usize = 4096;

/// HTTP methods Istio accepts in `corsPolicy.allowMethods`.
const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct RedirectSpec {
    uri: Option<String>,
    prefix_rewrite: Option<String>,
    authority: Option<String>,
    port: Option<i64>,
    derive_port: Option<String>,
    scheme: Option<String>,
    redirect_code: Option<i64>,
}

#[derive(Deserialize, Default)]
pub(super) struct DirectResponseSpec {
    status: Option<i64>,
    body: Option<BodySpec>,
}

#[derive(Deserialize, Default)]
struct BodySpec {
    string: Option<String>,
    bytes: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct DelegateSpec {
    name: Option<String>,
    namespace: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct RewriteSpec {
    uri: Option<String>,
    authority: Option<String>,
    uri_regex_rewrite: Option<RegexRewriteSpec>,
}

#[derive(Deserialize, Default)]
struct RegexRewriteSpec {
    #[serde(rename = "match")]
    pattern: Option<String>,
    rewrite: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct MirrorPolicySpec {
    destination: Option<DestinationSpec>,
    percentage: Option<PercentSpec>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct CorsSpec {
    #[serde(default)]
    allow_origin: Vec<String>,
    allow_origins: Option<Vec<StringMatchSpec>>,
    #[serde(default)]
    allow_methods: Vec<String>,
    #[serde(default)]
    allow_headers: Vec<String>,
    #[serde(default)]
    expose_headers: Vec<String>,
    max_age: Option<String>,
    allow_credentials: Option<bool>,
    unmatched_preflights: Option<String>,
}

/// The mirroring fields of one rule.
pub(super) struct MirrorSpecs<'a> {
    pub mirror: Option<&'a DestinationSpec>,
    pub mirror_percentage: Option<&'a PercentSpec>,
    /// `mirror_percent` or `mirrorPercent` (deprecated integers), with the name used.
    pub mirror_percent: Option<(&'static str, i64)>,
    pub mirrors: &'a [MirrorPolicySpec],
}

/// A value Envoy puts in a header or a URL: no CR, LF or NUL.
fn check_value(cx: &Context<'_>, field: &str, value: &str) -> Result<(), Diagnostic> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(cx.error(field, "cannot hold CR, LF or NUL"));
    }
    Ok(())
}

/// An authority (`host` or `host:port`) as it can stand in a Host header.
fn check_authority(cx: &Context<'_>, field: &str, value: &str) -> Result<(), Diagnostic> {
    let ok =
        !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~:[]!$&'()*+,;=%".contains(&b));
    if !ok {
        return Err(cx.error(field, format!("{value:?} is not a host or host:port")));
    }
    Ok(())
}

pub(super) fn parse_redirect(cx: &Context<'_>, field: &str, spec: &RedirectSpec) -> Result<Redirect, Diagnostic> {
    let path = match (&spec.uri, &spec.prefix_rewrite) {
        (Some(_), Some(_)) => return Err(cx.error(field, "set only one of uri and prefixRewrite")),
        (Some(uri), None) => {
            check_value(cx, &format!("{field}.uri"), uri)?;
            Some(RedirectPath::Whole(uri.clone()))
        }
        (None, Some(prefix)) => {
            check_value(cx, &format!("{field}.prefixRewrite"), prefix)?;
            Some(RedirectPath::Prefix(prefix.clone()))
        }
        (None, None) => None,
    };
    if let Some(a) = &spec.authority {
        check_authority(cx, &format!("{field}.authority"), a)?;
    }
    let port = match (spec.port, spec.derive_port.as_deref()) {
        (Some(_), Some(_)) => return Err(cx.error(field, "set only one of port and derivePort")),
        (Some(p), None) => Some(RedirectPort::Number(check_port(cx, &format!("{field}.port"), p)?)),
        (None, Some("FROM_PROTOCOL_DEFAULT")) => Some(RedirectPort::ProtocolDefault),
        (None, Some("FROM_REQUEST_PORT")) => Some(RedirectPort::RequestPort),
        (None, Some(other)) => {
            return Err(cx.error(
                &format!("{field}.derivePort"),
                format!("{other:?} is not FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT"),
            ))
        }
        (None, None) => None,
    };
    if let Some(s) = &spec.scheme {
        let mut chars = s.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if !ok {
            return Err(cx.error(&format!("{field}.scheme"), format!("{s:?} is not a URL scheme (such as https)")));
        }
    }
    let code = match spec.redirect_code {
        None | Some(0) => 301,
        Some(c @ (301 | 302 | 303 | 307 | 308)) => c as u32,
        Some(c) => {
            return Err(cx.error(&format!("{field}.redirectCode"), format!("{c} is not one of 301, 302, 303, 307, 308")))
        }
    };
    Ok(Redirect { path, authority: spec.authority.clone(), port, scheme: spec.scheme.clone(), code })
}

pub(super) fn parse_direct_response(
    cx: &Context<'_>,
    field: &str,
    spec: &DirectResponseSpec,
) -> Result<DirectResponse, Diagnostic> {
    let status = match spec.status {
        Some(s) if (200..=599).contains(&s) => s as u32,
        Some(s) => return Err(cx.error(&format!("{field}.status"), format!("{s} is not an HTTP status (200-599)"))),
        None => return Err(cx.error(&format!("{field}.status"), "required")),
    };
    let bf = format!("{field}.body");
    let body = match spec.body.as_ref().map(|b| (&b.string, &b.bytes)) {
        None | Some((None, None)) => None,
        Some((Some(_), Some(_))) => return Err(cx.error(&bf, "set only one of string and bytes")),
        Some((Some(text), None)) => Some((ResponseBody::Text(text.clone()), text.len(), format!("{bf}.string"))),
        Some((None, Some(encoded))) => {
            let bytes = decode_base64(encoded)
                .map_err(|why| cx.error(&format!("{bf}.bytes"), format!("not base64 ({why})")))?;
            let len = bytes.len();
            Some((ResponseBody::Bytes(bytes), len, format!("{bf}.bytes")))
        }
    };
    if let Some((_, len, f)) = &body {
        if *len > MAX_DIRECT_BODY {
            return Err(cx.error(f, format!("the body is {len} bytes; Envoy's limit is {MAX_DIRECT_BODY}")));
        }
    }
    Ok(DirectResponse { status, body: body.map(|(b, _, _)| b) })
}

pub(super) fn parse_delegate(
    cx: &Context<'_>,
    field: &str,
    spec: &DelegateSpec,
    namespace: &str,
) -> Result<Delegate, Diagnostic> {
    let name =
        spec.name.clone().filter(|n| !n.is_empty()).ok_or_else(|| cx.error(&format!("{field}.name"), "required"))?;
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(label) {
        return Err(cx.error(&format!("{field}.name"), format!("{name:?} is not a valid object name")));
    }
    let namespace = match &spec.namespace {
        Some(ns) if !ns.is_empty() => {
            check_dns_label(cx, &format!("{field}.namespace"), ns)?;
            ns.clone()
        }
        _ => namespace.to_owned(),
    };
    Ok(Delegate { name, namespace })
}

pub(super) fn parse_rewrite(cx: &Context<'_>, field: &str, spec: &RewriteSpec) -> Result<Rewrite, Diagnostic> {
    let uri = spec.uri.clone().filter(|u| !u.is_empty());
    if uri.is_some() && spec.uri_regex_rewrite.is_some() {
        return Err(cx.error(field, "set only one of uri and uriRegexRewrite"));
    }
    if let Some(u) = &uri {
        check_value(cx, &format!("{field}.uri"), u)?;
    }
    let authority = spec.authority.clone().filter(|a| !a.is_empty());
    if let Some(a) = &authority {
        check_authority(cx, &format!("{field}.authority"), a)?;
    }
    let regex = match &spec.uri_regex_rewrite {
        None => None,
        Some(r) => {
            let rf = format!("{field}.uriRegexRewrite");
            let pattern = r.pattern.clone().filter(|p| !p.is_empty());
            let pattern = pattern.ok_or_else(|| cx.error(&format!("{rf}.match"), "required"))?;
            check_regex(cx, &format!("{rf}.match"), &pattern)?;
            let rewrite = r.rewrite.clone().filter(|p| !p.is_empty());
            let rewrite = rewrite.ok_or_else(|| cx.error(&format!("{rf}.rewrite"), "required"))?;
            check_value(cx, &format!("{rf}.rewrite"), &rewrite)?;
            check_substitution(cx, &format!("{rf}.rewrite"), &pattern, &rewrite)?;
            Some((pattern, rewrite))
        }
    };
    if uri.is_none() && authority.is_none() && regex.is_none() {
        return Err(cx.error(field, "give uri, authority or uriRegexRewrite"));
    }
    Ok(Rewrite { uri, authority, regex })
}

/// RE2 substitutions name groups as `\1`..`\9` (`\0` is the whole match); a group the
/// pattern does not have would make Envoy leave the path as it was.
fn check_substitution(cx: &Context<'_>, field: &str, pattern: &str, rewrite: &str) -> Result<(), Diagnostic> {
    let groups = regex::Regex::new(pattern).map(|r| r.captures_len() - 1).unwrap_or(0);
    let mut chars = rewrite.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            continue;
        }
        match chars.next() {
            Some('\\') => {}
            Some(d) if d.is_ascii_digit() => {
                let n = d.to_digit(10).unwrap_or(0) as usize;
                if n > groups {
                    return Err(cx.error(field, format!("\\{n} names a group {pattern:?} does not have ({groups})")));
                }
            }
            _ => return Err(cx.error(field, "a backslash must be followed by a group number or another backslash")),
        }
    }
    Ok(())
}

pub(super) fn parse_mirrors(
    cx: &mut Context<'_>,
    field: &str,
    spec: MirrorSpecs<'_>,
) -> Result<Vec<Mirror>, Diagnostic> {
    let mut out = Vec::new();
    if spec.mirror.is_some() && !spec.mirrors.is_empty() {
        return Err(cx.error(&format!("{field}.mirrors"), "set only one of mirror and mirrors"));
    }
    let share = match (spec.mirror_percentage, spec.mirror_percent) {
        (Some(p), _) => per_million(cx, &format!("{field}.mirrorPercentage"), &Some(p.clone()))?,
        (None, Some((_, p))) if (0..=100).contains(&p) => Some(p as u32 * 10_000),
        (None, Some((name, p))) => {
            return Err(cx.error(&format!("{field}.{name}"), format!("{p} must be between 0 and 100")))
        }
        (None, None) => None,
    };
    match spec.mirror {
        Some(dest) => {
            let destination = parse_destination(cx, &format!("{field}.mirror"), dest)?;
            let per_million = share.unwrap_or(1_000_000);
            if per_million > 0 {
                out.push(Mirror { destination, per_million, field: "mirror".to_owned() });
            }
        }
        None if share.is_some() => {
            cx.warn(&format!("{field}.mirrorPercentage"), "has no effect without mirror (mirrors[] have their own)")
        }
        None => {}
    }
    for (i, m) in spec.mirrors.iter().enumerate() {
        let mf = format!("{field}.mirrors[{i}]");
        let dest = m.destination.as_ref().ok_or_else(|| cx.error(&format!("{mf}.destination"), "required"))?;
        let destination = parse_destination(cx, &format!("{mf}.destination"), dest)?;
        let per_million = per_million(cx, &format!("{mf}.percentage"), &m.percentage)?.unwrap_or(1_000_000);
        if per_million > 0 {
            out.push(Mirror { destination, per_million, field: format!("mirrors[{i}]") });
        }
    }
    Ok(out)
}

pub(super) fn parse_cors(cx: &mut Context<'_>, field: &str, spec: &CorsSpec) -> Result<CorsPolicy, Diagnostic> {
    let mut allow_origins = Vec::new();
    match &spec.allow_origins {
        Some(origins) => {
            if !spec.allow_origin.is_empty() {
                cx.warn(&format!("{field}.allowOrigin"), "ignored: allowOrigins is given (as in Istio)");
            }
            for (i, o) in origins.iter().enumerate() {
                let of = format!("{field}.allowOrigins[{i}]");
                let m = string_match(cx, &of, o)?.ok_or_else(|| cx.error(&of, "give exact, prefix or regex"))?;
                allow_origins.push(m);
            }
        }
        None => allow_origins.extend(spec.allow_origin.iter().cloned().map(StringMatch::Exact)),
    }
    for (i, m) in spec.allow_methods.iter().enumerate() {
        if m != "*" && !HTTP_METHODS.contains(&m.as_str()) {
            let f = format!("{field}.allowMethods[{i}]");
            return Err(cx.error(&f, format!("{m:?} is not an HTTP method ({})", HTTP_METHODS.join(", "))));
        }
    }
    for (list, names) in [("allowHeaders", &spec.allow_headers), ("exposeHeaders", &spec.expose_headers)] {
        for (i, name) in names.iter().enumerate() {
            let token =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(cx.error(&format!("{field}.{list}[{i}]"), format!("{name:?} is not a header name")));
            }
        }
    }
    let max_age = match &spec.max_age {
        None => None,
        Some(text) => {
            let mf = format!("{field}.maxAge");
            let d = parse_duration(cx, &mf, text, true)?;
            if d.subsec_nanos() != 0 {
                return Err(cx.error(&mf, format!("{text:?}: maxAge is in whole seconds (as in Istio)")));
            }
            Some(d.as_secs())
        }
    };
    let forward_unmatched_preflights = match spec.unmatched_preflights.as_deref() {
        None | Some("UNSPECIFIED" | "FORWARD") => true,
        Some("IGNORE") => false,
        Some(other) => {
            return Err(cx.error(&format!("{field}.unmatchedPreflights"), format!("{other:?} is not FORWARD or IGNORE")))
        }
    };
    Ok(CorsPolicy {
        allow_origins,
        allow_methods: spec.allow_methods.clone(),
        allow_headers: spec.allow_headers.clone(),
        expose_headers: spec.expose_headers.clone(),
        max_age,
        allow_credentials: spec.allow_credentials,
        forward_unmatched_preflights,
    })
}

/// Standard base64 (RFC 4648, with or without padding), as protobuf's JSON form
/// writes `bytes`.
fn decode_base64(text: &str) -> Result<Vec<u8>, &'static str> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in text.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return Err("a character outside the base64 alphabet"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 {
        return Err("the length is not that of base64");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::decode_base64;

    #[test]
    fn base64_decodes_as_protobuf_json_writes_it() {
        for (text, want) in
            [("", ""), ("aGk=", "hi"), ("aGk", "hi"), ("aGVsbG8gd29ybGQ=", "hello world"), ("YWJj", "abc")]
        {
            assert_eq!(decode_base64(text).unwrap(), want.as_bytes(), "{text}");
        }
        assert!(decode_base64("a").is_err());
        assert!(decode_base64("a b").is_err());
    }
}
