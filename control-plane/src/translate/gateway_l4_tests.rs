//! Gateway servers that pass TLS through by SNI or proxy opaque TCP: the filter chains
//! each gets, and what is reported when no rule routes a server.

use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use prost::Message;
use xds::ResourceType;

use crate::model::index::Index;
use crate::model::parse::{parse_object, Parsed};
use crate::model::{MeshObject, RawObject};
use crate::translate::{InterceptionMode, MeshConfig, MeshSettings, ProxyClass, ProxyKind};

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: secure-a, namespace: edge}
spec:
  clusterIP: 10.96.20.1
  ports: [{name: tls, port: 443}]
---
apiVersion: v1
kind: Service
metadata: {name: secure-b, namespace: edge}
spec:
  clusterIP: 10.96.20.2
  ports: [{name: tls, port: 443}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: edge}
spec:
  clusterIP: 10.96.20.3
  ports: [{name: tcp, port: 5432}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: tls, protocol: TLS}
    hosts: ['*.example.com']
    tls: {mode: PASSTHROUGH}
  - port: {number: 15432, name: tcp, protocol: TCP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: sites, namespace: edge}
spec:
  hosts: [a.example.com, b.example.com, other.org]
  gateways: [edge]
  tls:
  - match: [{sniHosts: [a.example.com], port: 8443}]
    route: [{destination: {host: secure-a}}]
  - match: [{sniHosts: [b.example.com, other.org]}]
    route: [{destination: {host: secure-b}, weight: 90}, {destination: {host: secure-a}, weight: 10}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: edge}
spec:
  hosts: ['*']
  gateways: [edge]
  tcp:
  - match: [{port: 15432}]
    route: [{destination: {host: db, port: {number: 5432}}}]
"#;

fn mesh(yaml: &str) -> MeshConfig {
    let objects = yaml
        .split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| match parse_object(&RawObject::from_value(serde_yaml::from_str(d).unwrap()).unwrap()) {
            Ok(Parsed::Object(o, warnings)) => {
                assert!(warnings.is_empty(), "{d}: {warnings:#?}");
                o
            }
            other => panic!("{d}: {other:?}"),
        })
        .collect::<Vec<MeshObject>>();
    let mut index = Index::new();
    index.reset(objects);
    MeshConfig::build(Arc::new(index), &MeshSettings::default())
}

fn gateway_listeners(mesh: &MeshConfig) -> Vec<Listener> {
    let class = ProxyClass {
        namespace: "edge".into(),
        mode: InterceptionMode::None,
        ip: Some("127.0.0.40".parse().unwrap()),
        labels: [("istio".to_string(), "ingressgateway".to_string())].into_iter().collect(),
        kind: ProxyKind::Gateway,
        locality: Default::default(),
    };
    let snapshot = mesh.proxy_snapshot(&class);
    snapshot.set(ResourceType::Listener).iter().map(|r| Listener::decode(r.body().value.as_slice()).unwrap()).collect()
}

/// Each chain's SNI names and where its TCP proxy sends connections.
fn chains(listener: &Listener) -> Vec<(Vec<String>, String)> {
    listener
        .filter_chains
        .iter()
        .map(|c| {
            let names = c.filter_chain_match.as_ref().map(|m| m.server_names.clone()).unwrap_or_default();
            let Some(filter::ConfigType::TypedConfig(typed)) = &c.filters[0].config_type else { panic!() };
            let proxy = TcpProxy::decode(typed.value.as_slice()).unwrap();
            let target = match proxy.cluster_specifier.unwrap() {
                tcp_proxy::ClusterSpecifier::Cluster(c) => c,
                tcp_proxy::ClusterSpecifier::WeightedClusters(w) => {
                    w.clusters.iter().map(|c| format!("{}={}", c.name, c.weight)).collect::<Vec<_>>().join(",")
                }
            };
            (names, target)
        })
        .collect()
}

#[test]
fn passthrough_and_tcp_servers_route_by_the_bound_tls_and_tcp_rules() {
    let mesh = mesh(MESH);
    assert!(mesh.problems.is_empty(), "{:#?}", mesh.problems);
    let listeners = gateway_listeners(&mesh);
    let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["127.0.0.40_15432", "127.0.0.40_8443"]);

    let tls = &listeners[1];
    assert_eq!(tls.listener_filters[0].name, "envoy.filters.listener.tls_inspector");
    // other.org is not within the server's *.example.com: not on this gateway.
    assert_eq!(
        chains(tls),
        [
            (vec!["a.example.com".to_owned()], "outbound|443||secure-a.edge.svc.cluster.local".to_owned()),
            (
                vec!["b.example.com".to_owned()],
                "outbound|443||secure-b.edge.svc.cluster.local=90,outbound|443||secure-a.edge.svc.cluster.local=10"
                    .to_owned()
            ),
        ]
    );
    let tcp = &listeners[0];
    assert!(tcp.listener_filters.is_empty());
    assert_eq!(chains(tcp), [(vec![], "outbound|5432||db.edge.svc.cluster.local".to_owned())]);
}

#[test]
fn a_server_no_rule_routes_is_reported_and_left_out() {
    // Without the VirtualServices: both servers have nothing to forward to.
    let gateway_only: Vec<&str> = MESH.split("\n---\n").filter(|d| !d.contains("kind: VirtualService")).collect();
    let mesh = mesh(&gateway_only.join("\n---\n"));
    let problems: Vec<String> = mesh.problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].contains("spec.servers[0].hosts")
            && problems[0].contains("no VirtualService bound to this Gateway has a tls rule"),
        "{}",
        problems[0]
    );
    assert!(problems[1].contains("spec.servers[1].hosts") && problems[1].contains("has a tcp rule"), "{}", problems[1]);
    assert!(gateway_listeners(&mesh).is_empty());
}

#[test]
fn a_match_for_another_gateway_or_port_does_not_apply() {
    let yaml = MESH
        .replace("[{sniHosts: [a.example.com], port: 8443}]", "[{sniHosts: [a.example.com], port: 9443}]")
        .replace("match: [{port: 15432}]", "match: [{port: 15432, gateways: [edge/other]}]");
    let mesh = mesh(&yaml);
    let listeners = gateway_listeners(&mesh);
    let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["127.0.0.40_8443"], "{:#?}", mesh.problems);
    let sni: Vec<Vec<String>> = chains(&listeners[0]).into_iter().map(|(n, _)| n).collect();
    assert_eq!(sni, [vec!["b.example.com".to_owned()]]);
}

/// A terminating server on the port of a passthrough one, for a name the passthrough
/// server already routes: Envoy refuses two chains with the same SNI, so the first
/// (by Gateway namespace/name) keeps it.
#[test]
fn an_sni_name_is_passed_through_or_terminated_never_both() {
    let https = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: z-https, namespace: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, serverCertificate: /etc/cert.pem, privateKey: /etc/key.pem}
"#;
    let mesh = mesh(&format!("{MESH}\n---\n{https}"));
    let listeners = gateway_listeners(&mesh);
    let tls = listeners.iter().find(|l| l.name.ends_with("_8443")).expect("the 8443 listener");
    let names: Vec<Vec<String>> = tls
        .filter_chains
        .iter()
        .map(|c| c.filter_chain_match.as_ref().map(|m| m.server_names.clone()).unwrap_or_default())
        .collect();
    assert_eq!(names, [vec!["a.example.com".to_owned()], vec!["b.example.com".to_owned()]]);
    assert!(tls.filter_chains.iter().all(|c| c.transport_socket.is_none()), "a.example.com stays passed through");
}
