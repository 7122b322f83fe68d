//! In-process HTTP upstreams that say which instance served a request.
//!
//! A request can ask for misbehaviour in its query string (for the resilience tests):
//! `fail=N` answers the first N requests with the same `key` (default: the path) with
//! `status` (default 503); `sleep_ms=N` waits that long before answering.
//!
//! An upstream started with [`Upstream::start_calling`] plays an app that calls the next
//! hop for each request (through its sidecar's explicit proxy), copying the trace headers
//! as real apps must ([`TRACE_HEADERS`]); its answer nests the next hop's under `next`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

struct Identity {
    service: String,
    version: String,
    pod: String,
    hits: AtomicU64,
    /// Requests seen per `key` (query parameter, else the path).
    by_key: Mutex<HashMap<String, u64>>,
    next: Option<NextHop>,
}

/// The request an upstream makes for each one it serves: `GET url` through `proxy`.
#[derive(Clone, Debug)]
pub struct NextHop {
    pub proxy: SocketAddr,
    pub url: String,
}

/// The headers an app copies from the request it serves to the requests it makes, so that
/// the hops join one trace and one request id (Istio's list).
pub const TRACE_HEADERS: &[&str] = &[
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "x-ot-span-context",
    "x-cloud-trace-context",
    "grpc-trace-bin",
];

/// The `User-Agent` of the requests an upstream makes to its next hop.
pub const NEXT_HOP_USER_AGENT: &str = "amime-e2e-upstream";

/// An HTTP server on `IP:PORT` answering every request with
/// `{"service","version","pod","method","path","headers":{..}}`.
/// Stops when dropped.
pub struct Upstream {
    addr: SocketAddr,
    identity: Arc<Identity>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(addr: SocketAddr, service: &str, version: &str, pod: &str) -> Result<Self> {
        Self::start_with(addr, service, version, pod, None).await
    }

    /// An upstream that, for each request, calls `next` first (copying [`TRACE_HEADERS`]).
    pub async fn start_calling(
        addr: SocketAddr,
        service: &str,
        version: &str,
        pod: &str,
        next: NextHop,
    ) -> Result<Self> {
        Self::start_with(addr, service, version, pod, Some(next)).await
    }

    async fn start_with(
        addr: SocketAddr,
        service: &str,
        version: &str,
        pod: &str,
        next: Option<NextHop>,
    ) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind upstream {pod} ({service} {version}) on {addr}"))?;
        let identity = Arc::new(Identity {
            service: service.to_string(),
            version: version.to_string(),
            pod: pod.to_string(),
            hits: AtomicU64::new(0),
            by_key: Mutex::new(HashMap::new()),
            next,
        });
        // The bound address (for port 0, the port the kernel chose).
        let addr = listener.local_addr().with_context(|| format!("address of upstream {pod}"))?;
        let handler_identity = identity.clone();
        let app = axum::Router::new().fallback(move |request: Request| {
            let identity = handler_identity.clone();
            async move { answer(&identity, request).await }
        });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("upstream on {addr} stopped: {e}");
            }
        });
        Ok(Self { addr, identity, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn version(&self) -> &str {
        &self.identity.version
    }

    pub fn pod(&self) -> &str {
        &self.identity.pod
    }

    /// Requests served so far.
    pub fn hits(&self) -> u64 {
        self.identity.hits.load(Ordering::SeqCst)
    }
}

impl Upstream {
    /// Requests seen with `key` (the `key` query parameter, else the path).
    pub fn hits_for(&self, key: &str) -> u64 {
        self.identity.by_key.lock().expect("upstream lock").get(key).copied().unwrap_or(0)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The answer to `request`, with the misbehaviour its query asks for.
async fn answer(identity: &Identity, request: Request) -> Response {
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let number = |name: &str| query.get(name).and_then(|v| v.parse::<u64>().ok());
    let key = query.get("key").cloned().unwrap_or_else(|| request.uri().path().to_owned());
    let seen = {
        let mut by_key = identity.by_key.lock().expect("upstream lock");
        let n = by_key.entry(key).or_insert(0);
        *n += 1;
        *n
    };
    if let Some(ms) = number("sleep_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut body = describe(identity, &request);
    if let Some(next) = &identity.next {
        let copied = trace_headers(&request);
        drop(request);
        body["next"] = call_next(next, &copied).await;
    }
    if number("fail").is_some_and(|fail| seen <= fail) {
        let status = number("status").and_then(|s| StatusCode::from_u16(s as u16).ok());
        return (status.unwrap_or(StatusCode::SERVICE_UNAVAILABLE), Json(body)).into_response();
    }
    Json(body).into_response()
}

/// The [`TRACE_HEADERS`] of `request`.
fn trace_headers(request: &Request) -> Vec<(String, String)> {
    let value = |v: &axum::http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    TRACE_HEADERS.iter().filter_map(|h| request.headers().get(*h).map(|v| ((*h).to_owned(), value(v)))).collect()
}

/// `GET next.url` through `next.proxy` with `headers` and a `User-Agent` (as an app's HTTP
/// client sends): the next hop's JSON answer, or `{"status", "error"}`.
async fn call_next(next: &NextHop, headers: &[(String, String)]) -> Value {
    let mut headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    headers.push(("user-agent", NEXT_HOP_USER_AGENT));
    match crate::http::proxy_request(next.proxy, "GET", &next.url, &headers).await {
        Ok(r) => r.json().unwrap_or_else(|_| json!({ "status": r.status, "error": r.summary() })),
        Err(e) => json!({ "status": 0, "error": format!("{e:#}") }),
    }
}

fn describe(identity: &Identity, request: &Request) -> Value {
    identity.hits.fetch_add(1, Ordering::SeqCst);
    let mut headers = Map::new();
    for (name, value) in request.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    json!({
        "service": identity.service,
        "version": identity.version,
        "pod": identity.pod,
        "method": request.method().as_str(),
        "path": request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "headers": headers,
    })
}
