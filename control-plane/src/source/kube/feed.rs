//! The Kubernetes source's state, as plain data: what each watched resource ("feed")
//! last delivered, turned into index changes and diagnostics. No client, no runtime:
//! watch events go in ([`Model::handle`]), index changes and problems come out.
//!
//! Rules it keeps:
//! - every object goes through the one validation path ([`parse_object`]); only the
//!   parsed [`MeshObject`] is kept (plus, for our CRD objects, the few fields status
//!   writing compares: generation and the current `Accepted` condition);
//! - an object whose new version is invalid keeps its last good version in the index;
//!   the error says so;
//! - a relist (`Init` … `InitDone`, after a restart, a `410 Gone` or an API-server
//!   restart) applies objects as they come and deletes only at `InitDone` what it did
//!   not see: served config never drops in between, and a relist that finds nothing new
//!   changes nothing ([`Change::Unchanged`], so no push);
//! - the same kind and name in both groups (`networking.amime.dev` and
//!   `networking.istio.io`; `telemetry.amime.dev` and `telemetry.istio.io`): the amime object wins, whether valid or not (a broken amime
//!   object never falls back to the Istio one silently); the Istio one is ignored and
//!   reported, naming both ([`collision_problem`]).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::model::index::{Change, Index};
use crate::model::parse::Parsed;
use crate::model::{parse_object, Diagnostic, Kind, MeshObject, ObjectKey, RawObject, Severity};

use super::status::{accepted_condition, Condition};

/// The API group a feed reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    Core,
    Discovery,
    Amime,
    Istio,
}

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Group::Core => "",
            Group::Discovery => "discovery.k8s.io",
            Group::Amime => "networking.amime.dev",
            Group::Istio => "networking.istio.io",
        }
    }

    /// The group of a CRD-served kind whose objects compete for the same keys.
    fn rival(self) -> Option<Group> {
        match self {
            Group::Amime => Some(Group::Istio),
            Group::Istio => Some(Group::Amime),
            Group::Core | Group::Discovery => None,
        }
    }
}

/// One watched resource: a kind in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedId {
    pub kind: Kind,
    pub group: Group,
}

impl FeedId {
    pub const fn new(kind: Kind, group: Group) -> FeedId {
        FeedId { kind, group }
    }

    /// The API group of this feed's resource: its group's, except for Telemetry, which
    /// Amime and Istio serve in a group of its own (`telemetry.amime.dev`,
    /// `telemetry.istio.io`).
    pub fn api_group(self) -> &'static str {
        match (self.kind, self.group) {
            (Kind::Telemetry, Group::Amime) => crate::crd::TELEMETRY_GROUP,
            (Kind::Telemetry, Group::Istio) => crate::crd::ISTIO_TELEMETRY_GROUP,
            (_, group) => group.name(),
        }
    }

    /// Whether objects of this feed are our (or Istio's) CRD objects, which get status.
    pub fn has_status(self) -> bool {
        matches!(self.group, Group::Amime | Group::Istio)
    }
}

impl std::fmt::Display for FeedId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.group {
            Group::Core => write!(f, "{}", self.kind),
            _ => write!(f, "{}.{}", self.kind, self.api_group()),
        }
    }
}

/// The built-in feeds, always watched.
pub const CORE_FEEDS: [FeedId; 6] = [
    FeedId::new(Kind::Namespace, Group::Core),
    FeedId::new(Kind::Node, Group::Core),
    FeedId::new(Kind::Service, Group::Core),
    FeedId::new(Kind::Pod, Group::Core),
    FeedId::new(Kind::EndpointSlice, Group::Discovery),
    FeedId::new(Kind::Secret, Group::Core),
];

/// A watch event with its object as JSON (what kube's watcher yields, as plain data).
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent {
    Init,
    InitApply(Value),
    InitDone,
    Apply(Value),
    Delete(Value),
}

/// What status writing needs of one CRD object: nothing else of it is kept.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tracked {
    /// `metadata.uid`: tells an object from one deleted and created again by the same name.
    pub uid: String,
    pub generation: i64,
    /// `status.conditions[type=Accepted]`, as the object carries it now.
    pub accepted: Option<Condition>,
    /// `status.observedGeneration`.
    pub observed_generation: Option<i64>,
}

impl Tracked {
    fn of(body: &Value) -> Tracked {
        let int = |v: &Value| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
        Tracked {
            uid: body.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_owned(),
            generation: body.pointer("/metadata/generation").and_then(int).unwrap_or(0),
            accepted: accepted_condition(body.get("status")),
            observed_generation: body.pointer("/status/observedGeneration").and_then(int),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Entry {
    /// The last good version (what the index holds for this object, unless a rival wins).
    good: Option<MeshObject>,
    /// Only for feeds with status.
    tracked: Option<Tracked>,
}

/// (namespace, name); namespace empty for Namespaces.
pub type Name = (String, String);

#[derive(Clone, Debug)]
struct Feed {
    /// The version watched (the preferred one the CRD serves).
    version: String,
    /// Resource name in URLs, for status writes.
    plural: String,
    objects: BTreeMap<Name, Entry>,
    /// During a relist: the names seen so far.
    relist: Option<BTreeSet<Name>>,
    synced: bool,
}

/// What one call changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The index changed (the push loop has work).
    pub changed: bool,
    /// The problems ([`Model::problems`]) changed.
    pub problems: bool,
    /// Something status writing compares changed (objects, generations, conditions).
    pub status: bool,
}

impl Outcome {
    pub fn merge(&mut self, other: Outcome) {
        self.changed |= other.changed;
        self.problems |= other.problems;
        self.status |= other.status;
    }

    pub fn change(self) -> Change {
        if self.changed {
            Change::Changed
        } else {
            Change::Unchanged
        }
    }
}

/// One CRD object status writing looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusTarget {
    pub feed: FeedId,
    pub version: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
    pub tracked: Tracked,
    /// Its parse diagnostics (errors and warnings).
    pub problems: Vec<Diagnostic>,
    /// Set when the same object in the other group wins: that object's group.
    pub shadowed_by: Option<Group>,
    /// Its last good version (what the index holds for it unless shadowed).
    pub good: Option<MeshObject>,
}

/// Every feed's state.
#[derive(Clone, Debug, Default)]
pub struct Model {
    feeds: BTreeMap<FeedId, Feed>,
    /// Diagnostics per object, only for objects that have some.
    problems: BTreeMap<(FeedId, Name), Vec<Diagnostic>>,
}

fn key_of(feed: FeedId, name: &Name) -> ObjectKey {
    ObjectKey { kind: feed.kind, namespace: name.0.clone(), name: name.1.clone() }
}

impl Model {
    pub fn new() -> Model {
        Model::default()
    }

    /// Starts tracking `feed` (served at `version`), or changes the version of a feed
    /// already tracked (its objects stay until the new watch's relist says otherwise).
    pub fn add_feed(&mut self, feed: FeedId, version: &str, plural: &str) {
        let entry = self.feeds.entry(feed).or_insert_with(|| Feed {
            version: String::new(),
            plural: String::new(),
            objects: BTreeMap::new(),
            relist: None,
            synced: false,
        });
        entry.version = version.to_owned();
        entry.plural = plural.to_owned();
    }

    /// Stops tracking `feed` (its CRD was deleted): its objects leave the index (a rival
    /// group's object of the same name takes their place) and their problems go.
    pub fn remove_feed(&mut self, feed: FeedId, index: &mut Index) -> Outcome {
        let Some(removed) = self.feeds.remove(&feed) else {
            return Outcome::default();
        };
        let mut out = Outcome { status: feed.has_status(), ..Outcome::default() };
        let before = self.problems.len();
        self.problems.retain(|(f, _), _| *f != feed);
        out.problems = before != self.problems.len() || feed.has_status();
        for name in removed.objects.keys() {
            out.changed |= self.resolve(feed, name, index) == Change::Changed;
        }
        out
    }

    pub fn has_feed(&self, feed: FeedId) -> bool {
        self.feeds.contains_key(&feed)
    }

    /// The feeds whose initial list has not completed.
    pub fn pending(&self) -> Vec<FeedId> {
        self.feeds.iter().filter(|(_, f)| !f.synced).map(|(id, _)| *id).collect()
    }

    /// Applies one watch event of `feed` to the model and `index`.
    pub fn handle(&mut self, feed: FeedId, event: WatchEvent, index: &mut Index) -> Outcome {
        let Some(state) = self.feeds.get_mut(&feed) else {
            return Outcome::default(); // a stopped feed's late event
        };
        match event {
            WatchEvent::Init => {
                state.relist = Some(BTreeSet::new());
                Outcome::default()
            }
            WatchEvent::InitApply(body) | WatchEvent::Apply(body) => self.apply(feed, body, index),
            WatchEvent::Delete(body) => match name_of(feed, &body) {
                Some(name) => self.delete(feed, &name, index),
                None => Outcome::default(),
            },
            WatchEvent::InitDone => {
                state.synced = true;
                let Some(seen) = state.relist.take() else {
                    return Outcome::default();
                };
                let gone: Vec<Name> = state.objects.keys().filter(|n| !seen.contains(*n)).cloned().collect();
                let mut out = Outcome::default();
                for name in gone {
                    out.merge(self.delete(feed, &name, index));
                }
                out
            }
        }
    }

    fn apply(&mut self, feed: FeedId, body: Value, index: &mut Index) -> Outcome {
        let tracked = feed.has_status().then(|| Tracked::of(&body));
        let raw = match RawObject::from_value(body) {
            Ok(raw) => raw,
            Err(e) => {
                tracing::warn!(feed = %feed, error = %e, "object without a name from the API server; skipped");
                return Outcome::default();
            }
        };
        let name = name_of_raw(feed, &raw);
        let state = self.feeds.get_mut(&feed).expect("handle checked the feed");
        if let Some(seen) = &mut state.relist {
            seen.insert(name.clone());
        }
        let is_new = !state.objects.contains_key(&name);
        let entry = state.objects.entry(name.clone()).or_default();
        let mut out = Outcome { status: feed.has_status() && entry.tracked != tracked, ..Outcome::default() };
        entry.tracked = tracked;
        let mut problems = match parse_object(&raw) {
            Ok(Parsed::Object(object, warnings)) if object.key() == key_of(feed, &name) => {
                entry.good = Some(object);
                warnings
            }
            Ok(Parsed::Object(object, _)) => vec![Diagnostic::at_object(
                Severity::Error,
                &raw.kind,
                &name.0,
                &name.1,
                "kind",
                format!("read as {} from the {feed} watch; ignored", object.key()),
            )],
            Ok(Parsed::Skipped(note)) => vec![note],
            Err(mut e) => {
                if entry.good.is_some() {
                    e.message.push_str("; its last good state stays in force");
                }
                vec![e]
            }
        };
        problems.sort();
        out.problems = self.set_problems(feed, &name, problems);
        out.problems |= is_new && self.rival_holds(feed, &name);
        out.status |= out.problems;
        out.changed = self.resolve(feed, &name, index) == Change::Changed;
        if out.changed {
            tracing::debug!(feed = %feed, namespace = %name.0, name = %name.1, "object changed the model");
        }
        out
    }

    fn delete(&mut self, feed: FeedId, name: &Name, index: &mut Index) -> Outcome {
        let state = self.feeds.get_mut(&feed).expect("handle checked the feed");
        if state.objects.remove(name).is_none() {
            return Outcome::default();
        }
        let mut out = Outcome { status: feed.has_status(), ..Outcome::default() };
        out.problems = self.set_problems(feed, name, Vec::new()) || self.rival_holds(feed, name);
        out.changed = self.resolve(feed, name, index) == Change::Changed;
        if out.changed {
            tracing::debug!(feed = %feed, namespace = %name.0, name = %name.1, "object removed from the model");
        }
        out
    }

    fn set_problems(&mut self, feed: FeedId, name: &Name, problems: Vec<Diagnostic>) -> bool {
        let slot = (feed, name.clone());
        if problems.is_empty() {
            self.problems.remove(&slot).is_some()
        } else if self.problems.get(&slot) == Some(&problems) {
            false
        } else {
            self.problems.insert(slot, problems);
            true
        }
    }

    fn rival_holds(&self, feed: FeedId, name: &Name) -> bool {
        feed.group.rival().is_some_and(|g| self.entry(FeedId::new(feed.kind, g), name).is_some())
    }

    fn entry(&self, feed: FeedId, name: &Name) -> Option<&Entry> {
        self.feeds.get(&feed)?.objects.get(name)
    }

    /// The object the index should hold for `name` of `feed`'s kind: the amime group's
    /// if it has the object (its last good version, or nothing), else the Istio group's.
    fn winner(&self, feed: FeedId, name: &Name) -> Option<&MeshObject> {
        let amime = FeedId::new(feed.kind, Group::Amime);
        let istio = FeedId::new(feed.kind, Group::Istio);
        match feed.group {
            Group::Amime | Group::Istio => match self.entry(amime, name) {
                Some(entry) => entry.good.as_ref(),
                None => self.entry(istio, name)?.good.as_ref(),
            },
            _ => self.entry(feed, name)?.good.as_ref(),
        }
    }

    /// Makes the index hold the winner for `name` (or nothing).
    fn resolve(&self, feed: FeedId, name: &Name, index: &mut Index) -> Change {
        match self.winner(feed, name) {
            Some(object) => index.apply(object.clone()),
            None => index.delete(&key_of(feed, name)),
        }
    }

    /// Every object's diagnostics, and one per Istio object shadowed by an amime one.
    pub fn problems(&self) -> Vec<Diagnostic> {
        let mut out: Vec<Diagnostic> = self.problems.values().flatten().cloned().collect();
        for (id, feed) in &self.feeds {
            if id.group != Group::Istio {
                continue;
            }
            let amime = FeedId::new(id.kind, Group::Amime);
            for name in feed.objects.keys().filter(|n| self.entry(amime, n).is_some()) {
                out.push(collision_problem(*id, &feed.version, name, self.feeds[&amime].version.as_str()));
            }
        }
        out
    }

    /// Every CRD object with what status writing compares.
    pub fn status_targets(&self) -> Vec<StatusTarget> {
        let mut out = Vec::new();
        for (id, feed) in self.feeds.iter().filter(|(id, _)| id.has_status()) {
            for (name, entry) in &feed.objects {
                let shadowed_by = (id.group == Group::Istio
                    && self.entry(FeedId::new(id.kind, Group::Amime), name).is_some())
                .then_some(Group::Amime);
                out.push(StatusTarget {
                    feed: *id,
                    version: feed.version.clone(),
                    plural: feed.plural.clone(),
                    namespace: name.0.clone(),
                    name: name.1.clone(),
                    tracked: entry.tracked.clone().unwrap_or_default(),
                    problems: self.problems.get(&(*id, name.clone())).cloned().unwrap_or_default(),
                    shadowed_by,
                    good: entry.good.clone(),
                });
            }
        }
        out
    }

    /// How many objects the model tracks (for logs).
    pub fn len(&self) -> usize {
        self.feeds.values().map(|f| f.objects.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The diagnostic for an Istio-group object ignored because the amime group has one of
/// the same kind and name.
pub fn collision_problem(feed: FeedId, version: &str, name: &Name, amime_version: &str) -> Diagnostic {
    Diagnostic::at_object(
        Severity::Error,
        &feed.kind.to_string(),
        &name.0,
        &name.1,
        "metadata.name",
        format!(
            "{kind} {ns}/{n} exists in both {istio}/{version} and {amime}/{amime_version}; the \
             {amime} one is used and this {istio} one is ignored (rename or delete one of them)",
            kind = feed.kind,
            ns = name.0,
            n = name.1,
            istio = FeedId::new(feed.kind, Group::Istio).api_group(),
            amime = FeedId::new(feed.kind, Group::Amime).api_group(),
        ),
    )
}

fn name_of_raw(feed: FeedId, raw: &RawObject) -> Name {
    let namespace = if feed.kind.is_cluster_scoped() {
        String::new()
    } else {
        raw.namespace.clone().unwrap_or_else(|| "default".to_owned())
    };
    (namespace, raw.name.clone())
}

fn name_of(feed: FeedId, body: &Value) -> Option<Name> {
    let text = |p: &str| body.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let name = text("/metadata/name")?;
    let namespace = if feed.kind.is_cluster_scoped() {
        String::new()
    } else {
        text("/metadata/namespace").unwrap_or("default".into())
    };
    Some((namespace, name))
}

#[cfg(test)]
#[path = "feed_tests.rs"]
mod tests;
