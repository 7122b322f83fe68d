//! etcd's HTTP (gRPC-gateway) API: the current revision and compaction.

use std::net::SocketAddr;

use anyhow::{anyhow, bail, Context as _, Result};

/// POST a JSON body to etcd's gRPC gateway (`/v3/...`) and parse the JSON answer.
async fn post(etcd: SocketAddr, path: &str, body: serde_json::Value) -> Result<serde_json::Value> {
    let body = body.to_string();
    let headers = [("Content-Type", "application/json")];
    let response = crate::http::send(etcd, "POST", path, &etcd.to_string(), &headers, body.as_bytes())
        .await
        .with_context(|| format!("POST {path} to etcd {etcd}"))?;
    if response.status != 200 {
        bail!("etcd {etcd} {path}: {}", response.summary());
    }
    response.json()
}

/// The current revision of etcd's key space.
pub async fn revision(etcd: SocketAddr) -> Result<i64> {
    // Any range answers with the header; key "\0" (base64 "AA==") matches nothing.
    let answer = post(etcd, "/v3/kv/range", serde_json::json!({"key": "AA=="})).await?;
    let revision = &answer["header"]["revision"];
    revision
        .as_str()
        .and_then(|r| r.parse().ok())
        .or_else(|| revision.as_i64())
        .ok_or_else(|| anyhow!("etcd {etcd} /v3/kv/range: no header.revision in {answer}"))
}

/// Compact etcd to its current revision (physically); returns that revision.
pub async fn compact(etcd: SocketAddr) -> Result<i64> {
    let revision = revision(etcd).await?;
    post(etcd, "/v3/kv/compaction", serde_json::json!({"revision": revision.to_string(), "physical": true})).await?;
    Ok(revision)
}
