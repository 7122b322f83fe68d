//! A simulated Envoy: the parts of its xDS client that decide whether a control plane
//! converges it.
//!
//! What it does as Envoy does:
//! - A new or changed EDS cluster warms until an EDS response naming its assignment
//!   arrives after the cluster update (Envoy re-warms an updated cluster and waits for
//!   a fresh ClusterLoadAssignment, whatever it has cached).
//! - Clusters and listeners decide the EDS and RDS subscriptions; a change of them is
//!   sent after the ACK of the response that caused it.
//! - A response holding a bad resource is NACKed, and the good part of it is kept.
//! - Reconnects carry the versions it holds: `initial_resource_versions` (delta), the
//!   last accepted `version_info` per type (state of the world).
//!
//! Resources other than clusters are opaque bodies `name|reference|content` (see
//! `world.rs`); clusters are real encoded `Cluster`s.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use prost::Message;
use xds::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use xds::pb::envoy::config::cluster::v3::Cluster;
use xds::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use xds::pb::google::protobuf::Any;
use xds::pb::google::rpc::Status as RpcStatus;
use xds::session::Decoded as Response;
use xds::{ResourceType, XdsApi};

use crate::world::{self, Body};

pub const TYPES: [ResourceType; 4] = [
    ResourceType::Cluster,
    ResourceType::ClusterLoadAssignment,
    ResourceType::Listener,
    ResourceType::RouteConfiguration,
];

/// A request to put on the stream, either flavour.
#[derive(Clone)]
pub enum Request {
    Sotw(DiscoveryRequest),
    Delta(DeltaDiscoveryRequest),
}

/// One resource the proxy holds: its body and, in delta, the version it was sent with.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    pub body: Vec<u8>,
    pub version: String,
}

/// What the proxy has of one type, and what it last told the server.
#[derive(Clone, Debug, Default)]
struct TypeClient {
    held: BTreeMap<String, Held>,
    /// Named types: the names asked for. Wildcard types: unused.
    subscribed: BTreeSet<String>,
    /// State of the world: the version of the last accepted response, and the nonce of
    /// the last response answered.
    version_info: String,
    nonce: String,
    /// Whether this type was ever requested (requests are re-sent on reconnect).
    requested: bool,
}

pub struct SimEnvoy {
    pub api: XdsApi,
    types: BTreeMap<ResourceType, TypeClient>,
    /// EDS clusters waiting for their assignment: cluster name → assignment name.
    warming: BTreeMap<String, String>,
    /// Delta: whether wildcard types are subscribed as "*" (else the legacy empty list).
    explicit_wildcard: bool,
    pub node_id: String,
}

/// A cluster as the proxy sees it.
struct ClusterInfo {
    eds_name: Option<String>,
    bad: bool,
}

fn cluster_info(any: &Any) -> (String, ClusterInfo) {
    let cluster = Cluster::decode(any.value.as_slice()).expect("a cluster");
    let eds =
        matches!(cluster.cluster_discovery_type, Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32);
    let eds_name = eds.then(|| {
        let service = cluster.eds_cluster_config.as_ref().map(|c| c.service_name.clone()).unwrap_or_default();
        if service.is_empty() {
            cluster.name.clone()
        } else {
            service
        }
    });
    (cluster.name, ClusterInfo { eds_name, bad: cluster.alt_stat_name == world::BAD })
}

/// Name and badness of any resource body.
fn describe(ty: ResourceType, any: &Any) -> (String, bool) {
    if ty == ResourceType::Cluster {
        let (name, info) = cluster_info(any);
        (name, info.bad)
    } else {
        let body = Body::parse(&any.value);
        (body.name, body.bad)
    }
}

impl SimEnvoy {
    pub fn new(api: XdsApi, explicit_wildcard: bool) -> SimEnvoy {
        SimEnvoy {
            api,
            types: TYPES.iter().map(|t| (*t, TypeClient::default())).collect(),
            warming: BTreeMap::new(),
            explicit_wildcard,
            node_id: "sim-envoy".into(),
        }
    }

    pub fn held(&self, ty: ResourceType) -> &BTreeMap<String, Held> {
        &self.types[&ty].held
    }

    pub fn subscribed(&self, ty: ResourceType) -> &BTreeSet<String> {
        &self.types[&ty].subscribed
    }

    pub fn warming(&self) -> &BTreeMap<String, String> {
        &self.warming
    }

    /// The first requests on a new stream: CDS and LDS, then whatever named types it
    /// had subscribed to, each with what the proxy holds.
    pub fn connect(&mut self) -> Vec<Request> {
        let mut out = Vec::new();
        for ty in TYPES {
            let t = self.types.get_mut(&ty).expect("all types");
            if !(ty.is_wildcard_type() || t.requested) {
                continue;
            }
            t.requested = true;
            t.nonce.clear();
            out.push(self.initial_request(ty));
        }
        out
    }

    fn initial_request(&self, ty: ResourceType) -> Request {
        let t = &self.types[&ty];
        match self.api {
            XdsApi::StateOfTheWorld => Request::Sotw(DiscoveryRequest {
                node: Some(self.node()),
                type_url: ty.type_url().into(),
                version_info: t.version_info.clone(),
                resource_names: if ty.is_wildcard_type() { vec![] } else { t.subscribed.iter().cloned().collect() },
                ..Default::default()
            }),
            XdsApi::Delta => Request::Delta(DeltaDiscoveryRequest {
                node: Some(self.node()),
                type_url: ty.type_url().into(),
                resource_names_subscribe: if ty.is_wildcard_type() {
                    if self.explicit_wildcard {
                        vec!["*".into()]
                    } else {
                        vec![]
                    }
                } else {
                    t.subscribed.iter().cloned().collect()
                },
                initial_resource_versions: t.held.iter().map(|(n, h)| (n.clone(), h.version.clone())).collect(),
                ..Default::default()
            }),
        }
    }

    fn node(&self) -> xds::pb::envoy::config::core::v3::Node {
        xds::pb::envoy::config::core::v3::Node { id: self.node_id.clone(), ..Default::default() }
    }

    /// Processes one response; returns the requests Envoy sends in answer: the ACK or
    /// NACK, then any subscription change it caused.
    pub fn on_response(&mut self, response: Response) -> Vec<Request> {
        let ty = ResourceType::from_type_url(response.type_url()).expect("served type");
        // (name → new body and version) to apply, names removed, and bad ones refused.
        let (upserts, removals, full_state): (Vec<(String, Held, bool)>, Vec<String>, bool) = match &response {
            Response::Sotw(r) => (
                r.resources
                    .iter()
                    .map(|any| {
                        let (name, bad) = describe(ty, any);
                        (name, Held { body: any.value.clone(), version: String::new() }, bad)
                    })
                    .collect(),
                vec![],
                ty.is_wildcard_type(),
            ),
            Response::Delta(r) => (
                r.resources
                    .iter()
                    .map(|res| {
                        let any = res.resource.as_ref().expect("a body");
                        let (name, bad) = describe(ty, any);
                        assert_eq!(name, res.name, "delta resource name matches its body");
                        (name, Held { body: any.value.clone(), version: res.version.clone() }, bad)
                    })
                    .collect(),
                r.removed_resources.clone(),
                false,
            ),
        };
        let rejected: Vec<String> = upserts.iter().filter(|(_, _, bad)| *bad).map(|(n, _, _)| n.clone()).collect();

        // Apply the good part (Envoy keeps what it could accept of a rejected update).
        let before_clusters: BTreeMap<String, Held> = self.types[&ResourceType::Cluster].held.clone();
        let t = self.types.get_mut(&ty).expect("all types");
        if full_state {
            let keep: BTreeSet<&String> = upserts.iter().map(|(n, _, _)| n).collect();
            t.held.retain(|n, _| keep.contains(n));
        }
        for name in &removals {
            t.held.remove(name);
        }
        for (name, held, bad) in upserts.iter() {
            if !bad {
                t.held.insert(name.clone(), held.clone());
            }
        }
        if ty == ResourceType::ClusterLoadAssignment {
            let arrived: BTreeSet<&String> = upserts.iter().filter(|(_, _, bad)| !bad).map(|(n, _, _)| n).collect();
            self.warming.retain(|_, eds| !arrived.contains(eds));
        }
        if ty == ResourceType::Cluster {
            self.after_cluster_update(&before_clusters);
        }

        // Answer: ACK or NACK, then subscription changes.
        let mut out = Vec::new();
        let t = self.types.get_mut(&ty).expect("all types");
        let error = (!rejected.is_empty()).then(|| RpcStatus {
            code: 3,
            message: format!("rejected {}", rejected.join(",")),
            details: vec![],
        });
        match &response {
            Response::Sotw(r) => {
                if error.is_none() {
                    t.version_info = r.version_info.clone();
                }
                t.nonce = r.nonce.clone();
                out.push(Request::Sotw(DiscoveryRequest {
                    type_url: r.type_url.clone(),
                    version_info: t.version_info.clone(),
                    response_nonce: r.nonce.clone(),
                    resource_names: if ty.is_wildcard_type() { vec![] } else { t.subscribed.iter().cloned().collect() },
                    error_detail: error,
                    ..Default::default()
                }));
            }
            Response::Delta(r) => out.push(Request::Delta(DeltaDiscoveryRequest {
                type_url: r.type_url.clone(),
                response_nonce: r.nonce.clone(),
                error_detail: error,
                ..Default::default()
            })),
        }
        match ty {
            ResourceType::Cluster => out.extend(self.resubscribe(ResourceType::ClusterLoadAssignment)),
            ResourceType::Listener => out.extend(self.resubscribe(ResourceType::RouteConfiguration)),
            _ => {}
        }
        out
    }

    /// New and changed EDS clusters warm; removed ones stop warming.
    fn after_cluster_update(&mut self, before: &BTreeMap<String, Held>) {
        let held = &self.types[&ResourceType::Cluster].held;
        self.warming.retain(|cluster, _| held.contains_key(cluster));
        for (name, h) in held {
            if before.get(name).map(|b| &b.body) == Some(&h.body) {
                continue;
            }
            let any = Any { type_url: ResourceType::Cluster.type_url().into(), value: h.body.clone() };
            match cluster_info(&any).1.eds_name {
                Some(eds) => {
                    self.warming.insert(name.clone(), eds);
                }
                None => {
                    self.warming.remove(name);
                }
            }
        }
    }

    /// The names a named type must subscribe to, from the types that refer to it.
    pub fn wanted(&self, ty: ResourceType) -> BTreeSet<String> {
        match ty {
            ResourceType::ClusterLoadAssignment => self.types[&ResourceType::Cluster]
                .held
                .values()
                .filter_map(|h| {
                    let any = Any { type_url: ResourceType::Cluster.type_url().into(), value: h.body.clone() };
                    cluster_info(&any).1.eds_name
                })
                .collect(),
            ResourceType::RouteConfiguration => {
                self.types[&ResourceType::Listener].held.values().map(|h| Body::parse(&h.body).reference).collect()
            }
            _ => BTreeSet::new(),
        }
    }

    /// A subscription request when the wanted names changed.
    fn resubscribe(&mut self, ty: ResourceType) -> Option<Request> {
        let wanted = self.wanted(ty);
        let api = self.api;
        let node = self.node();
        let t = self.types.get_mut(&ty).expect("all types");
        if wanted == t.subscribed && t.requested {
            return None;
        }
        let added: Vec<String> = wanted.difference(&t.subscribed).cloned().collect();
        let removed: Vec<String> = t.subscribed.difference(&wanted).cloned().collect();
        // Envoy forgets what it no longer watches.
        for name in &removed {
            t.held.remove(name);
        }
        let first = !t.requested;
        t.requested = true;
        t.subscribed = wanted;
        Some(match api {
            XdsApi::StateOfTheWorld => Request::Sotw(DiscoveryRequest {
                node: first.then_some(node),
                type_url: ty.type_url().into(),
                version_info: t.version_info.clone(),
                response_nonce: t.nonce.clone(),
                resource_names: t.subscribed.iter().cloned().collect(),
                ..Default::default()
            }),
            XdsApi::Delta => Request::Delta(DeltaDiscoveryRequest {
                type_url: ty.type_url().into(),
                resource_names_subscribe: added,
                resource_names_unsubscribe: removed,
                ..Default::default()
            }),
        })
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |url: &str| url.rsplit('.').next().unwrap_or_default().to_owned();
        match self {
            Request::Sotw(r) => write!(
                f,
                "sotw {} v={} nonce={} names={:?}{}",
                short(&r.type_url),
                r.version_info,
                r.response_nonce,
                r.resource_names,
                if r.error_detail.is_some() { " NACK" } else { "" }
            ),
            Request::Delta(r) => write!(
                f,
                "delta {} nonce={} +{:?} -{:?} initial={:?}{}",
                short(&r.type_url),
                r.response_nonce,
                r.resource_names_subscribe,
                r.resource_names_unsubscribe,
                r.initial_resource_versions.keys().collect::<Vec<_>>(),
                if r.error_detail.is_some() { " NACK" } else { "" }
            ),
        }
    }
}

impl Request {
    pub fn apply(self, session: &mut xds::session::Session) -> Vec<Response> {
        match self {
            Request::Sotw(r) => session.on_sotw_request(r),
            Request::Delta(r) => session.on_delta_request(r),
        }
        .iter()
        .map(xds::session::Response::decoded)
        .collect()
    }
}

/// Messages in flight on one stream, each direction in order.
#[derive(Default)]
pub struct Wire {
    pub to_server: VecDeque<Request>,
    pub to_client: VecDeque<Response>,
}

impl Wire {
    pub fn is_quiet(&self) -> bool {
        self.to_server.is_empty() && self.to_client.is_empty()
    }
}
