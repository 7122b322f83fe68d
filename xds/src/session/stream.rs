//! The protocol state of one stream, per type: what the proxy subscribed to, what it
//! holds as far as we know, and which responses it has yet to answer.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};

use crate::resource::{ResourceSet, ResourceType};

/// What a proxy asked for, whichever protocol it speaks.
#[derive(Debug, Default)]
pub(super) struct NormalizedRequest {
    pub(super) type_url: String,
    pub(super) nonce: String,
    pub(super) error: Option<String>,
    /// State of the world: the complete list of names (empty = wildcard for CDS/LDS).
    pub(super) sotw_names: Option<Vec<String>>,
    pub(super) subscribe: Vec<String>,
    pub(super) unsubscribe: Vec<String>,
    pub(super) initial_versions: HashMap<String, String>,
}

impl From<DiscoveryRequest> for NormalizedRequest {
    fn from(r: DiscoveryRequest) -> Self {
        NormalizedRequest {
            type_url: r.type_url,
            nonce: r.response_nonce,
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

/// What the proxy subscribed to of one type: everything (wildcard), named resources,
/// or both (delta lets a proxy add names to a wildcard subscription, and drop the
/// wildcard while keeping the names).
#[derive(Clone, Debug, PartialEq, Default)]
pub(super) struct Subscription {
    pub(super) wildcard: bool,
    /// Shared between connections that subscribe to the same names (see
    /// [`crate::ConnectionRegistry::intern_names`]).
    pub(super) names: Arc<BTreeSet<String>>,
}

impl Subscription {
    pub(super) fn contains(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// What the proxy holds of one type, as far as this session knows.
#[derive(Clone, Debug)]
pub(super) enum ClientView {
    Nothing,
    /// The proxy holds the subscribed part of this set.
    Set(Arc<ResourceSet>),
    /// The proxy holds these versions: told when it (re)connected (delta), or what was
    /// left of a set when its subscription widened.
    Versions(Arc<HashMap<String, String>>),
    /// The proxy rejected an update: it may hold any of these names, at versions we do
    /// not know. Everything it subscribes to is sent again.
    Unknown(Arc<BTreeSet<String>>),
}

impl ClientView {
    pub(super) fn version_of(&self, name: &str) -> Option<&str> {
        match self {
            ClientView::Nothing | ClientView::Unknown(_) => None,
            ClientView::Set(set) => set.get(name).map(|r| r.version()),
            ClientView::Versions(v) => v.get(name).map(String::as_str),
        }
    }

    /// Whether the proxy may hold `name` (so removing it must be said).
    pub(super) fn may_hold(&self, name: &str) -> bool {
        match self {
            ClientView::Unknown(names) => names.contains(name),
            _ => self.version_of(name).is_some(),
        }
    }

    /// Every name the proxy may hold.
    pub(super) fn names(&self) -> Vec<String> {
        match self {
            ClientView::Nothing => Vec::new(),
            ClientView::Set(set) => set.names().map(|n| n.to_string()).collect(),
            ClientView::Versions(v) => v.keys().cloned().collect(),
            ClientView::Unknown(names) => names.iter().cloned().collect(),
        }
    }

    /// The same view, limited to what `subscription` covers: what the proxy holds
    /// once a wider subscription makes the rest of a set relevant.
    fn restricted_to(&self, subscription: &Subscription) -> ClientView {
        match self {
            ClientView::Set(set) => ClientView::Versions(Arc::new(
                set.iter()
                    .filter(|r| subscription.contains(r.name()))
                    .map(|r| (r.name().to_owned(), r.version().to_owned()))
                    .collect(),
            )),
            other => other.clone(),
        }
    }
}

/// A response sent and not yet answered.
#[derive(Clone, Debug)]
pub(super) struct Sent {
    pub(super) nonce: String,
    pub(super) version: String,
    /// What it brings the proxy to (the subscribed part of it), and that part.
    pub(super) set: Arc<ResourceSet>,
    pub(super) subscription: Subscription,
    /// What the proxy was thought to hold before this response.
    pub(super) before: ClientView,
    /// Sent after a NACK, from an unknown view: it carries everything subscribed, so
    /// its ACK means the proxy holds a known state again.
    pub(super) complete: bool,
    /// A state-of-the-world response that carries the whole set: complete whatever
    /// came before it.
    pub(super) full_state: bool,
}

#[derive(Debug)]
pub(super) struct TypeState {
    pub(super) subscription: Subscription,
    pub(super) view: ClientView,
    /// The last response, not yet acknowledged.
    pub(super) pending: Option<Sent>,
    /// Nonce of the last response sent, acknowledged or not: a request quoting it is
    /// current, not stale.
    pub(super) last_nonce: String,
    /// A NACK is outstanding: what the proxy holds is unknown until it acknowledges a
    /// complete response; `rejected` is the set version it refused and the
    /// subscription it had then: the same again is not sent.
    pub(super) nacked: bool,
    pub(super) rejected: Option<Box<(String, Subscription)>>,
    /// Earlier responses still unanswered, oldest first. A NACK of an earlier one
    /// matters even after a later one went out: the later one was computed as if the
    /// earlier had been applied.
    pub(super) in_flight: VecDeque<Sent>,
    /// The proxy has asked and not yet had any answer: answer even with nothing.
    pub(super) owes_response: bool,
    /// Names subscribed since the last response: send them whatever the view says.
    pub(super) forced: BTreeSet<String>,
    /// EDS only: assignments whose clusters changed in the last cluster response;
    /// Envoy re-warms those clusters and waits for them, so they are sent again even
    /// unchanged. Shared by every proxy that got the same cluster change.
    pub(super) resend: Option<Arc<BTreeSet<Arc<str>>>>,
    /// Removals held back until dependent types are acknowledged.
    pub(super) removals_held: bool,
}

/// What a request's nonce said about our responses.
#[derive(Debug)]
pub(super) enum Answer {
    /// No nonce, or one from before this stream: nothing to record.
    None,
    /// An ACK of the response `sent`; `latest` when no later response is pending.
    Ack { sent: Sent, latest: bool },
    /// A NACK of the response `sent`.
    Nack { sent: Sent, message: String },
    /// The latest response, already answered: a new request on it is current.
    Repeat,
    /// Not the latest response: in state of the world the request is superseded.
    Stale,
}

impl TypeState {
    pub(super) fn new() -> TypeState {
        TypeState {
            subscription: Subscription::default(),
            view: ClientView::Nothing,
            pending: None,
            last_nonce: String::new(),
            nacked: false,
            rejected: None,
            in_flight: VecDeque::new(),
            owes_response: true,
            forced: BTreeSet::new(),
            resend: None,
            removals_held: false,
        }
    }

    /// Settles the response a request answers, if any, and returns what it said.
    pub(super) fn take_answer(&mut self, req: &NormalizedRequest) -> Answer {
        if req.nonce.is_empty() {
            return Answer::None;
        }
        let sent = if self.pending.as_ref().is_some_and(|p| p.nonce == req.nonce) {
            let sent = self.pending.take().expect("checked");
            self.in_flight.clear();
            sent
        } else if req.nonce == self.last_nonce {
            return Answer::Repeat;
        } else if let Some(at) = self.in_flight.iter().position(|s| s.nonce == req.nonce) {
            // The answer to an earlier response; it and older ones are settled.
            self.in_flight.drain(..=at).next_back().expect("non-empty")
        } else {
            return Answer::Stale;
        };
        let latest = self.pending.is_none();
        match &req.error {
            Some(message) => {
                // What the proxy holds is now unknown: it may have kept part of the
                // update, and anything it held before.
                let mut names: BTreeSet<String> = sent.before.names().into_iter().collect();
                names.extend(self.view.names());
                self.view = ClientView::Unknown(Arc::new(names));
                self.nacked = true;
                self.rejected = Some(Box::new((sent.version.clone(), sent.subscription.clone())));
                for later in self.pending.iter_mut().chain(self.in_flight.iter_mut()) {
                    later.complete = later.full_state;
                }
                Answer::Nack { sent, message: message.clone() }
            }
            None => {
                if sent.complete {
                    self.nacked = false;
                    self.rejected = None;
                    if latest && matches!(self.view, ClientView::Unknown(_)) {
                        // A NACK of an earlier response arrived after this one went out.
                        self.view = ClientView::Set(sent.set.clone());
                    }
                }
                Answer::Ack { sent, latest }
            }
        }
    }

    /// Applies the subscription part of a request. `first` is true for the first
    /// request of this type on the stream.
    pub(super) fn subscribe(&mut self, ty: ResourceType, first: bool, req: &mut NormalizedRequest) {
        let ty_is_wildcard = ty.is_wildcard_type();
        if let Some(names) = req.sotw_names.take() {
            let wildcard = names.is_empty() && ty_is_wildcard || names.iter().any(|n| n == "*");
            let new: BTreeSet<String> = names.into_iter().filter(|n| n != "*").collect();
            let old = &self.subscription;
            if wildcard && !old.wildcard && !first {
                self.view = self.view.restricted_to(old);
            }
            if !(old.wildcard && wildcard) {
                self.forced.extend(new.difference(&old.names).cloned());
            }
            // Most requests repeat the names (an ACK): keep the shared set then.
            let names = if *old.names == new { old.names.clone() } else { Arc::new(new) };
            self.subscription = Subscription { wildcard, names };
            return;
        }
        if first {
            if ty_is_wildcard && req.subscribe.is_empty() {
                self.subscription.wildcard = true;
            }
            if !req.initial_versions.is_empty() {
                self.view = ClientView::Versions(Arc::new(std::mem::take(&mut req.initial_versions)));
            }
        }
        for name in std::mem::take(&mut req.subscribe) {
            if name == "*" {
                if !self.subscription.wildcard {
                    // Resources the names did not cover were never sent: the proxy
                    // holds only what it was subscribed to.
                    if !first {
                        self.view = self.view.restricted_to(&self.subscription);
                        self.owes_response = true;
                    }
                    self.subscription.wildcard = true;
                }
                continue;
            }
            // A name whose version the proxy quoted on (re)connecting need not be sent,
            // except endpoints: any cluster may be warming for its assignment (the
            // stream dropped between a cluster change and the endpoints that follow),
            // and Envoy waits for a fresh one whatever version it has cached.
            let known = first && ty != ResourceType::ClusterLoadAssignment && self.view.version_of(&name).is_some();
            if Arc::make_mut(&mut self.subscription.names).insert(name.clone()) && !known {
                self.forced.insert(name);
            }
        }
        for name in std::mem::take(&mut req.unsubscribe) {
            if name == "*" {
                self.subscription.wildcard = false;
            } else {
                Arc::make_mut(&mut self.subscription.names).remove(&name);
                self.forced.remove(&name);
            }
        }
    }
}
