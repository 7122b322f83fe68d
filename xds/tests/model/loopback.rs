//! The simulated Envoy against the real [`AdsServer`] over loopback gRPC: the server's
//! glue (the initial snapshot before the first request, one ordered outbound channel
//! per stream, streams ending and starting again, a restarted server process) must
//! converge it too. Seeded sequences of snapshot changes, reconnects and restarts; after
//! each settle the proxy holds exactly the snapshot, nothing warming, and the server
//! says SYNCED.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::Streaming;
use xds::pb::envoy::config::core::v3::Node;
use xds::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use xds::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use xds::session::Decoded as Response;
use xds::{AdsServer, ConnectionRegistry, ProxyState, Snapshot, SnapshotSource, SnapshotWatch, WatchError, XdsApi};

use crate::envoy::{Request, SimEnvoy};
use crate::rng::Rng;
use crate::{divergence, world};

/// How long one settle may take (generous: the machine is shared).
const SETTLE: Duration = Duration::from_secs(20);

struct Source(watch::Receiver<Option<Arc<Snapshot>>>);

impl SnapshotSource for Source {
    fn watch(&self, _node: &Node) -> Result<SnapshotWatch, WatchError> {
        Ok(SnapshotWatch { snapshots: self.0.clone(), guard: None, details: Default::default() })
    }
}

/// One server process: its address, its registry and the snapshot it serves.
struct Server {
    addr: SocketAddr,
    registry: ConnectionRegistry,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(snapshot: Arc<Snapshot>) -> Server {
        let (snapshots, rx) = watch::channel(Some(snapshot));
        let registry = ConnectionRegistry::new();
        let ads = AdsServer::new(Arc::new(Source(rx)), registry.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("bound");
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(ads.into_service())
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        Server { addr, registry, snapshots, task }
    }

    /// The state of the newest connection of the proxy (an old one may linger briefly).
    fn proxy_state(&self, node_id: &str) -> Option<ProxyState> {
        let newest = self.registry.connections().into_iter().filter(|c| c.node_id == node_id).max_by_key(|c| c.id)?;
        Some(newest.proxy_state())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Stream {
    Sotw(mpsc::Sender<DiscoveryRequest>, Streaming<DiscoveryResponse>),
    Delta(mpsc::Sender<DeltaDiscoveryRequest>, Streaming<DeltaDiscoveryResponse>),
}

impl Stream {
    async fn open(server: &Server, api: XdsApi, first: Vec<Request>) -> Stream {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", server.addr))
            .await
            .expect("connect to the ADS server");
        match api {
            XdsApi::StateOfTheWorld => {
                let (tx, rx) = mpsc::channel(64);
                for request in first {
                    let Request::Sotw(r) = request else { panic!("delta request on a SotW stream") };
                    tx.send(r).await.expect("queue");
                }
                let stream = client.stream_aggregated_resources(ReceiverStream::new(rx)).await.expect("open");
                Stream::Sotw(tx, stream.into_inner())
            }
            XdsApi::Delta => {
                let (tx, rx) = mpsc::channel(64);
                for request in first {
                    let Request::Delta(r) = request else { panic!("SotW request on a delta stream") };
                    tx.send(r).await.expect("queue");
                }
                let stream = client.delta_aggregated_resources(ReceiverStream::new(rx)).await.expect("open");
                Stream::Delta(tx, stream.into_inner())
            }
        }
    }

    async fn send(&self, request: Request) {
        match (self, request) {
            (Stream::Sotw(tx, _), Request::Sotw(r)) => tx.send(r).await.expect("send"),
            (Stream::Delta(tx, _), Request::Delta(r)) => tx.send(r).await.expect("send"),
            _ => panic!("request of the wrong flavour"),
        }
    }

    async fn recv(&mut self) -> Response {
        match self {
            Stream::Sotw(_, rx) => Response::Sotw(rx.message().await.expect("stream error").expect("stream ended")),
            Stream::Delta(_, rx) => Response::Delta(rx.message().await.expect("stream error").expect("stream ended")),
        }
    }
}

/// Answers responses until the proxy holds `current` with nothing warming and the server
/// says SYNCED (polled between messages).
async fn settle(proxy: &mut SimEnvoy, stream: &mut Stream, server: &Server, current: &Snapshot) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        if divergence(proxy, current).is_none() && server.proxy_state(&proxy.node_id) == Some(ProxyState::Synced) {
            return Ok(());
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(format!(
                "not settled after {SETTLE:?}: {:?}; server says {:?}",
                divergence(proxy, current),
                server.proxy_state(&proxy.node_id)
            ));
        }
        // Wait for the next response, or re-check the condition shortly.
        if let Ok(response) = tokio::time::timeout(remaining.min(Duration::from_millis(20)), stream.recv()).await {
            for request in proxy.on_response(response) {
                stream.send(request).await;
            }
        }
    }
}

async fn run_loopback(api: XdsApi, seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let mut proxy = SimEnvoy::new(api, rng.below(2) == 0);
    let mut current = world::snapshot(rng.next(), false);
    let mut server = Server::start(current.clone()).await;
    let mut stream = Stream::open(&server, api, proxy.connect()).await;
    settle(&mut proxy, &mut stream, &server, &current).await.map_err(|e| format!("initial sync: {e}"))?;
    for step in 0..10 {
        let what = match rng.below(10) {
            0..=5 => {
                current = world::snapshot(rng.next(), false);
                server.snapshots.send_replace(Some(current.clone()));
                "snapshot"
            }
            6..=7 => {
                stream = Stream::open(&server, api, proxy.connect()).await;
                "reconnect"
            }
            _ => {
                server = Server::start(current.clone()).await;
                stream = Stream::open(&server, api, proxy.connect()).await;
                "restarted server"
            }
        };
        // Sometimes several changes pile up before the proxy catches up.
        if rng.below(3) != 0 {
            settle(&mut proxy, &mut stream, &server, &current)
                .await
                .map_err(|e| format!("step {step} ({what}): {e}"))?;
        }
    }
    settle(&mut proxy, &mut stream, &server, &current).await.map_err(|e| format!("at the end: {e}"))
}

async fn check_loopback(api: XdsApi) {
    for i in 0..8 {
        let seed = 0x100b_0000 + i;
        if let Err(e) = run_loopback(api, seed).await {
            panic!("{api:?} over loopback, seed {seed}: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_of_the_world_over_loopback_converges() {
    check_loopback(XdsApi::StateOfTheWorld).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_over_loopback_converges() {
    check_loopback(XdsApi::Delta).await;
}
