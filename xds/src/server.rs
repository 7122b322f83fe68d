//! tonic glue: serves [`SnapshotSource`] snapshots over ADS, both flavours.

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::config::core::v3::Node;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response as TonicResponse, Status, Streaming};
use tracing::Instrument;

use crate::session::{Response, Session};
use crate::source::{SnapshotSource, WatchError};
use crate::status::{ConnectionRegistry, XdsApi};

/// How many responses may wait for a slow proxy before the stream task waits too.
const OUTBOUND_BUFFER: usize = 16;

/// The ADS server. Cheap to clone.
pub struct AdsServer<S> {
    source: Arc<S>,
    registry: ConnectionRegistry,
}

impl<S> Clone for AdsServer<S> {
    fn clone(&self) -> Self {
        AdsServer { source: self.source.clone(), registry: self.registry.clone() }
    }
}

impl<S: SnapshotSource> AdsServer<S> {
    pub fn new(source: Arc<S>, registry: ConnectionRegistry) -> AdsServer<S> {
        AdsServer { source, registry }
    }

    pub fn registry(&self) -> &ConnectionRegistry {
        &self.registry
    }

    /// The tonic service, ready to add to a `tonic::transport::Server`.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(16 * 1024 * 1024)
    }
}

/// Requests of either flavour, as the stream driver sees them.
trait AdsRequest: Send + 'static {
    fn node(&self) -> Option<&Node>;
    fn type_url(&self) -> &str;
    fn apply(self, session: &mut Session) -> Vec<Response>;
}

impl AdsRequest for DiscoveryRequest {
    fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }
    fn type_url(&self) -> &str {
        &self.type_url
    }
    fn apply(self, session: &mut Session) -> Vec<Response> {
        session.on_sotw_request(self)
    }
}

impl AdsRequest for DeltaDiscoveryRequest {
    fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }
    fn type_url(&self) -> &str {
        &self.type_url
    }
    fn apply(self, session: &mut Session) -> Vec<Response> {
        session.on_delta_request(self)
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl<S: SnapshotSource> AdsServer<S> {
    /// Reads the first request (which must carry the node), registers the connection
    /// and spawns the task that drives it. Returns the receiving end of its responses.
    async fn open<Req: AdsRequest>(
        &self,
        api: XdsApi,
        request: Request<Streaming<Req>>,
    ) -> Result<mpsc::Receiver<Result<Response, Status>>, Status> {
        let peer = request.remote_addr().map(|a| a.to_string());
        let mut inbound = request.into_inner();
        let first = match inbound.next().await {
            Some(Ok(first)) => first,
            Some(Err(status)) => return Err(status),
            None => return Err(Status::cancelled("stream closed before its first request")),
        };
        let node = first
            .node()
            .filter(|n| !n.id.is_empty())
            .cloned()
            .ok_or_else(|| Status::invalid_argument("the first request on an ADS stream must carry node.id"))?;
        let watch = self.source.watch(&node).map_err(|e| match e {
            WatchError::InvalidNode(msg) => Status::invalid_argument(format!("node {:?}: {msg}", node.id)),
        })?;
        let registered = self.registry.register(node.id.clone(), api, peer.clone());
        let mut session = Session::new(api, registered.status.clone(), self.registry.clone());
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let span = tracing::info_span!("ads", node = %node.id, api = ?api, conn = registered.status.id);
        tokio::spawn(
            async move {
                tracing::info!(peer = ?peer, "proxy connected");
                let mut snapshots = watch.snapshots;
                let _guard = watch.guard;
                let _registered = registered;
                let initial = snapshots.borrow_and_update().clone();
                let mut pending: Vec<Response> = first_responses(&mut session, initial, first);
                loop {
                    for response in pending.drain(..) {
                        if tx.send(Ok(response)).await.is_err() {
                            tracing::info!("proxy disconnected");
                            return;
                        }
                    }
                    tokio::select! {
                        request = inbound.next() => match request {
                            Some(Ok(request)) => {
                                tracing::trace!(type_url = %request.type_url(), "request");
                                pending = request.apply(&mut session);
                            }
                            Some(Err(status)) => {
                                tracing::info!(code = ?status.code(), message = %status.message(), "stream error; proxy disconnected");
                                return;
                            }
                            None => {
                                tracing::info!("proxy disconnected");
                                return;
                            }
                        },
                        changed = snapshots.changed() => {
                            if changed.is_err() {
                                tracing::info!("snapshot source closed; ending stream");
                                return;
                            }
                            let snapshot = snapshots.borrow_and_update().clone();
                            if let Some(snapshot) = snapshot {
                                pending = session.on_snapshot(snapshot);
                            }
                        }
                    }
                }
            }
            .instrument(span),
        );
        Ok(rx)
    }
}

fn first_responses<Req: AdsRequest>(
    session: &mut Session,
    initial: Option<Arc<crate::Snapshot>>,
    first: Req,
) -> Vec<Response> {
    let mut out = Vec::new();
    if let Some(snapshot) = initial {
        out.extend(session.on_snapshot(snapshot));
    }
    out.extend(first.apply(session));
    out
}

#[tonic::async_trait]
impl<S: SnapshotSource> AggregatedDiscoveryService for AdsServer<S> {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<TonicResponse<Self::StreamAggregatedResourcesStream>, Status> {
        let rx = self.open(XdsApi::StateOfTheWorld, request).await?;
        let stream = ReceiverStream::new(rx).filter_map(|r| async move {
            match r {
                Ok(Response::Sotw(r)) => Some(Ok(r)),
                Ok(Response::Delta(_)) => None,
                Err(e) => Some(Err(e)),
            }
        });
        Ok(TonicResponse::new(Box::pin(stream)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<TonicResponse<Self::DeltaAggregatedResourcesStream>, Status> {
        let rx = self.open(XdsApi::Delta, request).await?;
        let stream = ReceiverStream::new(rx).filter_map(|r| async move {
            match r {
                Ok(Response::Delta(r)) => Some(Ok(r)),
                Ok(Response::Sotw(_)) => None,
                Err(e) => Some(Err(e)),
            }
        });
        Ok(TonicResponse::new(Box::pin(stream)))
    }
}
