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
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct HttpMatchSpec {
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
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StringMatchSpec {
    exact: Option<String>,
    prefix: Option<String>,
    regex: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RouteDestinationSpec {
    destination: Option<DestinationSpec>,
    weight: Option<i64>,
    headers: Option<route_actions::HeadersSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DestinationSpec {
    #[serde(default)]
    host: String,
    subset: Option<String>,
    port: Option<PortSelector>,
}

#[derive(Deserialize)]
struct PortSelector {
    number: Option<i64>,
}

fn string_match(cx: &Context<'_>, field: &str, spec: &StringMatchSpec) -> Result<Option<StringMatch>, Diagnostic> {
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
fn check_regex(cx: &Context<'_>, field: &str, pattern: &str) -> Result<(), Diagnostic> {
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

/// `exportTo` limited to some namespaces would make the rule apply to fewer clients
/// than meshd would apply it to; only a list holding `*` (every namespace, the
/// default) is honest.
pub(super) fn check_export_to(cx: &Context<'_>, export_to: &[String]) -> Result<(), Diagnostic> {
    if export_to.is_empty() || export_to.iter().any(|e| e == "*") {
        return Ok(());
    }
    Err(cx.error(
        "spec.exportTo",
        "exportTo other than \"*\" is not supported by meshd yet, and ignoring it would apply the rule to clients \
         in every namespace; the object is refused",
    ))
}

pub(super) fn parse_virtual_service(cx: &mut Context<'_>, namespace: String) -> Result<VirtualService, Diagnostic> {
    let spec: VirtualServiceSpec = cx.field("spec")?;
    if spec.hosts.is_empty() {
        cx.warn(
            "spec.hosts",
            "a VirtualService without hosts is a delegate, used only through another's `delegate`, which meshd \
             does not implement yet; it has no effect",
        );
    }
    for (i, host) in spec.hosts.iter().enumerate() {
        if host.is_empty() || host.contains('/') || host.contains(' ') {
            return Err(cx.error(&format!("spec.hosts[{i}]"), format!("{host:?} is not a valid host name")));
        }
    }
    check_export_to(cx, &spec.export_to)?;
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
        let field = format!("spec.http[{i}]");
        let mut matches = Vec::new();
        for (j, m) in r.matches.iter().enumerate() {
            let mf = format!("{field}.match[{j}]");
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
            matches.push(HttpMatch {
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
            });
        }
        if r.route.is_empty() {
            return Err(cx.error(&format!("{field}.route"), "at least one route destination is required"));
        }
        let mut route = Vec::new();
        for (j, d) in r.route.iter().enumerate() {
            let df = format!("{field}.route[{j}]");
            let dest = d.destination.as_ref().ok_or_else(|| cx.error(&format!("{df}.destination"), "required"))?;
            if dest.host.is_empty() {
                return Err(cx.error(&format!("{df}.destination.host"), "required"));
            }
            let port = match dest.port.as_ref().and_then(|p| p.number) {
                Some(n) => Some(check_port(cx, &format!("{df}.destination.port.number"), n)?),
                None => None,
            };
            let weight = match d.weight {
                None => None,
                Some(w) if (0..=i64::from(i32::MAX)).contains(&w) => Some(w as u32),
                Some(w) => {
                    return Err(
                        cx.error(&format!("{df}.weight"), format!("weight {w} must be between 0 and {}", i32::MAX))
                    )
                }
            };
            if let Some(subset) = &dest.subset {
                if subset.is_empty() {
                    return Err(cx.error(&format!("{df}.destination.subset"), "must not be empty"));
                }
            }
            let headers = route_actions::parse_headers(cx, &format!("{df}.headers"), d.headers.as_ref())?;
            route.push((Destination { host: dest.host.clone(), subset: dest.subset.clone(), port }, weight, headers));
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
            route
                .into_iter()
                .map(|(destination, w, headers)| RouteDestination { destination, weight: w.unwrap_or(0), headers })
                .collect()
        };
        let specs = route_actions::ActionSpecs {
            timeout: r.timeout.as_deref(),
            retries: r.retries.as_ref(),
            fault: r.fault.as_ref(),
            headers: r.headers.as_ref(),
        };
        let actions = route_actions::parse_actions(cx, &field, specs)?;
        http.push(HttpRoute { name: r.name.clone(), matches, route, actions });
    }
    Ok(VirtualService { namespace, name: cx.raw.name.clone(), hosts: spec.hosts, gateways: spec.gateways, http })
}
