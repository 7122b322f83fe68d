//! VirtualService: hosts, HTTP rules (matches and weighted destinations).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::*;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct VirtualServiceSpec {
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    gateways: Vec<String>,
    #[serde(default)]
    http: Vec<HttpRouteSpec>,
    #[serde(default)]
    tcp: Vec<l4_routes::L4RouteSpec>,
    #[serde(default)]
    tls: Vec<l4_routes::L4RouteSpec>,
    #[serde(default)]
    export_to: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpRouteSpec {
    name: Option<String>,
    #[serde(rename = "match", default)]
    matches: Vec<HttpMatchSpec>,
    #[serde(default)]
    route: Vec<RouteDestinationSpec>,
    timeout: Option<String>,
    retries: Option<route_actions::RetrySpec>,
    fault: Option<route_actions::FaultSpec>,
    headers: Option<route_actions::HeadersSpec>,
    redirect: Option<http_actions::RedirectSpec>,
    direct_response: Option<http_actions::DirectResponseSpec>,
    delegate: Option<http_actions::DelegateSpec>,
    rewrite: Option<http_actions::RewriteSpec>,
    mirror: Option<DestinationSpec>,
    mirror_percentage: Option<route_actions::PercentSpec>,
    #[serde(rename = "mirror_percent")]
    mirror_percent_proto: Option<i64>,
    mirror_percent: Option<i64>,
    #[serde(default)]
    mirrors: Vec<http_actions::MirrorPolicySpec>,
    cors_policy: Option<http_actions::CorsSpec>,
    /// Istio's old field; websocket upgrades always work (every HTTP connection
    /// manager meshd builds allows them), so it changes nothing.
    #[allow(dead_code)]
    websocket_upgrade: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct HttpMatchSpec {
    name: Option<String>,
    uri: Option<StringMatchSpec>,
    #[serde(default)]
    headers: BTreeMap<String, StringMatchSpec>,
    #[serde(default)]
    without_headers: BTreeMap<String, StringMatchSpec>,
    #[serde(default)]
    query_params: BTreeMap<String, StringMatchSpec>,
    method: Option<StringMatchSpec>,
    authority: Option<StringMatchSpec>,
    port: Option<i64>,
    #[serde(default)]
    ignore_uri_case: bool,
    scheme: Option<StringMatchSpec>,
    #[serde(default)]
    source_labels: Labels,
    source_namespace: Option<String>,
    #[serde(default)]
    gateways: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct StringMatchSpec {
    exact: Option<String>,
    prefix: Option<String>,
    regex: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RouteDestinationSpec {
    destination: Option<DestinationSpec>,
    weight: Option<i64>,
    headers: Option<route_actions::HeadersSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DestinationSpec {
    #[serde(default)]
    host: String,
    subset: Option<String>,
    port: Option<PortSelector>,
}

#[derive(Deserialize)]
struct PortSelector {
    number: Option<i64>,
}

pub(super) fn string_match(
    cx: &Context<'_>,
    field: &str,
    spec: &StringMatchSpec,
) -> Result<Option<StringMatch>, Diagnostic> {
    let set = [spec.exact.is_some(), spec.prefix.is_some(), spec.regex.is_some()].iter().filter(|b| **b).count();
    if set > 1 {
        return Err(cx.error(field, "set only one of exact, prefix and regex"));
    }
    Ok(if let Some(v) = &spec.exact {
        Some(StringMatch::Exact(v.clone()))
    } else if let Some(v) = &spec.prefix {
        Some(StringMatch::Prefix(v.clone()))
    } else if let Some(v) = &spec.regex {
        check_regex(cx, &format!("{field}.regex"), v)?;
        Some(StringMatch::Regex(v.clone()))
    } else {
        None
    })
}

/// Envoy uses RE2; the `regex` crate accepts the same syntax (no backreferences or
/// look-around), so what it rejects Envoy would reject too.
pub(super) fn check_regex(cx: &Context<'_>, field: &str, pattern: &str) -> Result<(), Diagnostic> {
    regex::Regex::new(pattern).map_err(|e| {
        let detail = e.to_string().lines().last().unwrap_or_default().trim().to_owned();
        cx.error(field, format!("invalid regular expression {pattern:?}: {detail}"))
    })?;
    // Envoy also rejects a regex whose RE2 program is too large (sidecars get a limit
    // of 32768 instructions from their bootstrap). Compiled here with ASCII classes as
    // RE2 has them, a program takes 36-56 bytes per RE2 instruction (measured), so
    // this bound stays below Envoy's with a margin.
    const MAX_COMPILED_BYTES: usize = 20 * 32768;
    regex::bytes::RegexBuilder::new(pattern).unicode(false).size_limit(MAX_COMPILED_BYTES).build().map(|_| ()).map_err(
        |_| {
            cx.error(
                field,
                format!("regular expression {pattern:?} is too large for Envoy (RE2 program size limit); simplify it"),
            )
        },
    )
}

/// A header name as Istio reads it: an RFC 7230 token of any case (lower-cased here,
/// as Envoy matches header names in lower case), or one of the HTTP/2 pseudo-headers.
/// `@request.auth.claims.*` names a JWT claim, which meshd does not read yet.
fn header_name(cx: &Context<'_>, field: &str, name: &str) -> Result<String, Diagnostic> {
    if name.starts_with("@request.auth.claims") {
        return Err(cx.error(
            field,
            "matching on JWT claims is not supported by meshd yet, and ignoring it would match requests \
             whatever their claims; the object is refused",
        ));
    }
    let token =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let ok = match name.strip_prefix(':') {
        Some(pseudo) => matches!(pseudo, "authority" | "method" | "path" | "scheme"),
        None => token(name),
    };
    if ok {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(cx.error(
            field,
            format!("{name:?} is not a valid header name (an RFC 7230 token: letters, digits and !#$%&'*+-.^_`|~)"),
        ))
    }
}

fn header_matches(
    cx: &Context<'_>,
    field: &str,
    specs: &BTreeMap<String, StringMatchSpec>,
) -> Result<BTreeMap<String, HeaderMatch>, Diagnostic> {
    let mut out = BTreeMap::new();
    for (name, spec) in specs {
        let f = format!("{field}.{name}");
        let lower = header_name(cx, &f, name)?;
        let m = match string_match(cx, &f, spec)? {
            Some(m) => HeaderMatch::Value(m),
            None => HeaderMatch::Present,
        };
        if out.insert(lower.clone(), m).is_some() {
            return Err(cx.error(&f, format!("header {lower:?} is listed twice (header names are case-insensitive)")));
        }
    }
    Ok(out)
}

pub(super) fn parse_virtual_service(cx: &mut Context<'_>, namespace: String) -> Result<VirtualService, Diagnostic> {
    let spec: VirtualServiceSpec = cx.field("spec")?;
    for (i, host) in spec.hosts.iter().enumerate() {
        if host.is_empty() || host.contains('/') || host.contains(' ') {
            return Err(cx.error(&format!("spec.hosts[{i}]"), format!("{host:?} is not a valid host name")));
        }
    }
    let export_to = scope::parse_export_to(cx, &namespace, &spec.export_to)?;
    for (i, g) in spec.gateways.iter().enumerate() {
        // `mesh`, a Gateway's name in the rule's namespace, or `namespace/name`.
        let field = format!("spec.gateways[{i}]");
        let (ns, name) = g.split_once('/').unwrap_or(("", g));
        if !ns.is_empty() {
            check_dns_label(cx, &field, ns)?;
        }
        check_dns_subdomain(cx, &field, name)?;
    }
    let mut http = Vec::new();
    for (i, r) in spec.http.iter().enumerate() {
        http.push(parse_rule(cx, &format!("spec.http[{i}]"), r, &namespace, &spec.gateways, spec.hosts.is_empty())?);
    }
    let tcp = l4_routes::parse_tcp(cx, &spec.tcp)?;
    let tls = l4_routes::parse_tls(cx, &spec.tls, &spec.hosts)?;
    if (!tcp.is_empty() || !tls.is_empty()) && !matches!(export_to, ExportTo::All) {
        return Err(cx.error(
            "spec.exportTo",
            "tcp and tls rules are not supported with exportTo other than \"*\" yet: meshd gives every proxy the \
             same TCP and TLS listeners, so the rules would apply to clients in every namespace; the object is refused",
        ));
    }
    Ok(VirtualService {
        namespace,
        name: cx.raw.name.clone(),
        hosts: spec.hosts,
        gateways: spec.gateways,
        http,
        tcp,
        tls,
        export_to,
    })
}

/// One HTTP rule. `in_delegate`: the rule belongs to a delegate (a VirtualService
/// without hosts), which cannot delegate again. `vs_gateways`: the VirtualService's
/// `gateways`, which its matches' own `gateways` narrow.
fn parse_rule(
    cx: &mut Context<'_>,
    field: &str,
    r: &HttpRouteSpec,
    namespace: &str,
    vs_gateways: &[String],
    in_delegate: bool,
) -> Result<HttpRoute, Diagnostic> {
    let field = field.to_owned();
    let mut matches = Vec::new();
    for (j, m) in r.matches.iter().enumerate() {
        matches.push(parse_http_match(cx, &format!("{field}.match[{j}]"), m, vs_gateways)?);
    }
    check_rule_kind(cx, &field, r, in_delegate)?;
    let route = parse_route(cx, &field, &r.route)?;
    let specs = route_actions::ActionSpecs {
        timeout: r.timeout.as_deref(),
        retries: r.retries.as_ref(),
        fault: r.fault.as_ref(),
        headers: r.headers.as_ref(),
    };
    let mut actions = route_actions::parse_actions(cx, &field, specs)?;
    actions.rewrite = match &r.rewrite {
        Some(rw) => Some(http_actions::parse_rewrite(cx, &format!("{field}.rewrite"), rw)?),
        None => None,
    };
    let mirror_percent = match (r.mirror_percent_proto, r.mirror_percent) {
        (Some(p), _) => Some(("mirror_percent", p)),
        (None, Some(p)) => Some(("mirrorPercent", p)),
        (None, None) => None,
    };
    let mirrors = http_actions::MirrorSpecs {
        mirror: r.mirror.as_ref(),
        mirror_percentage: r.mirror_percentage.as_ref(),
        mirror_percent,
        mirrors: &r.mirrors,
    };
    actions.mirrors = http_actions::parse_mirrors(cx, &field, mirrors)?;
    actions.cors = match &r.cors_policy {
        Some(c) => Some(http_actions::parse_cors(cx, &format!("{field}.corsPolicy"), c)?),
        None => None,
    };
    let redirect = match &r.redirect {
        Some(rd) => Some(http_actions::parse_redirect(cx, &format!("{field}.redirect"), rd)?),
        None => None,
    };
    let direct_response = match &r.direct_response {
        Some(d) => Some(http_actions::parse_direct_response(cx, &format!("{field}.directResponse"), d)?),
        None => None,
    };
    let delegate = match &r.delegate {
        Some(d) => Some(http_actions::parse_delegate(cx, &format!("{field}.delegate"), d, namespace)?),
        None => None,
    };
    if (redirect.is_some() || direct_response.is_some()) && !actions.mirrors.is_empty() {
        cx.warn(&format!("{field}.mirror"), "a rule that answers itself forwards nothing to mirror");
    }
    Ok(HttpRoute { name: r.name.clone(), matches, route, actions, redirect, direct_response, delegate })
}

/// A rule does one of: `route`, `redirect`, `directResponse`, `delegate` (as Istio checks it).
fn check_rule_kind(cx: &Context<'_>, field: &str, r: &HttpRouteSpec, in_delegate: bool) -> Result<(), Diagnostic> {
    let given: Vec<&str> = [
        (!r.route.is_empty(), "route"),
        (r.redirect.is_some(), "redirect"),
        (r.direct_response.is_some(), "directResponse"),
        (r.delegate.is_some(), "delegate"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    match given.as_slice() {
        [] => return Err(cx.error(&format!("{field}.route"), "give route, redirect, directResponse or delegate")),
        [_] => {}
        [first, second, ..] => {
            return Err(cx.error(&format!("{field}.{second}"), format!("a rule with {first} cannot have {second} too")))
        }
    }
    let answers = given[0] == "redirect" || given[0] == "directResponse";
    if answers && r.rewrite.is_some() {
        return Err(cx.error(&format!("{field}.rewrite"), format!("a rule with {} cannot rewrite", given[0])));
    }
    if in_delegate && r.delegate.is_some() {
        return Err(cx.error(
            &format!("{field}.delegate"),
            "a delegate (a VirtualService without hosts) cannot delegate again: Istio allows one level",
        ));
    }
    Ok(())
}

/// A destination as routes and mirrors name it.
pub(super) fn parse_destination(
    cx: &Context<'_>,
    field: &str,
    dest: &DestinationSpec,
) -> Result<Destination, Diagnostic> {
    if dest.host.is_empty() {
        return Err(cx.error(&format!("{field}.host"), "required"));
    }
    let port = match dest.port.as_ref().and_then(|p| p.number) {
        Some(n) => Some(check_port(cx, &format!("{field}.port.number"), n)?),
        None => None,
    };
    if dest.subset.as_ref().is_some_and(|s| s.is_empty()) {
        return Err(cx.error(&format!("{field}.subset"), "must not be empty"));
    }
    Ok(Destination { host: dest.host.clone(), subset: dest.subset.clone(), port })
}

/// A `tcp` or `tls` rule's weighted destinations: at least one.
pub(super) fn route_destinations(
    cx: &Context<'_>,
    field: &str,
    specs: &[RouteDestinationSpec],
) -> Result<Vec<RouteDestination>, Diagnostic> {
    if specs.is_empty() {
        return Err(cx.error(&format!("{field}.route"), "at least one route destination is required"));
    }
    parse_route(cx, field, specs)
}

/// A rule's weighted destinations (empty when it redirects, answers or delegates).
/// One destination takes everything; several need a weight above 0, and their sum
/// must fit Envoy's 32 bits.
fn parse_route(
    cx: &Context<'_>,
    field: &str,
    specs: &[RouteDestinationSpec],
) -> Result<Vec<RouteDestination>, Diagnostic> {
    let r = specs;
    let field = field.to_owned();
    if r.is_empty() {
        return Ok(Vec::new());
    }
    let mut route = Vec::new();
    for (j, d) in r.iter().enumerate() {
        let df = format!("{field}.route[{j}]");
        let dest = d.destination.as_ref().ok_or_else(|| cx.error(&format!("{df}.destination"), "required"))?;
        let destination = parse_destination(cx, &format!("{df}.destination"), dest)?;
        let weight = match d.weight {
            None => None,
            Some(w) if (0..=i64::from(i32::MAX)).contains(&w) => Some(w as u32),
            Some(w) => {
                return Err(cx.error(&format!("{df}.weight"), format!("weight {w} must be between 0 and {}", i32::MAX)))
            }
        };
        let headers = route_actions::parse_headers(cx, &format!("{df}.headers"), d.headers.as_ref())?;
        route.push((destination, weight, headers));
    }
    let route: Vec<RouteDestination> = if route.len() == 1 {
        route
            .into_iter()
            .map(|(destination, _, headers)| RouteDestination { destination, weight: 100, headers })
            .collect()
    } else {
        if route.iter().all(|(_, w, _)| w.unwrap_or(0) == 0) {
            return Err(cx.error(
                &format!("{field}.route"),
                "with more than one destination, give weights; they are all 0 or missing",
            ));
        }
        let sum: u64 = route.iter().map(|(_, w, _)| u64::from(w.unwrap_or(0))).sum();
        if sum > u64::from(u32::MAX) {
            return Err(cx.error(&format!("{field}.route"), format!("the weights sum to {sum}, above {}", u32::MAX)));
        }
        route
            .into_iter()
            .map(|(destination, w, headers)| RouteDestination { destination, weight: w.unwrap_or(0), headers })
            .collect()
    };
    Ok(route)
}

/// One Istio `HTTPMatchRequest` (`mf` names it in errors); also read by RateLimit rules.
pub(super) fn parse_http_match(
    cx: &mut Context<'_>,
    mf: &str,
    m: &HttpMatchSpec,
    vs_gateways: &[String],
) -> Result<HttpMatch, Diagnostic> {
    let port = match m.port {
        Some(p) => Some(check_port(cx, &format!("{mf}.port"), p)?),
        None => None,
    };
    let mut query_params = BTreeMap::new();
    for (k, v) in &m.query_params {
        let qf = format!("{mf}.queryParams.{k}");
        // `{}` asks for the parameter's presence, which the model cannot say
        // yet; dropping it would match requests without the parameter.
        let sm = string_match(cx, &qf, v)?.ok_or_else(|| {
            cx.error(
                &qf,
                "matching a query parameter's presence (`{}`) is not supported by meshd yet, and ignoring it \
                 would match requests without it; the object is refused",
            )
        })?;
        query_params.insert(k.clone(), sm);
    }
    let (source_labels, source_namespace, gateways) =
        scope::source_conditions(cx, mf, vs_gateways, &m.source_labels, m.source_namespace.as_deref(), &m.gateways)?;
    Ok(HttpMatch {
        name: m.name.clone(),
        uri: match &m.uri {
            Some(s) => string_match(cx, &format!("{mf}.uri"), s)?,
            None => None,
        },
        headers: header_matches(cx, &format!("{mf}.headers"), &m.headers)?,
        without_headers: header_matches(cx, &format!("{mf}.withoutHeaders"), &m.without_headers)?,
        query_params,
        method: match &m.method {
            Some(s) => string_match(cx, &format!("{mf}.method"), s)?,
            None => None,
        },
        authority: match &m.authority {
            Some(s) => string_match(cx, &format!("{mf}.authority"), s)?,
            None => None,
        },
        port,
        ignore_uri_case: m.ignore_uri_case,
        scheme: match &m.scheme {
            Some(s) => string_match(cx, &format!("{mf}.scheme"), s)?,
            None => None,
        },
        source_labels,
        source_namespace,
        gateways,
    })
}
