//! Golden tests of the translator: YAML in (tests/fixtures/<name>/), Envoy JSON out
//! (tests/golden/<name>-<class>.json), one file per proxy class.
//!
//! Regenerate after an intended change with:
//!   UPDATE_GOLDEN=1 cargo test -p amime-control-plane --test golden
//! and review the diff.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;

use control_plane::envoy_json::any_to_json;
use control_plane::translate::{InterceptionMode, MeshConfig, ProxyClass, ProxyKind};
use serde_json::{json, Value};
use xds::ResourceType;

fn render(mesh: &MeshConfig, class: &ProxyClass) -> Value {
    let snapshot = mesh.proxy_snapshot(class);
    let mut out = serde_json::Map::new();
    for ty in ResourceType::ALL {
        let set = snapshot.set(ty);
        if set.is_empty() {
            continue;
        }
        let resources: Vec<Value> = set.iter().map(|r| any_to_json(r.body()).expect("renders as JSON")).collect();
        out.insert(ty.short_name().to_owned(), json!(resources));
    }
    Value::Object(out)
}

fn check(fixture: &str, class_name: &str, class: ProxyClass) {
    let mesh = common::mesh_from(fixture);
    compare(&format!("{fixture}-{class_name}"), &render(&mesh, &class));
}

/// Compares `value` with tests/golden/<name>.json (or writes it with UPDATE_GOLDEN).
fn compare(name: &str, value: &Value) {
    let (fixture, class_name) = name.split_once('-').unwrap_or((name, ""));
    let text = serde_json::to_string_pretty(value).unwrap() + "\n";
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("{} is missing; run UPDATE_GOLDEN=1 cargo test -p amime-control-plane --test golden", path.display())
    });
    if want != text {
        let first = want.lines().zip(text.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "translator output for {fixture}/{class_name} differs from {} at line {}:\n  want: {}\n  got:  {}\n\
             If the change is intended: UPDATE_GOLDEN=1 cargo test -p amime-control-plane --test golden",
            path.display(),
            first + 1,
            want.lines().nth(first).unwrap_or(""),
            text.lines().nth(first).unwrap_or("")
        );
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn bookinfo_explicit_sidecar() {
    check(
        "bookinfo",
        "explicit",
        ProxyClass {
            namespace: "bookinfo".into(),
            mode: InterceptionMode::None,
            ip: Some(ip("127.0.10.1")),
            labels: Default::default(),
            kind: Default::default(),
            locality: Default::default(),
        },
    );
}

#[test]
fn rich_explicit_sidecar_in_another_namespace() {
    check(
        "rich",
        "shop-explicit",
        ProxyClass {
            namespace: "shop".into(),
            mode: InterceptionMode::None,
            ip: Some(ip("127.0.20.9")),
            labels: Default::default(),
            kind: Default::default(),
            locality: Default::default(),
        },
    );
}

#[test]
fn rich_transparent_sidecar() {
    check(
        "rich",
        "ratings-transparent",
        ProxyClass {
            namespace: "bookinfo".into(),
            mode: InterceptionMode::Redirect,
            ip: None,
            labels: [("app".to_string(), "ratings".to_string())].into_iter().collect(),
            kind: Default::default(),
            locality: Default::default(),
        },
    );
}

#[test]
fn tls_origination_explicit_sidecar() {
    check(
        "tls",
        "explicit",
        ProxyClass {
            namespace: "shop".into(),
            mode: InterceptionMode::None,
            ip: Some(ip("127.0.20.9")),
            labels: Default::default(),
            kind: Default::default(),
            locality: Default::default(),
        },
    );
}

#[test]
fn adversarial_input_problems_are_reported_by_object_and_field() {
    let mesh = common::mesh_from("adversarial");
    compare("adversarial-problems", &serde_json::to_value(&mesh.problems).unwrap());
}

#[test]
fn adversarial_transparent_sidecar() {
    check(
        "adversarial",
        "transparent",
        ProxyClass {
            namespace: "edge".into(),
            mode: InterceptionMode::Redirect,
            ip: None,
            labels: [("app".to_string(), "alpha".to_string())].into_iter().collect(),
            kind: Default::default(),
            locality: Default::default(),
        },
    );
}

/// An ingress gateway proxy: only its Gateway's listeners and routes.
#[test]
fn gateway_proxy() {
    check(
        "gateway",
        "gateway",
        ProxyClass {
            namespace: "istio-system".into(),
            mode: InterceptionMode::None,
            ip: Some(ip("127.0.10.30")),
            labels: [("istio".to_string(), "ingressgateway".to_string())].into_iter().collect(),
            kind: ProxyKind::Gateway,
            locality: Default::default(),
        },
    );
}

#[test]
fn translation_is_deterministic() {
    let class = ProxyClass {
        namespace: "bookinfo".into(),
        mode: InterceptionMode::Redirect,
        ip: None,
        labels: Default::default(),
        kind: Default::default(),
        locality: Default::default(),
    };
    let a = render(&common::rich_mesh(), &class);
    let b = render(&common::rich_mesh(), &class);
    assert_eq!(a, b);
}

/// Route actions (timeouts, retries, ...) with Istio's defaults where unset.
#[test]
fn actions_explicit_sidecar() {
    let mesh = common::mesh_from("actions");
    assert!(mesh.problems.is_empty(), "the actions fixture is clean: {:#?}", mesh.problems);
    compare(
        "actions-explicit",
        &render(
            &mesh,
            &ProxyClass {
                namespace: "bookinfo".into(),
                mode: InterceptionMode::None,
                ip: Some(ip("127.0.10.1")),
                labels: Default::default(),
                kind: Default::default(),
                locality: Default::default(),
            },
        ),
    );
}

/// Routes by the caller's labels and namespace, and a rule exported to its own
/// namespace only (tests/fixtures/scoping).
#[test]
fn scoping_explicit_sidecars() {
    let class = |namespace: &str, version: &str| ProxyClass {
        namespace: namespace.into(),
        mode: InterceptionMode::None,
        ip: Some(ip("127.0.10.1")),
        labels: [("app".to_string(), "productpage".to_string()), ("version".to_string(), version.to_string())]
            .into_iter()
            .collect(),
        kind: Default::default(),
        locality: Default::default(),
    };
    let mesh = common::mesh_from("scoping");
    compare("scoping-bookinfo-v2", &render(&mesh, &class("bookinfo", "v2")));
    compare("scoping-front-v1", &render(&mesh, &class("front", "v1")));
}

/// ServiceEntry hosts: every resolution, subsets, a split, addresses, a workloadSelector.
#[test]
fn entries_explicit_sidecar() {
    check(
        "entries",
        "explicit",
        ProxyClass {
            namespace: "shop".into(),
            mode: InterceptionMode::None,
            ip: Some(ip("127.0.20.9")),
            labels: Default::default(),
            kind: Default::default(),
            locality: Default::default(),
        },
    );
}

#[test]
fn entries_transparent_sidecar() {
    check(
        "entries",
        "transparent",
        ProxyClass {
            namespace: "shop".into(),
            mode: InterceptionMode::Redirect,
            ip: None,
            labels: [("app".to_string(), "web".to_string())].into_iter().collect(),
            kind: Default::default(),
            locality: Default::default(),
        },
    );
}

/// A host or address claimed twice, an address range, a TCP port without address: each
/// reported at the entry's field.
#[test]
fn entries_problems_are_reported_by_field() {
    let mesh = common::mesh_from("entries");
    compare("entries-problems", &serde_json::to_value(&mesh.problems).unwrap());
}

/// RateLimits on the inbound listener: the workload's bucket, per-rule buckets, and the
/// conflict with a namespace-wide one reported.
#[test]
fn rate_limit_transparent_sidecar() {
    let mesh = common::mesh_from("rate-limit");
    compare("rate-limit-problems", &serde_json::to_value(&mesh.problems).unwrap());
    let labels = [("app".to_string(), "reviews".to_string()), ("version".to_string(), "v1".to_string())];
    check(
        "rate-limit",
        "reviews-transparent",
        ProxyClass {
            namespace: "bookinfo".into(),
            mode: InterceptionMode::Redirect,
            ip: None,
            labels: labels.into_iter().collect(),
            kind: Default::default(),
            locality: Default::default(),
        },
    );
}

#[test]
fn telemetry_sidecars() {
    let reviews = [("app".to_string(), "reviews".to_string()), ("version".to_string(), "v1".to_string())];
    for (file, class_name, class) in [
        (
            "meshconfig-zipkin",
            "zipkin-explicit",
            ProxyClass {
                namespace: "bookinfo".into(),
                mode: InterceptionMode::None,
                ip: Some(ip("127.0.10.11")),
                labels: reviews.clone().into_iter().collect(),
                kind: Default::default(),
                locality: Default::default(),
            },
        ),
        (
            "meshconfig-otel",
            "otel-transparent",
            ProxyClass {
                namespace: "bookinfo".into(),
                mode: InterceptionMode::Redirect,
                ip: None,
                labels: reviews.clone().into_iter().collect(),
                kind: Default::default(),
                locality: Default::default(),
            },
        ),
    ] {
        let mesh = common::mesh_with_settings("telemetry", &common::mesh_config_settings("telemetry", file));
        compare(&format!("telemetry-{class_name}"), &render(&mesh, &class));
    }
}

/// VirtualService tcp and tls rules: the TCP and TLS services' hand-off listeners.
#[test]
fn tcp_tls_transparent_sidecar() {
    let mesh = common::mesh_from("tcp-tls");
    assert!(mesh.problems.is_empty(), "the tcp-tls fixture is clean: {:#?}", mesh.problems);
    compare(
        "tcp-tls-transparent",
        &render(
            &mesh,
            &ProxyClass {
                namespace: "data".into(),
                mode: InterceptionMode::Redirect,
                ip: None,
                labels: Default::default(),
                kind: Default::default(),
                locality: Default::default(),
            },
        ),
    );
}

/// Clusters by the DestinationRule each caller uses (tests/fixtures/dr-scope): bookinfo's
/// own rule, front's catch-all rule, front's rule for its canary workloads.
#[test]
fn dr_scope_explicit_sidecars() {
    let class = |namespace: &str, labels: &[(&str, &str)]| ProxyClass {
        namespace: namespace.into(),
        mode: InterceptionMode::None,
        ip: Some(ip("127.0.10.21")),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        kind: Default::default(),
        locality: Default::default(),
    };
    let mesh = common::mesh_from("dr-scope");
    compare("dr-scope-bookinfo", &render(&mesh, &class("bookinfo", &[("app", "productpage")])));
    compare("dr-scope-front", &render(&mesh, &class("front", &[("app", "web")])));
    compare("dr-scope-front-canary", &render(&mesh, &class("front", &[("app", "web"), ("track", "canary")])));
}

/// Locality-aware balancing: the endpoints of each locality-aware cluster as a proxy in
/// r1/z1 sees them (failover priorities, distribute weights), and as one without locality.
#[test]
fn locality_sidecars() {
    let mesh = common::mesh_from("locality");
    assert!(mesh.problems.is_empty(), "the locality fixture is clean: {:#?}", mesh.problems);
    for (name, locality) in [("r1z1", "r1/z1/s1"), ("nowhere", "")] {
        let class = ProxyClass {
            namespace: "shop".into(),
            mode: InterceptionMode::None,
            ip: Some(ip("127.0.30.9")),
            labels: Default::default(),
            kind: Default::default(),
            locality: locality.parse().unwrap(),
        };
        compare(&format!("locality-{name}"), &render(&mesh, &class));
    }
}
