//! A tiny HTTP/1.1 client on `tokio::net::TcpStream`: one request per connection
//! (`Connection: close`), read until the body is complete or the server closes.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Timeout for a whole request/response exchange.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// First header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("response body is not JSON (status {}): {}", self.status, snippet(&self.body)))
    }

    /// A string field of a JSON body (e.g. `version` in an [`Upstream`](crate::Upstream) answer).
    pub fn json_str(&self, field: &str) -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        value.get(field)?.as_str().map(str::to_string)
    }

    /// One-line description for error messages.
    pub fn summary(&self) -> String {
        format!("HTTP {} {}", self.status, snippet(&self.body))
    }
}

/// The first 200 characters of a text, on one line.
pub fn snippet(text: &str) -> String {
    let one_line = text.replace(['\r', '\n'], " ");
    if one_line.chars().count() > 200 {
        format!("{}…", one_line.chars().take(200).collect::<String>())
    } else {
        one_line
    }
}

/// `GET path` to `addr` (origin-form; `Host` = `addr`).
pub async fn get(addr: SocketAddr, path: &str) -> Result<Response> {
    send(addr, "GET", path, &addr.to_string(), &[], b"").await
}

/// Send `method url` through the HTTP proxy at `proxy` (absolute-form request target,
/// `Host` = the URL's authority).
pub async fn proxy_request(proxy: SocketAddr, method: &str, url: &str, headers: &[(&str, &str)]) -> Result<Response> {
    let authority = authority_of(url)?;
    send(proxy, method, url, authority, headers, b"").await.with_context(|| format!("{method} {url} via proxy {proxy}"))
}

/// The authority (`host[:port]`) of an `http://` URL.
pub fn authority_of(url: &str) -> Result<&str> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("only http:// URLs are supported: {url}"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() {
        bail!("URL without a host: {url}");
    }
    Ok(authority)
}

/// Send one request and read the whole response.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response> {
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE") {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("Connection: close\r\n\r\n");
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.with_context(|| format!("connect to {addr}"))?;
        stream.write_all(request.as_bytes()).await.context("write request")?;
        stream.write_all(body).await.context("write request body")?;
        // Read until the response is complete by its Content-Length (a server may wait
        // before closing: Envoy's delayed close after a local reply lasts 1s), else
        // until the server closes.
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut buf).await.context("read response")?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if complete_by_length(&raw) {
                break;
            }
        }
        parse_response(&raw)
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => bail!("no complete response from {addr} within {REQUEST_TIMEOUT:?}"),
    }
}

/// Parse a complete HTTP/1.1 response (Content-Length, chunked, or until close).
pub fn parse_response(raw: &[u8]) -> Result<Response> {
    if raw.is_empty() {
        bail!("connection closed without a response");
    }
    let head_end = find(raw, b"\r\n\r\n")
        .ok_or_else(|| anyhow!("incomplete response head: {:?}", snippet(&String::from_utf8_lossy(raw))))?;
    let head = std::str::from_utf8(&raw[..head_end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x status line: {status_line:?}");
    }
    let status: u16 =
        parts.next().unwrap_or_default().parse().with_context(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| anyhow!("bad header line {line:?}"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let rest = &raw[head_end + 4..];
    let header = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.as_str());
    let body = if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        decode_chunked(rest)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().with_context(|| format!("bad content-length {len:?}"))?;
        if rest.len() < len {
            bail!("body truncated: content-length {len}, got {} bytes", rest.len());
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// The response in `raw` has its head and a Content-Length body complete.
fn complete_by_length(raw: &[u8]) -> bool {
    let Some(head_end) = find(raw, b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let length = head.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok()).flatten()
    });
    length.is_some_and(|len| raw.len() >= head_end + 4 + len)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn decode_chunked(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").ok_or_else(|| anyhow!("truncated chunk size line"))?;
        let size_text = std::str::from_utf8(&data[..line_end]).context("chunk size is not UTF-8")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).with_context(|| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size {
            bail!("truncated chunk: want {size} bytes, have {}", data.len());
        }
        body.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_body() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "hello");
        assert_eq!(r.header("x-a"), Some("b"));
    }

    #[test]
    fn parses_chunked_body() {
        let r = parse_response(b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.body, "abcde");
    }

    #[test]
    fn parses_body_until_close() {
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, "nope"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_response(b"").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_err());
    }

    #[test]
    fn authority() {
        assert_eq!(authority_of("http://reviews:9080/a?b").unwrap(), "reviews:9080");
        assert_eq!(authority_of("http://reviews").unwrap(), "reviews");
        assert!(authority_of("https://x/").is_err());
    }
}
