//! Turning translator output into something real Envoy can check offline.

use control_plane::translate::ProxyClass;
use envoy_types::pb::envoy::config::bootstrap::v3::{
    bootstrap, runtime_layer, Bootstrap, LayeredRuntime, RuntimeLayer,
};
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::google::protobuf::{value, Struct, Value};
use envoy_types::util::pack_any;
use prost::Message;
use xds::ResourceType;

fn decode<M: Message + Default>(r: &xds::Resource) -> M {
    M::decode(r.body().value.as_slice()).expect("decodes")
}

/// A bootstrap holding `class`'s whole snapshot as static resources.
pub fn static_bootstrap(mesh: &control_plane::translate::MeshConfig, class: &ProxyClass) -> Bootstrap {
    let snapshot = mesh.proxy_snapshot(class);
    let routes = snapshot.set(ResourceType::RouteConfiguration);
    let endpoints = snapshot.set(ResourceType::ClusterLoadAssignment);
    let clusters = snapshot
        .set(ResourceType::Cluster)
        .iter()
        .map(|r| {
            let mut c: Cluster = decode(r);
            if c.eds_cluster_config.is_some() {
                let cla: ClusterLoadAssignment =
                    decode(endpoints.get(&c.name).expect("every EDS cluster has endpoints"));
                c.eds_cluster_config = None;
                c.cluster_discovery_type =
                    Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Static as i32));
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
                        let rc: RouteConfiguration = decode(
                            routes.get(&rds.route_config_name).expect("every RDS name has a route configuration"),
                        );
                        hcm.route_specifier = Some(RouteSpecifier::RouteConfig(rc));
                    }
                    *any = pack_any(hcm);
                }
            }
            l
        })
        .collect();
    // The runtime sidecars get from `meshctl bootstrap` (regex program size limit).
    let re2_limit =
        Value { kind: Some(value::Kind::NumberValue(f64::from(injector::bootstrap::RE2_MAX_PROGRAM_SIZE))) };
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

/// Runs `envoy --mode validate` over `bootstrap`; the error carries Envoy's output.
pub fn envoy_validate(bootstrap: &Bootstrap, path: &std::path::Path) -> Result<(), String> {
    std::fs::write(path, bootstrap.encode_to_vec()).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(super::envoy_binary())
        .args(["--mode", "validate", "--log-level", "error", "-c"])
        .arg(path)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}
