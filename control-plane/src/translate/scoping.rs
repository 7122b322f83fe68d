//! Routes that depend on the caller: VirtualService `exportTo` (by the proxy's
//! namespace) and match-level `sourceLabels` / `sourceNamespace` (by the calling
//! workload).
//!
//! Rules it keeps:
//! - Only virtual hosts that need it vary: a host with one VirtualService exported
//!   everywhere and no source condition is encoded once per build, as before.
//! - Route sets are assembled per [`Caller`]: the proxy's namespace and which of the
//!   mesh's source conditions its labels satisfy. Proxies with equal callers share one
//!   set, so thousands of proxies still share a handful of route sets.
//! - For one caller, a host is governed by the first of its VirtualServices (by
//!   namespace/name) exported to the caller's namespace; the routes whose source
//!   condition the caller fails are left out; when none is left (or no rule is
//!   exported there), the host gets the default route, as in Istio.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};
use prost::Message;

use crate::envoy_validate::Violation;
use crate::model::{ExportTo, Labels, Service, SourceCondition};

use super::contain::Checker;
use super::{cluster_name, policy, routes, virtual_host, HashPolicies};

/// The source conditions used by a build's rules, numbered in a fixed order.
#[derive(Debug, Default)]
pub(crate) struct Conditions {
    list: BTreeMap<SourceCondition, usize>,
}

impl Conditions {
    /// The number of `condition`, registering it on first sight.
    pub fn number(&mut self, condition: SourceCondition) -> usize {
        let next = self.list.len();
        *self.list.entry(condition).or_insert(next)
    }

    /// What a proxy of `namespace` with `labels` sees.
    pub fn caller(&self, namespace: &str, labels: &Labels) -> Caller {
        let mut satisfied = vec![false; self.list.len()];
        for (condition, &i) in &self.list {
            satisfied[i] = condition.holds_for(namespace, labels);
        }
        Caller { namespace: namespace.to_owned(), satisfied }
    }
}

/// The key of a route set: the proxy's namespace and, for each source condition of
/// the mesh (by number), whether the proxy's workload satisfies it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Caller {
    pub namespace: String,
    satisfied: Vec<bool>,
}

impl Caller {
    fn satisfies(&self, condition: Option<usize>) -> bool {
        condition.is_none_or(|i| self.satisfied.get(i).copied().unwrap_or(false))
    }
}

/// The four ways a virtual host appears in route configurations: explicit (by
/// authority) or per port, and seen from the service's own namespace or another.
#[derive(Debug)]
pub(crate) struct Shapes<T> {
    pub explicit_own: T,
    pub explicit_foreign: T,
    pub per_port_own: T,
    pub per_port_foreign: T,
}

impl<T> Shapes<T> {
    pub fn pick(&self, per_port: bool, own: bool) -> &T {
        match (per_port, own) {
            (false, true) => &self.explicit_own,
            (false, false) => &self.explicit_foreign,
            (true, true) => &self.per_port_own,
            (true, false) => &self.per_port_foreign,
        }
    }
}

/// Encodes `vh` as field 2 (`virtual_hosts`) of a RouteConfiguration; empty when it
/// has no domains.
pub(crate) fn encode_virtual_host(vh: &VirtualHost) -> Vec<u8> {
    if vh.domains.is_empty() {
        return Vec::new();
    }
    RouteConfiguration { virtual_hosts: vec![vh.clone()], ..Default::default() }.encode_to_vec()
}

/// The routes one VirtualService gives a host's port.
#[derive(Debug)]
pub(crate) enum RuleRoutes {
    /// The same for every caller: encoded once.
    Fixed(Shapes<Vec<u8>>),
    /// Some routes hold only for callers that satisfy a source condition (by number).
    BySource(Vec<(Route, Option<usize>)>),
}

/// One service port's virtual host, in every variant callers may need.
#[derive(Debug)]
pub(crate) struct HostRoutes {
    pub hostname: String,
    pub namespace: String,
    pub port: u16,
    /// Name and domains of each shape, without routes.
    pub templates: Shapes<VirtualHost>,
    /// The shapes with the default route.
    pub default: Shapes<Vec<u8>>,
    /// The host's VirtualServices in precedence order, with whom they are exported to.
    pub rules: Vec<(ExportTo, RuleRoutes)>,
}

impl HostRoutes {
    /// The encoded virtual host `caller` gets, in the shape asked for.
    pub fn encoded_for(&self, caller: &Caller, per_port: bool) -> std::borrow::Cow<'_, [u8]> {
        let own = self.namespace == caller.namespace;
        let governing = self.rules.iter().find(|(export, _)| export.visible_to(&caller.namespace));
        match governing.map(|(_, r)| r) {
            None => self.default.pick(per_port, own).as_slice().into(),
            Some(RuleRoutes::Fixed(shapes)) => shapes.pick(per_port, own).as_slice().into(),
            Some(RuleRoutes::BySource(routes)) => {
                let kept: Vec<Route> =
                    routes.iter().filter(|(_, c)| caller.satisfies(*c)).map(|(r, _)| r.clone()).collect();
                if kept.is_empty() {
                    return self.default.pick(per_port, own).as_slice().into();
                }
                let vh = VirtualHost { routes: kept, ..self.templates.pick(per_port, own).clone() };
                encode_virtual_host(&vh).into()
            }
        }
    }
}

/// The routes of one VirtualService for a host's port, with their source conditions;
/// `None` when the rule was refused without a good version to keep.
pub(crate) type RuleInput = (ExportTo, Option<Vec<(Route, Option<SourceCondition>)>>);

/// One registry host's port, as its virtual hosts are built: the host, whose namespace
/// counts as "own", the virtual host in each shape (without routes), and for explicit
/// proxies, how routes change (None: they are the same).
pub(crate) struct HostPort<'a> {
    pub hostname: String,
    pub namespace: String,
    pub port: u16,
    pub templates: Shapes<VirtualHost>,
    pub explicit_routes: Option<&'a dyn Fn(Vec<Route>) -> Vec<Route>>,
}

impl HostPort<'_> {
    /// A service's port: it answers to its own short names in its namespace, and to its
    /// cluster IP when it `owns_ip`.
    pub(crate) fn service(service: &Service, port: u16, owns_ip: bool) -> HostPort<'static> {
        HostPort {
            hostname: service.hostname(),
            namespace: service.namespace.clone(),
            port,
            templates: Shapes {
                explicit_own: virtual_host(service, port, Vec::new(), true, port == 80, owns_ip),
                explicit_foreign: virtual_host(service, port, Vec::new(), false, port == 80, owns_ip),
                per_port_own: virtual_host(service, port, Vec::new(), true, true, owns_ip),
                per_port_foreign: virtual_host(service, port, Vec::new(), false, true, owns_ip),
            },
            explicit_routes: None,
        }
    }
}

/// The virtual host of `host` in every variant: the default route, and each of `rules`
/// (in precedence order). Each variant is checked as a whole route configuration piece
/// (its names with its routes); Err holds what Envoy would say.
pub(crate) fn host_routes(
    host: HostPort<'_>,
    rules: Vec<RuleInput>,
    hash_policies: &HashPolicies,
    conditions: &mut Conditions,
    checker: &mut Checker,
) -> Result<HostRoutes, Arc<[Violation]>> {
    let HostPort { hostname, namespace, port, templates, explicit_routes } = host;
    let mut check = |routes: &[Route]| {
        // The shape with every domain; the others hold a subset of them.
        let vh = VirtualHost { routes: routes.to_vec(), ..templates.per_port_own.clone() };
        let refused = checker.check("envoy.config.route.v3.RouteConfiguration", &encode_virtual_host(&vh));
        if refused.is_empty() {
            Ok(())
        } else {
            Err(refused)
        }
    };
    let encode = |routes: &[Route]| {
        let explicit = match explicit_routes {
            Some(adapt) => adapt(routes.to_vec()),
            None => routes.to_vec(),
        };
        let with = |t: &VirtualHost, routes: &[Route]| {
            encode_virtual_host(&VirtualHost { routes: routes.to_vec(), ..t.clone() })
        };
        Shapes {
            explicit_own: with(&templates.explicit_own, &explicit),
            explicit_foreign: with(&templates.explicit_foreign, &explicit),
            per_port_own: with(&templates.per_port_own, routes),
            per_port_foreign: with(&templates.per_port_foreign, routes),
        }
    };
    let mut default = vec![routes::service_default_route(&cluster_name(port, None, &hostname))];
    policy::add_hash_policies(&mut default, hash_policies);
    check(&default)?;
    let default_shapes = encode(&default);
    let mut out = Vec::with_capacity(rules.len());
    for (export_to, sourced) in rules {
        let Some(sourced) = sourced.filter(|r| !r.is_empty()) else {
            out.push((export_to, RuleRoutes::Fixed(encode(&default))));
            continue;
        };
        let (mut all, sources): (Vec<Route>, Vec<Option<SourceCondition>>) = sourced.into_iter().unzip();
        policy::add_hash_policies(&mut all, hash_policies);
        check(&all)?;
        let routes = if sources.iter().all(Option::is_none) {
            RuleRoutes::Fixed(encode(&all))
        } else {
            // Per caller; explicit proxies then get the routes as they are (a NONE
            // entry's original destination is not rewritten to the authority for them).
            let numbered = sources.into_iter().map(|s| s.map(|c| conditions.number(c)));
            RuleRoutes::BySource(all.into_iter().zip(numbered).collect())
        };
        out.push((export_to, routes));
    }
    Ok(HostRoutes { hostname, namespace, port, templates, default: default_shapes, rules: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_keyed_by_the_conditions_they_satisfy() {
        let label = |k: &str, v: &str| -> Labels { [(k.to_owned(), v.to_owned())].into() };
        let mut conditions = Conditions::default();
        let v1 = conditions.number(SourceCondition { labels: label("version", "v1"), namespace: None });
        let in_a = conditions.number(SourceCondition { labels: Labels::new(), namespace: Some("a".into()) });
        assert_eq!(conditions.number(SourceCondition { labels: label("version", "v1"), namespace: None }), v1);
        let caller = conditions.caller("a", &label("version", "v1"));
        assert!(caller.satisfies(Some(v1)) && caller.satisfies(Some(in_a)) && caller.satisfies(None));
        let other = conditions.caller("b", &label("version", "v2"));
        assert!(!other.satisfies(Some(v1)) && !other.satisfies(Some(in_a)));
        // Two workloads that satisfy the same conditions share a key.
        let mut more = label("version", "v1");
        more.insert("app".into(), "x".into());
        assert_eq!(conditions.caller("a", &more), caller);
    }
}
