//! In-process HTTP upstreams that say which instance served a request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use axum::extract::Request;
use axum::Json;
use serde_json::{json, Map, Value};

struct Identity {
    service: String,
    version: String,
    pod: String,
    hits: AtomicU64,
}

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
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind upstream {pod} ({service} {version}) on {addr}"))?;
        let identity = Arc::new(Identity {
            service: service.to_string(),
            version: version.to_string(),
            pod: pod.to_string(),
            hits: AtomicU64::new(0),
        });
        // The bound address (for port 0, the port the kernel chose).
        let addr = listener.local_addr().with_context(|| format!("address of upstream {pod}"))?;
        let handler_identity = identity.clone();
        let app = axum::Router::new().fallback(move |request: Request| {
            let identity = handler_identity.clone();
            async move { Json(describe(&identity, &request)) }
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

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
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
