//! The per-connection xDS protocol state machine, free of I/O.
//!
//! A [`Session`] takes requests from one proxy's stream and snapshots from the control
//! plane, and returns the responses to send, in order. State of the world and delta
//! share it: both kinds of request are normalized first, and only the response
//! encoding differs.
//!
//! Rules it keeps:
//! - Every response carries a fresh nonce. A request quoting neither a response in
//!   flight nor the latest one is stale: its ACK/NACK is ignored. In state of the world
//!   a request answering anything but the latest response is not answered (the answer
//!   to the latest will be), but the names it lists are recorded.
//! - An ACK records the acknowledged version and nonce; a NACK records Envoy's message
//!   and makes what the proxy holds of that type unknown (Envoy keeps the valid part of
//!   a rejected update). Once nothing is in flight, the whole subscribed set is sent
//!   again, unless it is exactly the content refused for the same subscription (then
//!   the type waits for a snapshot that differs); the type stays NACKED until a
//!   response sent after the NACK is acknowledged.
//! - Only what changed is sent: wildcard types (CDS, LDS) in state of the world carry
//!   the full set, as the protocol requires; named types and all delta responses carry
//!   only the resources whose version differs from what the proxy has.
//! - A new stream is answered whatever versions it quotes, except delta resources whose
//!   `initial_resource_versions` match (endpoints excepted: see below).
//! - Clusters warm: Envoy re-warms every new or changed EDS cluster and waits for a
//!   fresh ClusterLoadAssignment, so the EDS response after a cluster response carries
//!   those assignments even unchanged, and endpoints are always sent on a new stream.
//! - Make-before-break: types go out in [`ResourceType::ALL`] order, so clusters come
//!   before the routes that use them; and removing clusters waits until the listener
//!   and route updates of the same push are acknowledged, so no route ever points at a
//!   cluster the proxy no longer has.
//!
//! [`stream`] keeps the protocol state per type (subscriptions, what the proxy holds,
//! responses in flight); [`push`] decides what a push carries (diffs shared between
//! proxies in the same position).

mod push;
mod response;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource as DeltaResource,
};

use crate::resource::{Resource, ResourceSet, ResourceType, Snapshot};
use crate::status::{now_millis, ConnectionRegistry, ConnectionStatus, Nack, Subscribed, XdsApi, XdsStats};
pub(crate) use push::DiffCache;
use push::{diff, in_sync, shared_diff_key, Diff};
pub use response::{Decoded, Response};
use stream::{Answer, ClientView, NormalizedRequest, Sent, TypeState};

/// The protocol state of one ADS stream.
pub struct Session {
    api: XdsApi,
    node_id: String,
    status: Arc<ConnectionStatus>,
    registry: ConnectionRegistry,
    snapshot: Option<Arc<Snapshot>>,
    types: BTreeMap<ResourceType, TypeState>,
    next_nonce: u64,
    /// Types this server does not serve that the proxy asked for, with the nonce of
    /// the empty answer it got (bounded).
    unknown_types: Vec<(String, String)>,
    /// When the earliest change the proxy was sent and has not yet acknowledged in full
    /// was detected (see [`Snapshot::change_detected_at`]): the start of its convergence.
    converging_since: Option<std::time::Instant>,
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
            unknown_types: Vec::new(),
            converging_since: None,
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
            let set = snapshot.set(ty);
            // A type the proxy already holds keeps the desired version its status has
            // (what it was sent may carry another version for the same subscribed part).
            if self.types.get(&ty).is_some_and(|state| !in_sync(state, set)) {
                let version = set.version().to_owned();
                self.status.update(ty, |s| s.desired_version = Some(version));
            }
        }
        // A change reaching a proxy that already had a snapshot starts (or, while an
        // earlier one is still being taken in, continues) its convergence; the first
        // snapshot of a stream is no change to it.
        let before = self.converging_since;
        if let (Some(at), Some(_)) = (snapshot.change_detected_at(), &self.snapshot) {
            self.converging_since = Some(before.map_or(at, |earlier| earlier.min(at)));
        }
        self.snapshot = Some(snapshot);
        let out = self.push_all();
        if out.is_empty() {
            // Nothing this proxy subscribes to changed: there is nothing to acknowledge.
            self.converging_since = before;
        }
        out
    }

    /// Whether the proxy acknowledged everything it was sent and holds the snapshot's
    /// content of every type it subscribes to.
    fn converged(&self) -> bool {
        let Some(snapshot) = &self.snapshot else { return false };
        self.types
            .iter()
            .all(|(ty, state)| state.pending.is_none() && !state.nacked && in_sync(state, snapshot.set(*ty)))
    }

    /// Records the proxy's convergence once it has taken the changes in.
    fn check_converged(&mut self) {
        if let Some(since) = self.converging_since {
            if self.converged() {
                let took = since.elapsed();
                self.stats().convergence.observe(took);
                self.converging_since = None;
                tracing::debug!(node = %self.node_id, took_ms = took.as_millis() as u64, "proxy converged");
            }
        }
    }

    fn on_request(&mut self, mut req: NormalizedRequest) -> Vec<Response> {
        let Some(ty) = ResourceType::from_type_url(&req.type_url) else {
            return self.on_unknown_type(req);
        };
        let first = !self.types.contains_key(&ty);
        let state = self.types.entry(ty).or_insert_with(TypeState::new);

        // ACK / NACK bookkeeping. No response of this type was sent on this stream yet
        // when it is the first request, so a nonce (kept by the client from an earlier
        // stream) acknowledges nothing; the request is still a real subscription.
        let answer = if first { Answer::None } else { state.take_answer(&req) };
        let acked = matches!(answer, Answer::Ack { .. } | Answer::Nack { .. });
        let stale = matches!(answer, Answer::Stale);
        match answer {
            Answer::None | Answer::Repeat => {}
            Answer::Ack { sent, latest } => {
                self.registry.stats().acks.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(node = %self.node_id, type_url = %req.type_url, nonce = %sent.nonce, version = %sent.version, "ACK");
                let cleared = !state.nacked;
                self.status.update(ty, |s| {
                    if latest {
                        s.acked_version = Some(sent.version);
                        s.acked_nonce = Some(sent.nonce);
                        s.acked_at_ms = Some(now_millis());
                    }
                    if cleared {
                        s.last_nack = None;
                    }
                });
            }
            Answer::Nack { sent, message } => {
                self.registry.stats().nacks.fetch_add(1, Ordering::Relaxed);
                self.registry.stats().nacks_by_type[ty.index()].fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %self.node_id, type_url = %req.type_url, nonce = %sent.nonce,
                    version = %sent.version, error = %message, "proxy rejected an update (NACK)");
                let nack = Nack { rejected_version: sent.version, nonce: sent.nonce, message, at_ms: now_millis() };
                self.status.update(ty, |s| s.last_nack = Some(nack));
            }
            Answer::Stale => {
                self.registry.stats().stale_nonces.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(node = %self.node_id, type_url = %req.type_url, nonce = %req.nonce, "stale nonce");
            }
        }
        // State of the world: a stale request is not answered (the one answering our
        // latest response will be), but the names it lists are the proxy's interest
        // when it sent it: a name it dropped there and asks for again later must be
        // sent again.
        // Likewise for the answer to an earlier response when a later one is in flight.
        let answer_later = req.sotw_names.is_some() && (stale || (acked && state.pending.is_some()));

        // Subscriptions; many proxies subscribe to the very same names: keep one copy.
        // A state-of-the-world proxy quoting a version on a new stream is answered all
        // the same: the version is that of its last accepted response, and it may hold
        // more (Envoy keeps the valid part of an update it NACKs) or, for named types,
        // ask for names never sent under it.
        let (names_before, wildcard_before) = (Arc::as_ptr(&state.subscription.names), state.subscription.wildcard);
        state.subscribe(ty, first, &mut req);
        let names_changed = first || !std::ptr::eq(names_before, Arc::as_ptr(&state.subscription.names));
        if names_changed {
            state.subscription.names = self.registry.intern_names(state.subscription.names.clone());
        }
        let subscribed = Subscribed { wildcard: state.subscription.wildcard, names: state.subscription.names.clone() };
        let recount = names_changed || wildcard_before != subscribed.wildcard;
        self.status.update(ty, |s| {
            s.subscription = subscribed;
            // A name dropped leaves the proxy's holdings at once, whether or not
            // anything is sent: the count follows what a config dump lists.
            if recount && s.sent_set.is_some() {
                s.resource_count = s.held_count();
            }
        });
        if ty == ResourceType::ClusterLoadAssignment {
            let subscription = state.subscription.clone();
            self.status.update_endpoints(|e| {
                e.subscribed_wildcard = subscription.wildcard;
                e.subscribed = Some(subscription.names);
            });
        }

        let mut out = Vec::new();
        if self.snapshot.is_some() && !answer_later {
            let state = &self.types[&ty];
            // After a NACK, once nothing is in flight, what the proxy holds is unknown:
            // the whole set goes again unless it is exactly what was refused (an update
            // acknowledged after the NACK of an earlier one, or a subscription changed).
            let resend_whole = state.nacked && state.pending.is_none();
            if state.owes_response || !state.forced.is_empty() || resend_whole {
                out.extend(self.push_type_and_dependents(ty));
            }
            // An answer on a listener or route update may release held cluster removals.
            if acked && matches!(ty, ResourceType::Listener | ResourceType::RouteConfiguration) {
                let held = self.types.get(&ResourceType::Cluster).is_some_and(|s| s.removals_held);
                if held {
                    out.extend(self.push_type_and_dependents(ResourceType::Cluster));
                }
            }
        }
        if acked {
            self.check_converged();
        }
        out
    }

    /// A state-of-the-world request for a type this server does not serve gets an
    /// empty answer, so the proxy does not wait on it (its ACK is not answered again);
    /// logged once per stream and type. Delta requests for such types are ignored.
    fn on_unknown_type(&mut self, req: NormalizedRequest) -> Vec<Response> {
        const MAX_TRACKED: usize = 16;
        let known = self.unknown_types.iter().position(|(url, _)| *url == req.type_url);
        if known.is_none() {
            tracing::info!(node = %self.node_id, type_url = %req.type_url,
                "request for a resource type this server does not serve; answering with no resources");
        }
        if req.sotw_names.is_none() {
            return Vec::new();
        }
        match known {
            // The ACK of our empty answer.
            Some(at) if !req.nonce.is_empty() && self.unknown_types[at].1 == req.nonce => return Vec::new(),
            // Not remembered (too many unknown types): a request quoting a nonce was
            // answered before; answering again would loop.
            None if !req.nonce.is_empty() && self.unknown_types.len() >= MAX_TRACKED => return Vec::new(),
            _ => {}
        }
        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        match known {
            Some(at) => self.unknown_types[at].1 = nonce.clone(),
            None if self.unknown_types.len() < MAX_TRACKED => {
                self.unknown_types.push((req.type_url.clone(), nonce.clone()))
            }
            // A proxy asking for many unknown types: answered, not remembered.
            None => {}
        }
        let body = Response::encode_body(&DiscoveryResponse { type_url: req.type_url.clone(), ..Default::default() });
        vec![Response::new(XdsApi::StateOfTheWorld, &req.type_url, nonce, body)]
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

    /// Pushes `ty` and, after a cluster response, the endpoints Envoy now waits for.
    fn push_type_and_dependents(&mut self, ty: ResourceType) -> Vec<Response> {
        let mut out: Vec<Response> = self.push_type(ty).into_iter().collect();
        if ty == ResourceType::Cluster && !out.is_empty() {
            out.extend(self.push_type(ResourceType::ClusterLoadAssignment));
        }
        out
    }

    /// Whether listeners or routes have an update in flight or about to be sent.
    fn dependents_changing(&self, snapshot: &Snapshot) -> bool {
        [ResourceType::Listener, ResourceType::RouteConfiguration].into_iter().any(|ty| {
            self.types.get(&ty).is_some_and(|state| {
                state.pending.is_some()
                    || state.nacked
                    || (!in_sync(state, snapshot.set(ty)) && {
                        // The same diff the push of that type computes (and shares).
                        let set = snapshot.set(ty);
                        match shared_diff_key(state, set) {
                            Some(key) => {
                                !self.registry.diff_cache().get_or_compute(key, || diff(state, set)).is_empty()
                            }
                            None => !diff(state, set).is_empty(),
                        }
                    })
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
        let refused = state.rejected.as_ref().is_some_and(|r| r.0 == set.version() && r.1 == state.subscription);
        if refused && !state.owes_response && state.forced.is_empty() {
            // The proxy refused exactly this content: wait for a set that differs.
            return None;
        }
        let mut d: Arc<Diff> = match shared_diff_key(state, &set) {
            // Proxies that hold the same set and subscribe to the same names need the
            // same change: compute it once per push, not once per proxy (and share it
            // unless this proxy's removals are held).
            Some(key) => self.registry.diff_cache().get_or_compute(key, || diff(state, &set)),
            None => Arc::new(diff(state, &set)),
        };
        state.resend = None;
        if d.is_empty() && !state.owes_response && !state.nacked {
            // The proxy already has everything it subscribed to (changes were to names
            // it did not ask for): what it was sent is what is desired, and the new set
            // describes what it holds as well as the old one did.
            state.view = ClientView::Set(set.clone());
            self.status.update(ty, |s| {
                if s.sent_version.is_some() {
                    s.desired_version = s.sent_version.clone();
                    s.sent_set = Some(set.clone());
                }
            });
            if ty == ResourceType::Cluster {
                let needed = set.endpoint_names().clone();
                self.status.update_endpoints(|e| e.needed = Some(needed));
            }
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
                    let d = Arc::make_mut(&mut d);
                    d.unchanged.extend(kept);
                    d.removals.clear();
                    d.encoded = Default::default();
                    state.removals_held = true;
                    tracing::debug!(node = %self.node_id, "holding cluster removals until listeners and routes are acknowledged");
                }
            }
        }
        if d.is_empty() && !state.owes_response && !state.nacked {
            return None;
        }

        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        let version = sent_set.version().to_owned();
        let full_state = self.api == XdsApi::StateOfTheWorld && (ty.is_wildcard_type() || state.subscription.wildcard);
        // Proxies sharing this diff share the encoded body too.
        let body =
            d.encoded[self.api as usize].get_or_init(|| encode_body(self.api, ty, &d, full_state, &version)).clone();
        let response = Response::new(self.api, ty.type_url(), nonce.clone(), body);

        // What the proxy subscribes to and the set has: the diff's two halves.
        let count = d.upserts.len() + d.unchanged.len();
        let needed = (ty == ResourceType::Cluster).then(|| sent_set.endpoint_names().clone());
        let before = std::mem::replace(&mut state.view, ClientView::Set(sent_set.clone()));
        let complete = state.nacked || full_state;
        let sent = Sent {
            nonce: nonce.clone(),
            version: version.clone(),
            set: sent_set.clone(),
            subscription: state.subscription.clone(),
            before,
            complete,
            full_state,
        };
        if let Some(previous) = state.pending.replace(sent) {
            state.in_flight.push_back(previous);
            // A proxy that stops answering must not make this grow without bound.
            while state.in_flight.len() > 16 {
                state.in_flight.pop_front();
            }
        }
        state.last_nonce = nonce.clone();
        state.owes_response = false;
        state.forced.clear();

        // Envoy re-warms every EDS cluster that is new or changed and waits for its
        // assignment: mark those for the EDS response that follows, even unchanged.
        if let Some(needed) = needed {
            if let (Some(changed), Some(eds)) =
                (&d.endpoints_awaited, self.types.get_mut(&ResourceType::ClusterLoadAssignment))
            {
                eds.resend = Some(match eds.resend.take() {
                    Some(earlier) => Arc::new(earlier.union(changed).cloned().collect()),
                    None => changed.clone(),
                });
            }
            self.status.update_endpoints(|e| e.needed = Some(needed));
        }

        let bytes = response.encoded_len() as u64;
        let stats = self.stats();
        stats.responses_sent.fetch_add(1, Ordering::Relaxed);
        stats.pushes_by_type[ty.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(since) = self.converging_since {
            stats.push_latency[ty.index()].observe(since.elapsed());
        }
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
            s.sent_set = Some(sent_set);
        });
        Some(response)
    }
}

/// The response that carries `d`: in state of the world, wildcard types carry the
/// whole set (`full_state`) and named types the changed resources; delta responses
/// carry changes and removals.
fn encode_body(api: XdsApi, ty: ResourceType, d: &Diff, full_state: bool, version: &str) -> bytes::Bytes {
    let type_url = ty.type_url().to_owned();
    match api {
        XdsApi::StateOfTheWorld => {
            let resources: Vec<_> = if full_state {
                let mut all: Vec<_> = d.upserts.iter().chain(d.unchanged.iter()).collect();
                all.sort_by(|a, b| a.name().cmp(b.name()));
                all.iter().map(|r| r.body().clone()).collect()
            } else {
                d.upserts.iter().map(|r| r.body().clone()).collect()
            };
            Response::encode_body(&DiscoveryResponse {
                version_info: version.to_owned(),
                resources,
                type_url,
                ..Default::default()
            })
        }
        XdsApi::Delta => Response::encode_body(&DeltaDiscoveryResponse {
            system_version_info: version.to_owned(),
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
            ..Default::default()
        }),
    }
}
