//! `meshctl proxy-status`, `proxy-config` and `version` against a live meshd (config-dir)
//! over its admin API: with a real Envoy sidecar, delta and state of the world (every type
//! SYNCED, again SYNCED at the new version after a rule change; clusters, routes,
//! listeners, endpoints as tables and JSON); with raw ADS clients, one that NACKs (NACKED
//! with its error_detail) and one that never asks for endpoints (clusters WARMING).
//!
//! Loopback blocks 234..=239 belong to this file.

use std::net::SocketAddr;
use std::time::Duration;

use amime_e2e::mesh::{self, hosts};
use amime_e2e::rules::{REVIEWS_DESTINATION_RULE, REVIEWS_VS_ALL_V3};
use amime_e2e::{
    await_condition, paths, run_test, Bookinfo, BookinfoOptions, IpBlock, MeshDir, Meshd, TestContext, XdsApi,
};
use anyhow::{anyhow, ensure, Context, Result};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use serde_json::Value as Json;
use tokio::sync::mpsc::Sender;
use tonic::Streaming;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const PROXY: &str = "productpage-v1.bookinfo";
const V1_CLUSTER: &str = "outbound|9080|v1|reviews.bookinfo.svc.cluster.local";
const V3_CLUSTER: &str = "outbound|9080|v3|reviews.bookinfo.svc.cluster.local";

/// What a meshctl run printed and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Result<String> {
        ensure!(self.code == Some(0), "meshctl exited {:?}; stderr: {}", self.code, self.stderr);
        Ok(self.stdout)
    }
}

async fn meshctl(meshd: SocketAddr, args: &[&str]) -> Result<Run> {
    let program = paths::binary("meshctl")?;
    let out = tokio::process::Command::new(&program)
        .args(args)
        .env("AMIME_MESHD", meshd.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out).await.context("meshctl took over 30s")??;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `proxy-status PROXY -o json`: the proxy's types as (short name, state, sent version, message).
async fn type_states(meshd: SocketAddr, proxy: &str) -> Result<Vec<(String, String, String, String)>> {
    let text = meshctl(meshd, &["proxy-status", proxy, "-o", "json"]).await?.ok()?;
    let doc: Json = serde_json::from_str(&text).with_context(|| format!("proxy-status -o json: {text}"))?;
    let proxy = &doc["proxies"][0];
    let types = proxy["types"].as_array().ok_or_else(|| anyhow!("no types in {doc}"))?;
    let field = |t: &Json, k: &str| t[k].as_str().unwrap_or_default().to_owned();
    Ok(types
        .iter()
        .map(|t| {
            (field(t, "short_name"), field(t, "state"), field(t, "sent_version"), t["nack"]["message"].to_string())
        })
        .collect())
}

/// Waits until CDS, EDS, LDS and RDS are all SYNCED; returns the RDS version.
async fn await_all_synced(meshd: SocketAddr, not_rds_version: Option<&str>) -> Result<String> {
    await_condition("proxy-status to show every type SYNCED", Duration::from_secs(10), || async {
        let types = type_states(meshd, PROXY).await?;
        let names: Vec<&str> = types.iter().map(|t| t.0.as_str()).collect();
        ensure!(names == ["CDS", "EDS", "LDS", "RDS"], "types {names:?}");
        ensure!(types.iter().all(|t| t.1 == "SYNC_STATE_SYNCED"), "{types:?}");
        let rds = types[3].2.clone();
        ensure!(Some(rds.as_str()) != not_rds_version, "RDS still at {rds}");
        Ok(rds)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_and_config_of_a_real_envoy_delta() {
    run_test("proxy_status_and_config_of_a_real_envoy_delta", |ctx| async move {
        real_envoy(&ctx, IpBlock(234), XdsApi::Delta).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_and_config_of_a_real_envoy_sotw() {
    run_test("proxy_status_and_config_of_a_real_envoy_sotw", |ctx| async move {
        real_envoy(&ctx, IpBlock(237), XdsApi::Sotw).await
    })
    .await;
}

/// The productpage sidecar of bookinfo, as proxy-status and proxy-config see it.
async fn real_envoy(ctx: &TestContext, block: IpBlock, xds_api: XdsApi) -> Result<()> {
    let dir = MeshDir::new(ctx)?;
    dir.write("mesh.yaml", &mesh::bookinfo_mesh_yaml(block)?)?;
    dir.write("reviews-destinationrule.yaml", REVIEWS_DESTINATION_RULE)?;
    let options = BookinfoOptions { xds_api, ..Default::default() };
    let bookinfo = Bookinfo::start(ctx, block, dir, options).await?;
    let meshd = bookinfo.meshd.xds_addr();

    let before = await_all_synced(meshd, None).await?;
    let table = meshctl(meshd, &["proxy-status"]).await?.ok()?;
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with(PROXY)).collect();
    ensure!(rows.len() == 4 && rows.iter().all(|r| r.contains(" SYNCED ")), "proxy-status table:\n{table}");
    ensure!(table.starts_with("PROXY "), "a header first:\n{table}");

    // A rule change: RDS is sent again, and acknowledged at the new version.
    let since = bookinfo.dir.write("reviews-virtualservice.yaml", REVIEWS_VS_ALL_V3)?;
    bookinfo.await_all_to("v3", &[], since, Duration::from_secs(5)).await?;
    let after = await_all_synced(meshd, Some(&before)).await?;
    ensure!(after != before, "the RDS version should change with the rule");

    // proxy-config: tables by default (pod name and -n resolve the proxy).
    let clusters = meshctl(meshd, &["proxy-config", "clusters", "productpage-v1", "-n", "bookinfo"]).await?.ok()?;
    let v1 = clusters.lines().find(|l| l.starts_with(V1_CLUSTER)).ok_or_else(|| anyhow!("{clusters}"))?;
    ensure!(v1.split_whitespace().collect::<Vec<_>>() == [V1_CLUSTER, "EDS", "1", "1"], "row {v1:?}");
    let routes = meshctl(meshd, &["proxy-config", "routes", PROXY]).await?.ok()?;
    ensure!(routes.lines().any(|l| l.contains("reviews") && l.ends_with(V3_CLUSTER)), "routes:\n{routes}");
    let listeners = meshctl(meshd, &["proxy-config", "listeners", PROXY]).await?.ok()?;
    let proxy_ip = block.ip(hosts::PRODUCTPAGE).to_string();
    ensure!(listeners.lines().skip(1).any(|l| l.contains(&proxy_ip)), "listeners:\n{listeners}");
    let endpoints = meshctl(meshd, &["proxy-config", "endpoints", PROXY]).await?.ok()?;
    let v1_addr = block.addr(hosts::REVIEWS_V1, mesh::APP_PORT).to_string();
    ensure!(endpoints.lines().any(|l| l.starts_with(V1_CLUSTER) && l.contains(&v1_addr)), "{endpoints}");
    let secrets = meshctl(meshd, &["proxy-config", "secrets", PROXY]).await?;
    ensure!(secrets.stderr.contains("until mTLS"), "secrets: {}", secrets.stderr);
    secrets.ok()?;

    // -o json: the resources whole, in Envoy's canonical JSON.
    let json = meshctl(meshd, &["proxy-config", "clusters", PROXY, "-o", "json"]).await?.ok()?;
    let doc: Json = serde_json::from_str(&json).context("proxy-config clusters -o json")?;
    let v1 = doc.as_array().and_then(|a| a.iter().find(|c| c["name"] == V1_CLUSTER)).cloned();
    ensure!(v1.as_ref().is_some_and(|c| c["type"] == "EDS" && c["@type"] == CDS), "{json}");
    let yaml = meshctl(meshd, &["proxy-config", "routes", PROXY, "-o", "yaml"]).await?.ok()?;
    ensure!(yaml.contains("virtual_hosts:"), "{yaml}");

    // version: both sides.
    let version = meshctl(meshd, &["version"]).await?.ok()?;
    ensure!(version.contains("meshctl ") && version.contains("meshd ") && version.contains("config-dir"), "{version}");

    // An unknown proxy: exit 1, close matches named.
    let unknown = meshctl(meshd, &["proxy-config", "clusters", "productpage-v2.bookinfo"]).await?;
    ensure!(
        unknown.code == Some(1) && unknown.stderr.contains("did you mean: productpage-v1.bookinfo"),
        "{}",
        unknown.stderr
    );
    bookinfo.check_no_nacks().await
}

fn node(id: &str, ip: &str) -> Node {
    let s = |v: &str| Value { kind: Some(Kind::StringValue(v.to_owned())) };
    let fields = [("INSTANCE_IPS".to_owned(), s(ip)), ("INTERCEPTION_MODE".to_owned(), s("NONE"))];
    Node { id: id.to_owned(), metadata: Some(Struct { fields: fields.into_iter().collect() }), ..Default::default() }
}

async fn start_meshd(ctx: &TestContext, block: IpBlock) -> Result<(MeshDir, Meshd)> {
    let dir = MeshDir::new(ctx)?;
    dir.write("mesh.yaml", &mesh::bookinfo_mesh_yaml(block)?)?;
    let meshd = Meshd::start(ctx, dir.path(), block.ip(hosts::MESHD), &[]).await?;
    Ok((dir, meshd))
}

/// A raw state-of-the-world ADS stream for `proxy` that has asked for clusters: the sender
/// for its next requests, the stream (keep it: dropping it ends the stream) and the first
/// CDS response.
async fn first_cds(
    addr: SocketAddr,
    proxy: &str,
    block: IpBlock,
) -> Result<(Sender<DiscoveryRequest>, Streaming<DiscoveryResponse>, DiscoveryResponse)> {
    let mut ads = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}")).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let ask = DiscoveryRequest {
        node: Some(node(proxy, &block.ip(40).to_string())),
        type_url: CDS.to_owned(),
        ..Default::default()
    };
    tx.send(ask).await?;
    let mut responses =
        ads.stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let response = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .context("no CDS response within 10s")??
        .ok_or_else(|| anyhow!("stream ended"))?;
    Ok((tx, responses, response))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_shows_as_nacked_with_its_message() {
    run_test("a_nack_shows_as_nacked_with_its_message", |ctx| async move {
        let block = IpBlock(235);
        let (_dir, meshd) = start_meshd(&ctx, block).await?;
        let addr = meshd.xds_addr();

        // A state-of-the-world client that asks for clusters and rejects the answer.
        let proxy = "nacker.bookinfo";
        let (tx, _responses, response) = first_cds(addr, proxy, block).await?;
        let message = "test client: cluster outbound|9080||reviews rejected on purpose";
        tx.send(DiscoveryRequest {
            type_url: CDS.to_owned(),
            response_nonce: response.nonce.clone(),
            error_detail: Some(RpcStatus { code: 3, message: message.to_owned(), details: vec![] }),
            ..Default::default()
        })
        .await?;

        await_condition("proxy-status to show CDS NACKED", Duration::from_secs(10), || async {
            let types = type_states(addr, proxy).await?;
            ensure!(types.len() == 1 && types[0].1 == "SYNC_STATE_NACKED", "{types:?}");
            ensure!(types[0].3.contains(message), "{types:?}");
            ensure!(types[0].2 == response.version_info, "sent version {} vs {}", types[0].2, response.version_info);
            Ok(())
        })
        .await?;
        let table = meshctl(addr, &["proxy-status", "nacker", "-n", "bookinfo"]).await?.ok()?;
        let row = table.lines().find(|l| l.starts_with(proxy)).ok_or_else(|| anyhow!("{table}"))?;
        ensure!(row.contains(" NACKED ") && row.contains(message), "row {row:?}");
        let clusters = meshctl(addr, &["proxy-config", "clusters", proxy]).await?;
        ensure!(clusters.stderr.contains("rejected the last CDS update"), "{}", clusters.stderr);
        clusters.ok()?;
        drop(tx);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshctl_errors_name_meshd_and_the_proxy() {
    run_test("meshctl_errors_name_meshd_and_the_proxy", |ctx| async move {
        let block = IpBlock(236);
        // Nothing listens here: every command that needs meshd says where it looked.
        let nowhere = block.addr(hosts::MESHD, 15010);
        for args in [&["proxy-status"][..], &["proxy-config", "clusters", "a.b"]] {
            let run = meshctl(nowhere, args).await?;
            ensure!(run.code == Some(1), "{args:?}: exit {:?}", run.code);
            ensure!(
                run.stderr.contains(&format!("cannot reach meshd at {nowhere}")) && run.stderr.contains("--meshd"),
                "{args:?}: {}",
                run.stderr
            );
        }
        // version still answers for the client, and exits 0.
        let version = meshctl(nowhere, &["version"]).await?;
        ensure!(version.code == Some(0) && version.stdout.contains("meshctl "), "{}", version.stderr);
        ensure!(version.stdout.contains("cannot reach meshd"), "{}", version.stdout);

        let (_dir, meshd) = start_meshd(&ctx, block).await?;
        let addr = meshd.xds_addr();
        let empty = meshctl(addr, &["proxy-status"]).await?;
        ensure!(empty.code == Some(0) && empty.stderr.contains("No proxies connected"), "{}", empty.stderr);
        let unknown = meshctl(addr, &["proxy-config", "routes", "ghost.bookinfo"]).await?;
        ensure!(unknown.code == Some(1) && unknown.stderr.contains("no proxy is connected"), "{}", unknown.stderr);
        let json = meshctl(addr, &["version", "-o", "json"]).await?.ok()?;
        let doc: Json = serde_json::from_str(&json)?;
        ensure!(doc["server"]["source_kind"] == "config-dir" && doc["server"]["ready"] == true, "{doc}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_waiting_for_endpoints_are_warming_not_synced() {
    run_test("clusters_waiting_for_endpoints_are_warming_not_synced", |ctx| async move {
        let block = IpBlock(238);
        let (_dir, meshd) = start_meshd(&ctx, block).await?;
        let addr = meshd.xds_addr();

        // A client that acknowledges the clusters and never asks for their endpoints:
        // Envoy would keep every EDS cluster warming.
        let proxy = "lazy.bookinfo";
        let (tx, _responses, response) = first_cds(addr, proxy, block).await?;
        let ack = DiscoveryRequest {
            type_url: CDS.to_owned(),
            version_info: response.version_info.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        };
        tx.send(ack).await?;

        await_condition("proxy-status to show CDS WARMING", Duration::from_secs(10), || async {
            let types = type_states(addr, proxy).await?;
            ensure!(types.len() == 1 && types[0].1 == "SYNC_STATE_WARMING", "{types:?}");
            Ok(())
        })
        .await?;
        let table = meshctl(addr, &["proxy-status", proxy]).await?.ok()?;
        let row = table.lines().find(|l| l.starts_with(proxy)).ok_or_else(|| anyhow!("{table}"))?;
        ensure!(row.contains(" WARMING ") && row.contains("wait for endpoints not subscribed"), "row {row:?}");
        drop(tx);
        Ok(())
    })
    .await;
}
