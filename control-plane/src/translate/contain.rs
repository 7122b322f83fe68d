//! Containment: never push what Envoy would refuse, and let one bad object cost only
//! its own contribution.
//!
//! Every piece the translator makes (a VirtualService's routes for one service port,
//! a virtual host, a cluster, a load assignment, a listener) is checked with
//! [`crate::envoy_validate`] before it joins the mesh. Verdicts are cached by the
//! content hash of the encoded piece, so a build checks only what changed since the
//! previous one. A VirtualService whose routes Envoy would refuse is reported at the
//! field that caused it (`spec.http[0].match[0].headers.x-user.prefix`) and replaced
//! by its last version that passed; without one, its hosts get the default route.
//! Any other refused piece is left out and reported at the Service or
//! DestinationRule that made it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::route::v3::{Route, VirtualHost};
use prost::Message;
use xds::Resource;

use crate::envoy_validate::{check_encoded, Violation};
use crate::model::index::Index;
use crate::model::{ObjectError, Severity, SourceCondition, VirtualService};

use super::routes::{self, RouteOrigin, RouteSite};
use super::{ModelLookup, Problems};

/// Checks done by one build: how many pieces were checked, how many verdicts came
/// from the cache, how many pieces were refused, and the time spent checking (cache
/// misses only; hashing for the cache is not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckStats {
    pub checked: usize,
    pub cached: usize,
    pub refused: usize,
    pub spent: std::time::Duration,
}

/// What containment remembers from one build to the next.
#[derive(Debug, Default)]
pub struct Containment {
    state: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    /// Content hash of an encoded piece → what Envoy would say about it.
    verdicts: HashMap<u64, Arc<[Violation]>>,
    /// The last version of each VirtualService (by namespace, name) whose routes passed.
    last_good: HashMap<(String, String), VirtualService>,
}

/// The checker of one build: reuses the previous build's verdicts and keeps only
/// those this build asks for, so the cache holds the current mesh and nothing more.
pub(crate) struct Checker {
    previous: HashMap<u64, Arc<[Violation]>>,
    current: HashMap<u64, Arc<[Violation]>>,
    last_good: HashMap<(String, String), VirtualService>,
    pub stats: CheckStats,
}

impl Checker {
    pub fn start(containment: &Containment) -> Checker {
        let mut state = crate::sync::lock(&containment.state);
        Checker {
            previous: std::mem::take(&mut state.verdicts),
            current: HashMap::new(),
            last_good: std::mem::take(&mut state.last_good),
            stats: CheckStats::default(),
        }
    }

    /// Hands what this build learned back to `containment`, for the next build.
    pub fn finish(self, containment: &Containment, model: &Index) -> CheckStats {
        let mut state = crate::sync::lock(&containment.state);
        state.verdicts = self.current;
        state.last_good = self.last_good;
        state.last_good.retain(|key, _| model.virtual_services.contains_key(key));
        self.stats
    }

    /// What Envoy would say about `bytes`, an encoded `message_name`.
    pub fn check(&mut self, message_name: &str, bytes: &[u8]) -> Arc<[Violation]> {
        let key = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, xxhash_rust::xxh3::xxh3_64(message_name.as_bytes()));
        if let Some(v) = self.current.get(&key) {
            self.stats.cached += 1;
            return v.clone();
        }
        let verdict = match self.previous.remove(&key) {
            Some(v) => {
                self.stats.cached += 1;
                v
            }
            None => {
                self.stats.checked += 1;
                let started = std::time::Instant::now();
                let violations = check_encoded(message_name, bytes);
                self.stats.spent += started.elapsed();
                if violations.is_empty() {
                    accepted()
                } else {
                    violations.into()
                }
            }
        };
        if !verdict.is_empty() {
            self.stats.refused += 1;
        }
        self.current.insert(key, verdict.clone());
        verdict
    }
}

/// The verdict of every accepted piece, shared (most pieces are accepted).
fn accepted() -> Arc<[Violation]> {
    static ACCEPTED: std::sync::OnceLock<Arc<[Violation]>> = std::sync::OnceLock::new();
    ACCEPTED.get_or_init(|| Arc::new([])).clone()
}

/// Routes, each with the source condition it holds for (`None`: every caller).
pub(crate) type SourcedRoutes = Vec<(Route, Option<SourceCondition>)>;

/// The routes of each VirtualService for each (host, port) it may govern.
pub(crate) type RoutesByRule = HashMap<(VsKey, String, u16), SourcedRoutes>;

/// A VirtualService's namespace and name.
pub(crate) type VsKey = (String, String);

/// Routes of every (VirtualService, host, port) a VirtualService may govern, each
/// VirtualService checked as a whole: if Envoy would refuse any of its routes, it is
/// reported and its last good version (or nothing) takes its place.
pub(crate) fn virtual_service_routes(
    model: &Index,
    lookup: &ModelLookup<'_>,
    vs_by_host: &BTreeMap<String, Vec<&VirtualService>>,
    checker: &mut Checker,
    problems: &mut Problems,
) -> RoutesByRule {
    let mut hosts_by_vs: BTreeMap<(&str, &str), (&VirtualService, Vec<&str>)> = BTreeMap::new();
    for (host, candidates) in vs_by_host {
        for vs in candidates {
            hosts_by_vs.entry((&vs.namespace, &vs.name)).or_insert((vs, Vec::new())).1.push(host);
        }
    }
    let mut out = HashMap::new();
    for (vs, hosts) in hosts_by_vs.into_values() {
        let key = (vs.namespace.clone(), vs.name.clone());
        let mut found = Problems::default();
        // Checked (and remembered as last good) with its delegates' rules in place.
        let expanded = super::delegate::expand(model, vs, &mut found);
        let vs: &VirtualService = &expanded;
        let keyed = |routes: HashMap<(String, u16), _>| {
            routes.into_iter().map(move |((host, port), r)| ((key_of(vs), host, port), r))
        };
        let refused = match translate_checked(model, lookup, vs, &hosts, checker, &mut found) {
            Ok(routes) => {
                problems.list.extend(found.list);
                checker.last_good.insert(key, vs.clone());
                out.extend(keyed(routes));
                continue;
            }
            Err(refused) => {
                problems.list.extend(found.list);
                refused
            }
        };
        let fallback = checker.last_good.get(&key).filter(|good| *good != vs).cloned();
        let kept = fallback
            .and_then(|good| translate_checked(model, lookup, &good, &hosts, checker, &mut Problems::default()).ok());
        let consequence = if kept.is_some() {
            "its last accepted version stays in effect"
        } else {
            "its routes are left out (its hosts get the default route)"
        };
        for (field, message) in refused {
            let message = format!("Envoy would refuse this ({message}); {consequence}");
            let problem =
                ObjectError::at_object(Severity::Error, "VirtualService", &vs.namespace, &vs.name, field, message);
            problems.list.insert(problem);
        }
        out.extend(keyed(kept.unwrap_or_default()));
    }
    out
}

fn key_of(vs: &VirtualService) -> VsKey {
    (vs.namespace.clone(), vs.name.clone())
}

type Refusals = Vec<(String, String)>;

/// Translates `vs` for each port of each of `hosts` and checks the routes (all of
/// them, whatever their source conditions: a caller gets a subset). Err lists (user
/// field, what Envoy would say) for every refused part.
fn translate_checked(
    model: &Index,
    lookup: &ModelLookup<'_>,
    vs: &VirtualService,
    hosts: &[&str],
    checker: &mut Checker,
    problems: &mut Problems,
) -> Result<HashMap<(String, u16), SourcedRoutes>, Refusals> {
    let mut routes_by_port = HashMap::new();
    let mut refused: Refusals = Vec::new();
    if vs.http.is_empty() {
        // Only tcp or tls rules: the HTTP ports of its hosts keep their default routes.
        return Ok(routes_by_port);
    }
    for host in hosts {
        let Some(ports) = lookup.registry_ports(model, host) else { continue };
        for port in ports.into_iter().filter(|(_, protocol)| protocol.is_http()).map(|(port, _)| port) {
            let traced =
                routes::virtual_service_routes_traced(model, lookup, vs, (port, RouteSite::Sidecars), problems);
            let (routes, origins): (Vec<Route>, Vec<RouteOrigin>) = traced.into_iter().unzip();
            // Checked alone, so the verdict is about this rule's routes, not the service's names.
            let vh = VirtualHost {
                name: format!("{host}:{}", port),
                domains: vec!["*".to_owned()],
                routes,
                ..Default::default()
            };
            let verdict = checker.check("envoy.config.route.v3.VirtualHost", &vh.encode_to_vec());
            for v in verdict.iter() {
                let entry = (user_field(&origins, &v.path), format!("{}: {}", v.path, v.message));
                if !refused.contains(&entry) {
                    refused.push(entry);
                }
            }
            let sourced = vh.routes.into_iter().zip(origins.into_iter().map(|o| o.source)).collect();
            routes_by_port.insert(((*host).to_owned(), port), sourced);
        }
    }
    if refused.is_empty() {
        Ok(routes_by_port)
    } else {
        Err(refused)
    }
}

/// The VirtualService field behind `path`, a violation path inside a
/// `VirtualHost` made of routes with `origins`.
pub(crate) fn user_field(origins: &[RouteOrigin], path: &str) -> String {
    let Some((index, rest)) = path.strip_prefix("routes[").and_then(|p| p.split_once(']')) else {
        return "spec.http".to_owned();
    };
    let Some(origin) = index.parse::<usize>().ok().and_then(|i| origins.get(i)) else {
        return "spec.http".to_owned();
    };
    let base = format!("spec.http[{}]", origin.http);
    let rest = rest.strip_prefix('.').unwrap_or(rest);
    let under_match = |suffix: &str| match origin.matched {
        Some(j) if suffix.is_empty() => format!("{base}.match[{j}]"),
        Some(j) => format!("{base}.match[{j}].{suffix}"),
        None => base.clone(),
    };
    if let Some(m) = rest.strip_prefix("match") {
        let m = m.strip_prefix('.').unwrap_or(m);
        if let Some((field, tail)) = indexed(m, "headers", &origin.headers) {
            return under_match(&join(field, matcher_field(tail)));
        }
        if let Some((field, tail)) = indexed(m, "query_parameters", &origin.query_params) {
            return under_match(&join(field, matcher_field(tail)));
        }
        return match m {
            "prefix" => under_match("uri.prefix"),
            "path" => under_match("uri.exact"),
            _ if m.starts_with("safe_regex") => under_match("uri.regex"),
            _ => under_match(""),
        };
    }
    if let Some(r) = rest.strip_prefix("route.weighted_clusters.clusters") {
        return match r.strip_prefix('[').and_then(|r| r.split_once(']')) {
            Some((i, tail)) => {
                let dest = i.parse::<usize>().ok().and_then(|i| origin.destinations.get(i)).copied().unwrap_or(0);
                let tail = if tail.starts_with(".weight") { ".weight" } else { ".destination" };
                format!("{base}.route[{dest}]{tail}")
            }
            None => format!("{base}.route"),
        };
    }
    if rest.starts_with("route") {
        return format!("{base}.route");
    }
    if rest == "name" {
        return format!("{base}.name");
    }
    base
}

/// `headers[2].string_match.prefix` with `list` ("headers") → (origin field of entry 2, "string_match.prefix").
fn indexed<'a>(path: &'a str, list: &str, fields: &'a [String]) -> Option<(&'a str, &'a str)> {
    let (i, tail) = path.strip_prefix(list)?.strip_prefix('[')?.split_once(']')?;
    let field = fields.get(i.parse::<usize>().ok()?)?;
    Some((field, tail.strip_prefix('.').unwrap_or(tail)))
}

/// The Istio `StringMatch` field behind a path inside an Envoy matcher.
fn matcher_field(envoy: &str) -> &str {
    let last = envoy.rsplit('.').next().unwrap_or("");
    match last {
        "prefix" => "prefix",
        "exact" => "exact",
        "regex" => "regex",
        _ => "",
    }
}

fn join(a: &str, b: &str) -> String {
    if b.is_empty() {
        a.to_owned()
    } else {
        format!("{a}.{b}")
    }
}

/// Leaves out of `resources` every one Envoy would refuse, reporting it at the
/// object `origin` names for it (kind, namespace, name, field). Returns the names
/// left out.
pub(crate) fn keep_accepted(
    resources: &mut Vec<Arc<Resource>>,
    message_name: &str,
    checker: &mut Checker,
    problems: &mut Problems,
    origin: impl Fn(&str) -> Option<(&'static str, String, String, String)>,
) -> Vec<String> {
    let mut refused = Vec::new();
    resources.retain(|r| {
        let verdict = checker.check(message_name, &r.body().value);
        if verdict.is_empty() {
            return true;
        }
        let (kind, namespace, name, field) = match origin(r.name()) {
            Some((kind, namespace, name, field)) => (Some(kind.to_owned()), Some(namespace), Some(name), field),
            None => (None, None, None, String::new()),
        };
        for v in verdict.iter() {
            problems.list.insert(ObjectError {
                severity: Severity::Error,
                file: None,
                document: None,
                kind: kind.clone(),
                namespace: namespace.clone(),
                name: name.clone(),
                field: field.clone(),
                message: format!("Envoy would refuse {} {} ({v}); it is left out", short_type(message_name), r.name()),
            });
        }
        refused.push(r.name().to_owned());
        false
    });
    refused
}

fn short_type(message_name: &str) -> &str {
    message_name.rsplit('.').next().unwrap_or(message_name)
}

#[cfg(test)]
#[path = "contain_tests.rs"]
mod tests;

/// The object behind a cluster or load assignment named `outbound|port|subset|host`:
/// the DestinationRule defining the subset, else the Service and its port.
pub(crate) fn cluster_origin(
    model: &Index,
    lookup: &ModelLookup<'_>,
    cluster: &str,
) -> Option<(&'static str, String, String, String)> {
    let mut parts = cluster.split('|');
    let (_, port, subset, host) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if !subset.is_empty() {
        for dr in lookup.rules_by_host.get(host).into_iter().flatten() {
            if let Some(k) = dr.subsets.iter().position(|s| s.name == subset) {
                return Some(("DestinationRule", dr.namespace.clone(), dr.name.clone(), format!("spec.subsets[{k}]")));
            }
        }
    }
    let Some(service) = model.service_by_hostname(host) else {
        return super::service_entry::cluster_origin(lookup, host, port);
    };
    let i = service.ports.iter().position(|p| p.port.to_string() == port).unwrap_or(0);
    Some(("Service", service.namespace.clone(), service.name.clone(), format!("spec.ports[{i}]")))
}

/// The Service (or ServiceEntry) behind a TCP hand-off listener named `<IP>_<port>`.
pub(crate) fn listener_origin(model: &Index, listener: &str) -> Option<(&'static str, String, String, String)> {
    let (ip, port) = listener.rsplit_once('_')?;
    let ip: std::net::IpAddr = ip.parse().ok()?;
    let Some(service) = model.services.values().find(|s| s.cluster_ip == Some(ip)) else {
        return super::service_entry::listener_origin(model, ip, port);
    };
    let i = service.ports.iter().position(|p| p.port.to_string() == port).unwrap_or(0);
    Some(("Service", service.namespace.clone(), service.name.clone(), format!("spec.ports[{i}]")))
}

/// Reports a Service whose virtual host Envoy would refuse (its names, not a rule).
pub(crate) fn report_service(
    problems: &mut Problems,
    service: &crate::model::Service,
    port_index: usize,
    refused: &[Violation],
) {
    for v in refused {
        problems.list.insert(ObjectError::at_object(
            Severity::Error,
            "Service",
            &service.namespace,
            &service.name,
            format!("spec.ports[{port_index}]"),
            format!("Envoy would refuse the virtual host of this port ({v}); it is left out"),
        ));
    }
}
