//! The per-connection xDS protocol state machine, free of I/O.
//!
//! A [`Session`] takes requests from one proxy's stream and snapshots from the control
//! plane, and returns the responses to send, in order. State of the world and delta
//! share it: both kinds of request are normalized first, and only the response
//! encoding differs.
//!
//! Rules it keeps:
//! - Every response carries a fresh nonce. A request whose nonce is not the last one
//!   sent for its type is stale: its ACK/NACK is ignored (delta subscription changes
//!   still apply, since they are incremental).
//! - An ACK records the acknowledged version; a NACK records the version and Envoy's
//!   message and is not answered: the same content is never re-pushed, the type waits
//!   for a snapshot that differs.
//! - Only what changed is sent: wildcard types (CDS, LDS) in state of the world carry
//!   the full set, as the protocol requires; named types and all delta responses carry
//!   only the resources whose version differs from what the proxy has.
//! - Make-before-break: types go out in [`ResourceType::ALL`] order, so clusters come
//!   before the routes that use them; and removing clusters waits until the listener
//!   and route updates of the same push are acknowledged, so no route ever points at a
//!   cluster the proxy no longer has.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource as DeltaResource,
};
use prost::Message;

use crate::resource::{Resource, ResourceSet, ResourceType, Snapshot};
use crate::status::{now_millis, ConnectionRegistry, ConnectionStatus, Nack, XdsApi, XdsStats};

/// A response to put on the stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Sotw(DiscoveryResponse),
    Delta(DeltaDiscoveryResponse),
}

impl Response {
    pub fn type_url(&self) -> &str {
        match self {
            Response::Sotw(r) => &r.type_url,
            Response::Delta(r) => &r.type_url,
        }
    }

    pub fn nonce(&self) -> &str {
        match self {
            Response::Sotw(r) => &r.nonce,
            Response::Delta(r) => &r.nonce,
        }
    }
}

/// What a proxy asked for, whichever protocol it speaks.
#[derive(Debug, Default)]
struct NormalizedRequest {
    type_url: String,
    nonce: String,
    version_info: String,
    error: Option<String>,
    /// State of the world: the complete list of names (empty = wildcard for CDS/LDS).
    sotw_names: Option<Vec<String>>,
    subscribe: Vec<String>,
    unsubscribe: Vec<String>,
    initial_versions: HashMap<String, String>,
}

impl From<DiscoveryRequest> for NormalizedRequest {
    fn from(r: DiscoveryRequest) -> Self {
        NormalizedRequest {
            type_url: r.type_url,
            nonce: r.response_nonce,
            version_info: r.version_info,
            error: r.error_detail.map(|s| s.message),
            sotw_names: Some(r.resource_names),
            ..Default::default()
        }
    }
}

impl From<DeltaDiscoveryRequest> for NormalizedRequest {
    fn from(r: DeltaDiscoveryRequest) -> Self {
        NormalizedRequest {
            type_url: r.type_url,
            nonce: r.response_nonce,
            error: r.error_detail.map(|s| s.message),
            subscribe: r.resource_names_subscribe,
            unsubscribe: r.resource_names_unsubscribe,
            initial_versions: r.initial_resource_versions,
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Subscription {
    Wildcard,
    /// Shared between connections that subscribe to the same names (see
    /// [`ConnectionRegistry::intern_names`]).
    Names(Arc<BTreeSet<String>>),
}

impl Subscription {
    fn contains(&self, name: &str) -> bool {
        match self {
            Subscription::Wildcard => true,
            Subscription::Names(names) => names.contains(name),
        }
    }
}

/// What the proxy holds of one type, as far as this session knows.
#[derive(Clone, Debug)]
enum ClientView {
    Nothing,
    /// The proxy holds the subscribed part of this set.
    Set(Arc<ResourceSet>),
    /// The proxy told us these versions when it (re)connected (delta only).
    Versions(HashMap<String, String>),
}

impl ClientView {
    fn version_of(&self, name: &str) -> Option<&str> {
        match self {
            ClientView::Nothing => None,
            ClientView::Set(set) => set.get(name).map(|r| r.version()),
            ClientView::Versions(v) => v.get(name).map(String::as_str),
        }
    }
}

#[derive(Debug)]
struct TypeState {
    subscription: Subscription,
    view: ClientView,
    /// Nonce and version of the last response not yet acknowledged.
    pending: Option<(String, String)>,
    /// Nonce of the last response sent, acknowledged or not: a request quoting it is
    /// current, not stale.
    last_nonce: String,
    /// The last answer was a NACK: the proxy kept older content than `view` says.
    nacked: bool,
    /// Delta only: earlier responses still unanswered (nonce, version), oldest first.
    /// Each delta response is a separate change, so a NACK of an earlier one matters
    /// even after a later one went out.
    in_flight: std::collections::VecDeque<(String, String)>,
    /// The proxy has asked and not yet had any answer: answer even with nothing.
    owes_response: bool,
    /// Names subscribed since the last response: send them whatever the view says.
    forced: BTreeSet<String>,
    /// Removals held back until dependent types are acknowledged.
    removals_held: bool,
}

#[derive(Clone, Debug, Default)]
struct Diff {
    upserts: Vec<Arc<Resource>>,
    removals: Vec<String>,
    /// Resources the proxy has and keeps (unchanged), needed for full-state responses.
    unchanged: Vec<Arc<Resource>>,
}

impl Diff {
    fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// The protocol state of one ADS stream.
pub struct Session {
    api: XdsApi,
    node_id: String,
    status: Arc<ConnectionStatus>,
    registry: ConnectionRegistry,
    snapshot: Option<Arc<Snapshot>>,
    types: BTreeMap<ResourceType, TypeState>,
    next_nonce: u64,
}

/// Errors that end a stream.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SessionError {
    #[error("type_url {0:?} in a delta request is not served by this server")]
    UnknownDeltaType(String),
}

impl Session {
    pub fn new(api: XdsApi, status: Arc<ConnectionStatus>, registry: ConnectionRegistry) -> Session {
        Session {
            api,
            node_id: status.node_id.clone(),
            status,
            registry,
            snapshot: None,
            types: BTreeMap::new(),
            next_nonce: 0,
        }
    }

    fn stats(&self) -> &XdsStats {
        self.registry.stats()
    }

    pub fn on_sotw_request(&mut self, request: DiscoveryRequest) -> Vec<Response> {
        self.on_request(request.into())
    }

    pub fn on_delta_request(&mut self, request: DeltaDiscoveryRequest) -> Vec<Response> {
        self.on_request(request.into())
    }

    /// A new snapshot from the control plane: push whatever differs.
    pub fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<Response> {
        for ty in ResourceType::ALL {
            let version = snapshot.set(ty).version().to_owned();
            if self.types.contains_key(&ty) {
                self.status.update(ty, |s| s.desired_version = Some(version));
            }
        }
        self.snapshot = Some(snapshot);
        self.push_all()
    }

    fn on_request(&mut self, req: NormalizedRequest) -> Vec<Response> {
        let Some(ty) = ResourceType::from_type_url(&req.type_url) else {
            tracing::debug!(node = %self.node_id, type_url = %req.type_url, "ignoring request for a type this server does not serve");
            return Vec::new();
        };
        let first = !self.types.contains_key(&ty);
        let state = self.types.entry(ty).or_insert_with(|| TypeState {
            subscription: Subscription::Names(Default::default()),
            view: ClientView::Nothing,
            pending: None,
            last_nonce: String::new(),
            nacked: false,
            in_flight: Default::default(),
            owes_response: true,
            forced: BTreeSet::new(),
            removals_held: false,
        });

        // ACK / NACK bookkeeping.
        let mut acked = false;
        // No response of this type was sent on this stream yet, so a nonce (kept by the
        // client from an earlier stream) acknowledges nothing; the request is still a
        // real subscription and must not be dropped half-registered.
        if !req.nonce.is_empty() && !first {
            match &state.pending {
                Some((nonce, version)) if *nonce == req.nonce => {
                    let version = version.clone();
                    state.pending = None;
                    state.in_flight.clear();
                    state.nacked = req.error.is_some();
                    acked = true;
                    if let Some(message) = &req.error {
                        self.registry.stats().nacks.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(node = %self.node_id, type_url = %req.type_url, nonce = %req.nonce,
                            version = %version, error = %message, "proxy rejected an update (NACK)");
                        let nack = Nack {
                            rejected_version: version,
                            nonce: req.nonce.clone(),
                            message: message.clone(),
                            at_ms: now_millis(),
                        };
                        self.status.update(ty, |s| s.last_nack = Some(nack));
                    } else {
                        self.registry.stats().acks.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(node = %self.node_id, type_url = %req.type_url, nonce = %req.nonce, version = %version, "ACK");
                        self.status.update(ty, |s| {
                            s.acked_version = Some(version);
                            s.acked_at_ms = Some(now_millis());
                            s.last_nack = None;
                        });
                    }
                }
                // The latest response, already answered: a new request on it (say,
                // changed resource_names in state of the world) is current.
                _ if req.nonce == state.last_nonce => {}
                _ if req.sotw_names.is_none() && state.in_flight.iter().any(|(n, _)| *n == req.nonce) => {
                    // Delta: the answer to an earlier response; it and older ones are settled.
                    let at = state.in_flight.iter().position(|(n, _)| *n == req.nonce).expect("present");
                    let (nonce, version) = state.in_flight.drain(..=at).next_back().expect("non-empty");
                    if let Some(message) = &req.error {
                        state.nacked = true;
                        self.registry.stats().nacks.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(node = %self.node_id, type_url = %req.type_url, nonce = %nonce,
                            version = %version, error = %message, "proxy rejected an update (NACK)");
                        let nack =
                            Nack { rejected_version: version, nonce, message: message.clone(), at_ms: now_millis() };
                        self.status.update(ty, |s| s.last_nack = Some(nack));
                    } else {
                        self.registry.stats().acks.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {
                    self.registry.stats().stale_nonces.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(node = %self.node_id, type_url = %req.type_url, nonce = %req.nonce, "stale nonce");
                    if req.sotw_names.is_some() {
                        // State of the world: a stale request is superseded by the one
                        // answering our latest response.
                        return Vec::new();
                    }
                }
            }
        }

        // Subscriptions.
        let state = self.types.get_mut(&ty).expect("inserted above");
        if let Some(names) = req.sotw_names {
            let new = if names.is_empty() && ty.is_wildcard_type() || names.iter().any(|n| n == "*") {
                Subscription::Wildcard
            } else {
                Subscription::Names(Arc::new(names.into_iter().collect()))
            };
            if let (Subscription::Names(old), Subscription::Names(new_names)) = (&state.subscription, &new) {
                state.forced.extend(new_names.difference(old).cloned());
            }
            state.subscription = new;
            if first && !req.version_info.is_empty() {
                // A reconnecting proxy: if it already has exactly the current set, it
                // needs nothing.
                if let Some(snapshot) = &self.snapshot {
                    let set = snapshot.set(ty);
                    if set.version() == req.version_info {
                        state.view = ClientView::Set(set.clone());
                        state.owes_response = false;
                        state.forced.clear();
                        // Nothing to send, but the proxy is in sync: say so.
                        let count = match &state.subscription {
                            Subscription::Wildcard => set.len(),
                            Subscription::Names(names) => names.iter().filter(|n| set.get(n).is_some()).count(),
                        };
                        let version = set.version().to_owned();
                        self.status.update(ty, |s| {
                            s.sent_version = Some(version.clone());
                            s.acked_version = Some(version.clone());
                            s.acked_at_ms = Some(now_millis());
                            s.desired_version = Some(version);
                            s.resource_count = count;
                        });
                    }
                }
            }
        } else {
            if first {
                if ty.is_wildcard_type() && req.subscribe.is_empty() {
                    state.subscription = Subscription::Wildcard;
                }
                if !req.initial_versions.is_empty() {
                    state.view = ClientView::Versions(req.initial_versions.clone());
                }
            }
            for name in req.subscribe {
                if name == "*" {
                    state.subscription = Subscription::Wildcard;
                    continue;
                }
                if let Subscription::Names(names) = &mut state.subscription {
                    if Arc::make_mut(names).insert(name.clone()) && !req.initial_versions.contains_key(&name) {
                        state.forced.insert(name);
                    }
                }
            }
            for name in req.unsubscribe {
                if name == "*" {
                    state.subscription = Subscription::Names(Default::default());
                } else if let Subscription::Names(names) = &mut state.subscription {
                    Arc::make_mut(names).remove(&name);
                    state.forced.remove(&name);
                }
            }
        }

        // Many proxies subscribe to the very same names: keep one copy.
        let state = self.types.get_mut(&ty).expect("inserted above");
        if let Subscription::Names(names) = &mut state.subscription {
            *names = self.registry.intern_names(names.clone());
        }

        let mut out = Vec::new();
        if self.snapshot.is_some() {
            let state = &self.types[&ty];
            if state.owes_response || !state.forced.is_empty() {
                out.extend(self.push_type(ty));
            }
            // An answer on a listener or route update may release held cluster removals.
            if acked && matches!(ty, ResourceType::Listener | ResourceType::RouteConfiguration) {
                let held = self.types.get(&ResourceType::Cluster).is_some_and(|s| s.removals_held);
                if held {
                    out.extend(self.push_type(ResourceType::Cluster));
                }
            }
        }
        out
    }

    fn push_all(&mut self) -> Vec<Response> {
        let mut out = Vec::new();
        for ty in ResourceType::ALL {
            if self.types.contains_key(&ty) {
                out.extend(self.push_type(ty));
            }
        }
        out
    }

    /// Whether listeners or routes have an update in flight or about to be sent.
    fn dependents_changing(&self, snapshot: &Snapshot) -> bool {
        [ResourceType::Listener, ResourceType::RouteConfiguration].into_iter().any(|ty| {
            self.types.get(&ty).is_some_and(|state| {
                state.pending.is_some()
                    || state.nacked
                    || (!in_sync(state, snapshot.set(ty)) && !diff(state, snapshot.set(ty)).is_empty())
            })
        })
    }

    fn push_type(&mut self, ty: ResourceType) -> Option<Response> {
        let snapshot = self.snapshot.clone()?;
        let set = snapshot.set(ty).clone();
        // The common case on a push: this type did not change at all.
        if self.types.get(&ty).is_some_and(|state| in_sync(state, &set)) {
            return None;
        }
        let hold = ty == ResourceType::Cluster && self.dependents_changing(&snapshot);
        let state = self.types.get_mut(&ty)?;
        let mut d = match shared_diff_key(state, &set) {
            // Proxies that hold the same set and subscribe to the same names need the
            // same change: compute it once per push, not once per proxy.
            Some(key) => (*self.registry.diff_cache().get_or_compute(key, || diff(state, &set))).clone(),
            None => diff(state, &set),
        };
        if d.is_empty() && !state.owes_response {
            // The proxy already has everything it subscribed to (changes were to names
            // it did not ask for): what it was sent is what is desired, and the new set
            // describes what it holds as well as the old one did.
            state.view = ClientView::Set(set.clone());
            self.status.update(ty, |s| {
                if s.sent_version.is_some() {
                    s.desired_version = s.sent_version.clone();
                }
            });
            return None;
        }

        // Held removals: the proxy keeps the old resources for now.
        let mut sent_set = set.clone();
        state.removals_held = false;
        if hold && !d.removals.is_empty() {
            if let ClientView::Set(old) = &state.view {
                let kept: Vec<Arc<Resource>> = d.removals.iter().filter_map(|n| old.get(n).cloned()).collect();
                if kept.len() == d.removals.len() {
                    sent_set = Arc::new(ResourceSet::new(set.iter().cloned().chain(kept.iter().cloned())));
                    d.unchanged.extend(kept);
                    d.removals.clear();
                    state.removals_held = true;
                    tracing::debug!(node = %self.node_id, "holding cluster removals until listeners and routes are acknowledged");
                }
            }
        }
        if d.is_empty() && !state.owes_response {
            return None;
        }

        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        let version = sent_set.version().to_owned();
        let type_url = ty.type_url().to_owned();
        let response = match self.api {
            XdsApi::StateOfTheWorld => {
                let resources: Vec<_> = if ty.is_wildcard_type() || state.subscription == Subscription::Wildcard {
                    // Full state: everything the proxy should hold.
                    let mut all: Vec<_> = d.upserts.iter().chain(d.unchanged.iter()).cloned().collect();
                    all.sort_by(|a, b| a.name().cmp(b.name()));
                    all.iter().map(|r| r.body().clone()).collect()
                } else {
                    d.upserts.iter().map(|r| r.body().clone()).collect()
                };
                Response::Sotw(DiscoveryResponse {
                    version_info: version.clone(),
                    resources,
                    type_url,
                    nonce: nonce.clone(),
                    ..Default::default()
                })
            }
            XdsApi::Delta => Response::Delta(DeltaDiscoveryResponse {
                system_version_info: version.clone(),
                resources: d
                    .upserts
                    .iter()
                    .map(|r| DeltaResource {
                        name: r.name().to_owned(),
                        version: r.version().to_owned(),
                        resource: Some(r.body().clone()),
                        ..Default::default()
                    })
                    .collect(),
                type_url,
                removed_resources: d.removals.clone(),
                nonce: nonce.clone(),
                ..Default::default()
            }),
        };

        let count = match &state.subscription {
            Subscription::Wildcard => sent_set.len(),
            Subscription::Names(names) => names.iter().filter(|n| sent_set.get(n).is_some()).count(),
        };
        state.view = ClientView::Set(sent_set);
        if self.api == XdsApi::Delta {
            if let Some(previous) = state.pending.take() {
                state.in_flight.push_back(previous);
                // A proxy that stops answering must not make this grow without bound.
                while state.in_flight.len() > 16 {
                    state.in_flight.pop_front();
                }
            }
        }
        state.pending = Some((nonce.clone(), version.clone()));
        state.last_nonce = nonce.clone();
        state.owes_response = false;
        state.forced.clear();

        let bytes = match &response {
            Response::Sotw(r) => r.encoded_len(),
            Response::Delta(r) => r.encoded_len(),
        } as u64;
        let stats = self.stats();
        stats.responses_sent.fetch_add(1, Ordering::Relaxed);
        stats.resources_sent.fetch_add(d.upserts.len() as u64, Ordering::Relaxed);
        stats.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
        tracing::debug!(node = %self.node_id, type_url = %ty.type_url(), nonce = %nonce, version = %version,
            upserts = d.upserts.len(), removals = d.removals.len(), "push");
        let desired = snapshot.set(ty).version().to_owned();
        self.status.update(ty, |s| {
            s.sent_version = Some(version);
            s.sent_nonce = Some(nonce);
            s.sent_at_ms = Some(now_millis());
            s.resource_count = count;
            s.desired_version = Some(desired);
        });
        Some(response)
    }
}

/// What identifies a diff that any proxy in the same position shares: the set it
/// holds, the new set and its subscription (all shared objects). `None` when the
/// proxy's position is its own (names just subscribed, versions from a reconnect).
fn shared_diff_key(state: &TypeState, set: &Arc<ResourceSet>) -> Option<DiffKey> {
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
pub(crate) struct DiffKey {
    old: Arc<ResourceSet>,
    new: Arc<ResourceSet>,
    subscription: Option<Arc<BTreeSet<String>>>,
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
    entries: std::sync::Mutex<HashMap<DiffAddresses, (DiffKey, Arc<Diff>)>>,
}

impl std::fmt::Debug for DiffCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffCache").finish_non_exhaustive()
    }
}

impl DiffCache {
    const MAX_ENTRIES: usize = 256;

    fn get_or_compute(&self, key: DiffKey, compute: impl FnOnce() -> Diff) -> Arc<Diff> {
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
fn in_sync(state: &TypeState, set: &Arc<ResourceSet>) -> bool {
    !state.owes_response
        && state.forced.is_empty()
        && !state.removals_held
        && matches!(&state.view, ClientView::Set(v) if Arc::ptr_eq(v, set) || v.version() == set.version())
}

/// What must change for the proxy to hold `set` (restricted to its subscription).
fn diff(state: &TypeState, set: &ResourceSet) -> Diff {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{RegisteredConnection, TypeStatus};
    use envoy_types::pb::google::protobuf::Any;
    use envoy_types::pb::google::rpc::Status as RpcStatus;

    const SDS: ResourceType = ResourceType::Secret;
    const CDS: ResourceType = ResourceType::Cluster;
    const EDS: ResourceType = ResourceType::ClusterLoadAssignment;
    const LDS: ResourceType = ResourceType::Listener;
    const RDS: ResourceType = ResourceType::RouteConfiguration;

    /// A resource whose encoded body is `name:content`, so tests can read names back
    /// out of state-of-the-world responses.
    fn mk_resource(name: &str, content: &str) -> Arc<Resource> {
        Arc::new(Resource::new(
            name,
            Any { type_url: "type.googleapis.com/test".into(), value: format!("{name}:{content}").into_bytes() },
        ))
    }

    fn mk_set(resources: &[(&str, &str)]) -> Arc<ResourceSet> {
        Arc::new(ResourceSet::new(resources.iter().map(|(n, c)| mk_resource(n, c))))
    }

    fn mk_snapshot(sets: &[(ResourceType, &[(&str, &str)])]) -> Arc<Snapshot> {
        let mut snapshot = Snapshot::new();
        for (ty, resources) in sets {
            snapshot = snapshot.with(*ty, mk_set(resources));
        }
        Arc::new(snapshot)
    }

    fn version(snapshot: &Snapshot, ty: ResourceType) -> String {
        snapshot.set(ty).version().to_owned()
    }

    fn res_version(name: &str, content: &str) -> String {
        mk_resource(name, content).version().to_owned()
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn sotw_req(ty: ResourceType, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: ty.type_url().into(),
            resource_names: strings(names),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn nack(ty: ResourceType, names: &[&str], version: &str, nonce: &str, message: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            error_detail: Some(RpcStatus { code: 3, message: message.into(), details: vec![] }),
            ..sotw_req(ty, names, version, nonce)
        }
    }

    fn delta_req(ty: ResourceType, subscribe: &[&str], unsubscribe: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: ty.type_url().into(),
            resource_names_subscribe: strings(subscribe),
            resource_names_unsubscribe: strings(unsubscribe),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn delta_nack(ty: ResourceType, nonce: &str, message: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            error_detail: Some(RpcStatus { code: 3, message: message.into(), details: vec![] }),
            ..delta_req(ty, &[], &[], nonce)
        }
    }

    struct Harness {
        session: Session,
        registry: ConnectionRegistry,
        conn: RegisteredConnection,
    }

    impl Harness {
        fn new(api: XdsApi) -> Harness {
            let registry = ConnectionRegistry::new();
            let conn = registry.register("node-1".into(), api, None);
            let session = Session::new(api, conn.status.clone(), registry.clone());
            Harness { session, registry, conn }
        }

        fn sotw(&mut self, req: DiscoveryRequest) -> Vec<Response> {
            self.session.on_sotw_request(req)
        }

        fn delta(&mut self, req: DeltaDiscoveryRequest) -> Vec<Response> {
            self.session.on_delta_request(req)
        }

        fn snapshot(&mut self, snapshot: &Arc<Snapshot>) -> Vec<Response> {
            self.session.on_snapshot(snapshot.clone())
        }

        fn status(&self, ty: ResourceType) -> TypeStatus {
            self.conn.status.types().get(&ty).cloned().unwrap_or_default()
        }

        fn state(&self, ty: ResourceType) -> &'static str {
            // Through report(), as proxy-status reads it.
            let report = self.conn.status.report();
            report.types.get(ty.short_name()).map(|t| t.state).unwrap_or("NOT SENT")
        }

        fn stat(&self, f: impl Fn(&XdsStats) -> &std::sync::atomic::AtomicU64) -> u64 {
            XdsStats::get(f(self.registry.stats()))
        }

        /// ACKs a state-of-the-world response (names as Envoy would re-send them).
        fn sotw_ack(&mut self, r: &Response, names: &[&str]) -> Vec<Response> {
            let r = sotw(r).clone();
            let ty = ResourceType::from_type_url(&r.type_url).unwrap();
            self.sotw(sotw_req(ty, names, &r.version_info, &r.nonce))
        }

        fn delta_ack(&mut self, r: &Response) -> Vec<Response> {
            let r = delta(r).clone();
            let ty = ResourceType::from_type_url(&r.type_url).unwrap();
            self.delta(delta_req(ty, &[], &[], &r.nonce))
        }
    }

    fn one(mut out: Vec<Response>) -> Response {
        assert_eq!(out.len(), 1, "expected exactly one response, got {out:#?}");
        out.pop().unwrap()
    }

    fn sotw(r: &Response) -> &DiscoveryResponse {
        match r {
            Response::Sotw(r) => r,
            Response::Delta(_) => panic!("expected a state-of-the-world response"),
        }
    }

    fn delta(r: &Response) -> &DeltaDiscoveryResponse {
        match r {
            Response::Delta(r) => r,
            Response::Sotw(_) => panic!("expected a delta response"),
        }
    }

    fn ty_of(r: &Response) -> ResourceType {
        ResourceType::from_type_url(r.type_url()).unwrap()
    }

    /// `name:content` of every resource in a state-of-the-world response.
    fn sotw_bodies(r: &Response) -> Vec<String> {
        sotw(r).resources.iter().map(|a| String::from_utf8(a.value.clone()).unwrap()).collect()
    }

    fn sotw_names(r: &Response) -> Vec<String> {
        sotw_bodies(r).into_iter().map(|b| b.split(':').next().unwrap().to_owned()).collect()
    }

    fn delta_names(r: &Response) -> Vec<String> {
        delta(r).resources.iter().map(|r| r.name.clone()).collect()
    }

    fn delta_removed(r: &Response) -> Vec<String> {
        let mut removed = delta(r).removed_resources.clone();
        removed.sort();
        removed
    }

    // ---------------------------------------------------------------------------
    // State of the world
    // ---------------------------------------------------------------------------

    #[test]
    fn sotw_initial_wildcard_requests_get_full_set() {
        let mut h = Harness::new(XdsApi::StateOfTheWorld);
        let snap = mk_snapshot(&[(CDS, &[("b", "1"), ("a", "1")]), (LDS, &[("l", "1")])]);
        assert!(h.snapshot(&snap).is_empty(), "nothing subscribed yet");

        let r = one(h.sotw(sotw_req(CDS, &[], "", "")));
        assert_eq!(ty_of(&r), CDS);
        assert_eq!(sotw_names(&r), ["a", "b"]);
        assert_eq!(sotw(&r).version_info, version(&snap, CDS));
        assert!(!r.nonce().is_empty());

        let r = one(h.sotw(sotw_req(LDS, &[], "", "")));
        assert_eq!(sotw_bodies(&r), ["l:1"]);

        // "*" is a wildcard too.
        let mut h = Harness::new(XdsApi::StateOfTheWorld);
        h.snapshot(&snap);
        assert_eq!(sotw_names(&one(h.sotw(sotw_req(CDS, &["*"], "", "")))), ["a", "b"]);
    }

    #[test]
    fn sotw_empty_set_is_answered_once() {
        let mut h = Harness::new(XdsApi::StateOfTheWorld);
        let snap = mk_snapshot(&[]);
        h.snapshot(&snap);
        let r = one(h.sotw(sotw_req(CDS, &[], "", "")));
        assert!(sotw(&r).resources.is_empty());
        assert_eq!(sotw(&r).version_info, "empty");
        assert!(h.sotw_ack(&r, &[]).is_empty());
        assert_eq!(h.state(CDS), "SYNCED");
        // Still empty: nothing more to say.
        assert!(h.snapshot(&mk_snapshot(&[])).is_empty());

        // A named type whose resources do not exist is answered once as well.
        let r = one(h.sotw(sotw_req(EDS, &["missing"], "", "")));
        assert!(sotw(&r).resources.is_empty());
        assert!(h.sotw_ack(&r, &["missing"]).is_empty());
        assert!(h.snapshot(&mk_snapshot(&[(EDS, &[("other", "1")])])).is_empty());
    }

    #[test]
    fn sotw_request_before_first_snapshot_is_answered_when_it_arrives() {
        let mut h = Harness::new(XdsApi::StateOfTheWorld);
        assert!(h.sotw(sotw_req(CDS, &[], "", "")).is_empty());
        assert!(h.sotw(sotw_req(LDS, &[], "", "")).is_empty());
        assert_eq!(h.state(CDS), "NOT SENT");

        let snap = mk_snapshot(&[(CDS, &[("a", "1")])]);
        let out = h.snapshot(&snap);
        assert_eq!(out.iter().map(ty_of).collect::<Vec<_>>(), [CDS, LDS]);
        assert_eq!(sotw_names(&out[0]), ["a"]);
        // The empty LDS set is still answered so that Envoy can finish initializing.
        assert!(sotw(&out[1]).resources.is_empty());
        assert_ne!(out[0].nonce(), out[1].nonce());
    }

    #[test]
    fn sotw_ack_is_recorded() {
        let mut h = Harness::new(XdsApi::StateOfTheWorld);
        let snap = mk_snapshot(&[(CDS, &[("a", "1"), ("b", "1")])]);
        h.snapshot(&snap);
        let r = one(h.sotw(sotw_req(CDS, &[], "", "")));
        let st = h.status(CDS);
        assert_eq!(st.sent_version.as_deref(), Some(version(&snap, CDS).as_str()));
        assert_eq!(st.sent_nonce.as_deref(), Some(r.nonce()));
        assert_eq!(st.resource_count, 2);
        assert_eq!(st.acked_version, None);
        assert_eq!(h.state(CDS), "STALE");

        assert!(h.sotw_ack(&r, &[]).is_empty());
        let st = h.status(CDS);
        assert_eq!(st.acked_version.as_deref(), Some(version(&snap, CDS).as_str()));
        assert!(st.acked_at_ms.is_some());
        assert_eq!(st.desired_version, st.sent_version);
        assert_eq!(st.sync_state(), "SYNCED");
        assert_eq!(h.state(CDS), "SYNCED");
        assert_eq!(h.stat(|s| &s.acks), 1);
        assert_eq!(h.stat(|s| &s.responses_sent), 1);
        assert_eq!(h.stat(|s| &s.resources_sent), 2);

        // A duplicate of the same ACK is neither a second ACK nor a reason to answer.
        assert!(h.sotw_ack(&r, &[]).is_empty());
        assert_eq!(h.stat(|s| &s.acks), 1);

        // A new snapshot: STALE until acknowledged again.
        let snap2 = mk_snapshot(&[(CDS, &[("a", "2"), ("b", "1")])]);
        let r2 = one(h.snapshot(&snap2));
        assert_eq!(h.state(CDS), "STALE");
        h.sotw_ack(&r2, &[]);
        assert_eq!(h.state(CDS), "SYNCED");
        assert_eq!(h.status(CDS).acked_version.as_deref(), Some(version(&snap2, CDS).as_str()));
    }

    #[test]
    fn sotw_stale_nonce_is_ignored() {
        let mut h = Harness::new(XdsApi::StateOfTheWorld);
        let snap1 = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1")])]);
        h.snapshot(&snap1);
        let r1 = one(h.sotw(sotw_req(EDS, &["a"], "", "")));
        let snap2 = mk_snapshot(&[(EDS, &[("a", "2"), ("b", "1")])]);
        let r2 = one(h.snapshot(&snap2));

        // The ACK of r1 arrives after r2 was sent: it is stale, as is anything in it.
        assert!(h.sotw(sotw_req(EDS, &["a", "b"], &sotw(&r1).version_info, r1.nonce())).is_empty());
        assert_eq!(h.stat(|s| &s.stale_nonces), 1);
        assert_eq!(h.stat(|s| &s.acks), 0);
        assert_eq!(h.status(EDS).acked_version, None);
        // An unknown nonce too.
        assert!(h.sotw(nack(EDS, &["a"], "", "bogus", "nope")).is_empty());
        assert_eq!(h.status(EDS).last_nack, None);

        // The answer to r2 still counts.
        assert!(h.sotw_ack(&r2, &["a"]).is_empty());
        assert_eq!(h.state(EDS), "SYNCED");
    }

    #[test]
    fn sotw_nack_is_recorded_and_not_answered_until_a_fix() {
        let mut h = Harness::new(XdsApi::StateOfTheWorld);
        let good = mk_snapshot(&[(CDS, &[("a", "1")])]);
        h.snapshot(&good);
        let r1 = one(h.sotw(sotw_req(CDS, &[], "", "")));
        h.sotw_ack(&r1, &[]);

        let bad = mk_snapshot(&[(CDS, &[("a", "bad")])]);
        let r2 = one(h.snapshot(&bad));
        // Envoy NACKs with the version it still has.
        let out = h.sotw(nack(CDS, &[], &sotw(&r1).version_info, r2.nonce(), "invalid cluster a"));
        assert!(out.is_empty(), "a NACK must not be answered with the same content");
        let st = h.status(CDS);
        let n = st.last_nack.clone().expect("NACK recorded");
        assert_eq!(n.message, "invalid cluster a");
        assert_eq!(n.rejected_version, version(&bad, CDS));
        assert_eq!(n.nonce, r2.nonce());
        assert_eq!(st.acked_version.as_deref(), Some(version(&good, CDS).as_str()));
        assert_eq!(h.state(CDS), "NACKED");
        assert_eq!(h.stat(|s| &s.nacks), 1);

        // The same content again (a new snapshot object) is not re-sent.
        let bad_again = mk_snapshot(&[(CDS, &[("a", "bad")]), (LDS, &[("l", "1")])]);
        assert!(h.snapshot(&bad_again).is_empty());
        assert_eq!(h.state(CDS), "NACKED");

        // A fix is sent, and its ACK clears the NACK.
        let fixed = mk_snapshot(&[(CDS, &[("a", "fixed")])]);
        let r3 = one(h.snapshot(&fixed));
        assert_eq!(sotw_bodies(&r3), ["a:fixed"]);
        assert_eq!(h.state(CDS), "NACKED");
        assert!(h.sotw_ack(&r3, &[]).is_empty());
        assert_eq!(h.status(CDS).last_nack, None);
        assert_eq!(h.state(CDS), "SYNCED");
    }

    #[test]
    fn sotw_named_type_gets_only_changed_resources() {
        let mut h = Harness::new(XdsApi::StateOfTheWorld);
        let snap1 = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1"), ("c", "1")])]);
        h.snapshot(&snap1);
        let r = one(h.sotw(sotw_req(EDS, &["a", "b"], "", "")));
        assert_eq!(sotw_bodies(&r), ["a:1", "b:1"]);
        h.sotw_ack(&r, &["a", "b"]);

        let snap2 = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "2"), ("c", "1")])]);
        let r = one(h.snapshot(&snap2));
        assert_eq!(sotw_bodies(&r), ["b:2"]);
        assert_eq!(sotw(&r).version_info, version(&snap2, EDS));
        h.sotw_ack(&r, &["a", "b"]);
        assert_eq!(h.state(EDS), "SYNCED");

        // A change to a resource the proxy did not ask for is not sent, and does not
        // make the proxy look out of date.
        let snap3 = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "2"), ("c", "2")])]);
        assert!(h.snapshot(&snap3).is_empty());
        assert_eq!(h.state(EDS), "SYNCED");
    }

    #[test]
    fn sotw_changed_resource_names_after_ack() {
        let mut h = Harness::new(XdsApi::StateOfTheWorld);
        let snap = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1"), ("c", "1")])]);
        h.snapshot(&snap);
        let r = one(h.sotw(sotw_req(EDS, &["a"], "", "")));
        assert_eq!(sotw_bodies(&r), ["a:1"]);
        let (v, n) = (sotw(&r).version_info.clone(), r.nonce().to_owned());
        assert!(h.sotw(sotw_req(EDS, &["a"], &v, &n)).is_empty());

        // Envoy learns of cluster b and asks for its endpoints, quoting the nonce it
        // has already acknowledged: that is the latest nonce, not a stale one.
        let r = one(h.sotw(sotw_req(EDS, &["a", "b"], &v, &n)));
        assert_eq!(sotw_bodies(&r), ["b:1"], "newly subscribed names are sent even if unchanged");
        assert_eq!(h.stat(|s| &s.stale_nonces), 0);
        let (v, n) = (sotw(&r).version_info.clone(), r.nonce().to_owned());
        h.sotw(sotw_req(EDS, &["a", "b"], &v, &n));

        // Unsubscribing needs no answer, and changes to the dropped name are not sent.
        assert!(h.sotw(sotw_req(EDS, &["b"], &v, &n)).is_empty());
        let snap2 = mk_snapshot(&[(EDS, &[("a", "2"), ("b", "1"), ("c", "1")])]);
        assert!(h.snapshot(&snap2).is_empty());
        let snap3 = mk_snapshot(&[(EDS, &[("a", "2"), ("b", "3"), ("c", "1")])]);
        assert_eq!(sotw_bodies(&one(h.snapshot(&snap3))), ["b:3"]);

        // Changing names while a response is in flight (its nonce is the latest).
        let snap4 = mk_snapshot(&[(EDS, &[("a", "2"), ("b", "4"), ("c", "1")])]);
        let r = one(h.snapshot(&snap4));
        let r2 = one(h.sotw(sotw_req(EDS, &["b", "c"], &sotw(&r).version_info, r.nonce())));
        assert_eq!(sotw_bodies(&r2), ["c:1"]);
    }

    #[test]
    fn sotw_reconnect_with_current_version_gets_no_response() {
        let snap = mk_snapshot(&[(CDS, &[("a", "1")]), (EDS, &[("a", "1"), ("b", "1")])]);
        let mut h = Harness::new(XdsApi::StateOfTheWorld);
        h.snapshot(&snap);
        assert!(h.sotw(sotw_req(CDS, &[], &version(&snap, CDS), "")).is_empty());
        assert!(h.sotw(sotw_req(EDS, &["a", "b"], &version(&snap, EDS), "")).is_empty());
        assert_eq!(h.stat(|s| &s.responses_sent), 0);
        assert_eq!(h.state(CDS), "SYNCED", "in sync without a response");
        assert_eq!(h.state(EDS), "SYNCED");
        assert_eq!(h.status(EDS).resource_count, 2);

        // Later changes are computed against what the proxy has.
        let snap2 = mk_snapshot(&[(CDS, &[("a", "1"), ("b", "1")]), (EDS, &[("a", "1"), ("b", "2")])]);
        let out = h.snapshot(&snap2);
        assert_eq!(out.len(), 2);
        assert_eq!(sotw_names(&out[0]), ["a", "b"]);
        assert_eq!(sotw_bodies(&out[1]), ["b:2"]);

        // An older version gets the current state.
        let mut h = Harness::new(XdsApi::StateOfTheWorld);
        h.snapshot(&snap2);
        let r = one(h.sotw(sotw_req(CDS, &[], &version(&snap, CDS), "")));
        assert_eq!(sotw_names(&r), ["a", "b"]);
    }

    #[test]
    fn sotw_first_request_with_a_nonce_from_another_stream() {
        let mut h = Harness::new(XdsApi::StateOfTheWorld);
        let snap = mk_snapshot(&[(CDS, &[("a", "1"), ("b", "1")])]);
        h.snapshot(&snap);
        let r = one(h.sotw(sotw_req(CDS, &[], "old-version", "17")));
        assert_eq!(sotw_names(&r), ["a", "b"]);
        assert!(h.sotw_ack(&r, &[]).is_empty());
        assert_eq!(h.state(CDS), "SYNCED");
    }

    #[test]
    fn sotw_cluster_removal_without_route_change_is_immediate() {
        let mut h = Harness::new(XdsApi::StateOfTheWorld);
        let snap = mk_snapshot(&[(CDS, &[("a", "1"), ("b", "1")]), (LDS, &[("l", "1")])]);
        h.snapshot(&snap);
        let r = one(h.sotw(sotw_req(CDS, &[], "", "")));
        h.sotw_ack(&r, &[]);
        let r = one(h.sotw(sotw_req(LDS, &[], "", "")));
        h.sotw_ack(&r, &[]);
        let r = one(h.snapshot(&mk_snapshot(&[(CDS, &[("a", "1")]), (LDS, &[("l", "1")])])));
        assert_eq!(sotw_names(&r), ["a"]);
    }

    /// Subscribes CDS, LDS (wildcard) and RDS ("r") and ACKs everything for `snap`.
    fn sotw_synced_mbb(h: &mut Harness, snap: &Arc<Snapshot>) {
        h.snapshot(snap);
        for (ty, names) in [(CDS, &[][..]), (LDS, &[]), (RDS, &["r"])] {
            let r = one(h.sotw(sotw_req(ty, names, "", "")));
            assert!(h.sotw_ack(&r, names).is_empty());
        }
    }

    fn mbb_snapshots() -> (Arc<Snapshot>, Arc<Snapshot>) {
        let before =
            mk_snapshot(&[(CDS, &[("a", "1"), ("b", "1")]), (LDS, &[("l", "1")]), (RDS, &[("r", "to-a-and-b")])]);
        let after = mk_snapshot(&[(CDS, &[("a", "2")]), (LDS, &[("l", "2")]), (RDS, &[("r", "to-a")])]);
        (before, after)
    }

    #[test]
    fn sotw_make_before_break() {
        let mut h = Harness::new(XdsApi::StateOfTheWorld);
        let (before, after) = mbb_snapshots();
        sotw_synced_mbb(&mut h, &before);

        let out = h.snapshot(&after);
        assert_eq!(out.iter().map(ty_of).collect::<Vec<_>>(), [CDS, LDS, RDS]);
        // The removed cluster is kept while routes may still point at it.
        assert_eq!(sotw_bodies(&out[0]), ["a:2", "b:1"]);
        assert_ne!(sotw(&out[0]).version_info, version(&after, CDS));
        assert_eq!(sotw_bodies(&out[1]), ["l:2"]);
        assert_eq!(sotw_bodies(&out[2]), ["r:to-a"]);

        assert!(h.sotw_ack(&out[0], &[]).is_empty());
        assert_eq!(h.state(CDS), "STALE", "the proxy has a cluster it should not have");
        assert!(h.sotw_ack(&out[1], &[]).is_empty(), "routes not yet acknowledged");
        let r = one(h.sotw_ack(&out[2], &["r"]));
        assert_eq!(ty_of(&r), CDS);
        assert_eq!(sotw_bodies(&r), ["a:2"]);
        assert_eq!(sotw(&r).version_info, version(&after, CDS));
        h.sotw_ack(&r, &[]);
        for ty in [CDS, LDS, RDS] {
            assert_eq!(h.state(ty), "SYNCED", "{ty}");
        }

        // Routes ACKed before listeners: the removal waits for the listeners.
        let mut h = Harness::new(XdsApi::StateOfTheWorld);
        sotw_synced_mbb(&mut h, &before);
        let out = h.snapshot(&after);
        assert!(h.sotw_ack(&out[2], &["r"]).is_empty());
        let r = one(h.sotw_ack(&out[1], &[]));
        assert_eq!(sotw_bodies(&r), ["a:2"]);
    }

    #[test]
    fn sotw_make_before_break_waits_out_a_route_nack() {
        let mut h = Harness::new(XdsApi::StateOfTheWorld);
        let (before, after) = mbb_snapshots();
        sotw_synced_mbb(&mut h, &before);
        let out = h.snapshot(&after);
        h.sotw_ack(&out[0], &[]);
        assert!(h.sotw_ack(&out[1], &[]).is_empty());
        // The proxy rejects the new routes and keeps the old ones, which use b.
        let rds = sotw(&out[2]).clone();
        let released = h.sotw(nack(RDS, &["r"], &version(&before, RDS), &rds.nonce, "bad route"));
        assert!(released.is_empty(), "cluster b removed while the proxy's routes still use it: {released:#?}");

        // Fixed routes: sent; once acknowledged, b goes.
        let fixed = mk_snapshot(&[(CDS, &[("a", "2")]), (LDS, &[("l", "2")]), (RDS, &[("r", "to-a-fixed")])]);
        let r = one(h.snapshot(&fixed));
        assert_eq!(ty_of(&r), RDS);
        let r = one(h.sotw_ack(&r, &["r"]));
        assert_eq!(sotw_bodies(&r), ["a:2"]);
    }

    /// Subscribes to all five types, ACKs the initial responses.
    fn all_types_synced(h: &mut Harness, snap: &Arc<Snapshot>) {
        h.snapshot(snap);
        for ty in ResourceType::ALL {
            match h.session.api {
                XdsApi::StateOfTheWorld => {
                    let names: &[&str] = if ty.is_wildcard_type() { &[] } else { &["x"] };
                    let r = one(h.sotw(sotw_req(ty, names, "", "")));
                    h.sotw_ack(&r, names);
                }
                XdsApi::Delta => {
                    let names: &[&str] = if ty.is_wildcard_type() { &[] } else { &["x"] };
                    let r = one(h.delta(delta_req(ty, names, &[], "")));
                    h.delta_ack(&r);
                }
            }
        }
    }

    fn all_types(content: &str) -> Arc<Snapshot> {
        let r: &[(&str, &str)] = &[("x", content)];
        mk_snapshot(&[(RDS, r), (LDS, r), (EDS, r), (CDS, r), (SDS, r)])
    }

    #[test]
    fn batch_is_ordered_sds_cds_eds_lds_rds() {
        for api in [XdsApi::StateOfTheWorld, XdsApi::Delta] {
            let mut h = Harness::new(api);
            all_types_synced(&mut h, &all_types("1"));
            let out = h.snapshot(&all_types("2"));
            assert_eq!(out.iter().map(ty_of).collect::<Vec<_>>(), [SDS, CDS, EDS, LDS, RDS], "{api:?}");
            let mut nonces: Vec<_> = out.iter().map(|r| r.nonce().to_owned()).collect();
            nonces.dedup();
            assert_eq!(nonces.len(), 5, "every response has its own nonce");
        }
    }

    // ---------------------------------------------------------------------------
    // Delta
    // ---------------------------------------------------------------------------

    #[test]
    fn delta_initial_wildcard_requests_get_full_set() {
        let mut h = Harness::new(XdsApi::Delta);
        let snap = mk_snapshot(&[(CDS, &[("b", "1"), ("a", "1")])]);
        h.snapshot(&snap);
        let r = one(h.delta(delta_req(CDS, &[], &[], "")));
        assert_eq!(delta_names(&r), ["a", "b"]);
        assert!(delta(&r).removed_resources.is_empty());
        assert_eq!(delta(&r).resources[0].version, res_version("a", "1"));
        assert_eq!(delta(&r).system_version_info, version(&snap, CDS));

        // Explicit "*", and an empty set answered once.
        let r = one(h.delta(delta_req(LDS, &["*"], &[], "")));
        assert!(delta(&r).resources.is_empty());
        assert!(h.delta_ack(&r).is_empty());
        assert_eq!(h.state(LDS), "SYNCED");
        assert!(h.snapshot(&snap).is_empty());
    }

    #[test]
    fn delta_request_before_first_snapshot_is_answered_when_it_arrives() {
        let mut h = Harness::new(XdsApi::Delta);
        assert!(h.delta(delta_req(LDS, &[], &[], "")).is_empty());
        assert!(h.delta(delta_req(EDS, &["a"], &[], "")).is_empty());
        let out = h.snapshot(&mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1")])]));
        assert_eq!(out.iter().map(ty_of).collect::<Vec<_>>(), [EDS, LDS]);
        assert_eq!(delta_names(&out[0]), ["a"]);
        assert!(delta(&out[1]).resources.is_empty());
    }

    #[test]
    fn delta_ack_and_stale_nonce() {
        let mut h = Harness::new(XdsApi::Delta);
        let snap = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1"), ("c", "1")])]);
        h.snapshot(&snap);
        let r1 = one(h.delta(delta_req(EDS, &["a"], &[], "")));
        assert!(h.delta_ack(&r1).is_empty());
        assert_eq!(h.state(EDS), "SYNCED");
        assert_eq!(h.status(EDS).acked_version.as_deref(), Some(version(&snap, EDS).as_str()));
        assert_eq!(h.status(EDS).resource_count, 1);

        let snap2 = mk_snapshot(&[(EDS, &[("a", "2"), ("b", "1"), ("c", "1")])]);
        let r2 = one(h.snapshot(&snap2));
        assert_eq!(delta_names(&r2), ["a"]);

        // A stale nonce: no ACK, but the subscription change is applied.
        let r3 = one(h.delta(delta_req(EDS, &["b"], &[], "bogus")));
        assert_eq!(delta_names(&r3), ["b"]);
        assert_eq!(h.stat(|s| &s.stale_nonces), 1);
        assert_eq!(h.status(EDS).acked_version.as_deref(), Some(version(&snap, EDS).as_str()));
        assert!(h.delta_ack(&r3).is_empty());
        assert_eq!(h.state(EDS), "SYNCED");
        assert_eq!(h.status(EDS).resource_count, 2);
    }

    #[test]
    fn delta_nack_is_recorded_and_not_answered_until_a_fix() {
        let mut h = Harness::new(XdsApi::Delta);
        h.snapshot(&mk_snapshot(&[(CDS, &[("a", "1"), ("b", "1")])]));
        let r = one(h.delta(delta_req(CDS, &[], &[], "")));
        h.delta_ack(&r);

        let bad = mk_snapshot(&[(CDS, &[("a", "bad"), ("b", "1")])]);
        let r = one(h.snapshot(&bad));
        assert_eq!(delta_names(&r), ["a"]);
        assert!(h.delta(delta_nack(CDS, r.nonce(), "bad a")).is_empty());
        let n = h.status(CDS).last_nack.expect("NACK recorded");
        assert_eq!((n.message.as_str(), n.rejected_version), ("bad a", version(&bad, CDS)));
        assert_eq!(h.state(CDS), "NACKED");
        assert!(h.snapshot(&mk_snapshot(&[(CDS, &[("a", "bad"), ("b", "1")])])).is_empty());

        let r = one(h.snapshot(&mk_snapshot(&[(CDS, &[("a", "good"), ("b", "1")])])));
        assert_eq!(delta_names(&r), ["a"]);
        assert_eq!(delta(&r).resources[0].version, res_version("a", "good"));
        h.delta_ack(&r);
        assert_eq!(h.status(CDS).last_nack, None);
        assert_eq!(h.state(CDS), "SYNCED");
    }

    #[test]
    fn delta_nack_of_an_earlier_response_in_flight_is_recorded() {
        let mut h = Harness::new(XdsApi::Delta);
        h.snapshot(&mk_snapshot(&[(CDS, &[("a", "1")])]));
        let r = one(h.delta(delta_req(CDS, &[], &[], "")));
        h.delta_ack(&r);
        // Two updates go out before the proxy answers the first.
        let bad = mk_snapshot(&[(CDS, &[("a", "bad")])]);
        let first = one(h.snapshot(&bad));
        let second = one(h.snapshot(&mk_snapshot(&[(CDS, &[("a", "bad"), ("b", "1")])])));
        assert!(h.delta(delta_nack(CDS, first.nonce(), "bad a")).is_empty());
        let n = h.status(CDS).last_nack.expect("NACK of the earlier response recorded");
        assert_eq!((n.message.as_str(), n.rejected_version), ("bad a", version(&bad, CDS)));
        h.delta_ack(&second);
        assert_eq!(h.status(CDS).last_nack, None);
    }

    #[test]
    fn proxies_in_the_same_position_share_one_diff() {
        let mut a = Harness::new(XdsApi::Delta);
        let conn_b = a.registry.register("node-2".into(), XdsApi::Delta, None);
        let mut b = Session::new(XdsApi::Delta, conn_b.status.clone(), a.registry.clone());
        let snap = mk_snapshot(&[(EDS, &[("x", "1"), ("y", "1")])]);
        a.snapshot(&snap);
        b.on_snapshot(snap.clone());
        for session in [&mut a.session, &mut b] {
            let r = one(session.on_delta_request(delta_req(EDS, &["x", "y"], &[], "")));
            session.on_delta_request(delta_req(EDS, &[], &[], r.nonce()));
        }
        let snap2 = mk_snapshot(&[(EDS, &[("x", "2"), ("y", "1")])]);
        let ra = one(a.snapshot(&snap2));
        let rb = one(b.on_snapshot(snap2.clone()));
        assert_eq!(delta_names(&ra), ["x"]);
        assert_eq!(delta(&ra).resources, delta(&rb).resources);
        let cached = a.registry.diff_cache().entries.lock().unwrap().len();
        assert_eq!(cached, 1, "one diff computed for both proxies");
    }

    #[test]
    fn delta_only_changed_resources_and_removals() {
        let mut h = Harness::new(XdsApi::Delta);
        h.snapshot(&mk_snapshot(&[
            (CDS, &[("a", "1"), ("b", "1"), ("c", "1")]),
            (EDS, &[("a", "1"), ("b", "1"), ("c", "1")]),
        ]));
        let r = one(h.delta(delta_req(CDS, &[], &[], "")));
        h.delta_ack(&r);
        let r = one(h.delta(delta_req(EDS, &["a", "b"], &[], "")));
        assert_eq!(delta_names(&r), ["a", "b"]);
        h.delta_ack(&r);

        let snap2 =
            mk_snapshot(&[(CDS, &[("a", "1"), ("b", "2"), ("d", "1")]), (EDS, &[("a", "2"), ("b", "1"), ("c", "2")])]);
        let out = h.snapshot(&snap2);
        assert_eq!(out.iter().map(ty_of).collect::<Vec<_>>(), [CDS, EDS]);
        assert_eq!(delta_names(&out[0]), ["b", "d"]);
        assert_eq!(delta_removed(&out[0]), ["c"]);
        assert_eq!(delta_names(&out[1]), ["a"]);
        assert!(delta(&out[1]).removed_resources.is_empty());
        assert_eq!(h.status(CDS).resource_count, 3);
    }

    #[test]
    fn delta_subscribe_and_unsubscribe() {
        let mut h = Harness::new(XdsApi::Delta);
        let snap = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1")])]);
        h.snapshot(&snap);
        let r = one(h.delta(delta_req(EDS, &["a"], &[], "")));
        h.delta_ack(&r);

        // Subscribe b: only b.
        let r = one(h.delta(delta_req(EDS, &["b"], &[], r.nonce())));
        assert_eq!(delta_names(&r), ["b"]);
        h.delta_ack(&r);

        // Unsubscribe a: no answer needed; later changes to a are not sent.
        assert!(h.delta(delta_req(EDS, &[], &["a"], r.nonce())).is_empty());
        assert!(h.snapshot(&mk_snapshot(&[(EDS, &[("a", "2"), ("b", "1")])])).is_empty());

        // Re-subscribing sends it again, even when unchanged since Envoy last had it.
        let snap3 = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1")])]);
        assert!(h.snapshot(&snap3).is_empty());
        let r = one(h.delta(delta_req(EDS, &["a"], &[], "")));
        assert_eq!(delta_names(&r), ["a"]);
        h.delta_ack(&r);

        // A name that does not exist is reported removed, so Envoy stops waiting for it.
        let r = one(h.delta(delta_req(EDS, &["missing"], &[], "")));
        assert!(delta(&r).resources.is_empty());
        assert_eq!(delta_removed(&r), ["missing"]);
        h.delta_ack(&r);
        // When it appears, it is sent.
        let r = one(h.snapshot(&mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1"), ("missing", "1")])])));
        assert_eq!(delta_names(&r), ["missing"]);

        h.delta_ack(&r);

        // Subscribing and unsubscribing in one request; re-subscribing to a name still
        // subscribed is not a change.
        assert!(h.delta(delta_req(EDS, &["a"], &["b"], "")).is_empty());
        let r = one(h.delta(delta_req(EDS, &["b", "a"], &["missing"], "")));
        assert_eq!(delta_names(&r), ["b"]);
        assert!(delta(&r).removed_resources.is_empty());
    }

    #[test]
    fn delta_reconnect_with_initial_resource_versions() {
        let snap =
            mk_snapshot(&[(CDS, &[("a", "1"), ("b", "2"), ("c", "1")]), (EDS, &[("a", "1"), ("b", "2"), ("c", "1")])]);
        let mut h = Harness::new(XdsApi::Delta);
        h.snapshot(&snap);
        let mut req = delta_req(CDS, &[], &[], "");
        req.initial_resource_versions = [
            ("a".to_owned(), res_version("a", "1")),
            ("b".to_owned(), res_version("b", "1")),
            ("gone".to_owned(), res_version("gone", "1")),
        ]
        .into();
        let r = one(h.delta(req));
        assert_eq!(delta_names(&r), ["b", "c"]);
        assert_eq!(delta_removed(&r), ["gone"]);

        let mut req = delta_req(EDS, &["a", "b", "c"], &[], "");
        req.initial_resource_versions =
            [("a".to_owned(), res_version("a", "1")), ("b".to_owned(), res_version("b", "1"))].into();
        let r = one(h.delta(req));
        assert_eq!(delta_names(&r), ["b", "c"]);
        assert!(delta(&r).removed_resources.is_empty());
        h.delta_ack(&r);
        assert_eq!(h.state(EDS), "SYNCED");

        // The proxy has everything already: nothing re-sent.
        let mut h = Harness::new(XdsApi::Delta);
        h.snapshot(&snap);
        let mut req = delta_req(EDS, &["a"], &[], "");
        req.initial_resource_versions = [("a".to_owned(), res_version("a", "1"))].into();
        let out = h.delta(req);
        assert!(out.iter().all(|r| delta(r).resources.is_empty() && delta(r).removed_resources.is_empty()));
    }

    #[test]
    fn delta_make_before_break() {
        let mut h = Harness::new(XdsApi::Delta);
        let (before, after) = mbb_snapshots();
        h.snapshot(&before);
        for (ty, names) in [(CDS, &[][..]), (LDS, &[]), (RDS, &["r"])] {
            let r = one(h.delta(delta_req(ty, names, &[], "")));
            assert!(h.delta_ack(&r).is_empty());
        }

        let out = h.snapshot(&after);
        assert_eq!(out.iter().map(ty_of).collect::<Vec<_>>(), [CDS, LDS, RDS]);
        assert_eq!(delta_names(&out[0]), ["a"]);
        assert!(delta(&out[0]).removed_resources.is_empty(), "b removed before routes stop using it");
        assert!(h.delta_ack(&out[0]).is_empty());
        assert!(h.delta_ack(&out[1]).is_empty());
        // A NACK of the routes keeps b.
        assert!(h.delta(delta_nack(RDS, out[2].nonce(), "bad")).is_empty());
        let fixed = mk_snapshot(&[(CDS, &[("a", "2")]), (LDS, &[("l", "2")]), (RDS, &[("r", "fixed")])]);
        let r = one(h.snapshot(&fixed));
        assert_eq!(ty_of(&r), RDS);
        let r = one(h.delta_ack(&r));
        assert_eq!(ty_of(&r), CDS);
        assert!(delta(&r).resources.is_empty());
        assert_eq!(delta_removed(&r), ["b"]);
        h.delta_ack(&r);
        assert_eq!(h.state(CDS), "SYNCED");
    }

    #[test]
    fn requests_for_unknown_types_are_ignored() {
        let mut h = Harness::new(XdsApi::StateOfTheWorld);
        h.snapshot(&mk_snapshot(&[(CDS, &[("a", "1")])]));
        let mut req = sotw_req(CDS, &[], "", "");
        req.type_url = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig".into();
        assert!(h.sotw(req).is_empty());
        assert!(h.conn.status.types().is_empty());
    }
}
