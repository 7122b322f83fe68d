//! The ADS endpoint: a small gRPC service of our own on top of tonic's transport.
//!
//! Why not tonic's generated server: its per-stream encode buffer grows to the largest
//! response and keeps that allocation for the stream's life, so ten thousand idle
//! proxies would each pin the size of their initial endpoint response (hundreds of
//! KB). Here each response is encoded into an exactly-sized buffer that is freed once
//! written, and a request's buffer is released once it is decoded. The framing is
//! plain gRPC (5-byte length prefix, `grpc-status` trailers); any gRPC client works.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use http_body_util::BodyExt;
use prost::Message;
use tokio::sync::mpsc;
use tonic::Code;
use tracing::Instrument;

use crate::session::{Response, Session};
use crate::source::{SnapshotSource, WatchError};
use crate::status::{ConnectionRegistry, XdsApi};

/// How many responses may wait for a slow proxy before the stream task waits too.
const OUTBOUND_BUFFER: usize = 4;
/// Largest request accepted (a delta subscribe to every endpoint of a big mesh).
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// The ADS server. Cheap to clone.
pub struct AdsServer<S> {
    source: Arc<S>,
    registry: ConnectionRegistry,
    /// Set once the server is shutting down: every stream ends with UNAVAILABLE.
    closing: Arc<tokio::sync::watch::Sender<bool>>,
}

impl<S> Clone for AdsServer<S> {
    fn clone(&self) -> Self {
        AdsServer { source: self.source.clone(), registry: self.registry.clone(), closing: self.closing.clone() }
    }
}

impl<S: SnapshotSource> AdsServer<S> {
    pub fn new(source: Arc<S>, registry: ConnectionRegistry) -> AdsServer<S> {
        AdsServer { source, registry, closing: Arc::new(tokio::sync::watch::channel(false).0) }
    }

    /// Ends every open stream (and every one opened later) with UNAVAILABLE, so
    /// proxies reconnect elsewhere and a graceful server shutdown can complete:
    /// ADS streams never end on their own.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    pub fn registry(&self) -> &ConnectionRegistry {
        &self.registry
    }

    /// The service, ready for `tonic::transport::Server::add_service`.
    pub fn into_service(self) -> Self {
        self
    }
}

impl<S> tonic::server::NamedService for AdsServer<S> {
    const NAME: &'static str = SERVICE;
}

/// An error that ends a stream, sent as `grpc-status` / `grpc-message`.
#[derive(Debug, Clone, PartialEq)]
struct GrpcError {
    code: Code,
    message: String,
}

impl GrpcError {
    fn new(code: Code, message: impl Into<String>) -> GrpcError {
        GrpcError { code, message: message.into() }
    }
}

/// Percent-encodes a `grpc-message` as the gRPC spec asks.
fn encode_grpc_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn status_headers(code: Code, message: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert("grpc-status", http::HeaderValue::from(code as i32));
    if !message.is_empty() {
        if let Ok(v) = http::HeaderValue::from_str(&encode_grpc_message(message)) {
            h.insert("grpc-message", v);
        }
    }
    h
}

/// What the stream task hands the response body: a message, or the closing status.
/// (Kept small: the channel allocates room for 32 of them per connection.)
enum Outbound {
    /// One gRPC message in two parts: its header with this stream's nonce, and the
    /// body it shares with other streams (written as it is, not copied).
    Message(Bytes, Bytes),
    End(GrpcError),
}

/// A response whose body frames come from a channel.
fn streaming_response(rx: mpsc::Receiver<Outbound>) -> http::Response<tonic::body::Body> {
    let stream = futures::stream::unfold((rx, None::<Bytes>), |(mut rx, rest)| async move {
        if let Some(rest) = rest {
            return Some((Ok::<_, Infallible>(http_body::Frame::data(rest)), (rx, None)));
        }
        let (frame, rest) = match rx.recv().await? {
            Outbound::Message(head, body) => (http_body::Frame::data(head), Some(body).filter(|b| !b.is_empty())),
            Outbound::End(end) => (http_body::Frame::trailers(status_headers(end.code, &end.message)), None),
        };
        Some((Ok(frame), (rx, rest)))
    });
    let body = http_body_util::StreamBody::new(stream);
    http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(tonic::body::Body::new(body))
        .expect("valid response")
}

/// A response with no messages, only a status (a "trailers-only" response).
fn status_response(code: Code, message: &str) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(tonic::body::Body::empty())
        .expect("valid response");
    response.headers_mut().extend(status_headers(code, message));
    response
}

/// Reads length-prefixed gRPC messages from a request body.
struct FrameReader {
    body: tonic::body::Body,
    buf: BytesMut,
    done: bool,
}

impl FrameReader {
    fn new(body: tonic::body::Body) -> FrameReader {
        FrameReader { body, buf: BytesMut::new(), done: false }
    }

    /// The next message, `Ok(None)` at the end of the stream.
    async fn next<M: Message + Default>(&mut self) -> Result<Option<M>, GrpcError> {
        loop {
            if self.buf.len() >= 5 {
                let compressed = self.buf[0];
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if compressed != 0 {
                    return Err(GrpcError::new(Code::Unimplemented, "compressed requests are not supported"));
                }
                if len > MAX_REQUEST_BYTES {
                    return Err(GrpcError::new(
                        Code::ResourceExhausted,
                        format!("request of {len} bytes is larger than the limit of {MAX_REQUEST_BYTES}"),
                    ));
                }
                if self.buf.len() >= 5 + len {
                    self.buf.advance(5);
                    let message = self.buf.split_to(len);
                    let decoded = M::decode(message.freeze())
                        .map_err(|e| GrpcError::new(Code::InvalidArgument, format!("malformed request: {e}")))?;
                    // After `split_to` the remaining capacity says nothing of the
                    // allocation it still pins (a large request's), so start afresh.
                    if self.buf.is_empty() {
                        self.buf = BytesMut::new();
                    }
                    return Ok(Some(decoded));
                }
            }
            if self.done {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(GrpcError::new(Code::InvalidArgument, "request stream ended inside a message"))
                };
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(Err(status)) => return Err(GrpcError::new(status.code(), status.message().to_owned())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Requests of either flavour, as the stream driver sees them.
trait AdsRequest: Message + Default + Send + 'static {
    fn node(&self) -> Option<&Node>;
    fn apply(self, session: &mut Session) -> Vec<Response>;
}

impl AdsRequest for DiscoveryRequest {
    fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }
    fn apply(self, session: &mut Session) -> Vec<Response> {
        session.on_sotw_request(self)
    }
}

impl AdsRequest for DeltaDiscoveryRequest {
    fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }
    fn apply(self, session: &mut Session) -> Vec<Response> {
        session.on_delta_request(self)
    }
}

impl<S: SnapshotSource> AdsServer<S> {
    /// Runs one ADS stream to its end; returns the status to close it with.
    async fn drive<Req: AdsRequest>(
        &self,
        api: XdsApi,
        peer: Option<String>,
        mut reader: FrameReader,
        tx: &mpsc::Sender<Outbound>,
    ) -> GrpcError {
        let first: Req = match reader.next().await {
            Ok(Some(first)) => first,
            Ok(None) => return GrpcError::new(Code::Ok, ""),
            Err(e) => return e,
        };
        let Some(node) = first.node().filter(|n| !n.id.is_empty()).cloned() else {
            return GrpcError::new(Code::InvalidArgument, "the first request on an ADS stream must carry node.id");
        };
        let mut watch = match self.source.watch(&node) {
            Ok(w) => w,
            Err(WatchError::InvalidNode(msg)) => {
                tracing::warn!(node = %node.id, error = %msg, "rejecting proxy");
                return GrpcError::new(Code::InvalidArgument, format!("node {:?}: {msg}", node.id));
            }
        };
        // Keep only the id: the node's metadata is not needed past this point.
        let node_id = node.id.clone();
        drop(node);
        let mut closing = self.closing.subscribe();
        if *closing.borrow_and_update() {
            return GrpcError::new(Code::Unavailable, "control plane shutting down");
        }
        let details = std::mem::take(&mut watch.details);
        let registered = self.registry.register_with(node_id.clone(), api, peer.clone(), details);
        let mut session = Session::new(api, registered.status.clone(), self.registry.clone());
        let span = tracing::info_span!("ads", node = %node_id, api = ?api, conn = registered.status.id);
        async move {
            tracing::info!(peer = peer.as_deref(), "proxy connected");
            let mut snapshots = watch.snapshots;
            let _guard = watch.guard;
            let _registered = registered;
            let initial = snapshots.borrow_and_update().clone();
            let mut pending = Vec::new();
            if let Some(snapshot) = initial {
                pending.extend(session.on_snapshot(snapshot));
            }
            pending.extend(first.apply(&mut session));
            loop {
                for response in pending.drain(..) {
                    let (head, body) = response.grpc_frame();
                    if tx.send(Outbound::Message(head, body)).await.is_err() {
                        tracing::info!("proxy disconnected");
                        return GrpcError::new(Code::Cancelled, "");
                    }
                }
                tokio::select! {
                    request = reader.next::<Req>() => match request {
                        Ok(Some(request)) => pending = request.apply(&mut session),
                        Ok(None) => {
                            tracing::info!("proxy disconnected");
                            return GrpcError::new(Code::Ok, "");
                        }
                        Err(e) => {
                            tracing::info!(code = ?e.code, message = %e.message, "stream ended");
                            return e;
                        }
                    },
                    _ = closing.changed() => {
                        tracing::info!("control plane shutting down; ending stream");
                        return GrpcError::new(Code::Unavailable, "control plane shutting down");
                    }
                    changed = snapshots.changed() => {
                        if changed.is_err() {
                            tracing::info!("snapshot source closed; ending stream");
                            return GrpcError::new(Code::Unavailable, "control plane shutting down");
                        }
                        let snapshot = snapshots.borrow_and_update().clone();
                        if let Some(snapshot) = snapshot {
                            pending = session.on_snapshot(snapshot);
                        }
                    }
                }
            }
        }
        .instrument(span)
        .await
    }
}

impl<S: SnapshotSource> tower_service::Service<http::Request<tonic::body::Body>> for AdsServer<S> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let api = match request.uri().path() {
            SOTW_PATH => XdsApi::StateOfTheWorld,
            DELTA_PATH => XdsApi::Delta,
            other => {
                let message = format!("method {other} is not served here");
                return Box::pin(async move { Ok(status_response(Code::Unimplemented, &message)) });
            }
        };
        if request.headers().get("grpc-encoding").is_some_and(|e| e != "identity") {
            return Box::pin(async {
                Ok(status_response(Code::Unimplemented, "compressed requests are not supported"))
            });
        }
        let peer = request
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|i| i.remote_addr())
            .map(|a| a.to_string());
        let server = self.clone();
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let reader = FrameReader::new(request.into_body());
        tokio::spawn(async move {
            let end = match api {
                XdsApi::StateOfTheWorld => server.drive::<DiscoveryRequest>(api, peer, reader, &tx).await,
                XdsApi::Delta => server.drive::<DeltaDiscoveryRequest>(api, peer, reader, &tx).await,
            };
            let _ = tx.send(Outbound::End(end)).await;
        });
        Box::pin(async move { Ok(streaming_response(rx)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(encode_grpc_message("plain text"), "plain text");
        assert_eq!(encode_grpc_message("100% ünïcode\n"), "100%25 %C3%BCn%C3%AFcode%0A");
    }
}
