//! VirtualService rules → Envoy routes for one service port.

use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, query_parameter_matcher, route, route_action, route_match, weighted_cluster, HeaderMatcher,
    QueryParameterMatcher, Route, RouteAction, RouteMatch, WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, RegexMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

use crate::model::{
    index::Index, Destination, Gateway, HeaderMatch, Headers, HttpMatch, HttpRoute, SidecarScope, SourceCondition,
    StringMatch, VirtualService,
};

use super::{cluster_name, envoy::seconds, ModelLookup, Problems};

/// The route that sends everything to one cluster.
pub fn default_route(cluster: &str) -> Route {
    Route {
        name: "default".to_owned(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_owned())),
            timeout: Some(seconds(0)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The route of a service without VirtualService: everything to its cluster, with no
/// timeout and Istio's default retry policy.
pub fn service_default_route(cluster: &str) -> Route {
    let mut route = default_route(cluster);
    if let Some(route::Action::Route(action)) = &mut route.action {
        action.retry_policy = Some(super::actions::default_retry_policy());
    }
    route
}

pub(crate) fn string_matcher(m: &StringMatch, ignore_case: bool) -> StringMatcher {
    let pattern = match m {
        StringMatch::Exact(v) => string_matcher::MatchPattern::Exact(v.clone()),
        StringMatch::Prefix(v) => string_matcher::MatchPattern::Prefix(v.clone()),
        StringMatch::Regex(v) => {
            string_matcher::MatchPattern::SafeRegex(RegexMatcher { regex: v.clone(), ..Default::default() })
        }
    };
    StringMatcher { match_pattern: Some(pattern), ignore_case }
}

fn header_matcher(name: &str, m: &HeaderMatch, invert: bool) -> HeaderMatcher {
    let spec = match m {
        HeaderMatch::Present => header_matcher::HeaderMatchSpecifier::PresentMatch(true),
        HeaderMatch::Value(v) => header_matcher::HeaderMatchSpecifier::StringMatch(string_matcher(v, false)),
    };
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(spec),
        invert_match: invert,
        ..Default::default()
    }
}

/// Where each part of a generated route came from in the VirtualService, so a
/// problem Envoy would have with the route can be reported at the user's field.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteOrigin {
    /// Index in `spec.http`.
    pub http: usize,
    /// Index in `spec.http[..].match`, when the rule has matches.
    pub matched: Option<usize>,
    /// User field (below the match) of each `RouteMatch.headers` entry, e.g. `headers.x-user`.
    pub headers: Vec<String>,
    /// User field of each `RouteMatch.query_parameters` entry, e.g. `queryParams.q`.
    pub query_params: Vec<String>,
    /// Index in `spec.http[..].route` of each weighted cluster.
    pub destinations: Vec<usize>,
    /// Who the route is for (`sourceLabels`, `sourceNamespace`); `None`: every caller.
    pub source: Option<SourceCondition>,
}

pub(crate) fn route_match(m: &HttpMatch) -> RouteMatch {
    let path_specifier = Some(match &m.uri {
        None => route_match::PathSpecifier::Prefix("/".to_owned()),
        Some(StringMatch::Exact(p)) => route_match::PathSpecifier::Path(p.clone()),
        Some(StringMatch::Prefix(p)) => route_match::PathSpecifier::Prefix(p.clone()),
        Some(StringMatch::Regex(r)) => {
            route_match::PathSpecifier::SafeRegex(RegexMatcher { regex: r.clone(), ..Default::default() })
        }
    });
    let mut headers: Vec<HeaderMatcher> = Vec::new();
    for (name, hm) in &m.headers {
        headers.push(header_matcher(name, hm, false));
    }
    for (name, hm) in &m.without_headers {
        headers.push(header_matcher(name, hm, true));
    }
    if let Some(method) = &m.method {
        headers.push(header_matcher(":method", &HeaderMatch::Value(method.clone()), false));
    }
    if let Some(authority) = &m.authority {
        headers.push(header_matcher(":authority", &HeaderMatch::Value(authority.clone()), false));
    }
    if let Some(scheme) = &m.scheme {
        headers.push(header_matcher(":scheme", &HeaderMatch::Value(scheme.clone()), false));
    }
    let query_parameters = m
        .query_params
        .iter()
        .map(|(name, sm)| QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                string_matcher(sm, false),
            )),
        })
        .collect();
    RouteMatch {
        path_specifier,
        case_sensitive: m.ignore_uri_case.then_some(BoolValue { value: false }),
        headers,
        query_parameters,
        ..Default::default()
    }
}

/// The user fields behind `route_match(m)`'s header and query matchers, in its order.
fn match_origin(m: &HttpMatch, mut origin: RouteOrigin) -> RouteOrigin {
    origin.headers = m
        .headers
        .keys()
        .map(|n| format!("headers.{n}"))
        .chain(m.without_headers.keys().map(|n| format!("withoutHeaders.{n}")))
        .chain(m.method.iter().map(|_| "method".to_owned()))
        .chain(m.authority.iter().map(|_| "authority".to_owned()))
        .chain(m.scheme.iter().map(|_| "scheme".to_owned()))
        .collect();
    origin.query_params = m.query_params.keys().map(|n| format!("queryParams.{n}")).collect();
    origin
}

/// The cluster of `d` for traffic on `port`, with problems (unknown host, port, subset)
/// reported at `field`; None when the service has several ports and `d` names none.
pub(crate) fn destination_cluster(
    model: &Index,
    lookup: &ModelLookup<'_>,
    vs: &VirtualService,
    field: &str,
    d: &Destination,
    port: u16,
    problems: &mut Problems,
) -> Option<String> {
    let host = lookup.resolve(&d.host, &vs.namespace);
    let target = lookup.registry_ports(model, &host);
    let dest_port = match (d.port, &target) {
        (Some(p), _) => Some(p),
        (None, Some(t)) if t.len() == 1 => Some(t[0].0),
        (None, Some(t)) if t.iter().any(|(p, _)| *p == port) => Some(port),
        (None, Some(_)) => None,
        (None, None) => Some(port),
    };
    let Some(dest_port) = dest_port else {
        problems.warn_vs(
            vs,
            &format!("{field}.port"),
            format!("service {host} has several ports; name one with port.number"),
        );
        return None;
    };
    match target {
        None => problems.warn_vs(
            vs,
            &format!("{field}.host"),
            format!("host {host} is not a known service; requests to it will fail (503)"),
        ),
        Some(t) if !t.iter().any(|(p, _)| *p == dest_port) => problems.warn_vs(
            vs,
            &format!("{field}.port"),
            format!("service {host} has no port {dest_port}; requests to it will fail (503)"),
        ),
        _ => {}
    }
    if let Some(subset) = &d.subset {
        if !lookup.subset_defined(&host, subset) {
            problems.warn_vs(
                vs,
                &format!("{field}.subset"),
                format!("no DestinationRule defines subset {subset:?} for host {host}; requests to it will fail (503)"),
            );
        } else if let Some(gap) = super::dr_scope::subset_gap(lookup, &host, subset) {
            problems.warn_vs(vs, &format!("{field}.subset"), gap);
        }
    }
    Some(cluster_name(dest_port, d.subset.as_deref(), &host))
}

/// The forwarding action of `http` (its destinations, mirrors and actions), with the
/// index in `route` of each weighted cluster and the destination's header edits (one
/// destination); None when a destination cannot be resolved.
fn forward_action<'h>(
    model: &Index,
    lookup: &ModelLookup<'_>,
    vs: &VirtualService,
    i: usize,
    http: &'h HttpRoute,
    port: u16,
    problems: &mut Problems,
) -> Option<(RouteAction, Vec<usize>, Option<&'h Headers>)> {
    let field = format!("spec.http[{i}]");
    let mut clusters: Vec<(String, u32, &Headers)> = Vec::new();
    let mut destinations = Vec::new();
    for (j, d) in http.route.iter().enumerate() {
        let dfield = format!("{field}.route[{j}].destination");
        let cluster = destination_cluster(model, lookup, vs, &dfield, &d.destination, port, problems)?;
        if d.weight > 0 {
            clusters.push((cluster, d.weight, &d.headers));
            destinations.push(j);
        }
    }
    let mut own_headers = None;
    let cluster_specifier = if clusters.len() == 1 {
        let (name, _, headers) = clusters.remove(0);
        own_headers = Some(headers);
        route_action::ClusterSpecifier::Cluster(name)
    } else {
        route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: clusters
                .into_iter()
                .map(|(name, weight, headers)| {
                    let mut cw = weighted_cluster::ClusterWeight {
                        name,
                        weight: Some(UInt32Value { value: weight }),
                        ..Default::default()
                    };
                    super::actions::cluster_weight_headers(&mut cw, headers);
                    cw
                })
                .collect(),
            ..Default::default()
        })
    };
    let mut action = RouteAction { cluster_specifier: Some(cluster_specifier), ..Default::default() };
    super::actions::apply(&mut action, &http.actions);
    for m in &http.actions.mirrors {
        let mfield = format!(
            "{field}.{}",
            if m.field == "mirror" { "mirror".to_owned() } else { format!("{}.destination", m.field) }
        );
        if let Some(cluster) = destination_cluster(model, lookup, vs, &mfield, &m.destination, port, problems) {
            action.request_mirror_policies.push(super::http_actions::mirror_policy(cluster, m.per_million));
        }
    }
    Some((action, destinations, own_headers))
}

/// Where routes are used: a match applies to sidecars or to one Gateway's proxies by its
/// `gateways` (unset: the VirtualService's, which already name the site).
#[derive(Clone, Copy)]
pub(crate) enum RouteSite<'a> {
    Sidecars,
    Gateway(&'a Gateway),
}

/// Routes of `vs` for traffic to `service` on `port`, at `site`. Problems (unknown hosts,
/// subsets, ports) are reported; a rule that cannot be translated is left out, the
/// rest stays. Each route comes with where it came from (for [`super::contain`]).
pub(crate) fn virtual_service_routes_traced(
    model: &Index,
    lookup: &ModelLookup<'_>,
    vs: &VirtualService,
    (port, site): (u16, RouteSite<'_>),
    problems: &mut Problems,
) -> Vec<(Route, RouteOrigin)> {
    let mut routes = Vec::new();
    for (i, http) in vs.http.iter().enumerate() {
        // One destination: its header edits apply to the route, after the rule's.
        let mut route_headers = vec![&http.actions.headers];
        let mut destinations = Vec::new();
        let action = if let Some(r) = &http.redirect {
            route::Action::Redirect(super::http_actions::redirect_action(r, port))
        } else if let Some(d) = &http.direct_response {
            route::Action::DirectResponse(super::http_actions::direct_response_action(d))
        } else if http.delegate.is_some() {
            // Replaced by the delegate's rules before this (see `super::delegate`).
            continue;
        } else {
            let Some((action, dests, own)) = forward_action(model, lookup, vs, i, http, port, problems) else {
                continue;
            };
            destinations = dests;
            route_headers.extend(own);
            route::Action::Route(action)
        };
        let typed_per_filter_config = super::actions::per_filter_config(&http.actions);
        let name = http.name.clone().unwrap_or_else(|| format!("{}.{}.{i}", vs.namespace, vs.name));
        let origin = RouteOrigin { http: i, destinations, ..Default::default() };
        if http.matches.is_empty() {
            let mut route = Route {
                name,
                r#match: Some(route_match(&HttpMatch::default())),
                action: Some(action),
                typed_per_filter_config,
                ..Default::default()
            };
            super::actions::route_headers(&mut route, &route_headers);
            routes.push((route, origin));
        } else {
            for (j, m) in http.matches.iter().enumerate().filter(|(_, m)| m.port.is_none_or(|p| p == port)) {
                let source = match site {
                    RouteSite::Sidecars => match m.sidecar_scope() {
                        SidecarScope::None => continue,
                        SidecarScope::Every => None,
                        SidecarScope::If(condition) => Some(condition),
                    },
                    RouteSite::Gateway(gw) => {
                        if !gateway_match_applies(vs, (i, j, m), gw, problems) {
                            continue;
                        }
                        None
                    }
                };
                let mut route = Route {
                    name: name.clone(),
                    r#match: Some(route_match(m)),
                    action: Some(action.clone()),
                    typed_per_filter_config: typed_per_filter_config.clone(),
                    ..Default::default()
                };
                super::actions::route_headers(&mut route, &route_headers);
                routes.push((route, RouteOrigin { matched: Some(j), source, ..match_origin(m, origin.clone()) }));
            }
        }
    }
    routes
}

/// Whether match `j` of rule `i` of `vs` applies on Gateway `gw`: its `gateways` are
/// unset or name `gw`. Source conditions cannot be evaluated there yet: such a match is
/// left out with a warning.
fn gateway_match_applies(
    vs: &VirtualService,
    (i, j, m): (usize, usize, &HttpMatch),
    gw: &Gateway,
    problems: &mut Problems,
) -> bool {
    if !m.gateways.is_empty() {
        return super::gateway_l4::binds(&m.gateways, &vs.namespace, gw);
    }
    if m.source_labels.is_empty() && m.source_namespace.is_none() {
        return true;
    }
    problems.warn_vs(
        vs,
        &format!("spec.http[{i}].match[{j}]"),
        format!(
            "sourceLabels and sourceNamespace are not evaluated on gateways by meshd yet; the match is left out on \
             Gateway {}/{}",
            gw.namespace, gw.name
        ),
    );
    false
}
