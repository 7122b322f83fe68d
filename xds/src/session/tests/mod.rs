//! Session tests: shared helpers here, cases by topic in the submodules.

mod convergence;
mod delta;
mod sotw;
mod warming;

use super::*;
use crate::status::{RegisteredConnection, SyncState, TypeStatus};
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

    fn state(&self, ty: ResourceType) -> SyncState {
        // Through report(), as proxy-status reads it.
        let report = self.conn.status.report();
        report.types.get(ty.short_name()).map(|t| t.state).unwrap_or(SyncState::NotSent)
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

fn sotw(r: &Response) -> DiscoveryResponse {
    match r.decoded() {
        Decoded::Sotw(r) => r,
        Decoded::Delta(_) => panic!("expected a state-of-the-world response"),
    }
}

fn delta(r: &Response) -> DeltaDiscoveryResponse {
    match r.decoded() {
        Decoded::Delta(r) => r,
        Decoded::Sotw(_) => panic!("expected a delta response"),
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

fn mbb_snapshots() -> (Arc<Snapshot>, Arc<Snapshot>) {
    let before = mk_snapshot(&[(CDS, &[("a", "1"), ("b", "1")]), (LDS, &[("l", "1")]), (RDS, &[("r", "to-a-and-b")])]);
    let after = mk_snapshot(&[(CDS, &[("a", "2")]), (LDS, &[("l", "2")]), (RDS, &[("r", "to-a")])]);
    (before, after)
}

/// Per-proxy state is paid ten thousand times over: keep what each type costs small
/// (the figures are today's, on 64-bit targets).
#[test]
fn per_type_state_stays_small() {
    use super::stream::{ClientView, Sent, TypeState};
    eprintln!(
        "TypeState {} B, Sent {} B, ClientView {} B",
        std::mem::size_of::<TypeState>(),
        std::mem::size_of::<Sent>(),
        std::mem::size_of::<ClientView>()
    );
    assert!(std::mem::size_of::<ClientView>() <= 16);
    assert!(std::mem::size_of::<Sent>() <= 96);
    assert!(std::mem::size_of::<TypeState>() <= 240);
}
