//! meshd's sidecar-injection webhook over real TLS, with `--config-dir`: AdmissionReview round
//! trips decided by the Namespace objects' labels (verified with the CA meshd generated, from
//! `/debug/webhook-ca`), malformed and hostile requests each answered clearly while meshd keeps
//! serving, and `--webhook-cert`/`--webhook-key` served and reloaded when replaced.
//! The same webhook behind a real kube-apiserver is in `webhook_kube.rs`.
//!
//! Every test owns one loopback block (`127.0.N.x`, blocks 241..=249 belong to the webhook tests).

use std::net::SocketAddr;
use std::time::Duration;

use amime_e2e::webhook::{self, admission_response, create_review, pod};
use amime_e2e::{await_condition, run_test, IpBlock, MeshDir, Meshd, TestContext};
use anyhow::{ensure, Context as _, Result};
use injector::conventions::{INIT_CONTAINER, PROXY_CONTAINER};
use k8s_openapi::ByteString;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

const NAMESPACES: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: meshed
  labels:
    amime-injection: enabled
---
apiVersion: v1
kind: Namespace
metadata:
  name: plain
";

/// meshd on `block` with the two namespaces, and the CA of its generated certificate.
async fn start(ctx: &TestContext, block: IpBlock, extra: &[&str]) -> Result<(Meshd, String)> {
    let dir = MeshDir::new(ctx)?;
    dir.write("namespaces.yaml", NAMESPACES)?;
    let meshd = Meshd::start(ctx, dir.path(), block.ip(amime_e2e::hosts::MESHD), extra).await?;
    let ca = meshd.get("/debug/webhook-ca").await?;
    ensure!(ca.status == 200 && ca.body.contains("BEGIN CERTIFICATE"), "/debug/webhook-ca: {}", ca.summary());
    Ok((meshd, ca.body))
}

/// The names of the pod's init containers and containers after `patch` (base64 JSON patch).
fn patched_containers(pod: &Value, patch: &Value) -> Result<Vec<String>> {
    let bytes: ByteString = serde_json::from_value(patch.clone()).context("patch is not base64")?;
    let patch: json_patch::Patch = serde_json::from_slice(&bytes.0).context("patch is not a JSON patch")?;
    let mut pod = pod.clone();
    json_patch::patch(&mut pod, &patch).context("the patch does not apply to the pod")?;
    let names = |field: &str| -> Vec<String> {
        pod["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect()
    };
    Ok([names("initContainers"), names("containers")].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_round_trip_over_tls() {
    run_test("admission_round_trip_over_tls", |ctx| async move {
        let (meshd, ca) = start(&ctx, IpBlock(241), &[]).await?;
        let addr = meshd.webhook_addr();

        let meshed = pod("meshed", json!({"app": "reviews"}));
        let answer = admission_response(
            &webhook::review(addr, &ca, &create_review("u-1", "meshed", meshed.clone())).await?,
            "u-1",
        )?;
        ensure!(answer["allowed"] == true && answer["patchType"] == "JSONPatch", "{answer}");
        let containers = patched_containers(&meshed, &answer["patch"])?;
        for name in [INIT_CONTAINER, PROXY_CONTAINER, "reviews"] {
            ensure!(containers.iter().any(|c| c == name), "{name} missing after the patch: {containers:?}");
        }

        for (uid, namespace, labels) in [
            ("u-2", "plain", json!({"app": "reviews"})),
            ("u-3", "nowhere", json!({})),
            ("u-4", "meshed", json!({"sidecar.amime.dev/inject": "false"})),
        ] {
            let response = webhook::review(addr, &ca, &create_review(uid, namespace, pod(namespace, labels))).await?;
            let answer = admission_response(&response, uid)?;
            ensure!(answer["allowed"] == true && answer.get("patch").is_none(), "{namespace}: {answer}");
        }

        // Only meshd's CA is trusted: another one fails the handshake.
        let other = control_plane::webhook::certs::generate("amime-meshd", "amime-system")?;
        let refused =
            webhook::review(addr, &other.ca_pem, &create_review("u-5", "meshed", pod("meshed", json!({})))).await;
        ensure!(refused.is_err(), "a client trusting another CA got through: {refused:?}");

        let metrics = meshd.metrics().await?;
        for line in [
            "amime_webhook_requests_total{result=\"injected\"} 1",
            "amime_webhook_requests_total{result=\"skipped\"} 3",
        ] {
            ensure!(metrics.lines().any(|l| l == line), "{line} not in /metrics:\n{metrics}");
        }
        ensure!(metrics.contains("amime_webhook_request_duration_seconds_count 4"), "latency histogram:\n{metrics}");
        Ok(())
    })
    .await;
}

/// `POST /inject` with a raw body; the response.
async fn post(addr: SocketAddr, ca: &str, body: &[u8]) -> Result<amime_e2e::Response> {
    webhook::send(addr, ca, "POST", "/inject", body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_answered_and_meshd_keeps_serving() {
    run_test("malformed_requests_are_answered_and_meshd_keeps_serving", |ctx| async move {
        let (meshd, ca) = start(&ctx, IpBlock(242), &[]).await?;
        let addr = meshd.webhook_addr();

        // Clients that stall: one never starts TLS, one never sends a request.
        let silent = tokio::net::TcpStream::connect(addr).await?;
        let idle = webhook::connect(addr, &ca).await?;

        let not_json = post(addr, &ca, b"{\"apiVersion\": ").await?;
        ensure!(
            not_json.status == 400 && not_json.body.starts_with("request body is not JSON"),
            "{}",
            not_json.summary()
        );

        let no_request = post(addr, &ca, br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).await?;
        ensure!(
            no_request.status == 400 && no_request.body.starts_with("request: missing"),
            "{}",
            no_request.summary()
        );

        let mut deployment = create_review("u-kind", "meshed", json!({"kind": "Deployment"}));
        deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        let answer = admission_response(&post(addr, &ca, &serde_json::to_vec(&deployment)?).await?, "u-kind")?;
        let warning = answer["warnings"][0].as_str().unwrap_or_default();
        ensure!(
            answer["allowed"] == true && warning.contains("request.kind: this webhook injects core/v1 Pods"),
            "{answer}"
        );

        let mut no_object = create_review("u-obj", "meshed", Value::Null);
        no_object["request"].as_object_mut().unwrap().remove("object");
        let answer = admission_response(&post(addr, &ca, &serde_json::to_vec(&no_object)?).await?, "u-obj")?;
        ensure!(
            answer["allowed"] == true
                && answer["warnings"][0].as_str().unwrap_or_default().ends_with("request.object: missing"),
            "{answer}"
        );

        // 5 MiB: refused from its Content-Length, before it is read.
        let huge = vec![b' '; 5 << 20];
        let too_big = post(addr, &ca, &huge).await?;
        ensure!(too_big.status == 413 && too_big.body.contains("larger than 4194304 bytes"), "{}", too_big.summary());

        // A pod injection cannot handle is refused, naming the field.
        let mut bad = pod("meshed", json!({}));
        bad["metadata"]["annotations"] = json!({"traffic.amime.dev/excludeInboundPorts": "http"});
        let answer =
            admission_response(&webhook::review(addr, &ca, &create_review("u-bad", "meshed", bad)).await?, "u-bad")?;
        let message = answer["status"]["message"].as_str().unwrap_or_default();
        ensure!(answer["allowed"] == false && message.contains("traffic.amime.dev/excludeInboundPorts"), "{answer}");

        // Still serving, quickly, with both stalled clients connected.
        let started = std::time::Instant::now();
        let answer = admission_response(
            &webhook::review(addr, &ca, &create_review("u-ok", "meshed", pod("meshed", json!({})))).await?,
            "u-ok",
        )?;
        ensure!(answer["allowed"] == true && answer["patchType"] == "JSONPatch", "{answer}");
        ensure!(started.elapsed() < Duration::from_secs(2), "took {:?} next to stalled clients", started.elapsed());
        let health = webhook::send(addr, &ca, "GET", "/healthz", b"").await?;
        ensure!(health.status == 200, "/healthz: {}", health.summary());
        meshd.process().ensure_running()?;
        drop((silent, idle));
        let metrics = meshd.metrics().await?;
        ensure!(metrics.contains("amime_webhook_requests_total{result=\"error\"} 5"), "{metrics}");
        Ok(())
    })
    .await;
}

/// Writes `text` to `path` through a rename, as a Secret volume update does.
fn replace(path: &std::path::Path, text: &str) -> Result<()> {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path).with_context(|| format!("rename to {}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_files_are_served_and_reloaded() {
    run_test("cert_files_are_served_and_reloaded", |ctx| async move {
        let generate = || control_plane::webhook::certs::generate("amime-meshd", "amime-system");
        let (first, second) = (generate()?, generate()?);
        let (cert, key) = (ctx.dir().join("tls.crt"), ctx.dir().join("tls.key"));
        replace(&cert, &first.cert_pem)?;
        replace(&key, &first.key_pem)?;
        let dir = MeshDir::new(&ctx)?;
        dir.write("namespaces.yaml", NAMESPACES)?;
        let (c, k) = (cert.display().to_string(), key.display().to_string());
        let args = ["--webhook-cert", c.as_str(), "--webhook-key", k.as_str()];
        let meshd = Meshd::start(&ctx, dir.path(), IpBlock(243).ip(amime_e2e::hosts::MESHD), &args).await?;
        let addr = meshd.webhook_addr();
        let healthy = |ca: String| async move {
            let response = webhook::send(addr, &ca, "GET", "/healthz", b"").await?;
            ensure!(response.status == 200, "{}", response.summary());
            Ok(())
        };
        healthy(first.ca_pem.clone()).await?;
        ensure!(healthy(second.ca_pem.clone()).await.is_err(), "served a certificate of the second CA already");
        let ca = meshd.get("/debug/webhook-ca").await?;
        ensure!(ca.status == 404 && ca.body.contains("--webhook-cert"), "/debug/webhook-ca: {}", ca.summary());

        // Rotated: the key first, then the certificate (a moment with a mismatched pair).
        replace(&key, &second.key_pem)?;
        replace(&cert, &second.cert_pem)?;
        await_condition("meshd to serve the rotated certificate", Duration::from_secs(10), || {
            healthy(second.ca_pem.clone())
        })
        .await?;

        // A bad certificate file: the last good pair stays, and the log says why.
        replace(&cert, "not a certificate")?;
        let stderr = meshd.process().stderr_log().to_path_buf();
        await_condition("meshd to report the bad certificate", Duration::from_secs(10), || async {
            let log = std::fs::read_to_string(&stderr)? + &std::fs::read_to_string(meshd.process().stdout_log())?;
            ensure!(
                log.contains("webhook certificate not reloaded") && log.contains("no CERTIFICATE block"),
                "not yet"
            );
            Ok(())
        })
        .await?;
        healthy(second.ca_pem.clone()).await?;

        // A silent client at the TLS stage does not hold the others up.
        let mut stalled = tokio::net::TcpStream::connect(addr).await?;
        stalled.write_all(b"\x16\x03\x01").await?;
        healthy(second.ca_pem.clone()).await?;
        Ok(())
    })
    .await;
}
