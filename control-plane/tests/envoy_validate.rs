//! Real Envoy validates what the translator emits: every proxy class's snapshot of a
//! rich fixture is turned into a static bootstrap (EDS inlined as load assignments,
//! RDS inlined as route configurations) and run through `envoy --mode validate`.

mod common;

use std::net::IpAddr;

use control_plane::translate::{InterceptionMode, ProxyClass};
use envoy_types::pb::envoy::config::bootstrap::v3::{bootstrap, runtime_layer, Bootstrap, LayeredRuntime, RuntimeLayer};
use envoy_types::pb::google::protobuf::{value, Struct, Value};
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::util::pack_any;
use prost::Message;
use xds::ResourceType;

fn decode<M: Message + Default>(r: &xds::Resource) -> M {
    M::decode(r.body().value.as_slice()).expect("decodes")
}

/// A bootstrap holding `class`'s whole snapshot as static resources.
fn static_bootstrap(mesh: &control_plane::translate::MeshConfig, class: &ProxyClass) -> Bootstrap {
    let snapshot = mesh.proxy_snapshot(class);
    let routes = snapshot.set(ResourceType::RouteConfiguration);
    let endpoints = snapshot.set(ResourceType::ClusterLoadAssignment);
    let clusters = snapshot
        .set(ResourceType::Cluster)
        .iter()
        .map(|r| {
            let mut c: Cluster = decode(r);
            if c.eds_cluster_config.is_some() {
                let cla: ClusterLoadAssignment = decode(endpoints.get(&c.name).expect("every EDS cluster has endpoints"));
                c.eds_cluster_config = None;
                c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Static as i32));
                c.load_assignment = Some(cla);
            }
            c
        })
        .collect();
    let listeners = snapshot
        .set(ResourceType::Listener)
        .iter()
        .map(|r| {
            let mut l: Listener = decode(r);
            for chain in l.filter_chains.iter_mut().chain(l.default_filter_chain.iter_mut()) {
                for f in &mut chain.filters {
                    let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else { continue };
                    if !any.type_url.ends_with("HttpConnectionManager") {
                        continue;
                    }
                    let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
                    if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
                        let rc: RouteConfiguration =
                            decode(routes.get(&rds.route_config_name).expect("every RDS name has a route configuration"));
                        hcm.route_specifier = Some(RouteSpecifier::RouteConfig(rc));
                    }
                    *any = pack_any(hcm);
                }
            }
            l
        })
        .collect();
    // The runtime sidecars get from `meshctl bootstrap` (regex program size limit).
    let re2_limit = Value { kind: Some(value::Kind::NumberValue(f64::from(injector::bootstrap::RE2_MAX_PROGRAM_SIZE))) };
    let runtime = LayeredRuntime {
        layers: vec![RuntimeLayer {
            name: "amime-defaults".into(),
            layer_specifier: Some(runtime_layer::LayerSpecifier::StaticLayer(Struct {
                fields: [("re2.max_program_size.error_level".to_string(), re2_limit)].into_iter().collect(),
            })),
        }],
    };
    Bootstrap {
        node: Some(Node { id: "validate.test".into(), cluster: "validate".into(), ..Default::default() }),
        layered_runtime: Some(runtime),
        static_resources: Some(bootstrap::StaticResources { listeners, clusters, ..Default::default() }),
        ..Default::default()
    }
}

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
        ProxyClass { namespace: namespace.into(), mode: InterceptionMode::None, ip: ip("127.0.10.1"), labels: Default::default() },
        ProxyClass { namespace: other_namespace.into(), mode: InterceptionMode::None, ip: ip("127.0.20.9"), labels: Default::default() },
        ProxyClass {
            namespace: namespace.into(),
            mode: InterceptionMode::Redirect,
            ip: ip(workload_ip),
            labels: [("app".to_string(), app.to_string())].into_iter().collect(),
        },
    ];
    let envoy = common::envoy_binary();
    let dir = std::env::temp_dir().join(format!("amime-validate-{fixture}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, class) in classes.iter().enumerate() {
        let bootstrap = static_bootstrap(&mesh, class);
        let path = dir.join(format!("class-{i}.pb"));
        std::fs::write(&path, bootstrap.encode_to_vec()).unwrap();
        let out = std::process::Command::new(&envoy)
            .args(["--mode", "validate", "--log-level", "error", "-c"])
            .arg(&path)
            .output()
            .expect("runs envoy");
        assert!(
            out.status.success(),
            "envoy rejected the {fixture} config of {class:?}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
