//! The protocol state of one stream, per type: what the proxy subscribed to, what it
//! holds as far as we know, and which responses it has yet to answer.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};

use crate::resource::ResourceSet;

/// What a proxy asked for, whichever protocol it speaks.
#[derive(Debug, Default)]
pub(super) struct NormalizedRequest {
    pub(super) type_url: String,
    pub(super) nonce: String,
    pub(super) version_info: String,
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
pub(super) enum Subscription {
    Wildcard,
    /// Shared between connections that subscribe to the same names (see
    /// [`ConnectionRegistry::intern_names`]).
    Names(Arc<BTreeSet<String>>),
}

impl Subscription {
    pub(super) fn contains(&self, name: &str) -> bool {
        match self {
            Subscription::Wildcard => true,
            Subscription::Names(names) => names.contains(name),
        }
    }
}

/// What the proxy holds of one type, as far as this session knows.
#[derive(Clone, Debug)]
pub(super) enum ClientView {
    Nothing,
    /// The proxy holds the subscribed part of this set.
    Set(Arc<ResourceSet>),
    /// The proxy told us these versions when it (re)connected (delta only).
    Versions(HashMap<String, String>),
}

impl ClientView {
    pub(super) fn version_of(&self, name: &str) -> Option<&str> {
        match self {
            ClientView::Nothing => None,
            ClientView::Set(set) => set.get(name).map(|r| r.version()),
            ClientView::Versions(v) => v.get(name).map(String::as_str),
        }
    }
}

#[derive(Debug)]
pub(super) struct TypeState {
    pub(super) subscription: Subscription,
    pub(super) view: ClientView,
    /// Nonce and version of the last response not yet acknowledged.
    pub(super) pending: Option<(String, String)>,
    /// Nonce of the last response sent, acknowledged or not: a request quoting it is
    /// current, not stale.
    pub(super) last_nonce: String,
    /// The last answer was a NACK: the proxy kept older content than `view` says.
    pub(super) nacked: bool,
    /// Delta only: earlier responses still unanswered (nonce, version), oldest first.
    /// Each delta response is a separate change, so a NACK of an earlier one matters
    /// even after a later one went out.
    pub(super) in_flight: VecDeque<(String, String)>,
    /// The proxy has asked and not yet had any answer: answer even with nothing.
    pub(super) owes_response: bool,
    /// Names subscribed since the last response: send them whatever the view says.
    pub(super) forced: BTreeSet<String>,
    /// Removals held back until dependent types are acknowledged.
    pub(super) removals_held: bool,
}
