//! The push policy: what must change for a proxy to hold a set, and the diffs that
//! proxies in the same position share.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::resource::{Resource, ResourceSet};

use super::stream::{ClientView, TypeState};

#[derive(Clone, Debug, Default)]
pub(super) struct Diff {
    pub(super) upserts: Vec<Arc<Resource>>,
    pub(super) removals: Vec<String>,
    /// Resources the proxy has and keeps (unchanged), needed for full-state responses.
    pub(super) unchanged: Vec<Arc<Resource>>,
    /// Clusters only: the ClusterLoadAssignments the new or changed EDS clusters among
    /// the upserts wait for. Shared by every proxy that gets this diff.
    pub(super) endpoints_awaited: Option<Arc<BTreeSet<Arc<str>>>>,
    /// The response body for this diff, per API (state of the world, delta), encoded by
    /// the first proxy that sends it; a diff changed for one proxy must reset it.
    pub(super) encoded: [std::sync::OnceLock<bytes::Bytes>; 2],
}

impl Diff {
    pub(super) fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// What identifies a diff that any proxy in the same position shares: the set it
/// holds, the new set, its subscription and the assignments to resend (all shared
/// objects). `None` when the proxy's position is its own (names just subscribed,
/// versions from a reconnect, a NACK).
pub(super) fn shared_diff_key(state: &TypeState, set: &Arc<ResourceSet>) -> Option<DiffKey> {
    if !state.forced.is_empty() || state.owes_response {
        return None;
    }
    let ClientView::Set(old) = &state.view else { return None };
    Some(DiffKey {
        old: old.clone(),
        new: set.clone(),
        wildcard: state.subscription.wildcard,
        names: state.subscription.names.clone(),
        resend: state.resend.clone(),
    })
}

/// Addresses of the shared objects that determine a diff, and the wildcard flag.
type DiffAddresses = (usize, usize, usize, usize, bool);

/// Key of a shared diff. Holding the `Arc`s keeps their addresses from being reused
/// while the entry lives, so comparing addresses is sound.
pub(super) struct DiffKey {
    old: Arc<ResourceSet>,
    new: Arc<ResourceSet>,
    wildcard: bool,
    names: Arc<BTreeSet<String>>,
    resend: Option<Arc<BTreeSet<Arc<str>>>>,
}

impl DiffKey {
    fn addresses(&self) -> DiffAddresses {
        (
            Arc::as_ptr(&self.old) as usize,
            Arc::as_ptr(&self.new) as usize,
            Arc::as_ptr(&self.names) as usize,
            self.resend.as_ref().map_or(0, |s| Arc::as_ptr(s) as usize),
            self.wildcard,
        )
    }
}

/// Recently computed diffs, shared by all connections of a server. Small and
/// short-lived: a push computes a handful (one per distinct position) and the next
/// push needs new ones.
#[derive(Default)]
pub(crate) struct DiffCache {
    pub(super) entries: std::sync::Mutex<HashMap<DiffAddresses, (DiffKey, Arc<Diff>)>>,
}

impl std::fmt::Debug for DiffCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffCache").finish_non_exhaustive()
    }
}

impl DiffCache {
    const MAX_ENTRIES: usize = 256;

    pub(super) fn get_or_compute(&self, key: DiffKey, compute: impl FnOnce() -> Diff) -> Arc<Diff> {
        let addresses = key.addresses();
        if let Some((_, d)) = crate::sync::lock(&self.entries).get(&addresses) {
            return d.clone();
        }
        let d = Arc::new(compute());
        let mut entries = crate::sync::lock(&self.entries);
        if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(addresses, (key, d.clone()));
        d
    }
}

/// True when the proxy holds exactly `set` and owes nothing: no work to do.
pub(super) fn in_sync(state: &TypeState, set: &Arc<ResourceSet>) -> bool {
    !state.owes_response
        && state.forced.is_empty()
        && state.resend.is_none()
        && !state.removals_held
        && matches!(&state.view, ClientView::Set(v) if Arc::ptr_eq(v, set) || v.version() == set.version())
}

/// What must change for the proxy to hold `set` (restricted to its subscription).
pub(super) fn diff(state: &TypeState, set: &ResourceSet) -> Diff {
    let mut d = Diff::default();
    let must_send = |name: &str| state.forced.contains(name) || state.resend.as_ref().is_some_and(|r| r.contains(name));
    let consider = |name: &str, d: &mut Diff| match set.get(name) {
        Some(r) => {
            if must_send(name) || state.view.version_of(name) != Some(r.version()) {
                d.upserts.push(r.clone());
            } else {
                d.unchanged.push(r.clone());
            }
        }
        None => {
            if state.view.may_hold(name) || must_send(name) {
                d.removals.push(name.to_owned());
            }
        }
    };
    let subscription = &state.subscription;
    if subscription.wildcard {
        for r in set.iter() {
            consider(r.name(), &mut d);
        }
        for name in subscription.names.iter().filter(|n| set.get(n).is_none()) {
            consider(name, &mut d);
        }
        match &state.view {
            ClientView::Set(old) => {
                d.removals.extend(old.names().filter(|n| set.get(n).is_none()).map(|n| n.to_string()))
            }
            view => d.removals.extend(view.names().into_iter().filter(|n| set.get(n).is_none())),
        }
    } else {
        for name in subscription.names.iter() {
            consider(name, &mut d);
        }
    }
    // Forced names outside the subscription cannot exist; keep removals unique.
    d.removals.sort();
    d.removals.dedup();
    let awaited: BTreeSet<Arc<str>> = d.upserts.iter().filter_map(|r| r.endpoints_name().cloned()).collect();
    if !awaited.is_empty() {
        d.endpoints_awaited = Some(Arc::new(awaited));
    }
    debug_assert!(d.upserts.iter().all(|r| subscription.contains(r.name())));
    d
}
