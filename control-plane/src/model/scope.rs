//! Which proxies a rule applies to: `exportTo` (by the proxy's namespace) and the
//! source conditions of an HTTP match (by the calling workload's labels and namespace).

use std::collections::BTreeSet;

use super::{selector_matches, HttpMatch, Labels};

/// Istio's `exportTo`: the namespaces whose proxies see a rule. `.` is resolved to the
/// rule's own namespace when it is read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExportTo {
    /// `*`, and Istio's default when `exportTo` is unset.
    #[default]
    All,
    /// These namespaces only.
    Namespaces(BTreeSet<String>),
}

impl ExportTo {
    pub fn visible_to(&self, namespace: &str) -> bool {
        match self {
            ExportTo::All => true,
            ExportTo::Namespaces(set) => set.contains(namespace),
        }
    }

    /// True when every namespace `self` is exported to already sees one of `earlier`.
    pub fn shadowed_by<'a>(&self, mut earlier: impl Iterator<Item = &'a ExportTo>) -> bool {
        let mut covered = BTreeSet::new();
        for e in earlier.by_ref() {
            match e {
                ExportTo::All => return true,
                ExportTo::Namespaces(set) => covered.extend(set.iter()),
            }
        }
        match self {
            ExportTo::All => false,
            ExportTo::Namespaces(set) => set.iter().all(|n| covered.contains(n)),
        }
    }
}

/// Who a match takes requests from (Istio's `sourceLabels` and `sourceNamespace`), for
/// sidecars: the calling workload's labels must hold `labels`, and its namespace be
/// `namespace` when set.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceCondition {
    pub labels: Labels,
    pub namespace: Option<String>,
}

impl SourceCondition {
    pub fn holds_for(&self, namespace: &str, labels: &Labels) -> bool {
        selector_matches(&self.labels, labels) && self.namespace.as_deref().is_none_or(|n| n == namespace)
    }
}

/// What a match asks of the sidecar that sends the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SidecarScope {
    /// No source condition: the match applies to every sidecar.
    Every,
    /// The match names gateways but not `mesh`: it applies to no sidecar.
    None,
    /// Only sidecars of callers that satisfy the condition.
    If(SourceCondition),
}

impl HttpMatch {
    /// Whether (and for which callers) this match applies to sidecars. As in Istio, a
    /// match that lists `gateways` is decided by them alone: `mesh` takes every sidecar
    /// (its `sourceLabels` and `sourceNamespace` are then not looked at).
    pub fn sidecar_scope(&self) -> SidecarScope {
        if !self.gateways.is_empty() {
            return if self.gateways.iter().any(|g| g == "mesh") { SidecarScope::Every } else { SidecarScope::None };
        }
        if self.source_labels.is_empty() && self.source_namespace.is_none() {
            return SidecarScope::Every;
        }
        SidecarScope::If(SourceCondition {
            labels: self.source_labels.clone(),
            namespace: self.source_namespace.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(names: &[&str]) -> ExportTo {
        ExportTo::Namespaces(names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn shadowing_needs_every_namespace_covered() {
        let cases = [
            (ns(&["a"]), vec![ExportTo::All], true),
            (ExportTo::All, vec![ns(&["a"])], false),
            (ns(&["a", "b"]), vec![ns(&["a"]), ns(&["b"])], true),
            (ns(&["a", "c"]), vec![ns(&["a"]), ns(&["b"])], false),
            (ExportTo::All, vec![], false),
        ];
        for (later, earlier, want) in cases {
            assert_eq!(later.shadowed_by(earlier.iter()), want, "{later:?} after {earlier:?}");
        }
    }

    #[test]
    fn sidecar_scope_follows_istio() {
        let labels: Labels = [("app".to_owned(), "a".to_owned())].into();
        let m = |gateways: &[&str], source_labels: &Labels, source_namespace: Option<&str>| HttpMatch {
            gateways: gateways.iter().map(|g| g.to_string()).collect(),
            source_labels: source_labels.clone(),
            source_namespace: source_namespace.map(str::to_owned),
            ..Default::default()
        };
        let cond = SourceCondition { labels: labels.clone(), namespace: Some("x".to_owned()) };
        let cases = [
            (m(&[], &Labels::new(), None), SidecarScope::Every),
            (m(&["mesh"], &labels, Some("x")), SidecarScope::Every),
            (m(&["gw", "mesh"], &Labels::new(), None), SidecarScope::Every),
            (m(&["gw"], &labels, None), SidecarScope::None),
            (m(&[], &labels, Some("x")), SidecarScope::If(cond.clone())),
        ];
        for (i, (input, want)) in cases.into_iter().enumerate() {
            assert_eq!(input.sidecar_scope(), want, "case {i}");
        }
        let more: Labels = [("app".to_owned(), "a".to_owned()), ("v".to_owned(), "1".to_owned())].into();
        assert!(cond.holds_for("x", &more));
        assert!(!cond.holds_for("y", &more));
        assert!(!cond.holds_for("x", &Labels::new()));
    }
}
