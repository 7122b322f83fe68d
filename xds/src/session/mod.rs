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

mod push;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource as DeltaResource,
};
use prost::Message;

use crate::resource::{Resource, ResourceSet, ResourceType, Snapshot};
use crate::status::{now_millis, ConnectionRegistry, ConnectionStatus, Nack, XdsApi, XdsStats};
pub(crate) use push::DiffCache;
use push::{diff, in_sync, shared_diff_key};
use stream::{ClientView, NormalizedRequest, Subscription, TypeState};
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
