//! The sidecar's health listener replays the app's rewritten HTTP probes (issue 8): kubelet
//! asks `<pod ip>:15021/app-health/<container>/<kind>`, a real Envoy (bootstrap from
//! `meshctl bootstrap --app-probes`, the same code the injected sidecar uses) asks the app at
//! its original port and path (over TLS, unverified, for HTTPS probes), with the original
//! headers and Host, and returns the app's status.
//! Loopback block 232 belongs to this file (IpBlock is a u8, so the 261+ range the issue
//! reserved for the injector cannot be used).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amime_e2e::http;
use amime_e2e::process::{run_to_completion, ManagedProcess};
use amime_e2e::{await_condition, hosts, paths, run_test, IpBlock, MeshDir, Meshd, Sidecar, TestContext};
use anyhow::{ensure, Context as _, Result};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

const APP_PORT: u16 = 9080;
const TLS_APP_PORT: u16 = 9443;
const HEALTH_PORT: u16 = 15021;

/// An app answering every request with `status` and a JSON echo of the path and headers.
async fn start_app(addr: SocketAddr, status: Arc<AtomicU16>) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind the app on {addr}"))?;
    let app = axum::Router::new().fallback(move |request: Request| {
        let status = StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap_or(StatusCode::IM_A_TEAPOT);
        async move {
            let headers: serde_json::Map<String, Value> = request
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_str().unwrap_or_default().to_string())))
                .collect();
            let path = request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
            (status, Json(json!({ "path": path, "headers": headers })))
        }
    });
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}

/// An HTTPS app with a self-signed certificate (`openssl s_server -WWW`): `GET /ready`
/// answers the file `ready` ("ok"), any other path an "Error opening" text.
async fn start_tls_app(ctx: &TestContext, addr: SocketAddr) -> Result<ManagedProcess> {
    let dir = ctx.unique_path("tls-app", "");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("ready"), "ok\n")?;
    let openssl = Path::new("openssl");
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let req = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"];
    let mut args: Vec<String> = req.iter().map(|a| a.to_string()).collect();
    args.extend(["-subj".into(), "/CN=app".into(), "-keyout".into(), key.display().to_string()]);
    args.extend(["-out".into(), cert.display().to_string()]);
    run_to_completion(openssl, &args, Duration::from_secs(20)).await.context("openssl req (is openssl installed?)")?;
    // -WWW serves files relative to the working directory.
    let script = format!(
        "cd '{}' && exec openssl s_server -quiet -accept {addr} -cert cert.pem -key key.pem -WWW",
        dir.display()
    );
    let process = ManagedProcess::spawn(ctx, "tls-app", Path::new("/bin/sh"), ["-c", &script])?;
    await_condition(&format!("the TLS app to listen on {addr}"), Duration::from_secs(10), || async {
        process.ensure_running()?;
        tokio::net::TcpStream::connect(addr).await.map(drop).context("connect")
    })
    .await?;
    Ok(process)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_probes_reach_the_app_through_the_sidecar() {
    run_test("app_probes_reach_the_app_through_the_sidecar", |ctx| async move {
        let block = IpBlock(232);
        let pod_ip = block.ip(hosts::EXTRA_1);
        let status = Arc::new(AtomicU16::new(200));
        let app = start_app(SocketAddr::from((pod_ip, APP_PORT)), status.clone()).await?;

        let _tls_app = start_tls_app(&ctx, SocketAddr::from((pod_ip, TLS_APP_PORT))).await?;

        let dir = MeshDir::new(&ctx)?;
        let meshd = Meshd::start(&ctx, dir.path(), block.ip(hosts::MESHD), &[]).await?;
        let probes = json!({
            "/app-health/app/readyz": {
                "port": APP_PORT, "path": "/health?deep=1",
                "headers": [{ "name": "X-Probe", "value": "kubelet" }],
            },
            "/app-health/app/livez": { "port": APP_PORT, "path": "/live", "host": "app.local" },
            "/app-health/tls/readyz": { "port": TLS_APP_PORT, "path": "/ready", "scheme": "HTTPS" },
        });
        let bootstrap = ctx.unique_path("bootstrap-app", ".yaml");
        let admin = SocketAddr::from((pod_ip, 15000));
        let args = [
            "bootstrap".to_string(),
            "--node=app-7f9.shop".into(),
            format!("--ip={pod_ip}"),
            format!("--xds={}", meshd.xds_addr()),
            format!("--admin-addr={admin}"),
            format!("--app-probes={probes}"),
            format!("--output={}", bootstrap.display()),
        ];
        run_to_completion(&paths::binary("meshctl")?, &args, Duration::from_secs(20)).await?;
        let _sidecar = Sidecar::launch(&ctx, "envoy-app", &bootstrap, pod_ip, admin).await?;

        let health = SocketAddr::from((pod_ip, HEALTH_PORT));
        let kubelet = |path: &'static str| async move {
            // What kubelet sends: Host is the address it connects to.
            http::send(health, "GET", path, &health.to_string(), &[("User-Agent", "kube-probe/1.37")], b"").await
        };

        let r = kubelet("/app-health/app/readyz").await?;
        ensure!(r.status == 200, "readyz with the app healthy: {}", r.summary());
        let echo = r.json()?;
        ensure!(echo["path"] == "/health?deep=1", "the app saw {echo}");
        ensure!(echo["headers"]["x-probe"] == "kubelet", "the probe's header: {echo}");
        ensure!(echo["headers"]["host"] == format!("{pod_ip}:{APP_PORT}"), "Host as kubelet sends it: {echo}");
        ensure!(echo["headers"]["user-agent"] == "kube-probe/1.37", "{echo}");

        let r = kubelet("/app-health/app/livez").await?;
        ensure!(r.status == 200 && r.json()?["path"] == "/live", "livez: {}", r.summary());
        ensure!(r.json()?["headers"]["host"] == format!("app.local:{APP_PORT}"), "the probe's host: {}", r.summary());
        let r = kubelet("/app-health/tls/readyz").await?;
        ensure!(r.status == 200 && r.body == "ok\n", "an HTTPS probe reaches the TLS app's /ready: {}", r.summary());

        status.store(503, Ordering::SeqCst);
        let r = kubelet("/app-health/app/readyz").await?;
        ensure!(r.status == 503, "readyz with the app failing: {}", r.summary());
        ensure!(r.json()?["path"] == "/health?deep=1", "the 503 is the app's own: {}", r.summary());

        let r = kubelet("/healthz/ready").await?;
        ensure!(r.status == 200, "the sidecar's own readiness stays: {}", r.summary());
        let r = kubelet("/app-health/other/readyz").await?;
        ensure!(r.status == 404, "an unknown probe path: {}", r.summary());

        app.abort();
        let _ = app.await;
        let r = kubelet("/app-health/app/readyz").await?;
        ensure!(r.status == 503, "with the app gone the probe fails: {}", r.summary());
        Ok(())
    })
    .await;
}
