//! Gateway translation: which proxies get which listeners, routes and certificates, and
//! what is reported when a server cannot be served.

use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
use prost::Message;
use xds::ResourceType;

use super::*;
use crate::model::parse::{parse_object, Parsed};
use crate::model::{MeshObject, RawObject};
use crate::translate::{MeshConfig, MeshSettings, ProxyKind};

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: bookinfo}
spec:
  clusterIP: 10.96.10.1
  selector: {app: productpage}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  clusterIP: 10.96.10.2
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [bookinfo.example.com]
    tls: {mode: SIMPLE, credentialName: bookinfo-cert}
  - port: {number: 8081, name: http-redirect, protocol: HTTP}
    hosts: [bookinfo.example.com]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: bookinfo}
spec:
  hosts: ['*']
  gateways: [bookinfo-gateway]
  http:
  - match: [{uri: {prefix: /productpage}}]
    route: [{destination: {host: productpage}}]
  - match: [{uri: {prefix: /reviews}}]
    route: [{destination: {host: reviews}}]
"#;

fn objects(yaml: &str) -> Vec<MeshObject> {
    yaml.split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| {
            let raw = RawObject::from_value(serde_yaml::from_str(d).unwrap()).unwrap();
            match parse_object(&raw) {
                Ok(Parsed::Object(o, _)) => o,
                other => panic!("{d}: {other:?}"),
            }
        })
        .collect()
}

fn tls_secret(name: &str, host: &str) -> String {
    let cert = rcgen::generate_simple_self_signed(vec![host.to_owned()]).unwrap();
    let indent = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: bookinfo}}\ntype: kubernetes.io/tls\n\
         stringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&cert.cert.pem()),
        indent(&cert.signing_key.serialize_pem())
    )
}

fn mesh(yaml: &str) -> MeshConfig {
    let mut index = Index::new();
    index.reset(objects(yaml));
    MeshConfig::build(Arc::new(index), &MeshSettings::default())
}

fn gateway_class(labels: &[(&str, &str)]) -> ProxyClass {
    ProxyClass {
        namespace: "istio-system".into(),
        mode: InterceptionMode::None,
        ip: Some("127.0.0.30".parse().unwrap()),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        kind: ProxyKind::Gateway,
        locality: Default::default(),
    }
}

fn decoded<M: Message + Default>(mesh: &MeshConfig, class: &ProxyClass, ty: ResourceType) -> Vec<M> {
    mesh.proxy_snapshot(class).set(ty).iter().map(|r| M::decode(r.body().value.as_slice()).unwrap()).collect()
}

fn domains(rc: &RouteConfiguration) -> Vec<(String, usize)> {
    rc.virtual_hosts.iter().map(|vh| (vh.domains.join(","), vh.routes.len())).collect()
}

#[test]
fn a_gateway_proxy_gets_only_the_servers_of_the_gateways_selecting_it() {
    let mesh = mesh(&format!("{MESH}\n---\n{}", tls_secret("bookinfo-cert", "bookinfo.example.com")));
    assert!(mesh.problems.is_empty(), "{:#?}", mesh.problems);
    let class = gateway_class(&[("istio", "ingressgateway"), ("app", "gw")]);
    let listeners: Vec<Listener> = decoded(&mesh, &class, ResourceType::Listener);
    let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["127.0.0.30_8080", "127.0.0.30_8081", "127.0.0.30_8443"]);
    let https = &listeners[2];
    assert_eq!(https.listener_filters[0].name, "envoy.filters.listener.tls_inspector");
    let chain = &https.filter_chains[0];
    assert_eq!(chain.filter_chain_match.as_ref().unwrap().server_names, ["bookinfo.example.com"]);

    let routes: Vec<RouteConfiguration> = decoded(&mesh, &class, ResourceType::RouteConfiguration);
    let by_name = |n: &str| routes.iter().find(|r| r.name == n).unwrap_or_else(|| panic!("no {n}"));
    assert_eq!(domains(by_name("http.8080")), [("*".to_owned(), 2)]);
    assert_eq!(
        domains(by_name("https.8443.https.bookinfo-gateway.bookinfo")),
        [("bookinfo.example.com".to_owned(), 2)]
    );
    let redirect = &by_name("http.8081").virtual_hosts[0];
    assert_eq!(redirect.require_tls, TlsRequirementType::All as i32);

    // A proxy the selector does not match, and a sidecar, get none of it.
    let other = gateway_class(&[("istio", "egressgateway")]);
    assert!(mesh.proxy_snapshot(&other).set(ResourceType::Listener).is_empty());
    let sidecar = ProxyClass { kind: ProxyKind::Sidecar, ..class.clone() };
    let names: Vec<String> =
        mesh.proxy_snapshot(&sidecar).set(ResourceType::Listener).iter().map(|r| r.name().to_owned()).collect();
    assert_eq!(names, ["outbound"]);
    let sidecar_routes: Vec<RouteConfiguration> = decoded(&mesh, &sidecar, ResourceType::RouteConfiguration);
    assert!(
        sidecar_routes.iter().all(|rc| rc.virtual_hosts.iter().all(|vh| vh.routes.len() == 1)),
        "gateway rules leaked to sidecars"
    );
}

#[test]
fn a_server_without_its_secret_is_left_out_and_reported_the_others_stay() {
    let mesh = mesh(MESH);
    let problems: Vec<String> = mesh.problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].contains("spec.servers[1].tls.credentialName") && problems[0].contains("bookinfo/bookinfo-cert"),
        "{}",
        problems[0]
    );
    let names: Vec<String> = mesh
        .proxy_snapshot(&gateway_class(&[("istio", "ingressgateway")]))
        .set(ResourceType::Listener)
        .iter()
        .map(|r| r.name().to_owned())
        .collect();
    assert_eq!(names, ["127.0.0.30_8080", "127.0.0.30_8081"]);
}

#[test]
fn conflicting_ports_across_gateways_are_reported_at_the_later_one() {
    let other = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: z-other, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway, extra: x}
  servers:
  - port: {number: 8080, name: https, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE, serverCertificate: /etc/cert.pem, privateKey: /etc/key.pem}
"#;
    let mesh = mesh(&format!("{MESH}\n---\n{}\n---\n{other}", tls_secret("bookinfo-cert", "bookinfo.example.com")));
    let problems: Vec<String> = mesh.problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].contains("z-other: spec.servers[0].port") && problems[0].contains("plain HTTP"),
        "{}",
        problems[0]
    );
}

#[test]
fn private_keys_are_redacted_wherever_meshd_shows_listeners() {
    let mesh = mesh(&format!("{MESH}\n---\n{}", tls_secret("bookinfo-cert", "bookinfo.example.com")));
    let snapshot = mesh.proxy_snapshot(&gateway_class(&[("istio", "ingressgateway")]));
    let https = snapshot.set(ResourceType::Listener).iter().find(|r| r.name().ends_with("_8443")).unwrap().clone();
    let context = |any: &envoy_types::pb::google::protobuf::Any| {
        let listener = Listener::decode(any.value.as_slice()).unwrap();
        let socket = listener.filter_chains[0].transport_socket.clone().unwrap();
        let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(t)) =
            socket.config_type
        else {
            panic!()
        };
        DownstreamTlsContext::decode(t.value.as_slice()).unwrap()
    };
    let key = |c: &DownstreamTlsContext| {
        format!("{:?}", c.common_tls_context.as_ref().unwrap().tls_certificates[0].private_key)
    };
    assert!(key(&context(https.body())).contains("PRIVATE KEY"), "the proxy gets the key");
    let shown = gateway_tls::redact(https.body());
    assert!(key(&context(&shown)).contains("[redacted]") && !key(&context(&shown)).contains("PRIVATE KEY"));
    // The certificate itself is still shown.
    assert!(format!("{:?}", context(&shown)).contains("BEGIN CERTIFICATE"));
}

#[test]
fn hosts_intersect_as_istio_matches_them() {
    let cases = [
        ("*", "bookinfo.example.com", Some("bookinfo.example.com")),
        ("*.example.com", "bookinfo.example.com", Some("bookinfo.example.com")),
        ("bookinfo.example.com", "*.example.com", Some("bookinfo.example.com")),
        ("bookinfo.example.com", "bookinfo.example.com", Some("bookinfo.example.com")),
        ("*.example.com", "*", Some("*.example.com")),
        ("*.example.com", "example.org", None),
        ("a.example.com", "b.example.com", None),
    ];
    for (a, b, want) in cases {
        assert_eq!(intersect(a, b), want, "{a} ∩ {b}");
    }
    assert_eq!(split_server_host("./a.com", "gw"), ("gw", "a.com"));
    assert_eq!(split_server_host("a.com", "gw"), ("*", "a.com"));
    assert_eq!(split_server_host("ns/*", "gw"), ("ns", "*"));
}

/// A match's own `gateways` decide where it applies: `mesh` on sidecars only, the
/// Gateway's name on its proxies only (both skipped elsewhere).
#[test]
fn match_level_gateways_pick_sidecars_or_the_gateway() {
    let vs = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: split, namespace: bookinfo}
spec:
  hosts: [reviews]
  gateways: [mesh, bookinfo-gateway]
  http:
  - match: [{uri: {prefix: /edge}, gateways: [bookinfo-gateway]}]
    route: [{destination: {host: productpage}}]
  - match: [{uri: {prefix: /inner}, gateways: [mesh]}]
    route: [{destination: {host: productpage}}]
  - route: [{destination: {host: reviews}}]
"#;
    let yaml = MESH.replace(
        "  hosts: ['*']\n  gateways: [bookinfo-gateway]",
        "  hosts: [other.example]\n  gateways: [bookinfo-gateway]",
    );
    let mesh = mesh(&format!("{yaml}\n---\n{vs}\n---\n{}", tls_secret("bookinfo-cert", "bookinfo.example.com")));
    assert!(mesh.problems.is_empty(), "{:#?}", mesh.problems);
    let prefixes = |rc: &RouteConfiguration, domain: &str| -> Vec<String> {
        let vh = rc.virtual_hosts.iter().find(|vh| vh.domains.iter().any(|d| d == domain)).unwrap();
        vh.routes.iter().map(|r| format!("{:?}", r.r#match.as_ref().unwrap().path_specifier)).collect()
    };
    let class = gateway_class(&[("istio", "ingressgateway")]);
    let routes: Vec<RouteConfiguration> = decoded(&mesh, &class, ResourceType::RouteConfiguration);
    let at_gateway =
        prefixes(routes.iter().find(|r| r.name == "http.8080").unwrap(), "reviews.bookinfo.svc.cluster.local");
    assert_eq!(at_gateway.len(), 2, "{at_gateway:?}");
    assert!(at_gateway[0].contains("/edge"), "{at_gateway:?}");
    let sidecar = ProxyClass { kind: ProxyKind::Sidecar, namespace: "bookinfo".into(), ..class };
    let routes: Vec<RouteConfiguration> = decoded(&mesh, &sidecar, ResourceType::RouteConfiguration);
    let on_sidecar: Vec<String> = routes
        .iter()
        .flat_map(|rc| {
            rc.virtual_hosts
                .iter()
                .filter(|vh| vh.domains.iter().any(|d| d == "reviews"))
                .flat_map(|vh| vh.routes.iter().map(|r| format!("{:?}", r.r#match.as_ref().unwrap().path_specifier)))
        })
        .collect();
    assert!(on_sidecar.iter().any(|p| p.contains("/inner")), "{on_sidecar:?}");
    assert!(!on_sidecar.iter().any(|p| p.contains("/edge")), "{on_sidecar:?}");
}

/// MUTUAL: the listener requires a client certificate signed by the CA named; without a
/// CA the server is reported at `tls.mode` and left out.
#[test]
fn a_mutual_server_requires_client_certificates_signed_by_its_ca() {
    let mutual = |tls: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: mtls, namespace: bookinfo}}\nspec:\n  \
             selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 9443, name: https, protocol: HTTPS}}\n    \
             hosts: [mtls.example.com]\n    tls: {{mode: MUTUAL, {tls}}}\n"
        )
    };
    let files = "serverCertificate: /etc/gw/cert.pem, privateKey: /etc/gw/key.pem, caCertificates: /etc/gw/ca.pem";
    let secret = tls_secret("bookinfo-cert", "bookinfo.example.com");
    let with_ca = mesh(&format!("{MESH}\n---\n{secret}\n---\n{}", mutual(files)));
    assert!(with_ca.problems.is_empty(), "{:#?}", with_ca.problems);
    let listeners: Vec<Listener> =
        decoded(&with_ca, &gateway_class(&[("istio", "ingressgateway")]), ResourceType::Listener);
    let listener = listeners.iter().find(|l| l.name.ends_with("_9443")).expect("the MUTUAL server's listener");
    let socket = listener.filter_chains[0].transport_socket.clone().unwrap();
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(typed)) =
        socket.config_type
    else {
        panic!("no TLS context")
    };
    let context = DownstreamTlsContext::decode(typed.value.as_slice()).unwrap();
    assert_eq!(context.require_client_certificate.map(|b| b.value), Some(true));
    let validation = format!("{:?}", context.common_tls_context.unwrap().validation_context_type);
    assert!(validation.contains("/etc/gw/ca.pem"), "{validation}");

    let no_ca = "serverCertificate: /etc/gw/cert.pem, privateKey: /etc/gw/key.pem";
    let without = mesh(&format!("{MESH}\n---\n{secret}\n---\n{}", mutual(no_ca)));
    let problems: Vec<String> = without.problems.iter().map(ToString::to_string).collect();
    assert!(
        problems.iter().any(|p| p.contains("mtls: spec.servers[0].tls.mode") && p.contains("MUTUAL needs a CA")),
        "{problems:#?}"
    );
}
