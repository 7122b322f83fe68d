//! The demo's apps (reviews v1/v2/v3: tokio tasks answering with their version after a set
//! latency) and its load: requests through the productpage sidecar, half of them as jason.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::stats::{Answer, Sample, User};

/// The URL productpage calls reviews with.
pub const REVIEWS_URL: &str = "http://reviews:9080/";
/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// reviews v1, v2 and v3, each an HTTP server on its pod address. Stop when dropped.
pub struct Apps {
    tasks: JoinSet<()>,
}

impl Apps {
    /// Bind every app first (so a busy address fails before anything runs), then serve.
    pub async fn start(apps: &[(SocketAddr, &str, Duration)]) -> Result<Apps> {
        let mut listeners = Vec::new();
        for (addr, version, latency) in apps {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("reviews {version} cannot listen on {addr}"))?;
            listeners.push((listener, version.to_string(), *latency));
        }
        let mut tasks = JoinSet::new();
        for (listener, version, latency) in listeners {
            let body =
                serde_json::json!({"service": "reviews", "version": version, "pod": format!("reviews-{version}")})
                    .to_string();
            let app = axum::Router::new().fallback(move || {
                let body = body.clone();
                async move {
                    tokio::time::sleep(latency).await;
                    ([("content-type", "application/json")], body)
                }
            });
            tasks.spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
        }
        Ok(Apps { tasks })
    }
}

impl Drop for Apps {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// A tiny HTTP/1.1 exchange (`Connection: close`): the status and the body.
pub async fn http_get(addr: SocketAddr, target: &str, host: &str, headers: &[(&str, &str)]) -> Result<(u16, String)> {
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.with_context(|| format!("connect to {addr}"))?;
        stream.write_all(request.as_bytes()).await.context("write request")?;
        let raw = read_response(&mut stream).await?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").context("incomplete response")?;
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).context("no status line")?;
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        Ok((status, if chunked { dechunk(body) } else { body.to_string() }))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => bail!("timeout"),
    }
}

/// Reads one response: up to its Content-Length or the chunked body's end, else to EOF.
/// Not waiting for the close matters: Envoy closes a connection it answered itself (a fault
/// abort) only about a second later, which would show as the abort's latency.
async fn read_response(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.context("read response")?;
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&chunk[..n]);
        if response_complete(&raw) {
            return Ok(raw);
        }
    }
}

/// Whether `raw` holds a whole response (its head and the body the head announces).
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok()));
    length.is_some_and(|length| body.len() >= length)
}

/// The data of a chunked body (the demo's bodies are small; good enough for JSON or text).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// What a response says about who answered.
pub fn classify(result: &Result<(u16, String)>) -> Answer {
    match result {
        Ok((200, body)) => match serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("version").and_then(|v| v.as_str()).map(str::to_string))
        {
            Some(version) => Answer::Version(version),
            None => Answer::Failed("HTTP 200 without a version".to_string()),
        },
        Ok((status, _)) => Answer::Failed(format!("HTTP {status}")),
        Err(e) if e.to_string() == "timeout" => Answer::Failed("timeout".to_string()),
        Err(_) => Answer::Failed("connection error".to_string()),
    }
}

/// The most samples a step keeps (about 4 minutes at 80 requests/s).
pub const MAX_SAMPLES: usize = 20_000;

/// The samples of the current step, shared by the workers and the view.
#[derive(Default)]
pub struct Recorder {
    inner: Mutex<Recorded>,
}

#[derive(Default)]
struct Recorded {
    /// Bumped by every reset; a request records only into the epoch it started in.
    epoch: u64,
    samples: Vec<Sample>,
    /// Requests recorded in this epoch (also those [`MAX_SAMPLES`] let go).
    count: usize,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forget every sample; requests sent before this call are not recorded when they end.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.samples.clear();
        inner.count = 0;
    }

    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    fn record(&self, epoch: u64, sample: Sample) {
        let mut inner = self.lock();
        if inner.epoch == epoch {
            // A step left on screen for long keeps its most recent requests only.
            if inner.samples.len() >= MAX_SAMPLES {
                inner.samples.drain(..MAX_SAMPLES / 2);
            }
            inner.samples.push(sample);
            inner.count += 1;
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.lock().samples.clone()
    }

    /// Samples held (at most [`MAX_SAMPLES`]).
    pub fn len(&self) -> usize {
        self.lock().samples.len()
    }

    /// Requests recorded since the last reset.
    pub fn recorded(&self) -> usize {
        self.lock().count
    }
}

/// Requests through the sidecar at `rate` per second, by `workers` concurrent clients,
/// alternating jason and others, until dropped.
pub struct Load {
    tasks: JoinSet<()>,
    pub recorder: Arc<Recorder>,
}

impl Load {
    pub fn start(proxy: SocketAddr, rate: u32, workers: usize) -> Load {
        let recorder = Arc::new(Recorder::default());
        let workers = workers.max(1);
        // Each worker sends one request per period, staggered; a slow answer delays only its worker.
        let period = Duration::from_secs_f64(workers as f64 / f64::from(rate.max(1)));
        let sequence = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for i in 0..workers {
            let (recorder, sequence) = (recorder.clone(), sequence.clone());
            let offset = period.mul_f64(i as f64 / workers as f64);
            tasks.spawn(async move {
                let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    let user =
                        if sequence.fetch_add(1, Ordering::Relaxed) % 2 == 0 { User::Jason } else { User::Other };
                    let headers: &[(&str, &str)] = if user == User::Jason { &[("end-user", "jason")] } else { &[] };
                    let epoch = recorder.epoch();
                    let started = Instant::now();
                    let result = http_get(proxy, REVIEWS_URL, "reviews:9080", headers).await;
                    recorder.record(epoch, Sample { user, answer: classify(&result), latency: started.elapsed() });
                }
            });
        }
        Load { tasks, recorder }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_answers() {
        let ok = |body: &str| -> Result<(u16, String)> { Ok((200, body.to_string())) };
        assert_eq!(classify(&ok(r#"{"version":"v2"}"#)), Answer::Version("v2".into()));
        assert_eq!(classify(&ok("fault filter abort")), Answer::Failed("HTTP 200 without a version".into()));
        assert_eq!(classify(&Ok((503, "fault filter abort".into()))), Answer::Failed("HTTP 503".into()));
        assert_eq!(classify(&Err(anyhow::anyhow!("timeout"))), Answer::Failed("timeout".into()));
        assert_eq!(classify(&Err(anyhow::anyhow!("connect"))), Answer::Failed("connection error".into()));
    }

    #[test]
    fn recorder_keeps_the_current_step_and_its_latest_requests() {
        let r = Recorder::default();
        let sample = || Sample { user: User::Other, answer: Answer::Version("v1".into()), latency: Duration::ZERO };
        let before = r.epoch();
        r.record(before, sample());
        r.reset();
        r.record(before, sample()); // started before the reset: not this step's
        assert_eq!((r.len(), r.recorded()), (0, 0));
        for _ in 0..MAX_SAMPLES + 1 {
            r.record(r.epoch(), sample());
        }
        assert_eq!((r.len(), r.recorded()), (MAX_SAMPLES / 2 + 1, MAX_SAMPLES + 1));
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"), "abcde");
        assert_eq!(dechunk("zz\r\n"), "");
    }

    #[tokio::test]
    async fn apps_answer_with_their_version_after_their_latency() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let _apps = Apps::start(&[(addr, "v3", Duration::from_millis(30))]).await.unwrap();
        let started = Instant::now();
        let result = http_get(addr, "/", &addr.to_string(), &[]).await;
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(classify(&result), Answer::Version("v3".into()));
        assert!(Apps::start(&[(addr, "v1", Duration::ZERO)]).await.err().unwrap().to_string().contains("v1"));
    }

    #[test]
    fn a_response_is_complete_once_its_body_is_in() {
        let cases: [(&[u8], bool); 7] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", false),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\na", false),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab", true),
            (b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 18\r\n\r\nfault filter abort", true),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", false),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n", true),
            // No length: only the close ends it.
            (b"HTTP/1.1 200 OK\r\n\r\nabc", false),
        ];
        for (raw, complete) in cases {
            assert_eq!(response_complete(raw), complete, "{}", String::from_utf8_lossy(raw));
        }
    }
}
