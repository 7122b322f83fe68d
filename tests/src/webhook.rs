//! A client of meshd's injection webhook over real TLS (verified against a given CA), and
//! AdmissionReview bodies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::http::{parse_response, Response, REQUEST_TIMEOUT};

/// The name the API server dials meshd's webhook by (a SAN of its generated certificate).
pub const SERVER_NAME: &str = "amime-meshd.amime-system.svc";

/// A TLS connector trusting only `ca_pem`.
pub fn connector(ca_pem: &str) -> Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("CA PEM")?).context("add the CA")?;
    }
    let config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A TLS connection to `addr` as `SERVER_NAME`, verified against `ca_pem`.
pub async fn connect(addr: SocketAddr, ca_pem: &str) -> Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await.with_context(|| format!("connect to {addr}"))?;
    let name = ServerName::try_from(SERVER_NAME)?.to_owned();
    let tls = tokio::time::timeout(Duration::from_secs(5), connector(ca_pem)?.connect(name, tcp)).await;
    tls.with_context(|| format!("TLS handshake with {addr} timed out"))?
        .with_context(|| format!("TLS handshake with {addr}"))
}

/// One HTTPS request (`Connection: close`) and its whole response.
pub async fn send(addr: SocketAddr, ca_pem: &str, method: &str, path: &str, body: &[u8]) -> Result<Response> {
    let exchange = async {
        let mut tls = connect(addr, ca_pem).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes()).await.context("write request")?;
        // A server refusing the body (413) answers and closes before reading it all.
        let wrote = async {
            tls.write_all(body).await?;
            tls.flush().await
        }
        .await;
        match (read_response(&mut tls).await, wrote) {
            (Ok(response), _) => Ok(response),
            (Err(e), Ok(())) => Err(e),
            (Err(e), Err(write)) => Err(e.context(format!("after writing the body failed: {write}"))),
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(result) => result.with_context(|| format!("{method} https://{addr}{path}")),
        Err(_) => bail!("no response from {addr} within {REQUEST_TIMEOUT:?}"),
    }
}

/// Reads until the server closes (a close without TLS close_notify still ends the body).
pub async fn read_response(tls: &mut TlsStream<TcpStream>) -> Result<Response> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match tls.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) if !raw.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e).context("read response"),
        }
    }
    parse_response(&raw)
}

/// `POST /inject` with `review`.
pub async fn review(addr: SocketAddr, ca_pem: &str, review: &Value) -> Result<Response> {
    send(addr, ca_pem, "POST", "/inject", &serde_json::to_vec(review)?).await
}

/// A Deployment-style Pod (generateName, one container with a port) in `namespace`.
pub fn pod(namespace: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "reviews-v1-", "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "reviews", "image": "reviews:1", "ports": [{"containerPort": 9080}]}]}
    })
}

/// An AdmissionReview for the CREATE of `pod` in `namespace`, as the API server sends it.
pub fn create_review(uid: &str, namespace: &str, pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "dryRun": false,
        }
    })
}

/// The `response` of an AdmissionReview answer, checked to be for `uid`.
pub fn admission_response(response: &Response, uid: &str) -> Result<Value> {
    if response.status != 200 {
        bail!("want 200 with an AdmissionReview, got {}", response.summary());
    }
    let review = response.json()?;
    let answer = review.get("response").cloned().with_context(|| format!("no response in {review}"))?;
    if answer["uid"] != uid {
        bail!("response.uid is {}, want {uid}", answer["uid"]);
    }
    Ok(answer)
}

/// Plays kubelet for meshd's Deployment of `manifests/install` (scaled to one replica) with pod
/// address `ip`: the Service amime-meshd's endpoints become `ip`, where a kube-apiserver
/// started with `--enable-aggregator-routing=true` dials the webhook. Returns the pod's name.
pub async fn meshd_pod_at(cluster: &crate::kube::KubeCluster, ip: std::net::IpAddr) -> Result<String> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};

    let namespace = crate::rbac::MESHD_NAMESPACE;
    cluster.kubectl(&["scale", "deployment/meshd", "-n", namespace, "--replicas=1"]).await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), namespace);
    let selector = ListParams::default().labels("app.kubernetes.io/name=meshd");
    let name = crate::await_condition("one pod of the meshd Deployment", Duration::from_secs(30), || async {
        let list = pods.list(&selector).await?;
        let live: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        match live.as_slice() {
            [one] => Ok(one.clone()),
            other => bail!("pods: {other:?}"),
        }
    })
    .await?;
    cluster.make_pod_ready(namespace, &name, ip).await?;
    Ok(name)
}
