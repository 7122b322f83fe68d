//! Ingress gateway end to end: real `meshd`, real Envoy started from
//! `meshctl bootstrap --gateway` (explicit mode: it listens on its own loopback IP), the
//! Gateway and VirtualService of `manifests/examples/gateway`, a certificate generated
//! with rcgen and verified by the client.
//!
//! Blocks 193..=199 belong to this file. Each test ends by checking that Envoy rejected
//! no xDS update and meshd counted no NACK.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amime_e2e::http::{self, Response};
use amime_e2e::mesh::{self, hosts, APP_PORT};
use amime_e2e::sidecar::{self, Sidecar, SidecarSpec};
use amime_e2e::{await_condition, paths, run_test, Bookinfo, BookinfoOptions, IpBlock, MeshDir, TestContext, Upstream};
use anyhow::{ensure, Context as _, Result};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// The gateway proxy's host in the block.
const GATEWAY: u8 = 30;
const HTTP_PORT: u16 = 8080;
const HTTPS_PORT: u16 = 8443;
const REDIRECT_PORT: u16 = 8081;
const HOST: &str = "bookinfo.example.com";

/// A CA and a certificate for [`HOST`] signed by it: (CA PEM, certificate PEM, key PEM).
fn certificate() -> Result<(String, String, String)> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec![HOST.to_owned()])?.signed_by(&key, &ca)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

/// The `kubernetes.io/tls` Secret `bookinfo-cert` holding `cert` and `key`.
fn secret_yaml(cert: &str, key: &str) -> String {
    let indent = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bookinfo-cert\n  namespace: bookinfo\ntype: kubernetes.io/tls\n\
         stringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert),
        indent(key)
    )
}

/// A reviews rule bound only to the gateway: every request through it is aborted with a
/// 418, so a sidecar that wrongly applied it would show.
const REVIEWS_AT_GATEWAY: &str = r#"apiVersion: networking.amime.dev/v1
kind: VirtualService
metadata:
  name: reviews-at-gateway
  namespace: bookinfo
spec:
  hosts:
  - reviews.example.com
  - reviews
  gateways:
  - bookinfo/bookinfo-gateway
  http:
  - fault:
      abort:
        httpStatus: 418
        percentage:
          value: 100
    route:
    - destination:
        host: reviews
"#;

/// Bookinfo, the productpage app, the example Gateway (with `secret` if given) and the
/// gateway proxy.
struct Setup {
    gateway: Sidecar,
    _productpage_app: Upstream,
    bookinfo: Bookinfo,
}

async fn start(ctx: &TestContext, block: IpBlock, secret: Option<&str>) -> Result<Setup> {
    let dir = MeshDir::new(ctx)?;
    dir.write("mesh.yaml", &mesh::bookinfo_mesh_yaml(block)?)?;
    let example = paths::workspace_root().join("manifests/examples/gateway/bookinfo-gateway.yaml");
    let example = std::fs::read_to_string(&example).with_context(|| format!("read {}", example.display()))?;
    dir.write("gateway.yaml", &block.render(&example))?;
    dir.write("reviews-at-gateway.yaml", REVIEWS_AT_GATEWAY)?;
    if let Some(secret) = secret {
        dir.write("secret.yaml", secret)?;
    }
    let productpage_app =
        Upstream::start(block.addr(hosts::PRODUCTPAGE, APP_PORT), "productpage", "v1", "productpage-v1").await?;
    let bookinfo = Bookinfo::start(ctx, block, dir, BookinfoOptions::default()).await?;
    let spec = SidecarSpec::new("ingressgateway", "istio-system", block.ip(GATEWAY))
        .label("istio", "ingressgateway")
        .gateway();
    let gateway = Sidecar::start(ctx, &spec, bookinfo.meshd.xds_addr()).await?;
    Ok(Setup { gateway, _productpage_app: productpage_app, bookinfo })
}

/// `GET path` to the gateway's `port` with `Host: host`.
async fn get(block: IpBlock, port: u16, host: &str, path: &str) -> Result<Response> {
    http::send(block.addr(GATEWAY, port), "GET", path, host, &[], b"").await
}

/// `GET path` over TLS to `addr` as [`HOST`] (SNI), verifying the certificate against `ca_pem`.
async fn get_https(addr: SocketAddr, ca_pem: &str, path: &str) -> Result<Response> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let exchange = async {
        let tcp = TcpStream::connect(addr).await.with_context(|| format!("connect to {addr}"))?;
        let name = ServerName::try_from(HOST)?.to_owned();
        let mut tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.context("TLS handshake")?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await?;
        amime_e2e::webhook::read_response(&mut tls).await
    };
    tokio::time::timeout(http::REQUEST_TIMEOUT, exchange)
        .await
        .with_context(|| format!("no HTTPS response from {addr}"))?
        .with_context(|| format!("GET https://{HOST}{path} at {addr}"))
}

/// Who answered, by the upstream's `service` field.
fn service(r: &Response) -> String {
    r.json_str("service").unwrap_or_else(|| format!("HTTP {}", r.status))
}

async fn check_no_nacks(setup: &Setup) -> Result<()> {
    sidecar::ensure_no_rejected_updates(&setup.gateway.stats().await?)?;
    setup.bookinfo.check_no_nacks().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_http_by_path_and_its_rules_stay_off_sidecars() {
    run_test("gateway_routes_http_by_path_and_its_rules_stay_off_sidecars", |ctx| async move {
        let block = IpBlock(193);
        let setup = start(&ctx, block, None).await?;
        await_condition("the gateway to route /productpage", Duration::from_secs(10), || async {
            let r = get(block, HTTP_PORT, HOST, "/productpage").await?;
            ensure!(service(&r) == "productpage", "{}", r.summary());
            Ok(())
        })
        .await?;
        let r = get(block, HTTP_PORT, HOST, "/reviews/1").await?;
        ensure!(service(&r) == "reviews", "/reviews should reach reviews: {}", r.summary());
        let r = get(block, HTTP_PORT, HOST, "/ratings").await?;
        ensure!(r.status == 404, "a path no rule takes is a 404: {}", r.summary());
        // A port in the Host header does not change the virtual host.
        let r = get(block, HTTP_PORT, &format!("{HOST}:{HTTP_PORT}"), "/productpage").await?;
        ensure!(service(&r) == "productpage", "Host with a port: {}", r.summary());

        // The rule bound to the gateway only: applied there, not by the productpage sidecar.
        let r = get(block, HTTP_PORT, "reviews.example.com", "/").await?;
        ensure!(r.status == 418, "the gateway applies reviews-at-gateway: {}", r.summary());
        let tally = setup.bookinfo.productpage.tally(20, Bookinfo::REVIEWS_URL, &[]).await;
        ensure!(tally.get("HTTP 418") == 0 && tally.get("v1") + tally.get("v2") + tally.get("v3") == 20, "{tally}");

        // The gateway has its servers' listeners and no sidecar listener; it shows as a gateway.
        let dump = setup.gateway.config_dump().await?.to_string();
        for want in [format!("{}_{HTTP_PORT}", block.ip(GATEWAY)), "http.8080".to_owned()] {
            ensure!(dump.contains(&want), "gateway config lacks {want}");
        }
        ensure!(
            !dump.contains("\"outbound\"") && !dump.contains("virtualOutbound") && !dump.contains("virtualInbound"),
            "a gateway gets no sidecar listener"
        );
        let proxies = setup.bookinfo.meshd.debug_proxies().await?.to_string();
        ensure!(proxies.contains("\"proxy_type\":\"gateway\""), "/debug/proxies: {proxies}");
        check_no_nacks(&setup).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_terminates_https_and_redirects_http() {
    run_test("gateway_terminates_https_and_redirects_http", |ctx| async move {
        let block = IpBlock(194);
        let (ca, cert, key) = certificate()?;
        let setup = start(&ctx, block, Some(&secret_yaml(&cert, &key))).await?;
        let https = block.addr(GATEWAY, HTTPS_PORT);
        await_condition("the gateway to serve HTTPS", Duration::from_secs(10), || async {
            let r = get_https(https, &ca, "/productpage").await?;
            ensure!(service(&r) == "productpage", "{}", r.summary());
            Ok(())
        })
        .await?;
        let r = get_https(https, &ca, "/reviews").await?;
        ensure!(service(&r) == "reviews", "{}", r.summary());

        let r = get(block, REDIRECT_PORT, HOST, "/productpage?x=1").await?;
        ensure!(r.status == 301, "httpsRedirect answers 301: {}", r.summary());
        let location = r.header("location").unwrap_or_default();
        ensure!(
            location.starts_with(&format!("https://{HOST}")) && location.ends_with("/productpage?x=1"),
            "{location}"
        );

        // meshd never shows the private key; the proxy has it.
        let key_line = key.lines().nth(1).context("key PEM")?;
        let admin = setup.bookinfo.meshd.get("/debug/proxies").await?;
        ensure!(!admin.body.contains(key_line), "/debug/proxies shows the key");
        check_no_nacks(&setup).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_leaves_only_its_server_out() {
    run_test("a_missing_secret_leaves_only_its_server_out", |ctx| async move {
        let block = IpBlock(195);
        let setup = start(&ctx, block, None).await?;
        let errors = setup.bookinfo.meshd.config_errors().await?;
        ensure!(
            errors.iter().any(|e| e.field.as_deref() == Some("spec.servers[1].tls.credentialName")
                && e.message.contains("bookinfo-cert")),
            "meshd should name the Gateway field: {errors:?}"
        );
        let r = get(block, HTTP_PORT, HOST, "/productpage").await?;
        ensure!(service(&r) == "productpage", "the HTTP server stays: {}", r.summary());
        ensure!(
            TcpStream::connect(block.addr(GATEWAY, HTTPS_PORT)).await.is_err(),
            "no listener on {HTTPS_PORT} without its certificate"
        );
        check_no_nacks(&setup).await
    })
    .await;
}
