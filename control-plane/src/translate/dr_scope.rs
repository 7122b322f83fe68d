//! Which DestinationRule a proxy uses for a host (`exportTo`, `workloadSelector`), and
//! the cluster sets that follow from it.
//!
//! Rules it keeps:
//! - The lookup is Istio's (`PushContext.destinationRule`, then
//!   `SidecarScope.DestinationRule`): first the rules of the proxy's own namespace that
//!   are visible to it, where one whose `workloadSelector` holds for the proxy's labels
//!   wins over one without (when that namespace has rules for the host but none applies
//!   to the proxy, it gets none, as in Istio); then the first rule without selector of
//!   the host's namespace exported to the proxy's namespace; then one of the root
//!   namespace. A proxy of the root namespace looks at the root's rules exported to it
//!   alone first, then at the host's namespace, then at the root's other rules.
//! - Within one namespace rules are taken by name: meshd does not merge two rules for
//!   one host (Istio merges their subsets). A rule that an earlier one of its namespace
//!   (with the same selector) hides from every namespace it is exported to is reported
//!   and left out.
//! - A host whose rule is the same for every proxy (no rule; or rules of one namespace,
//!   the host's or the root, exported everywhere, without selector: the common case) is
//!   built once into the shared cluster set. Only the other, "scoped", hosts are built
//!   once per candidate rule and once without; a proxy's cluster set is the shared one
//!   plus the variant its view picks for each scoped host, so proxies with the same view
//!   share one set, and a mesh without scoped rules has one set, as before.
//! - Routes do not depend on the view: a route names `outbound|port|subset|host`; a
//!   proxy whose rule does not define the subset has no such cluster and Envoy answers
//!   503, as for a subset no rule defines. Routes carry one hash policy per cluster
//!   name: the first variant's that has one (a later, different one is reported).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use xds::{Resource, ResourceSet};

use crate::model::{selector_matches, DestinationRule, ExportTo, Labels};

use super::{HashPolicies, ModelLookup, Problems};

/// Where a DestinationRule lives and whom it is for: what the lookup needs of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleScope {
    pub namespace: String,
    pub export_to: ExportTo,
    pub selector: Option<Labels>,
}

impl RuleScope {
    pub fn of(rule: &DestinationRule) -> RuleScope {
        RuleScope {
            namespace: rule.namespace.clone(),
            export_to: rule.export_to.clone(),
            selector: rule.workload_selector.clone(),
        }
    }

    /// Exported to its own namespace alone (Istio's private rule).
    fn private(&self) -> bool {
        matches!(&self.export_to, ExportTo::Namespaces(set) if set.len() == 1 && set.contains(&self.namespace))
    }
}

/// Istio's lookup: the index in `rules` (ordered by namespace, then name) of the rule a
/// proxy of `namespace` with `labels` uses for a host of `host_namespace`; None when
/// none applies.
pub fn choose(
    rules: &[RuleScope],
    namespace: &str,
    labels: &Labels,
    host_namespace: &str,
    root: &str,
) -> Option<usize> {
    let visible = |r: &RuleScope| r.export_to.visible_to(namespace);
    let local: Vec<usize> = (0..rules.len())
        .filter(|&i| {
            let r = &rules[i];
            r.namespace == namespace && visible(r) && (namespace != root || r.private() || r.selector.is_some())
        })
        .collect();
    if !local.is_empty() {
        let selected =
            local.iter().copied().find(|&i| rules[i].selector.as_ref().is_some_and(|s| selector_matches(s, labels)));
        return selected.or_else(|| local.iter().copied().find(|&i| rules[i].selector.is_none()));
    }
    let exported_from = |ns: &str| {
        (0..rules.len()).find(|&i| rules[i].namespace == ns && rules[i].selector.is_none() && visible(&rules[i]))
    };
    exported_from(host_namespace).or_else(|| exported_from(root))
}

/// The rule every proxy uses for the host (`Some(None)`: none), when it is the same for
/// all; None when it depends on the proxy.
fn same_for_every_proxy(rules: &[RuleScope], host_namespace: &str, root: &str) -> Option<Option<usize>> {
    let Some(first) = rules.first() else { return Some(None) };
    let plain =
        rules.iter().all(|r| r.export_to == ExportTo::All && r.selector.is_none() && r.namespace == first.namespace);
    (plain && (first.namespace == host_namespace || first.namespace == root)).then_some(Some(0))
}

/// Clusters, load assignments and the hash policies routes to them need.
#[derive(Debug, Default)]
pub(crate) struct Built {
    pub clusters: Vec<Arc<Resource>>,
    pub endpoints: Vec<Arc<Resource>>,
    pub hash_policies: HashPolicies,
    /// Clusters whose endpoints are ordered per caller locality (shared sets only).
    pub plans: super::locality::Plans,
}

/// A host's clusters and load assignments as built with one of its rules.
#[derive(Debug)]
struct Variant {
    clusters: Vec<Arc<Resource>>,
    endpoints: Vec<Arc<Resource>>,
}

/// A host whose rule depends on the proxy: its candidate rules and a variant per rule
/// (the last one: with no rule).
#[derive(Debug)]
struct ScopedHost {
    host_namespace: String,
    rules: Vec<RuleScope>,
    variants: Vec<Variant>,
}

/// A proxy's clusters and their load assignments.
pub type ClusterSets = (Arc<ResourceSet>, Arc<ResourceSet>);

/// The key of a cluster set: for each scoped host (in build order), the index of the
/// rule the proxy uses (the number of candidates when none).
type View = Vec<u32>;

/// The scoped hosts of one build and the cluster sets assembled per view.
#[derive(Debug, Default)]
pub(crate) struct DrViews {
    root: String,
    scoped: Vec<ScopedHost>,
    sets: Mutex<BTreeMap<View, ClusterSets>>,
}

impl DrViews {
    pub fn new(root: &str) -> DrViews {
        DrViews { root: root.to_owned(), ..Default::default() }
    }

    /// Builds the clusters of `host` (of `host_namespace`) with `build`: into `base` when
    /// its rule is the same for every proxy, else once per candidate rule and once
    /// without, kept for [`DrViews::sets_for`].
    pub fn build_host(
        &mut self,
        lookup: &ModelLookup<'_>,
        host: &str,
        host_namespace: &str,
        base: &mut Built,
        problems: &mut Problems,
        mut build: impl FnMut(Option<&DestinationRule>, &mut Built),
    ) {
        let rules = candidates(lookup, host, problems);
        let scopes: Vec<RuleScope> = rules.iter().map(|r| RuleScope::of(r)).collect();
        if let Some(rule) = same_for_every_proxy(&scopes, host_namespace, &self.root) {
            build(rule.map(|i| rules[i]), base);
            return;
        }
        let mut variants = Vec::with_capacity(rules.len() + 1);
        for rule in rules.iter().map(|r| Some(*r)).chain([None]) {
            let mut built = Built::default();
            build(rule, &mut built);
            let mut hashes: Vec<_> = built.hash_policies.into_iter().collect();
            hashes.sort_by(|a, b| a.0.cmp(&b.0));
            for (cluster, hash) in hashes {
                match base.hash_policies.get(&cluster) {
                    None => {
                        base.hash_policies.insert(cluster, hash);
                    }
                    Some(first) if *first == hash => {}
                    Some(_) => {
                        let rule = rule.expect("only rules add hash policies");
                        problems.report(
                            "DestinationRule",
                            &rule.namespace,
                            &rule.name,
                            "spec.trafficPolicy.loadBalancer.consistentHash",
                            format!(
                                "routes to {cluster} already hash by another DestinationRule's key for the proxies \
                                 it applies to; routes carry one hash policy per cluster, so this key is not used"
                            ),
                        );
                    }
                }
            }
            if let (false, Some(rule)) = (built.plans.is_empty(), rule) {
                problems.report(
                    "DestinationRule",
                    &rule.namespace,
                    &rule.name,
                    "spec.trafficPolicy",
                    "locality-aware balancing (localityLbSetting, or the locality failover outlierDetection turns on) is \
                     not applied yet to a host whose DestinationRule depends on the caller (exportTo, workloadSelector); \
                     its endpoints are balanced alike"
                        .to_owned(),
                );
            }
            variants.push(Variant { clusters: built.clusters, endpoints: built.endpoints });
        }
        self.scoped.push(ScopedHost { host_namespace: host_namespace.to_owned(), rules: scopes, variants });
    }

    /// Keeps of every variant what `keep` keeps (Envoy's verdicts on its pieces).
    pub fn retain(&mut self, mut keep: impl FnMut(&mut Vec<Arc<Resource>>, &mut Vec<Arc<Resource>>)) {
        for variant in self.scoped.iter_mut().flat_map(|h| h.variants.iter_mut()) {
            keep(&mut variant.clusters, &mut variant.endpoints);
        }
    }

    /// Which rule a proxy of `namespace` with `labels` uses for each scoped host.
    fn view(&self, namespace: &str, labels: &Labels) -> View {
        let index = |h: &ScopedHost| {
            let chosen = choose(&h.rules, namespace, labels, &h.host_namespace, &self.root).unwrap_or(h.rules.len());
            u32::try_from(chosen).unwrap_or(u32::MAX)
        };
        self.scoped.iter().map(index).collect()
    }

    /// The clusters and load assignments of a proxy of `namespace` with `labels`:
    /// `base` (clusters, load assignments) itself when no host is scoped, else `base`
    /// with the variants of the proxy's view, one set per view.
    pub fn sets_for(
        &self,
        namespace: &str,
        labels: &Labels,
        base: (&Arc<ResourceSet>, &Arc<ResourceSet>),
    ) -> ClusterSets {
        if self.scoped.is_empty() {
            return (base.0.clone(), base.1.clone());
        }
        let view = self.view(namespace, labels);
        let mut sets = crate::sync::lock(&self.sets);
        let built = sets.entry(view).or_insert_with_key(|view| {
            let chosen = || self.scoped.iter().zip(view).map(|(h, &i)| &h.variants[i as usize]);
            let clusters = base.0.iter().cloned().chain(chosen().flat_map(|v| v.clusters.iter().cloned()));
            let endpoints = base.1.iter().cloned().chain(chosen().flat_map(|v| v.endpoints.iter().cloned()));
            (Arc::new(ResourceSet::new(clusters)), Arc::new(ResourceSet::new(endpoints)))
        });
        built.clone()
    }
}

/// The DestinationRules for `host` (by namespace, then name), without those an earlier
/// one of the same namespace and selector hides from every namespace they are exported
/// to (reported).
fn candidates<'a>(lookup: &ModelLookup<'a>, host: &str, problems: &mut Problems) -> Vec<&'a DestinationRule> {
    let mut rules: Vec<&DestinationRule> = lookup.rules_by_host.get(host).cloned().unwrap_or_default();
    rules.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut kept: Vec<&DestinationRule> = Vec::with_capacity(rules.len());
    for rule in rules {
        let mut peers = kept
            .iter()
            .filter(|k| k.namespace == rule.namespace && k.workload_selector == rule.workload_selector)
            .peekable();
        let first = peers.peek().copied().copied();
        if rule.export_to.shadowed_by(peers.map(|k| &k.export_to)) {
            let first = first.expect("shadowed by some rule");
            problems.report(
                "DestinationRule",
                &rule.namespace,
                &rule.name,
                "spec.host",
                format!(
                    "host {host} already has DestinationRule {}/{} for the same workloads and namespaces; meshd \
                     does not merge DestinationRules, so this one is ignored",
                    first.namespace, first.name
                ),
            );
        } else {
            kept.push(rule);
        }
    }
    kept
}

/// When which caller may use subset `subset` of `host` depends on the DestinationRule it
/// uses: why some callers get 503 (the rules that do not define it, or those of whom
/// only some callers see all that do). None when every rule for the host defines it and
/// one of them, exported everywhere without selector, is there for every caller.
pub(crate) fn subset_gap(lookup: &ModelLookup<'_>, host: &str, subset: &str) -> Option<String> {
    let rules = lookup.rules_by_host.get(host)?;
    let scoped = |r: &&&DestinationRule| r.export_to != ExportTo::All || r.workload_selector.is_some();
    let defines = |r: &&&DestinationRule| r.subsets.iter().any(|s| s.name == subset);
    let names = |rules: Vec<&&DestinationRule>| {
        let mut names: Vec<String> = rules.iter().map(|r| format!("{}/{}", r.namespace, r.name)).collect();
        names.sort();
        names.join(", ")
    };
    let lacking: Vec<&&DestinationRule> = rules.iter().filter(|r| !defines(r)).collect();
    let for_everyone = rules.iter().filter(defines).any(|r| !scoped(&r));
    // One namespace's rules exported everywhere: the first is everyone's (the others are
    // reported as ignored).
    let one_for_everyone = !rules.iter().any(|r| scoped(&r)) && rules.iter().all(|r| r.namespace == rules[0].namespace);
    if one_for_everyone || (lacking.is_empty() && for_everyone) {
        return None;
    }
    let defining = names(rules.iter().filter(defines).collect());
    Some(if lacking.is_empty() {
        format!(
            "subset {subset:?} of host {host} is defined only by DestinationRules some callers use ({defining}); \
             the others get 503"
        )
    } else {
        format!(
            "subset {subset:?} of host {host} is defined by DestinationRules {defining} but not by {}; callers \
             using those (or no rule) get 503",
            names(lacking)
        )
    })
}

#[cfg(test)]
#[path = "dr_scope_tests.rs"]
mod tests;
