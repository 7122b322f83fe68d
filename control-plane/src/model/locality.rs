//! Locality-aware load balancing as plain data: a DestinationRule's
//! `loadBalancer.localityLbSetting` ([`LocalityLb`]) and where an endpoint runs
//! ([`Locality`], and [`pod_locality`] for Kubernetes workloads).
//!
//! Istio's defaults, which meshd keeps: with no `localityLbSetting`, the mesh-wide
//! setting applies, and Istio's is `{enabled: true}`; so a rule with `outlierDetection`
//! fails over by locality (nearest endpoints first), and one without it balances
//! endpoints alike (failover needs ejection: without it Envoy never leaves the nearest
//! priority).

use std::collections::BTreeMap;

pub use injector::locality::{
    Locality, LocalityError, LOCALITY_LABEL, NODE_REGION_LABEL, NODE_SUBZONE_LABEL, NODE_ZONE_LABEL,
};

use super::Labels;

/// A Kubernetes Node, reduced to the locality of the pods on it (its topology labels).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// `None` when the Node has no topology label.
    pub locality: Option<Locality>,
}

/// A DestinationRule's `localityLbSetting`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalityLb {
    /// `enabled: false`: endpoints are balanced alike, whatever the mesh's setting.
    Disabled,
    /// Priorities by how much of the caller's locality an endpoint shares (0: same
    /// subzone, 1: same zone, 2: same region, 3: elsewhere); `failover` names, per
    /// caller region, the one region to try before the rest (4). Needs outlier detection.
    Failover(Vec<RegionFailover>),
    /// Shares of traffic per destination locality, per caller locality.
    Distribute(Vec<Distribute>),
}

/// `failover[]`: callers in region `from` fail over to region `to` first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionFailover {
    pub from: String,
    pub to: String,
}

/// `distribute[]`: callers whose locality matches `from` send `to`'s percentages (adding
/// up to 100) to the endpoints whose locality matches each key. Patterns are
/// `region/zone/subzone` with `*` as the last part, or fewer parts (the rest matches).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Distribute {
    pub from: String,
    pub to: BTreeMap<String, u32>,
}

/// Whether `locality` matches `pattern` (Istio's `LocalityMatch`): each part equal or
/// `*`; parts the pattern leaves out match anything.
pub fn locality_matches(locality: &Locality, pattern: &str) -> bool {
    let mut parts = pattern.splitn(3, '/');
    let mut part_matches = |actual: &str, required: bool| match parts.next() {
        None | Some("") => !required,
        Some("*") => true,
        Some(p) => p == actual,
    };
    part_matches(&locality.region, true)
        && part_matches(&locality.zone, false)
        && part_matches(&locality.subzone, false)
}

/// How a Node's labels place the pods on it (Istio's reading: region, zone and the
/// Istio subzone label); `None` when it has none of them.
pub fn node_locality(labels: &Labels) -> Option<Locality> {
    let get = |key: &str| labels.get(key).cloned().unwrap_or_default();
    let locality =
        Locality { region: get(NODE_REGION_LABEL), zone: get(NODE_ZONE_LABEL), subzone: get(NODE_SUBZONE_LABEL) };
    (!locality.is_empty()).then_some(locality)
}

/// A pod's locality from its own `istio-locality` label (which Istio prefers over its
/// Node's); `None` without the label or with a value that is not a locality.
pub fn pod_locality(labels: &Labels) -> Option<Locality> {
    labels.get(LOCALITY_LABEL).and_then(|v| Locality::from_label(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_istio_matches_them() {
        let l = Locality::parse("r1/z1/s1").unwrap();
        let cases = [
            ("r1/z1/s1", true),
            ("r1/z1", true),
            ("r1", true),
            ("r1/*", true),
            ("*", true),
            ("r1/z1/*", true),
            ("r1/z2", false),
            ("r2/*", false),
            ("r1/z1/s2", false),
        ];
        for (pattern, want) in cases {
            assert_eq!(locality_matches(&l, pattern), want, "{pattern}");
        }
        // An endpoint without locality matches only wildcards.
        assert!(locality_matches(&Locality::default(), "*"));
        assert!(!locality_matches(&Locality::default(), "r1"));
    }

    #[test]
    fn pods_and_nodes_name_their_locality() {
        let labels = |pairs: &[(&str, &str)]| -> Labels {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let node = labels(&[(NODE_REGION_LABEL, "r1"), (NODE_ZONE_LABEL, "z1")]);
        assert_eq!(node_locality(&node).map(|l| l.to_string()).as_deref(), Some("r1/z1"));
        assert_eq!(node_locality(&labels(&[("app", "x")])), None);
        let pod = labels(&[(LOCALITY_LABEL, "r2.z2.s2")]);
        assert_eq!(pod_locality(&pod).map(|l| l.to_string()).as_deref(), Some("r2/z2/s2"));
        assert_eq!(pod_locality(&labels(&[(LOCALITY_LABEL, "a b")])), None);
    }
}
