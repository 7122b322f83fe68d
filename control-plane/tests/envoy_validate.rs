//! Real Envoy validates what the translator emits: every proxy class's snapshot of a
//! fixture is turned into a static bootstrap (EDS inlined as load assignments, RDS
//! inlined as route configurations) and run through `envoy --mode validate`.

mod common;

use std::net::IpAddr;

use control_plane::translate::{InterceptionMode, ProxyClass};

#[test]
fn envoy_accepts_every_proxy_class_of_the_rich_fixture() {
    validate_fixture("rich", "bookinfo", "shop", "ratings", "127.0.10.21");
}

#[test]
fn envoy_accepts_what_meshd_makes_of_adversarial_input() {
    let mesh = common::mesh_from("adversarial");
    assert!(mesh.problems.len() >= 6, "the awkward parts are reported: {:#?}", mesh.problems);
    validate_fixture("adversarial", "edge", "other", "alpha", "127.0.30.2");
}

fn validate_fixture(fixture: &str, namespace: &str, other_namespace: &str, app: &str, workload_ip: &str) {
    let mesh = common::mesh_from(fixture);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let classes = [
        ProxyClass {
            namespace: namespace.into(),
            mode: InterceptionMode::None,
            ip: ip("127.0.10.1"),
            labels: Default::default(),
        },
        ProxyClass {
            namespace: other_namespace.into(),
            mode: InterceptionMode::None,
            ip: ip("127.0.20.9"),
            labels: Default::default(),
        },
        ProxyClass {
            namespace: namespace.into(),
            mode: InterceptionMode::Redirect,
            ip: ip(workload_ip),
            labels: [("app".to_string(), app.to_string())].into_iter().collect(),
        },
    ];
    let dir = std::env::temp_dir().join(format!("amime-validate-{fixture}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, class) in classes.iter().enumerate() {
        let bootstrap = common::envoy::static_bootstrap(&mesh, class);
        if let Err(output) = common::envoy::envoy_validate(&bootstrap, &dir.join(format!("class-{i}.pb"))) {
            panic!("envoy rejected the {fixture} config of {class:?}:\n{output}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
