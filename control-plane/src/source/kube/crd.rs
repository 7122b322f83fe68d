//! Which CRD-served kinds to watch, from the CustomResourceDefinitions in the cluster.
//! Pure: CRD watch events in, watch starts and stops out.
//!
//! Each CRD of interest is watched by name. A CRD counts once it is `Established` and
//! serves a version meshd reads (`networking.amime.dev`, `telemetry.amime.dev`: v1;
//! `networking.istio.io`: v1, else v1beta1, else v1alpha3; `telemetry.istio.io`: v1, else
//! v1alpha1). A CRD deleted (or no longer established or serving such
//! a version) stops its watch and drops its objects. A CRD that is absent is no error.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::model::Kind;

use super::feed::{FeedId, Group, WatchEvent};

/// The CRD-served kinds meshd reads, with their plural (resource) names.
pub const CRD_KINDS: [(Kind, &str); 5] = [
    (Kind::VirtualService, "virtualservices"),
    (Kind::DestinationRule, "destinationrules"),
    (Kind::Gateway, "gateways"),
    (Kind::ServiceEntry, "serviceentries"),
    (Kind::Telemetry, "telemetries"),
];

/// The CRD-served kinds only our group has (no Istio counterpart), with their plurals.
pub const AMIME_ONLY_CRD_KINDS: [(Kind, &str); 1] = [(Kind::RateLimit, "ratelimits")];

/// Versions meshd reads of a feed, most preferred first.
pub fn versions(feed: FeedId) -> &'static [&'static str] {
    match (feed.group, feed.kind) {
        (Group::Amime, _) => &["v1"],
        (Group::Istio, Kind::Telemetry) => &["v1", "v1alpha1"],
        (Group::Istio, _) => &["v1", "v1beta1", "v1alpha3"],
        (Group::Core | Group::Discovery, _) => &[],
    }
}

/// The CRD names meshd watches, with the feed each one serves.
pub fn crd_names() -> Vec<(String, FeedId)> {
    let mut out = Vec::new();
    for group in [Group::Amime, Group::Istio] {
        for (kind, plural) in CRD_KINDS {
            let feed = FeedId::new(kind, group);
            out.push((format!("{plural}.{}", feed.api_group()), feed));
        }
    }
    for (kind, plural) in AMIME_ONLY_CRD_KINDS {
        let feed = FeedId::new(kind, Group::Amime);
        out.push((format!("{plural}.{}", feed.api_group()), feed));
    }
    out
}

/// What to watch for one CRD: the version and plural.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub version: String,
    pub plural: String,
}

/// The version to watch for `feed` given its CRD object, if it is usable.
pub fn served(feed: FeedId, crd: &Value) -> Option<Served> {
    let established = crd.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| {
        cs.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Established")
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
    });
    if !established {
        return None;
    }
    let served: BTreeSet<&str> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)?
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(false))
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .collect();
    let version = versions(feed).iter().find(|v| served.contains(**v))?;
    let plural = crd.pointer("/spec/names/plural").and_then(Value::as_str)?;
    Some(Served { version: (*version).to_owned(), plural: plural.to_owned() })
}

/// A change to the set of watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchChange {
    /// Watch `feed` at this version (restart it if it runs at another).
    Start(FeedId, Served),
    /// Stop watching `feed` and drop its objects.
    Stop(FeedId),
}

#[derive(Clone, Debug, Default)]
struct CrdState {
    served: Option<Served>,
    relist_seen: Option<bool>,
    synced: bool,
}

/// The CRDs of interest, as last seen.
#[derive(Clone, Debug)]
pub struct Discovery {
    crds: BTreeMap<String, (FeedId, CrdState)>,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery { crds: crd_names().into_iter().map(|(name, feed)| (name, (feed, CrdState::default()))).collect() }
    }
}

impl Discovery {
    pub fn new() -> Discovery {
        Discovery::default()
    }

    /// The CRD names watched.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.crds.keys().map(String::as_str)
    }

    /// CRD watches whose initial list has not completed.
    pub fn pending(&self) -> Vec<String> {
        self.crds.iter().filter(|(_, (_, s))| !s.synced).map(|(n, _)| n.clone()).collect()
    }

    /// Applies one event of the watch on CRD `name`.
    pub fn handle(&mut self, name: &str, event: WatchEvent) -> Option<WatchChange> {
        let (feed, state) = self.crds.get_mut(name)?;
        let feed = *feed;
        let now = match event {
            WatchEvent::Init => {
                state.relist_seen = Some(false);
                return None;
            }
            WatchEvent::InitApply(crd) | WatchEvent::Apply(crd) => {
                if crd.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
                    return None;
                }
                if let Some(seen) = &mut state.relist_seen {
                    *seen = true;
                }
                served(feed, &crd)
            }
            WatchEvent::Delete(_) => None,
            WatchEvent::InitDone => {
                state.synced = true;
                match state.relist_seen.take() {
                    Some(false) => None,
                    _ => return None,
                }
            }
        };
        if now == state.served {
            return None;
        }
        let was = std::mem::replace(&mut state.served, now.clone());
        match now {
            Some(served) => Some(WatchChange::Start(feed, served)),
            None => was.map(|_| WatchChange::Stop(feed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(name: &str, versions: &[(&str, bool)], established: bool) -> Value {
        let plural = name.split('.').next().unwrap();
        json!({
            "metadata": {"name": name},
            "spec": {"names": {"plural": plural},
                     "versions": versions.iter().map(|(v, s)| json!({"name": v, "served": s})).collect::<Vec<_>>()},
            "status": {"conditions": [{"type": "Established", "status": if established { "True" } else { "False" }}]}
        })
    }

    const VS: &str = "virtualservices.networking.istio.io";
    const ISTIO_VS: FeedId = FeedId::new(Kind::VirtualService, Group::Istio);

    fn start(version: &str) -> Option<WatchChange> {
        Some(WatchChange::Start(
            FeedId::new(Kind::VirtualService, Group::Istio),
            Served { version: version.into(), plural: "virtualservices".into() },
        ))
    }

    #[test]
    fn the_preferred_served_version_is_watched() {
        type Case = (&'static [(&'static str, bool)], Option<&'static str>);
        let cases: [Case; 5] = [
            (&[("v1alpha3", true), ("v1beta1", true), ("v1", true)], Some("v1")),
            (&[("v1alpha3", true), ("v1beta1", true), ("v1", false)], Some("v1beta1")),
            (&[("v1alpha3", true)], Some("v1alpha3")),
            (&[("v2", true)], None),
            (&[], None),
        ];
        for (versions, want) in cases {
            let got = served(ISTIO_VS, &crd(VS, versions, true)).map(|s| s.version);
            assert_eq!(got.as_deref(), want, "{versions:?}");
        }
        assert_eq!(served(ISTIO_VS, &crd(VS, &[("v1", true)], false)), None, "not established");
        let amime_vs = FeedId::new(Kind::VirtualService, Group::Amime);
        assert_eq!(served(amime_vs, &crd("virtualservices.networking.amime.dev", &[("v1beta1", true)], true)), None);
    }

    #[test]
    fn telemetry_is_watched_in_its_own_groups() {
        let names: Vec<String> = crd_names().into_iter().map(|(n, _)| n).collect();
        for name in ["telemetries.telemetry.amime.dev", "telemetries.telemetry.istio.io"] {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }
        let istio = FeedId::new(Kind::Telemetry, Group::Istio);
        assert_eq!(istio.to_string(), "Telemetry.telemetry.istio.io");
        let name = "telemetries.telemetry.istio.io";
        type Case = (&'static [(&'static str, bool)], Option<&'static str>);
        let cases: [Case; 3] = [
            (&[("v1alpha1", true), ("v1", true)], Some("v1")),
            (&[("v1alpha1", true)], Some("v1alpha1")),
            (&[("v1beta1", true)], None),
        ];
        for (versions, want) in cases {
            assert_eq!(served(istio, &crd(name, versions, true)).map(|s| s.version).as_deref(), want, "{versions:?}");
        }
    }

    #[test]
    fn crds_appearing_changing_and_disappearing_start_and_stop_watches() {
        let mut d = Discovery::new();
        assert_eq!(d.pending().len(), crd_names().len());
        let stop = Some(WatchChange::Stop(FeedId::new(Kind::VirtualService, Group::Istio)));
        let steps = [
            (WatchEvent::Init, None),
            (WatchEvent::InitDone, None), // absent at startup: nothing to watch
            (WatchEvent::Apply(crd(VS, &[("v1beta1", true)], false)), None), // not yet established
            (WatchEvent::Apply(crd(VS, &[("v1beta1", true)], true)), start("v1beta1")),
            (WatchEvent::Apply(crd(VS, &[("v1beta1", true)], true)), None),
            (WatchEvent::Apply(crd(VS, &[("v1beta1", true), ("v1", true)], true)), start("v1")),
            // A relist that sees it again changes nothing; one that does not stops it.
            (WatchEvent::Init, None),
            (WatchEvent::InitApply(crd(VS, &[("v1", true)], true)), None),
            (WatchEvent::InitDone, None),
            (WatchEvent::Init, None),
            (WatchEvent::InitDone, stop.clone()),
            (WatchEvent::Apply(crd(VS, &[("v1", true)], true)), start("v1")),
            (WatchEvent::Delete(crd(VS, &[("v1", true)], true)), stop),
            (WatchEvent::Delete(crd(VS, &[("v1", true)], true)), None),
        ];
        for (i, (event, want)) in steps.into_iter().enumerate() {
            assert_eq!(d.handle(VS, event), want, "step {i}");
        }
        assert_eq!(d.pending().len(), crd_names().len() - 1, "only the one CRD watch has listed");
        assert_eq!(d.handle("other.example.com", WatchEvent::InitDone), None);
    }
}
