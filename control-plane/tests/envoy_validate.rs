//! Real Envoy validates what the translator emits: every proxy class's snapshot of a
//! fixture is turned into a static bootstrap (EDS inlined as load assignments, RDS
//! inlined as route configurations) and run through `envoy --mode validate`.

mod common;

use std::net::IpAddr;

use control_plane::translate::{
    InterceptionMode, MeshConfig, MeshSettings, OutboundTrafficPolicy, ProxyClass, ProxyKind,
};

#[test]
fn envoy_accepts_every_proxy_class_of_the_rich_fixture() {
    validate_fixture("rich", "bookinfo", "shop", "ratings");
}

#[test]
fn envoy_accepts_tls_origination() {
    validate_fixture("tls", "shop", "bookinfo", "cart");
}

#[test]
fn envoy_accepts_the_route_actions() {
    validate_fixture("actions", "bookinfo", "other", "ratings");
}

#[test]
fn envoy_accepts_tcp_and_tls_routes() {
    validate_fixture("tcp-tls", "data", "other", "mongo");
}

#[test]
fn envoy_accepts_routes_that_depend_on_the_caller() {
    validate_fixture("scoping", "bookinfo", "front", "productpage");
}

#[test]
fn envoy_accepts_clusters_that_depend_on_the_caller() {
    validate_fixture("dr-scope", "front", "bookinfo", "web");
    // front's canary workloads get their own rule's clusters.
    let canary = ProxyClass {
        namespace: "front".into(),
        mode: InterceptionMode::Redirect,
        ip: None,
        labels: [("app", "web"), ("track", "canary")].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        kind: Default::default(),
        locality: Default::default(),
    };
    validate("dr-scope-canary", &common::mesh_from("dr-scope"), &[canary]);
}

#[test]
fn envoy_accepts_service_entries() {
    validate_fixture("entries", "shop", "other", "web");
}

#[test]
fn envoy_accepts_the_rate_limits() {
    validate_fixture("rate-limit", "bookinfo", "other", "reviews");
}

#[test]
fn envoy_accepts_what_meshd_makes_of_adversarial_input() {
    let mesh = common::mesh_from("adversarial");
    assert!(mesh.problems.len() >= 6, "the awkward parts are reported: {:#?}", mesh.problems);
    validate_fixture("adversarial", "edge", "other", "alpha");
}

/// Locality-aware endpoints (priorities, locality weights) for callers in and out of a locality.
#[test]
fn envoy_accepts_locality_balancing() {
    let mesh = common::mesh_from("locality");
    let dir = std::env::temp_dir().join(format!("amime-validate-locality-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, locality) in ["r1/z1/s1", "r1/z2", "r2/z1", ""].into_iter().enumerate() {
        let class = ProxyClass {
            namespace: "shop".into(),
            mode: InterceptionMode::None,
            ip: Some("127.0.10.1".parse().unwrap()),
            labels: Default::default(),
            kind: Default::default(),
            locality: locality.parse().unwrap(),
        };
        let bootstrap = common::envoy::static_bootstrap(&mesh, &class);
        if let Err(output) = common::envoy::envoy_validate(&bootstrap, &dir.join(format!("class-{i}.pb"))) {
            panic!("envoy rejected the locality config of {class:?}:\n{output}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An ingress gateway: HTTP, HTTPS (inline certificate from a Secret) and httpsRedirect servers.
#[test]
fn envoy_accepts_a_gateway() {
    let mesh = common::mesh_from("gateway");
    assert!(mesh.problems.is_empty(), "{:#?}", mesh.problems);
    let class = gateway_class();
    let dir = std::env::temp_dir().join(format!("amime-validate-gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bootstrap = common::envoy::static_bootstrap(&mesh, &class);
    // 8080, 8081, 15432 (TCP), and 8443: bookinfo's HTTPS terminated by SNI next to the
    // edge Gateway's passthrough (fixtures/gateway/passthrough.yaml) on one listener.
    assert_eq!(bootstrap.static_resources.as_ref().unwrap().listeners.len(), 4);
    if let Err(output) = common::envoy::envoy_validate(&bootstrap, &dir.join("gateway.pb")) {
        panic!("envoy rejected the gateway config:\n{output}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn gateway_class() -> ProxyClass {
    ProxyClass {
        namespace: "istio-system".into(),
        mode: InterceptionMode::None,
        ip: Some("127.0.10.30".parse().unwrap()),
        labels: [("istio".to_string(), "ingressgateway".to_string())].into_iter().collect(),
        kind: ProxyKind::Gateway,
        locality: Default::default(),
    }
}

#[test]
fn envoy_accepts_access_logs_and_tracers() {
    for file in ["meshconfig-zipkin", "meshconfig-otel"] {
        let mesh = common::mesh_with_settings("telemetry", &common::mesh_config_settings("telemetry", file));
        assert!(mesh.problems.is_empty(), "{file}: {:#?}", mesh.problems);
        validate_classes("telemetry", &mesh, "bookinfo", "observability", "reviews");
    }
}

/// Every proxy class of `fixture`, under both outbound traffic policies.
fn validate_fixture(fixture: &str, namespace: &str, other_namespace: &str, app: &str) {
    for policy in [OutboundTrafficPolicy::AllowAny, OutboundTrafficPolicy::RegistryOnly] {
        let settings = MeshSettings { outbound_traffic_policy: policy, ..Default::default() };
        validate_classes(fixture, &common::mesh_with_settings(fixture, &settings), namespace, other_namespace, app);
    }
}

fn validate_classes(fixture: &str, mesh: &MeshConfig, namespace: &str, other_namespace: &str, app: &str) {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let classes = [
        ProxyClass {
            namespace: namespace.into(),
            mode: InterceptionMode::None,
            ip: Some(ip("127.0.10.1")),
            labels: Default::default(),
            kind: Default::default(),
            locality: Default::default(),
        },
        ProxyClass {
            namespace: other_namespace.into(),
            mode: InterceptionMode::None,
            ip: Some(ip("127.0.20.9")),
            labels: Default::default(),
            kind: Default::default(),
            locality: Default::default(),
        },
        ProxyClass {
            namespace: namespace.into(),
            mode: InterceptionMode::Redirect,
            ip: None,
            labels: [("app".to_string(), app.to_string())].into_iter().collect(),
            kind: Default::default(),
            locality: Default::default(),
        },
    ];
    validate(fixture, mesh, &classes);
}

/// Runs the snapshot of each of `classes` through `envoy --mode validate`.
fn validate(fixture: &str, mesh: &MeshConfig, classes: &[ProxyClass]) {
    let dir = std::env::temp_dir().join(format!("amime-validate-{fixture}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, class) in classes.iter().enumerate() {
        let bootstrap = common::envoy::static_bootstrap(mesh, class);
        if let Err(output) = common::envoy::envoy_validate(&bootstrap, &dir.join(format!("class-{i}.pb"))) {
            panic!("envoy rejected the {fixture} config of {class:?}:\n{output}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
