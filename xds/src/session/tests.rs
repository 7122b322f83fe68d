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
    assert_eq!(h.state(CDS), SyncState::Synced);
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
    assert_eq!(h.state(CDS), SyncState::NotSent);

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
    assert_eq!(h.state(CDS), SyncState::Stale);

    assert!(h.sotw_ack(&r, &[]).is_empty());
    let st = h.status(CDS);
    assert_eq!(st.acked_version.as_deref(), Some(version(&snap, CDS).as_str()));
    assert!(st.acked_at_ms.is_some());
    assert_eq!(st.desired_version, st.sent_version);
    assert_eq!(st.sync_state(), SyncState::Synced);
    assert_eq!(h.state(CDS), SyncState::Synced);
    assert_eq!(h.stat(|s| &s.acks), 1);
    assert_eq!(h.stat(|s| &s.responses_sent), 1);
    assert_eq!(h.stat(|s| &s.resources_sent), 2);

    // A duplicate of the same ACK is neither a second ACK nor a reason to answer.
    assert!(h.sotw_ack(&r, &[]).is_empty());
    assert_eq!(h.stat(|s| &s.acks), 1);

    // A new snapshot: STALE until acknowledged again.
    let snap2 = mk_snapshot(&[(CDS, &[("a", "2"), ("b", "1")])]);
    let r2 = one(h.snapshot(&snap2));
    assert_eq!(h.state(CDS), SyncState::Stale);
    h.sotw_ack(&r2, &[]);
    assert_eq!(h.state(CDS), SyncState::Synced);
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

    // The ACK of r1 arrives after r2 was sent: recorded, not answered (the answer to
    // r2 will be), though the names it lists are kept.
    assert!(h.sotw(sotw_req(EDS, &["a", "b"], &sotw(&r1).version_info, r1.nonce())).is_empty());
    assert_eq!(h.stat(|s| &s.acks), 1);
    assert_eq!(h.status(EDS).acked_version, None, "not the latest response");
    let r = one(h.sotw_ack(&r2, &["a", "b"]));
    assert_eq!(sotw_bodies(&r), ["b:1"]);
    let r2 = r;
    // An unknown nonce too.
    assert!(h.sotw(nack(EDS, &["a", "b"], "", "bogus", "nope")).is_empty());
    assert_eq!(h.stat(|s| &s.stale_nonces), 1);
    assert_eq!(h.status(EDS).last_nack, None);

    // The answer to the latest response still counts.
    assert!(h.sotw_ack(&r2, &["a", "b"]).is_empty());
    assert_eq!(h.state(EDS), SyncState::Synced);
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
    assert_eq!(h.state(CDS), SyncState::Nacked);
    assert_eq!(h.stat(|s| &s.nacks), 1);

    // The same content again (a new snapshot object) is not re-sent.
    let bad_again = mk_snapshot(&[(CDS, &[("a", "bad")]), (LDS, &[("l", "1")])]);
    assert!(h.snapshot(&bad_again).is_empty());
    assert_eq!(h.state(CDS), SyncState::Nacked);

    // A fix is sent, and its ACK clears the NACK.
    let fixed = mk_snapshot(&[(CDS, &[("a", "fixed")])]);
    let r3 = one(h.snapshot(&fixed));
    assert_eq!(sotw_bodies(&r3), ["a:fixed"]);
    assert_eq!(h.state(CDS), SyncState::Nacked);
    assert!(h.sotw_ack(&r3, &[]).is_empty());
    assert_eq!(h.status(CDS).last_nack, None);
    assert_eq!(h.state(CDS), SyncState::Synced);
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
    assert_eq!(h.state(EDS), SyncState::Synced);

    // A change to a resource the proxy did not ask for is not sent, and does not
    // make the proxy look out of date.
    let snap3 = mk_snapshot(&[(EDS, &[("a", "1"), ("b", "2"), ("c", "2")])]);
    assert!(h.snapshot(&snap3).is_empty());
    assert_eq!(h.state(EDS), SyncState::Synced);
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
fn sotw_reconnect_quoting_the_current_version_is_answered() {
    let snap = mk_snapshot(&[(CDS, &[("a", "1")]), (EDS, &[("a", "1"), ("b", "1")])]);
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    h.snapshot(&snap);
    // The version is that of the last response the proxy accepted; after a NACK it may
    // hold more than that (Envoy keeps the valid part of a rejected update).
    let r = one(h.sotw(sotw_req(CDS, &[], &version(&snap, CDS), "")));
    assert_eq!(sotw_names(&r), ["a"]);
    h.sotw_ack(&r, &[]);
    assert_eq!(h.state(CDS), SyncState::Synced);

    // A named type is answered whatever version it quotes: the version says nothing of
    // names the proxy asks for now and was never sent on this stream.
    let r = one(h.sotw(sotw_req(EDS, &["a", "b"], &version(&snap, EDS), "")));
    assert_eq!(sotw_bodies(&r), ["a:1", "b:1"]);
    assert_eq!(h.state(EDS), SyncState::Stale);
    assert!(h.sotw_ack(&r, &["a", "b"]).is_empty());
    assert_eq!(h.state(EDS), SyncState::Synced);
    assert_eq!(h.status(EDS).resource_count, 2);

    // Later changes are computed against what the proxy has.
    let snap2 = mk_snapshot(&[(CDS, &[("a", "1"), ("b", "1")]), (EDS, &[("a", "1"), ("b", "2")])]);
    let out = h.snapshot(&snap2);
    assert_eq!(out.len(), 2);
    assert_eq!(sotw_names(&out[0]), ["a", "b"]);
    assert_eq!(sotw_bodies(&out[1]), ["b:2"]);
}

/// The issue's case: a proxy reconnects quoting the current EDS version while asking
/// for a name never sent on this stream (a cluster it has just added); it must get it
/// rather than warm that cluster until its init fetch timeout.
#[test]
fn sotw_reconnect_asking_for_new_eds_names_gets_them() {
    let snap = mk_snapshot(&[(EDS, &[("a", "1"), ("new", "1")])]);
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    h.snapshot(&snap);
    let r = one(h.sotw(sotw_req(EDS, &["a", "new"], &version(&snap, EDS), "7")));
    assert_eq!(sotw_bodies(&r), ["a:1", "new:1"]);
}

#[test]
fn sotw_first_request_with_a_nonce_from_another_stream() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    let snap = mk_snapshot(&[(CDS, &[("a", "1"), ("b", "1")])]);
    h.snapshot(&snap);
    let r = one(h.sotw(sotw_req(CDS, &[], "old-version", "17")));
    assert_eq!(sotw_names(&r), ["a", "b"]);
    assert!(h.sotw_ack(&r, &[]).is_empty());
    assert_eq!(h.state(CDS), SyncState::Synced);
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
    let before = mk_snapshot(&[(CDS, &[("a", "1"), ("b", "1")]), (LDS, &[("l", "1")]), (RDS, &[("r", "to-a-and-b")])]);
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
    assert_eq!(h.state(CDS), SyncState::Stale, "the proxy has a cluster it should not have");
    assert!(h.sotw_ack(&out[1], &[]).is_empty(), "routes not yet acknowledged");
    let r = one(h.sotw_ack(&out[2], &["r"]));
    assert_eq!(ty_of(&r), CDS);
    assert_eq!(sotw_bodies(&r), ["a:2"]);
    assert_eq!(sotw(&r).version_info, version(&after, CDS));
    h.sotw_ack(&r, &[]);
    for ty in [CDS, LDS, RDS] {
        assert_eq!(h.state(ty), SyncState::Synced, "{ty}");
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
    assert_eq!(h.state(LDS), SyncState::Synced);
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
    assert_eq!(h.state(EDS), SyncState::Synced);
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
    assert_eq!(h.state(EDS), SyncState::Synced);
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
    assert_eq!(h.state(CDS), SyncState::Nacked);
    assert!(h.snapshot(&mk_snapshot(&[(CDS, &[("a", "bad"), ("b", "1")])])).is_empty());

    // What the proxy holds after a NACK is unknown (it may have kept part of the
    // update): the fix carries the whole set.
    let r = one(h.snapshot(&mk_snapshot(&[(CDS, &[("a", "good"), ("b", "1")])])));
    assert_eq!(delta_names(&r), ["a", "b"]);
    assert_eq!(delta(&r).resources[0].version, res_version("a", "good"));
    assert_eq!(h.state(CDS), SyncState::Nacked, "NACKED until the complete update is acknowledged");
    h.delta_ack(&r);
    assert_eq!(h.status(CDS).last_nack, None);
    assert_eq!(h.state(CDS), SyncState::Synced);
}

#[test]
fn sotw_nack_then_complete_resend_of_a_named_type() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    h.snapshot(&mk_snapshot(&[(EDS, &[("a", "1"), ("b", "1")])]));
    let r = one(h.sotw(sotw_req(EDS, &["a", "b"], "", "")));
    h.sotw_ack(&r, &["a", "b"]);
    let bad = mk_snapshot(&[(EDS, &[("a", "bad"), ("b", "1")])]);
    let r = one(h.snapshot(&bad));
    assert_eq!(sotw_bodies(&r), ["a:bad"]);
    let v1 = h.status(EDS).acked_version.unwrap();
    assert!(h.sotw(nack(EDS, &["a", "b"], &v1, r.nonce(), "bad a")).is_empty());
    assert_eq!(h.state(EDS), SyncState::Nacked);
    let r = one(h.snapshot(&mk_snapshot(&[(EDS, &[("a", "good"), ("b", "1")])])));
    assert_eq!(sotw_bodies(&r), ["a:good", "b:1"], "the whole subscribed set, not only what changed");
    h.sotw_ack(&r, &["a", "b"]);
    assert_eq!(h.state(EDS), SyncState::Synced);
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
    // The second response was computed as if the first had been applied: its ACK
    // does not say what the proxy holds, so the whole set goes again at once.
    let r = one(h.delta_ack(&second));
    assert_eq!(delta_names(&r), ["a", "b"]);
    assert_eq!(h.state(CDS), SyncState::Nacked);
    h.delta_ack(&r);
    assert_eq!(h.state(CDS), SyncState::Synced);
    let r = one(h.snapshot(&mk_snapshot(&[(CDS, &[("a", "good"), ("b", "1")])])));
    assert_eq!(delta_names(&r), ["a"]);
    h.delta_ack(&r);
    assert_eq!(h.state(CDS), SyncState::Synced);
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
    let snap = mk_snapshot(&[
        (CDS, &[("a", "1"), ("b", "2"), ("c", "1")]),
        (RDS, &[("a", "1"), ("b", "2"), ("c", "1")]),
        (EDS, &[("a", "1")]),
    ]);
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

    let mut req = delta_req(RDS, &["a", "b", "c"], &[], "");
    req.initial_resource_versions =
        [("a".to_owned(), res_version("a", "1")), ("b".to_owned(), res_version("b", "1"))].into();
    let r = one(h.delta(req));
    assert_eq!(delta_names(&r), ["b", "c"]);
    assert!(delta(&r).removed_resources.is_empty());
    h.delta_ack(&r);
    assert_eq!(h.state(RDS), SyncState::Synced);

    // Endpoints are sent again whatever version the proxy quotes: a cluster may be
    // warming for them.
    let mut req = delta_req(EDS, &["a"], &[], "");
    req.initial_resource_versions = [("a".to_owned(), res_version("a", "1"))].into();
    assert_eq!(delta_names(&one(h.delta(req))), ["a"]);

    // The proxy has everything already: nothing re-sent.
    let mut h = Harness::new(XdsApi::Delta);
    h.snapshot(&snap);
    let mut req = delta_req(RDS, &["a"], &[], "");
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
    assert_eq!(h.state(CDS), SyncState::Synced);
}

#[test]
fn sotw_requests_for_unknown_types_get_an_empty_answer_once() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    h.snapshot(&mk_snapshot(&[(CDS, &[("a", "1")])]));
    let url = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
    let mut req = sotw_req(CDS, &[], "", "");
    req.type_url = url.into();
    let r = one(h.sotw(req.clone()));
    assert_eq!((sotw(&r).type_url.as_str(), sotw(&r).resources.len()), (url, 0));
    // Its ACK is not answered again; a new request (another stream's nonce) is.
    req.response_nonce = r.nonce().to_owned();
    assert!(h.sotw(req.clone()).is_empty());
    req.response_nonce = "elsewhere".into();
    assert_eq!(one(h.sotw(req)).type_url(), url);
    assert!(h.conn.status.types().is_empty());

    let mut h = Harness::new(XdsApi::Delta);
    let mut req = delta_req(CDS, &[], &[], "");
    req.type_url = url.into();
    assert!(h.delta(req).is_empty(), "delta requests for unknown types are ignored");
}

// ---------------------------------------------------------------------------
// Clusters warming for their endpoints
// ---------------------------------------------------------------------------

/// An EDS cluster named `name` whose load-balancing policy is `lb` (a change that
/// leaves its endpoints alone).
fn eds_cluster(name: &str, service_name: &str, lb: i32) -> Arc<Resource> {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig};
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    let cluster = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig { service_name: service_name.into(), ..Default::default() }),
        lb_policy: lb,
        ..Default::default()
    };
    Arc::new(Resource::from_message(name, &cluster))
}

fn cluster_snapshot(lb: i32) -> Arc<Snapshot> {
    let clusters = ResourceSet::new([eds_cluster("a", "", lb), eds_cluster("b", "b-endpoints", 0)]);
    let endpoints = ResourceSet::new([mk_resource("a", "1"), mk_resource("b-endpoints", "1")]);
    Arc::new(
        Snapshot::new().with(CDS, Arc::new(clusters)).with(EDS, Arc::new(endpoints)).with(LDS, mk_set(&[("l", "1")])),
    )
}

fn proxy_state(h: &Harness) -> crate::status::ProxyState {
    h.conn.status.report().state
}

#[test]
fn a_changed_eds_cluster_gets_its_endpoints_again_in_the_next_response() {
    use crate::status::ProxyState;
    for api in [XdsApi::StateOfTheWorld, XdsApi::Delta] {
        let mut h = Harness::new(api);
        h.snapshot(&cluster_snapshot(0));
        for (ty, names) in [(CDS, &[][..]), (EDS, &["a", "b-endpoints"]), (LDS, &[])] {
            let r = match api {
                XdsApi::StateOfTheWorld => one(h.sotw(sotw_req(ty, names, "", ""))),
                XdsApi::Delta => one(h.delta(delta_req(ty, names, &[], ""))),
            };
            match api {
                XdsApi::StateOfTheWorld => h.sotw_ack(&r, names),
                XdsApi::Delta => h.delta_ack(&r),
            };
        }
        assert_eq!(proxy_state(&h), ProxyState::Synced, "{api:?}");

        // Only cluster a's load balancer changes; no endpoint changes.
        let out = h.snapshot(&cluster_snapshot(1));
        assert_eq!(out.iter().map(ty_of).collect::<Vec<_>>(), [CDS, EDS], "{api:?}");
        let resent = match api {
            XdsApi::StateOfTheWorld => sotw_bodies(&out[1]),
            XdsApi::Delta => delta_names(&out[1]),
        };
        assert_eq!(resent, [if api == XdsApi::Delta { "a" } else { "a:1" }], "{api:?}: only the changed cluster's");
        // CDS acknowledged, EDS not yet: the cluster is still warming in Envoy.
        match api {
            XdsApi::StateOfTheWorld => h.sotw_ack(&out[0], &[]),
            XdsApi::Delta => h.delta_ack(&out[0]),
        };
        assert_eq!(h.state(CDS), SyncState::Synced);
        assert_eq!(h.state(EDS), SyncState::Stale, "{api:?}: same version, new nonce, not acknowledged");
        assert_ne!(proxy_state(&h), ProxyState::Synced, "{api:?}");
        match api {
            XdsApi::StateOfTheWorld => h.sotw_ack(&out[1], &["a", "b-endpoints"]),
            XdsApi::Delta => h.delta_ack(&out[1]),
        };
        assert_eq!(proxy_state(&h), ProxyState::Synced, "{api:?}");
        // Nothing is resent when nothing changes.
        assert!(h.snapshot(&cluster_snapshot(1)).is_empty());
    }
}

#[test]
fn a_cluster_whose_endpoints_are_not_subscribed_is_warming() {
    use crate::status::ProxyState;
    let mut h = Harness::new(XdsApi::Delta);
    h.snapshot(&cluster_snapshot(0));
    let r = one(h.delta(delta_req(CDS, &[], &[], "")));
    h.delta_ack(&r);
    assert_eq!(h.state(CDS), SyncState::Synced);
    assert_eq!(proxy_state(&h), ProxyState::Warming, "no EDS subscription yet");
    let r = one(h.delta(delta_req(EDS, &["a"], &[], "")));
    h.delta_ack(&r);
    assert_eq!(h.conn.status.report().endpoints_not_subscribed, 1);
    assert_eq!(proxy_state(&h), ProxyState::Warming, "b-endpoints not subscribed");
    let r = one(h.delta(delta_req(EDS, &["b-endpoints"], &[], "")));
    h.delta_ack(&r);
    assert_eq!(proxy_state(&h), ProxyState::Synced);
}

#[test]
fn cluster_endpoint_names_come_from_the_encoded_cluster() {
    assert_eq!(eds_cluster("a", "", 0).endpoints_name().map(|n| &**n), Some("a"));
    assert_eq!(eds_cluster("b", "svc", 0).endpoints_name().map(|n| &**n), Some("svc"));
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    let dns = Cluster {
        name: "c".into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32)),
        ..Default::default()
    };
    assert_eq!(Resource::from_message("c", &dns).endpoints_name(), None);
    assert_eq!(mk_resource("d", "x").endpoints_name(), None, "not a cluster");
}

// ---------------------------------------------------------------------------
// Delta: wildcard and names together
// ---------------------------------------------------------------------------

#[test]
fn delta_wildcard_and_explicit_names_together() {
    let mut h = Harness::new(XdsApi::Delta);
    h.snapshot(&mk_snapshot(&[(LDS, &[("a", "1"), ("b", "1"), ("c", "1")])]));
    // Explicit names first, then the wildcard too: what the names did not cover is sent.
    let r = one(h.delta(delta_req(LDS, &["a"], &[], "")));
    assert_eq!(delta_names(&r), ["a"]);
    h.delta_ack(&r);
    let r = one(h.delta(delta_req(LDS, &["*", "missing"], &[], r.nonce())));
    assert_eq!(delta_names(&r), ["b", "c"]);
    assert_eq!(delta_removed(&r), ["missing"]);
    h.delta_ack(&r);
    assert_eq!(h.status(LDS).resource_count, 3);
    // Dropping the wildcard keeps the names: a change to a is still sent, to b not.
    assert!(h.delta(delta_req(LDS, &[], &["*"], r.nonce())).is_empty());
    let r = one(h.snapshot(&mk_snapshot(&[(LDS, &[("a", "2"), ("b", "2"), ("c", "1")])])));
    assert_eq!(delta_names(&r), ["a"]);
    h.delta_ack(&r);
    // Back to wildcard: b and c, which the proxy dropped with the wildcard, come again.
    let r = one(h.delta(delta_req(LDS, &["*"], &[], r.nonce())));
    assert_eq!(delta_names(&r), ["b", "c"]);
}
