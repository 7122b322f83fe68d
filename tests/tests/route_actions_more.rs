//! More VirtualService HTTP actions end to end: real `meshd`, `meshctl bootstrap` and Envoy
//! (productpage's sidecar, explicit mode) in front of in-process reviews upstreams that echo
//! the path and headers they see ([`amime_e2e::Upstream`]): redirects, rewrites, direct
//! responses, mirrors, CORS, delegation and websocket upgrades.
//!
//! Blocks 137..=145 belong to this file. Each test ends by checking that Envoy rejected no
//! xDS update and meshd counted no NACK.

use std::time::Duration;

use amime_e2e::http::{proxy_request, Response};
use amime_e2e::mesh::{self, example_pod};
use amime_e2e::rules::{documents, reviews_vs_then_v1, REVIEWS_DESTINATION_RULE};
use amime_e2e::{await_condition, hosts, run_test, Bookinfo, BookinfoOptions, IpBlock, MeshDir, TestContext};
use anyhow::{bail, ensure, Context as _, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Start bookinfo with the reviews DestinationRule and `rules` (YAML documents), plus `extra`
/// documents for the mesh.
async fn start_with(ctx: &TestContext, block: IpBlock, rules: &[&str], extra: &str) -> Result<Bookinfo> {
    let dir = MeshDir::new(ctx)?;
    dir.write("mesh.yaml", &(mesh::bookinfo_mesh_yaml(block)? + extra))?;
    let mut all = vec![REVIEWS_DESTINATION_RULE];
    all.extend_from_slice(rules);
    dir.write("reviews-rules.yaml", &documents(&all))?;
    Bookinfo::start(ctx, block, dir, BookinfoOptions::default()).await
}

const V1: usize = 0;
const V2: usize = 1;
const V3: usize = 2;

fn url(path: &str) -> String {
    format!("http://reviews:9080{path}")
}

/// The path and Host an upstream saw for `r`.
fn seen(r: &Response) -> Result<(String, String)> {
    let body = r.json()?;
    let path = body["path"].as_str().context("path")?.to_owned();
    let host = body["headers"]["host"].as_str().context("host")?.to_owned();
    Ok((path, host))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_rewrites_and_direct_responses() {
    run_test("redirects_rewrites_and_direct_responses", |ctx| async move {
        let rules = r#"  - name: moved
    match:
    - uri:
        exact: /moved
    redirect:
      uri: /v2/reviews
      authority: ratings.example
      redirectCode: 302
  - name: to-https
    match:
    - uri:
        prefix: /secure
    redirect:
      scheme: https
      derivePort: FROM_PROTOCOL_DEFAULT
  - name: old-prefix
    match:
    - uri:
        prefix: /old/
    redirect:
      prefixRewrite: /new/
      authority: other
      derivePort: FROM_REQUEST_PORT
  - name: api
    match:
    - uri:
        prefix: /api/
    rewrite:
      uri: /v1/
      authority: reviews.internal
    route:
    - destination:
        host: reviews
        subset: v2
  - name: exact-rewrite
    match:
    - uri:
        exact: /exact
    rewrite:
      uri: /whole/path
    route:
    - destination:
        host: reviews
        subset: v2
  - name: swap
    match:
    - uri:
        prefix: /swap/
    rewrite:
      uriRegexRewrite:
        match: ^/swap/(\w+)/(\w+)$
        rewrite: /\2/\1
    route:
    - destination:
        host: reviews
        subset: v2
  - name: down
    match:
    - uri:
        prefix: /down
    directResponse:
      status: 503
      body:
        string: down for maintenance
  - name: teapot
    match:
    - uri:
        exact: /teapot
    directResponse:
      status: 418
      body:
        bytes: c2hvcnQgYW5kIHN0b3V0
"#;
        let bookinfo = start_with(&ctx, IpBlock(137), &[&reviews_vs_then_v1(rules)], "").await?;
        let get = |path: &str| {
            let (u, productpage) = (url(path), &bookinfo.productpage);
            async move { productpage.request(&u, &[]).await }
        };

        // Redirects: status and Location; the upstream never sees them.
        let r = get("/moved").await?;
        ensure!(r.status == 302, "{}", r.summary());
        ensure!(r.header("location") == Some("http://ratings.example/v2/reviews"), "{:?}", r.headers);
        let r = get("/secure/page").await?;
        ensure!(r.status == 301, "redirectCode defaults to 301: {}", r.summary());
        let location = r.header("location").unwrap_or_default();
        ensure!(
            location == "https://reviews/secure/page" || location == "https://reviews:443/secure/page",
            "https on the protocol's default port: {location:?}"
        );
        let r = get("/old/page?q=1").await?;
        ensure!(r.status == 301, "{}", r.summary());
        ensure!(r.header("location") == Some("http://other:9080/new/page?q=1"), "{:?}", r.headers);
        let redirected: u64 = bookinfo.reviews.iter().map(|u| u.hits_for("/moved") + u.hits_for("/secure/page")).sum();
        ensure!(redirected == 0, "redirected requests never reach an upstream");

        // Rewrites: the upstream sees the new path and Host.
        let r = get("/api/items").await?;
        ensure!(r.status == 200 && r.json_str("version").as_deref() == Some("v2"), "{}", r.summary());
        let (path, host) = seen(&r)?;
        ensure!(path == "/v1/items" && host == "reviews.internal", "prefix and authority rewritten: {path} {host}");
        let (path, _) = seen(&get("/exact").await?)?;
        ensure!(path == "/whole/path", "after an exact match the whole path is replaced: {path}");
        let (path, host) = seen(&get("/swap/left/right").await?)?;
        ensure!(path == "/right/left", "regex rewrite: {path}");
        ensure!(host == "reviews:9080", "without authority the Host stays: {host}");

        // Direct responses: status and body from the sidecar itself.
        let r = get("/down/now").await?;
        ensure!(r.status == 503 && r.body == "down for maintenance", "{}", r.summary());
        let r = get("/teapot").await?;
        ensure!(r.status == 418 && r.body == "short and stout", "body.bytes is base64: {}", r.summary());
        let answered: u64 = bookinfo.reviews.iter().map(|u| u.hits_for("/down/now") + u.hits_for("/teapot")).sum();
        ensure!(answered == 0, "direct responses never reach an upstream");

        // Everything else still goes to v1.
        let r = get("/").await?;
        ensure!(r.status == 200 && r.json_str("version").as_deref() == Some("v1"), "{}", r.summary());
        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_receive_their_share_of_copies() {
    run_test("mirrors_receive_their_share_of_copies", |ctx| async move {
        let rules = r#"  - name: mirrors
    match:
    - headers:
        x-test:
          exact: mirrors
    mirrors:
    - destination:
        host: reviews
        subset: v2
      percentage:
        value: 50
    - destination:
        host: reviews
        subset: v3
    route:
    - destination:
        host: reviews
        subset: v1
  - name: mirror
    match:
    - headers:
        x-test:
          exact: mirror
    mirror:
      host: reviews
      subset: v3
    route:
    - destination:
        host: reviews
        subset: v1
"#;
        let bookinfo = start_with(&ctx, IpBlock(138), &[&reviews_vs_then_v1(rules)], "").await?;
        let (v1, v2, v3) = (&bookinfo.reviews[V1], &bookinfo.reviews[V2], &bookinfo.reviews[V3]);

        // `mirror` without a percentage: every request is copied (Istio's default 100%).
        for _ in 0..20 {
            let r = bookinfo.productpage.request(&url("/?key=single"), &[("x-test", "mirror")]).await?;
            ensure!(r.json_str("version").as_deref() == Some("v1"), "the client is answered by v1: {}", r.summary());
        }
        await_condition("v3 to receive 20 mirrored copies", Duration::from_secs(10), || async {
            ensure!(v3.hits_for("single") == 20, "v3 saw {}", v3.hits_for("single"));
            Ok(())
        })
        .await?;
        ensure!(v1.hits_for("single") == 20 && v2.hits_for("single") == 0, "only the mirror gets copies");

        // `mirrors`: 100% to v3, 50% to v2 (binomial bounds, 5 sigmas).
        let n = 400;
        for _ in 0..n {
            let r = bookinfo.productpage.request(&url("/?key=split"), &[("x-test", "mirrors")]).await?;
            ensure!(r.status == 200, "{}", r.summary());
        }
        await_condition("v3 to receive every mirrored copy", Duration::from_secs(10), || async {
            ensure!(v3.hits_for("split") == n, "v3 saw {} of {n}", v3.hits_for("split"));
            Ok(())
        })
        .await?;
        let copies = v2.hits_for("split") as f64;
        let (mean, sd) = (n as f64 * 0.5, (n as f64 * 0.25).sqrt());
        eprintln!("mirror 50%: v2 received {copies} copies of {n}");
        ensure!((copies - mean).abs() <= 5.0 * sd, "{copies} of {n} copies is outside {mean} ± {:.0}", 5.0 * sd);
        ensure!(v1.hits_for("split") == n, "the primary destination gets every request");
        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_answered_for_allowed_origins_only() {
    run_test("cors_preflights_answered_for_allowed_origins_only", |ctx| async move {
        let cors = |name: &str, extra: &str| {
            format!(
                "  - name: {name}\n    match:\n    - uri:\n        prefix: /{name}\n    corsPolicy:\n      allowOrigins:\n      \
                 - exact: https://good.example\n      - prefix: https://trusted.\n      allowMethods: [GET, POST]\n      \
                 allowHeaders: [x-custom]\n      exposeHeaders: [x-served]\n      maxAge: 1h\n      \
                 allowCredentials: true\n{extra}    route:\n    - destination:\n        host: reviews\n        subset: v1\n"
            )
        };
        let rules = cors("cors", "") + &cors("strict", "      unmatchedPreflights: IGNORE\n");
        let bookinfo = start_with(&ctx, IpBlock(139), &[&reviews_vs_then_v1(&rules)], "").await?;
        let v1 = &bookinfo.reviews[V1];
        let proxy = bookinfo.productpage.proxy_addr();
        let preflight = |path: &str, origin: &'static str| {
            let u = url(path);
            async move {
                let headers = [("origin", origin), ("access-control-request-method", "POST")];
                proxy_request(proxy, "OPTIONS", &u, &headers).await
            }
        };

        // An allowed origin's preflight is answered by the sidecar with the policy.
        for origin in ["https://good.example", "https://trusted.partner"] {
            let r = preflight("/cors/a", origin).await?;
            ensure!(r.status == 200, "{}", r.summary());
            ensure!(r.header("access-control-allow-origin") == Some(origin), "{origin}: {:?}", r.headers);
            ensure!(r.header("access-control-allow-methods") == Some("GET,POST"), "{:?}", r.headers);
            ensure!(r.header("access-control-allow-headers") == Some("x-custom"), "{:?}", r.headers);
            ensure!(r.header("access-control-max-age") == Some("3600"), "{:?}", r.headers);
            ensure!(r.header("access-control-allow-credentials") == Some("true"), "{:?}", r.headers);
        }
        ensure!(v1.hits_for("/cors/a") == 0, "answered preflights never reach the upstream");

        // Another origin gets no CORS headers; its preflight goes on to the upstream (FORWARD).
        let r = preflight("/cors/b", "https://evil.example").await?;
        ensure!(r.header("access-control-allow-origin").is_none(), "{:?}", r.headers);
        ensure!(v1.hits_for("/cors/b") == 1, "a preflight from another origin is forwarded");
        // ... or is answered without them and not forwarded (IGNORE).
        let r = preflight("/strict/b", "https://evil.example").await?;
        ensure!(r.header("access-control-allow-origin").is_none(), "{:?}", r.headers);
        ensure!(v1.hits_for("/strict/b") == 0, "IGNORE keeps unmatched preflights from the upstream");

        // Actual requests: the allowed origin sees the allow and expose headers, another none.
        let r = bookinfo.productpage.request(&url("/cors/c"), &[("origin", "https://good.example")]).await?;
        ensure!(r.status == 200, "{}", r.summary());
        ensure!(r.header("access-control-allow-origin") == Some("https://good.example"), "{:?}", r.headers);
        ensure!(r.header("access-control-expose-headers") == Some("x-served"), "{:?}", r.headers);
        let r = bookinfo.productpage.request(&url("/cors/c"), &[("origin", "https://evil.example")]).await?;
        ensure!(r.status == 200 && r.header("access-control-allow-origin").is_none(), "{:?}", r.headers);
        bookinfo.check_no_nacks().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_rules_merge_into_the_root() {
    run_test("delegate_rules_merge_into_the_root", |ctx| async move {
        let root = reviews_vs_then_v1(
            "  - name: shop\n    match:\n    - uri:\n        prefix: /shop\n    timeout: 5s\n    delegate:\n      \
             name: reviews-shop\n  - name: lost\n    match:\n    - uri:\n        prefix: /lost\n    delegate:\n      \
             name: missing\n",
        );
        let delegate = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews-shop
  namespace: bookinfo
spec:
  http:
  - name: cart
    match:
    - uri:
        prefix: /shop/cart
    route:
    - destination:
        host: reviews
        subset: v2
  - name: elsewhere
    match:
    - uri:
        prefix: /other
    route:
    - destination:
        host: reviews
        subset: v2
  - name: rest
    route:
    - destination:
        host: reviews
        subset: v3
"#;
        let bookinfo = start_with(&ctx, IpBlock(140), &[&root, delegate], "").await?;
        let version = |path: &'static str| {
            let productpage = &bookinfo.productpage;
            async move {
                let r = productpage.request(&url(path), &[]).await?;
                ensure!(r.status == 200, "{path}: {}", r.summary());
                r.json_str("version").context("version")
            }
        };
        // The delegate's matches within the root's: /shop/cart to v2, the rest of /shop to v3.
        ensure!(version("/shop/cart/1").await? == "v2", "delegate rule `cart`");
        ensure!(version("/shop/books").await? == "v3", "delegate rule `rest` takes the root's match");
        // A delegate match outside the root's is dropped; a missing delegate drops its rule.
        ensure!(version("/other").await? == "v1", "the conflicting delegate rule is left out");
        ensure!(version("/lost/x").await? == "v1", "requests of a rule with a missing delegate go on");
        let errors = bookinfo.meshd.config_errors().await?;
        let said = |needle: &str| errors.iter().any(|e| e.message.contains(needle));
        ensure!(said("\"elsewhere\"") && said("conflict"), "the conflict is reported: {errors:#?}");
        ensure!(said("bookinfo/missing does not exist"), "the missing delegate is reported: {errors:#?}");
        bookinfo.check_no_nacks().await
    })
    .await;
}

/// The `chat` service (port 9080) and its pod on the block's `EXTRA_1` host.
fn chat_yaml(block: IpBlock) -> String {
    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: chat\n  namespace: bookinfo\nspec:\n  \
                   clusterIP: 10.96.10.77\n  selector:\n    app: chat\n  ports:\n  - name: http\n    port: 9080\n    \
                   targetPort: 9080\n";
    block.render(&format!("---\n{service}---\n{}", example_pod("chat", "v1", hosts::EXTRA_1)))
}

/// Reads from `stream` until `\r\n\r\n`; returns the head.
async fn read_head(stream: &mut TcpStream) -> Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            bail!("closed after {:?}", String::from_utf8_lossy(&head));
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// A websocket-ish upstream: answers an upgrade request with 101, then echoes bytes.
async fn serve_upgrades(listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(head) = read_head(&mut stream).await else { return };
            if !head.to_ascii_lowercase().contains("upgrade: websocket") {
                let _ = stream.write_all(b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\n\r\n").await;
                return;
            }
            let reply = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
            if stream.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
            let mut buf = [0u8; 1024];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_go_through() {
    run_test("websocket_upgrades_go_through", |ctx| async move {
        let block = IpBlock(141);
        let listener = TcpListener::bind(block.addr(hosts::EXTRA_1, 9080)).await?;
        let server = tokio::spawn(serve_upgrades(listener));
        // Istio's old `websocketUpgrade` is accepted (upgrades work with or without it).
        let chat_vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: chat\n  \
                       namespace: bookinfo\nspec:\n  hosts:\n  - chat\n  http:\n  - websocketUpgrade: true\n    \
                       route:\n    - destination:\n        host: chat\n";
        let bookinfo = start_with(&ctx, block, &[chat_vs], &chat_yaml(block)).await?;
        let errors = bookinfo.meshd.config_errors().await?;
        let about_chat: Vec<_> = errors.iter().filter(|e| e.name.as_deref() == Some("chat")).collect();
        ensure!(about_chat.is_empty(), "websocketUpgrade is accepted without a word: {about_chat:#?}");

        let mut stream = TcpStream::connect(bookinfo.productpage.proxy_addr()).await?;
        let request = "GET http://chat:9080/socket HTTP/1.1\r\nHost: chat:9080\r\nConnection: Upgrade\r\n\
                       Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                       Sec-WebSocket-Version: 13\r\n\r\n";
        stream.write_all(request.as_bytes()).await?;
        let exchange = async {
            let head = read_head(&mut stream).await?;
            ensure!(head.starts_with("HTTP/1.1 101"), "the upgrade should be switched: {head:?}");
            ensure!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head:?}");
            // After the upgrade the connection carries raw bytes both ways.
            stream.write_all(b"\x81\x05hello").await?;
            let mut echo = [0u8; 7];
            stream.read_exact(&mut echo).await?;
            ensure!(&echo == b"\x81\x05hello", "echoed {echo:?}");
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(10), exchange).await.context("websocket exchange timed out")??;
        server.abort();
        bookinfo.check_no_nacks().await
    })
    .await;
}
