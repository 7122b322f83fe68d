//! The HTTPS server: an accept loop with a task per connection (at most
//! [`MAX_CONNECTIONS`]), the TLS handshake under a timeout (a silent client holds only its
//! own task), HTTP/1.1 with a header-read timeout and a bounded head buffer,
//! and the routes `POST /inject` and `GET /healthz`. Each request's body is limited and its
//! handling timed out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::review::{self, Answer, Body as AnswerBody};
use super::Webhook;

/// Largest request body read: an AdmissionReview holds one Pod (etcd keeps objects under
/// 1.5 MiB), so anything bigger is not one.
pub const MAX_BODY: usize = 4 << 20;
/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to send a request's headers, an idle keep-alive connection
/// included: longer than the API server's idle timeout (Go's 90 s), so that it always
/// closes an idle connection first. Were meshd to close it first, a review POSTed on it at
/// that moment would fail unretried (Go replays no POST), and `failurePolicy: Fail` would
/// refuse that pod. A client that stalls still holds only its own task.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(100);
/// How long one request may take, body included (the API server gives up after the
/// webhook's `timeoutSeconds`, 10 s in the manifest).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections served at once (the API server keeps a few); more wait in the listen
/// backlog. With [`MAX_HEADER_BUFFER`] this bounds the memory clients can make meshd hold
/// (each about 100 KiB at most: the HTTP buffer and rustls's), so a flood of connections
/// from inside the cluster cannot take meshd, and xDS with it, past its memory limit.
pub const MAX_CONNECTIONS: usize = 512;
/// Largest request head (request line and headers) buffered per connection; a bigger one is
/// answered 431. An AdmissionReview's head is a few hundred bytes.
pub const MAX_HEADER_BUFFER: usize = 64 << 10;

pub fn router(webhook: Arc<Webhook>) -> Router {
    Router::new()
        .route("/inject", post(inject))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: the webhook serves POST /inject and GET /healthz\n") })
        .with_state(webhook)
}

/// Serves until the task is dropped; accept errors (e.g. out of file descriptors) are
/// logged and retried.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, webhook: Arc<Webhook>) -> anyhow::Result<()> {
    serve_app(listener, acceptor, router(webhook), MAX_CONNECTIONS).await
}

/// [`serve`] for any `app`, with at most `max_connections` open at once.
pub async fn serve_app(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    max_connections: usize,
) -> anyhow::Result<()> {
    let open = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        if open.available_permits() == 0 {
            tracing::warn!(max_connections, "webhook: at its connection limit; new connections wait until one closes");
        }
        let Ok(permit) = open.clone().acquire_owned().await else { anyhow::bail!("connection limit closed") };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "webhook: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let _open = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "webhook: TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "webhook: TLS handshake not completed in time"),
            };
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BUFFER)
                .max_header_size(MAX_HEADER_BUFFER)
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "webhook: connection ended with an error");
            }
        });
    }
}

async fn inject(State(webhook): State<Arc<Webhook>>, request: Request) -> Response {
    let started = Instant::now();
    let answer = match tokio::time::timeout(REQUEST_TIMEOUT, answer(&webhook, request)).await {
        Ok(answer) => answer,
        Err(_) => Answer::text(408, format!("request not complete within {}s", REQUEST_TIMEOUT.as_secs())),
    };
    webhook.shared.stats.record(answer.verdict, started.elapsed());
    respond(answer)
}

async fn answer(webhook: &Webhook, request: Request) -> Answer {
    let too_big =
        || Answer::text(413, format!("request body larger than {MAX_BODY} bytes: not an AdmissionReview for one Pod"));
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return too_big();
    }
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_big(),
        Err(e) => return Answer::text(400, format!("cannot read the request body: {e}")),
    };
    let review = match review::parse(&body) {
        Ok(review) => review,
        Err(answer) => {
            tracing::warn!(status = answer.status, "webhook: {}", answer.detail);
            return answer;
        }
    };
    let answer = match webhook.namespace_enabled(&review.namespace).await {
        Ok(enabled) => review::decide(&review, enabled, &webhook.settings),
        Err(why) => review::decide_unknown(&review, &why, &webhook.settings),
    };
    let (uid, namespace, pod) = (&review.uid, &review.namespace, &review.pod);
    match answer.verdict {
        review::Verdict::Injected | review::Verdict::Skipped => {
            tracing::info!(%uid, %namespace, %pod, result = answer.verdict.label(), "webhook: {}", answer.detail)
        }
        _ => tracing::warn!(%uid, %namespace, %pod, result = answer.verdict.label(), "webhook: {}", answer.detail),
    }
    answer
}

fn respond(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_REQUEST);
    match answer.body {
        AnswerBody::Review(review) => (status, axum::Json(review)).into_response(),
        AnswerBody::Text(text) => {
            (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from(text)).into_response()
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
