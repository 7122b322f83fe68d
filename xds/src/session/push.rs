//! The push policy: what must change for a proxy to hold a set, and the diffs that
//! proxies in the same position share.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::resource::{Resource, ResourceSet};

use super::stream::{ClientView, Subscription, TypeState};

#[derive(Clone, Debug, Default)]
pub(super) struct Diff {
    pub(super) upserts: Vec<Arc<Resource>>,
    pub(super) removals: Vec<String>,
    /// Resources the proxy has and keeps (unchanged), needed for full-state responses.
    pub(super) unchanged: Vec<Arc<Resource>>,
}

impl Diff {
    pub(super) fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// What identifies a diff that any proxy in the same position shares: the set it
/// holds, the new set and its subscription (all shared objects). `None` when the
/// proxy's position is its own (names just subscribed, versions from a reconnect).
pub(super) fn shared_diff_key(state: &TypeState, set: &Arc<ResourceSet>) -> Option<DiffKey> {
    if !state.forced.is_empty() || state.owes_response {
        return None;
    }
    let ClientView::Set(old) = &state.view else { return None };
    let subscription = match &state.subscription {
        Subscription::Wildcard => None,
        Subscription::Names(names) => Some(names.clone()),
    };
    Some(DiffKey { old: old.clone(), new: set.clone(), subscription })
}

/// Addresses of the three shared objects that determine a diff.
type DiffAddresses = (usize, usize, usize);

/// Key of a shared diff. Holding the `Arc`s keeps their addresses from being reused
/// while the entry lives, so comparing addresses is sound.
pub(super) struct DiffKey {
    pub(super) old: Arc<ResourceSet>,
    pub(super) new: Arc<ResourceSet>,
    pub(super) subscription: Option<Arc<BTreeSet<String>>>,
}

impl DiffKey {
    fn addresses(&self) -> DiffAddresses {
        (
            Arc::as_ptr(&self.old) as usize,
            Arc::as_ptr(&self.new) as usize,
            self.subscription.as_ref().map_or(0, |s| Arc::as_ptr(s) as usize),
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
        if let Some((_, d)) = self.entries.lock().unwrap_or_else(|e| e.into_inner()).get(&addresses) {
            return d.clone();
        }
        let d = Arc::new(compute());
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
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
        && !state.removals_held
        && matches!(&state.view, ClientView::Set(v) if Arc::ptr_eq(v, set) || v.version() == set.version())
}

/// What must change for the proxy to hold `set` (restricted to its subscription).
pub(super) fn diff(state: &TypeState, set: &ResourceSet) -> Diff {
    let mut d = Diff::default();
    let consider = |name: &str, d: &mut Diff| match set.get(name) {
        Some(r) => {
            if state.forced.contains(name) || state.view.version_of(name) != Some(r.version()) {
                d.upserts.push(r.clone());
            } else {
                d.unchanged.push(r.clone());
            }
        }
        None => {
            if state.view.version_of(name).is_some() || state.forced.contains(name) {
                d.removals.push(name.to_owned());
            }
        }
    };
    match &state.subscription {
        Subscription::Wildcard => {
            for r in set.iter() {
                consider(r.name(), &mut d);
            }
            match &state.view {
                ClientView::Nothing => {}
                ClientView::Set(old) => {
                    d.removals.extend(old.names().filter(|n| set.get(n).is_none()).map(|n| n.to_string()))
                }
                ClientView::Versions(v) => d.removals.extend(v.keys().filter(|n| set.get(n).is_none()).cloned()),
            }
        }
        Subscription::Names(names) => {
            for name in names.iter() {
                consider(name, &mut d);
            }
        }
    }
    // Forced names outside the subscription cannot exist; keep removals unique.
    d.removals.sort();
    d.removals.dedup();
    debug_assert!(d.upserts.iter().all(|r| state.subscription.contains(r.name())));
    d
}
