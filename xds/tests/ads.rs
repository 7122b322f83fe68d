//! The ADS server end to end: a real tonic client over loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status, Streaming};

use xds::pb::envoy::config::cluster::v3::Cluster;
use xds::pb::envoy::config::core::v3::Node;
use xds::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use xds::pb::envoy::config::listener::v3::Listener;
use xds::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use xds::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use xds::pb::google::rpc::Status as RpcStatus;
use xds::status::ConnectionStatus;
use xds::{
    AdsServer, ConnectionRegistry, Resource, ResourceSet, ResourceType, Snapshot, SnapshotSource, SnapshotWatch,
    SyncState, WatchError, XdsApi, XdsStats,
};

const TIMEOUT: Duration = Duration::from_secs(10);
const CDS: ResourceType = ResourceType::Cluster;
const EDS: ResourceType = ResourceType::ClusterLoadAssignment;
const LDS: ResourceType = ResourceType::Listener;

// -------------------------------------------------------------------------------------
// A test snapshot source.
// -------------------------------------------------------------------------------------

/// Serves one `watch` channel to every proxy; reports each stream's end by node id.
struct TestSource {
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    closed: mpsc::UnboundedSender<String>,
}

/// Dropped by the server when a stream ends.
struct Guard {
    node_id: String,
    closed: mpsc::UnboundedSender<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.closed.send(std::mem::take(&mut self.node_id));
    }
}

impl SnapshotSource for TestSource {
    fn watch(&self, node: &Node) -> Result<SnapshotWatch, WatchError> {
        if node.id == "reject-me" {
            return Err(WatchError::InvalidNode("not one of ours".into()));
        }
        let guard = Guard { node_id: node.id.clone(), closed: self.closed.clone() };
        Ok(SnapshotWatch {
            snapshots: self.snapshots.clone(),
            guard: Some(Box::new(guard)),
            details: Default::default(),
        })
    }
}

struct TestServer {
    addr: SocketAddr,
    ads: AdsServer<TestSource>,
    registry: ConnectionRegistry,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    closed: mpsc::UnboundedReceiver<String>,
}

impl TestServer {
    async fn start(initial: Option<Arc<Snapshot>>) -> TestServer {
        let (snapshots, rx) = watch::channel(initial);
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let registry = ConnectionRegistry::new();
        let source = Arc::new(TestSource { snapshots: rx, closed: closed_tx });
        let ads = AdsServer::new(source, registry.clone());
        let service = ads.clone().into_service();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder().add_service(service).serve_with_incoming(TcpIncoming::from(listener)),
        );
        TestServer { addr, ads, registry, snapshots, closed }
    }

    fn push(&self, snapshot: &Arc<Snapshot>) {
        self.snapshots.send_replace(Some(snapshot.clone()));
    }

    async fn client(&self) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
        let url = format!("http://{}", self.addr);
        within(AggregatedDiscoveryServiceClient::connect(url)).await.unwrap()
    }

    /// Waits until the stream of `node_id` has ended on the server.
    async fn wait_closed(&mut self, node_id: &str) {
        let closed = within(self.closed.recv()).await.expect("source dropped");
        assert_eq!(closed, node_id);
    }

    fn connection(&self, node_id: &str) -> Arc<ConnectionStatus> {
        let found: Vec<_> = self.registry.connections().into_iter().filter(|c| c.node_id == node_id).collect();
        assert_eq!(found.len(), 1, "connections of {node_id}: {found:?}");
        found.into_iter().next().unwrap()
    }

    fn state(&self, node_id: &str, ty: ResourceType) -> SyncState {
        let report = self.connection(node_id).report();
        report.types.get(ty.short_name()).map(|t| t.state).unwrap_or(SyncState::NotSent)
    }

    fn stat(&self, f: impl Fn(&XdsStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        XdsStats::get(f(self.registry.stats()))
    }
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, f).await.expect("timed out")
}

// -------------------------------------------------------------------------------------
// Resources and requests.
// -------------------------------------------------------------------------------------

fn cluster(name: &str, timeout_secs: i64) -> Arc<Resource> {
    let c = Cluster {
        name: name.into(),
        connect_timeout: Some(xds::pb::google::protobuf::Duration { seconds: timeout_secs, nanos: 0 }),
        ..Default::default()
    };
    Arc::new(Resource::from_message(name, &c))
}

fn cla(name: &str, weight: u32) -> Arc<Resource> {
    let c = ClusterLoadAssignment {
        cluster_name: name.into(),
        policy: Some(xds::pb::envoy::config::endpoint::v3::cluster_load_assignment::Policy {
            overprovisioning_factor: Some(xds::pb::google::protobuf::UInt32Value { value: weight }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Arc::new(Resource::from_message(name, &c))
}

fn listener(name: &str) -> Arc<Resource> {
    Arc::new(Resource::from_message(name, &Listener { name: name.into(), ..Default::default() }))
}

fn snapshot(clusters: &[(&str, i64)], endpoints: &[(&str, u32)]) -> Arc<Snapshot> {
    Arc::new(
        Snapshot::new()
            .with(CDS, Arc::new(ResourceSet::new(clusters.iter().map(|(n, t)| cluster(n, *t)))))
            .with(EDS, Arc::new(ResourceSet::new(endpoints.iter().map(|(n, w)| cla(n, *w)))))
            .with(LDS, Arc::new(ResourceSet::new([listener("main")]))),
    )
}

fn node(id: &str) -> Node {
    Node { id: id.into(), cluster: "test".into(), ..Default::default() }
}

fn sotw_req(ty: ResourceType, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: ty.type_url().into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn ack(r: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
    let ty = ResourceType::from_type_url(&r.type_url).unwrap();
    sotw_req(ty, names, &r.version_info, &r.nonce)
}

fn nack(r: &DiscoveryResponse, names: &[&str], previous_version: &str, message: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        error_detail: Some(RpcStatus { code: Code::InvalidArgument as i32, message: message.into(), details: vec![] }),
        version_info: previous_version.into(),
        ..ack(r, names)
    }
}

fn delta_req(ty: ResourceType, subscribe: &[&str], unsubscribe: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: ty.type_url().into(),
        resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        resource_names_unsubscribe: unsubscribe.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

/// Cluster names (and connect timeouts) in a CDS response.
fn clusters(r: &DiscoveryResponse) -> Vec<(String, i64)> {
    assert_eq!(r.type_url, CDS.type_url());
    r.resources
        .iter()
        .map(|a| {
            let c = Cluster::decode(a.value.as_slice()).unwrap();
            (c.name, c.connect_timeout.unwrap().seconds)
        })
        .collect()
}

fn delta_names(r: &DeltaDiscoveryResponse) -> Vec<String> {
    r.resources.iter().map(|r| r.name.clone()).collect()
}

// -------------------------------------------------------------------------------------
// Client streams.
// -------------------------------------------------------------------------------------

struct SotwStream {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    barriers: usize,
}

impl SotwStream {
    /// Opens a stream whose first request is `first` (which should carry the node).
    async fn open(server: &TestServer, first: DiscoveryRequest) -> Result<SotwStream, Status> {
        let mut client = server.client().await;
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let rx = within(client.stream_aggregated_resources(ReceiverStream::new(rx))).await?.into_inner();
        Ok(SotwStream { tx, rx, barriers: 0 })
    }

    async fn send(&self, req: DiscoveryRequest) {
        within(self.tx.send(req)).await.unwrap();
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        within(self.rx.message()).await.expect("stream error").expect("stream ended")
    }
}

struct DeltaStream {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl DeltaStream {
    async fn open(server: &TestServer, first: DeltaDiscoveryRequest) -> Result<DeltaStream, Status> {
        let mut client = server.client().await;
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let rx = within(client.delta_aggregated_resources(ReceiverStream::new(rx))).await?.into_inner();
        Ok(DeltaStream { tx, rx })
    }

    async fn send(&self, req: DeltaDiscoveryRequest) {
        within(self.tx.send(req)).await.unwrap();
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        within(self.rx.message()).await.expect("stream error").expect("stream ended")
    }

    async fn ack(&self, r: &DeltaDiscoveryResponse) {
        let ty = ResourceType::from_type_url(&r.type_url).unwrap();
        self.send(delta_req(ty, &[], &[], &r.nonce)).await;
    }
}

fn with_node(mut req: DiscoveryRequest, id: &str) -> DiscoveryRequest {
    req.node = Some(node(id));
    req
}

/// Opens a SotW stream for `id`, receives the initial CDS response and ACKs it.
async fn sotw_cds_synced(server: &TestServer, id: &str) -> (SotwStream, DiscoveryResponse) {
    let mut s = SotwStream::open(server, with_node(sotw_req(CDS, &[], "", ""), id)).await.unwrap();
    let r = s.recv().await;
    s.send(ack(&r, &[])).await;
    (s, r)
}

/// A round trip: asks for one more (nonexistent) endpoint name, which the server must
/// answer. Once the answer is back, everything sent before it on the same stream has been
/// processed by the server.
async fn sotw_barrier(s: &mut SotwStream) {
    s.barriers += 1;
    let name = format!("barrier-{}", s.barriers);
    s.send(sotw_req(EDS, &[&name], "", "")).await;
    let r = s.recv().await;
    assert_eq!(r.type_url, EDS.type_url(), "expected the answer to the barrier, got {r:?}");
}

// -------------------------------------------------------------------------------------
// Tests.
// -------------------------------------------------------------------------------------

#[tokio::test]
async fn sotw_initial_response_and_ack() {
    let snap = snapshot(&[("b", 1), ("a", 1)], &[]);
    let server = TestServer::start(Some(snap.clone())).await;
    let (mut s, r) = sotw_cds_synced(&server, "proxy-1").await;
    assert_eq!(clusters(&r), [("a".to_owned(), 1), ("b".to_owned(), 1)]);
    assert_eq!(r.version_info, snap.set(CDS).version());
    assert!(!r.nonce.is_empty());

    sotw_barrier(&mut s).await;
    let conn = server.connection("proxy-1");
    assert_eq!(conn.api, XdsApi::StateOfTheWorld);
    assert!(conn.peer.as_deref().is_some_and(|p| p.starts_with("127.0.0.1:")));
    let cds = conn.types()[&CDS].clone();
    assert_eq!(cds.acked_version.as_deref(), Some(snap.set(CDS).version()));
    assert_eq!(cds.sent_nonce.as_deref(), Some(r.nonce.as_str()));
    assert_eq!(cds.sync_state(), SyncState::Synced);
    assert_eq!(server.state("proxy-1", EDS), SyncState::Stale);
    assert_eq!(server.stat(|s| &s.acks), 1);
    assert_eq!(server.stat(|s| &s.connected), 1);
}

#[tokio::test]
async fn sotw_request_before_first_snapshot() {
    let server = TestServer::start(None).await;
    let mut s = SotwStream::open(&server, with_node(sotw_req(CDS, &[], "", ""), "early")).await.unwrap();
    assert_eq!(server.connection("early").api, XdsApi::StateOfTheWorld);
    server.push(&snapshot(&[("a", 1)], &[]));
    let r = s.recv().await;
    assert_eq!(clusters(&r), [("a".to_owned(), 1)]);
}

#[tokio::test]
async fn sotw_nack_then_fix() {
    let good = snapshot(&[("a", 1)], &[]);
    let server = TestServer::start(Some(good.clone())).await;
    let (mut s, r1) = sotw_cds_synced(&server, "proxy-1").await;
    // Make sure the ACK is in before the next push (else it would be stale).
    sotw_barrier(&mut s).await;

    let bad = snapshot(&[("a", 0)], &[]);
    server.push(&bad);
    let r2 = s.recv().await;
    assert_eq!(clusters(&r2), [("a".to_owned(), 0)]);
    s.send(nack(&r2, &[], &r1.version_info, "cluster a: connect_timeout must be positive")).await;
    // The NACK is not answered with the same content: the next response is the barrier's.
    sotw_barrier(&mut s).await;
    let status = server.connection("proxy-1").types()[&CDS].clone();
    assert_eq!(status.sync_state(), SyncState::Nacked);
    let n = status.last_nack.unwrap();
    assert_eq!(n.message, "cluster a: connect_timeout must be positive");
    assert_eq!(n.rejected_version, bad.set(CDS).version());
    assert_eq!(status.acked_version.as_deref(), Some(good.set(CDS).version()));
    assert_eq!(server.stat(|s| &s.nacks), 1);

    let fixed = snapshot(&[("a", 2)], &[]);
    server.push(&fixed);
    let r3 = s.recv().await;
    assert_eq!(clusters(&r3), [("a".to_owned(), 2)]);
    s.send(ack(&r3, &[])).await;
    sotw_barrier(&mut s).await;
    let status = server.connection("proxy-1").types()[&CDS].clone();
    assert_eq!(status.last_nack, None);
    assert_eq!(status.sync_state(), SyncState::Synced);
}

#[tokio::test]
async fn sotw_reconnect() {
    let snap = snapshot(&[("a", 1)], &[]);
    let mut server = TestServer::start(Some(snap.clone())).await;
    let (s, r) = sotw_cds_synced(&server, "proxy-1").await;
    let old_id = server.connection("proxy-1").id;
    drop(s);
    server.wait_closed("proxy-1").await;
    assert!(server.registry.connections().is_empty());
    assert_eq!(server.stat(|s| &s.connected), 0);

    // The proxy comes back with the version it has: it gets the current state all the
    // same (after a NACK it may hold more than that version says).
    let mut s = SotwStream::open(&server, with_node(sotw_req(CDS, &[], &r.version_info, ""), "proxy-1")).await.unwrap();
    let r1 = s.recv().await;
    assert_eq!(r1.version_info, r.version_info);
    s.send(ack(&r1, &[])).await;
    let conn = server.connection("proxy-1");
    assert_ne!(conn.id, old_id);
    assert_eq!(server.registry.connections().len(), 1);
    assert_eq!(server.stat(|s| &s.connected), 1);
    assert_eq!(server.stat(|s| &s.connections_total), 2);

    let snap2 = snapshot(&[("a", 1), ("b", 1)], &[]);
    server.push(&snap2);
    let r2 = s.recv().await;
    assert_eq!(r2.version_info, snap2.set(CDS).version());
    assert_eq!(clusters(&r2), [("a".to_owned(), 1), ("b".to_owned(), 1)]);
}

#[tokio::test]
async fn delta_subscribe_and_unsubscribe() {
    let snap = snapshot(&[("a", 1), ("b", 1)], &[("a", 1), ("b", 1)]);
    let server = TestServer::start(Some(snap)).await;
    let mut first = delta_req(EDS, &["a"], &[], "");
    first.node = Some(node("delta-1"));
    let mut s = DeltaStream::open(&server, first).await.unwrap();
    let r = s.recv().await;
    assert_eq!(r.type_url, EDS.type_url());
    assert_eq!(delta_names(&r), ["a"]);
    let cla_a = ClusterLoadAssignment::decode(r.resources[0].resource.as_ref().unwrap().value.as_slice()).unwrap();
    assert_eq!(cla_a.cluster_name, "a");
    s.ack(&r).await;

    s.send(delta_req(EDS, &["b"], &[], "")).await;
    let r = s.recv().await;
    assert_eq!(delta_names(&r), ["b"]);
    s.ack(&r).await;

    s.send(delta_req(EDS, &["missing"], &["a"], "")).await;
    let r = s.recv().await;
    assert!(r.resources.is_empty());
    assert_eq!(r.removed_resources, ["missing"]);
    s.ack(&r).await;

    // a is no longer subscribed: only b's change arrives.
    server.push(&snapshot(&[("a", 1), ("b", 1)], &[("a", 2), ("b", 2)]));
    let r = s.recv().await;
    assert_eq!(delta_names(&r), ["b"]);
    s.ack(&r).await;

    // Wildcard CDS on the same stream, as a barrier for the ACK above.
    s.send(delta_req(CDS, &[], &[], "")).await;
    let r = s.recv().await;
    assert_eq!(delta_names(&r), ["a", "b"]);
    let conn = server.connection("delta-1");
    assert_eq!(conn.api, XdsApi::Delta);
    assert_eq!(conn.types()[&EDS].sync_state(), SyncState::Synced);
    assert_eq!(conn.types()[&EDS].resource_count, 1);
}

#[tokio::test]
async fn first_request_without_node_id_is_rejected() {
    let server = TestServer::start(Some(snapshot(&[("a", 1)], &[]))).await;

    let expect_invalid = |result: Result<Status, String>| {
        let status = result.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    };

    // No node at all; a node with an empty id; a node the source refuses.
    for req in [
        sotw_req(CDS, &[], "", ""),
        with_node(sotw_req(CDS, &[], "", ""), ""),
        with_node(sotw_req(CDS, &[], "", ""), "reject-me"),
    ] {
        let result = match SotwStream::open(&server, req).await {
            Err(status) => Ok(status),
            // The status may also arrive on the response stream.
            Ok(mut s) => match within(s.rx.message()).await {
                Err(status) => Ok(status),
                Ok(m) => Err(format!("expected an error, got {m:?}")),
            },
        };
        expect_invalid(result);
    }

    let result = match DeltaStream::open(&server, delta_req(CDS, &[], &[], "")).await {
        Err(status) => Ok(status),
        Ok(mut s) => match within(s.rx.message()).await {
            Err(status) => Ok(status),
            Ok(m) => Err(format!("expected an error, got {m:?}")),
        },
    };
    expect_invalid(result);

    assert!(server.registry.connections().is_empty());
    assert_eq!(server.stat(|s| &s.connections_total), 0);
}

#[tokio::test]
async fn snapshot_push_reaches_every_client() {
    let snap = snapshot(&[("a", 1)], &[]);
    let server = TestServer::start(Some(snap)).await;
    let (mut s1, _) = sotw_cds_synced(&server, "proxy-1").await;
    let (mut s2, _) = sotw_cds_synced(&server, "proxy-2").await;
    let mut first = delta_req(CDS, &[], &[], "");
    first.node = Some(node("proxy-3"));
    let mut d3 = DeltaStream::open(&server, first).await.unwrap();
    let r = d3.recv().await;
    d3.ack(&r).await;
    assert_eq!(server.registry.connections().len(), 3);
    assert_eq!(server.stat(|s| &s.connected), 3);

    // One snapshot object shared by all.
    let snap2 = snapshot(&[("a", 1), ("b", 5)], &[]);
    server.push(&snap2);
    let r1 = s1.recv().await;
    let r2 = s2.recv().await;
    assert_eq!(r1.version_info, snap2.set(CDS).version());
    assert_eq!(r1.version_info, r2.version_info);
    assert_eq!(r1.resources, r2.resources);
    assert_eq!(clusters(&r1), [("a".to_owned(), 1), ("b".to_owned(), 5)]);
    let r3 = d3.recv().await;
    assert_eq!(delta_names(&r3), ["b"]);
    assert_eq!(r3.system_version_info, r1.version_info);
    // Both SotW proxies got the very bytes encoded once in the snapshot.
    let b = snap2.set(CDS).get("b").unwrap();
    assert_eq!(&r1.resources[1], b.body());
    assert_eq!(r3.resources[0].resource.as_ref(), Some(b.body()));

    s1.send(ack(&r1, &[])).await;
    s2.send(ack(&r2, &[])).await;
    sotw_barrier(&mut s1).await;
    sotw_barrier(&mut s2).await;
    for id in ["proxy-1", "proxy-2"] {
        assert_eq!(server.state(id, CDS), SyncState::Synced, "{id}");
    }
}

#[tokio::test]
async fn closing_streams_ends_them_with_unavailable() {
    let server = TestServer::start(Some(snapshot(&[("a", 1)], &[]))).await;
    let (mut s, _) = sotw_cds_synced(&server, "proxy-1").await;
    server.ads.close_streams();
    let status = within(s.rx.message()).await.expect_err("the stream ends with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    // A stream opened after the close is turned away the same way.
    let late = SotwStream::open(&server, with_node(sotw_req(CDS, &[], "", ""), "proxy-2")).await;
    let code = match late {
        Err(status) => status.code(),
        Ok(mut s) => within(s.rx.message()).await.expect_err("ends with a status").code(),
    };
    assert_eq!(code, tonic::Code::Unavailable);
}
