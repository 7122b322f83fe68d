//! Table tests of telemetry resolution and of what it adds to Envoy's messages.

use super::*;
use crate::mesh_config::parse::parse;
use crate::model::telemetry::{AccessLogging, Tracing};
use crate::model::{Labels, MeshObject};
use crate::translate::InterceptionMode;

fn mesh(yaml: &str) -> MeshTelemetry {
    parse("mesh.yaml", yaml).config.expect("valid mesh config").telemetry
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn class(namespace: &str, app: &str) -> ProxyClass {
    ProxyClass {
        namespace: namespace.into(),
        mode: InterceptionMode::None,
        ip: None,
        labels: labels(&[("app", app), ("version", "v2")]),
        kind: Default::default(),
        locality: Default::default(),
    }
}

fn telemetry(namespace: &str, name: &str, selector: Option<&str>) -> Telemetry {
    Telemetry {
        namespace: namespace.into(),
        name: name.into(),
        selector: selector.map(|app| labels(&[("app", app)])),
        access_logging: None,
        tracing: None,
    }
}

fn index(objects: Vec<Telemetry>) -> Index {
    let mut index = Index::new();
    for t in objects {
        index.apply(MeshObject::Telemetry(t));
    }
    index
}

const MESH: &str = "accessLogFile: /dev/stdout\nextensionProviders:\n- {name: jaeger, zipkin: {service: 127.0.0.9, port: 9411}}\n- {name: json, envoyFileAccessLog: {path: /tmp/j.log, logFormat: {labels: {code: '%RESPONSE_CODE%'}}}}\ndefaultProviders: {tracing: [jaeger]}\n";

#[test]
fn mesh_config_defaults_apply_to_every_proxy() {
    let p = profile_for(&Index::new(), &mesh(MESH), "amime-system", &class("bookinfo", "reviews"));
    assert_eq!(p.access_logs.len(), 1);
    assert_eq!(p.access_logs[0].provider.path, "/dev/stdout");
    let t = p.tracing.expect("tracing on by default with a default provider");
    assert_eq!((t.sampling_millionths, t.cluster.as_str()), (10_000, "collector|9411|127.0.0.9"));
    assert_eq!(t.custom_tags["istio.canonical_service"], CustomTag::Literal("reviews".into()));
    assert_eq!(t.custom_tags["istio.canonical_revision"], CustomTag::Literal("v2".into()));
    assert_eq!(t.custom_tags["istio.namespace"], CustomTag::Literal("bookinfo".into()));
    assert_eq!(t.service_name, "reviews.bookinfo");
    let nothing = profile_for(&Index::new(), &MeshTelemetry::default(), "amime-system", &class("bookinfo", "reviews"));
    assert!(nothing.is_empty(), "Istio's defaults: no access log, no tracer without a provider");
    let off = mesh(&format!("{MESH}enableTracing: false\n"));
    assert!(profile_for(&Index::new(), &off, "amime-system", &class("bookinfo", "r")).tracing.is_none());
}

#[test]
fn the_narrowest_telemetry_wins_field_by_field() {
    let mut root = telemetry("amime-system", "mesh-default", None);
    root.tracing = Some(Tracing { sampling_millionths: Some(1_000_000), ..Default::default() });
    root.access_logging = Some(AccessLogging { providers: Some(vec!["json".into()]), ..Default::default() });
    let mut ns = telemetry("bookinfo", "ns", None);
    ns.tracing = Some(Tracing { sampling_millionths: Some(0), ..Default::default() });
    let mut workload = telemetry("bookinfo", "quiet-ratings", Some("ratings"));
    workload.access_logging = Some(AccessLogging { disabled: Some(true), ..Default::default() });
    let mut other_ns = telemetry("shop", "x", None);
    other_ns.access_logging = Some(AccessLogging { disabled: Some(true), ..Default::default() });
    let model = index(vec![root, ns, workload, other_ns]);
    let m = mesh(MESH);
    let reviews = profile_for(&model, &m, "amime-system", &class("bookinfo", "reviews"));
    assert_eq!(reviews.access_logs.iter().map(|a| a.provider.path.as_str()).collect::<Vec<_>>(), ["/tmp/j.log"]);
    assert_eq!(reviews.tracing.as_ref().map(|t| t.sampling_millionths), Some(0), "namespace beats root");
    let ratings = profile_for(&model, &m, "amime-system", &class("bookinfo", "ratings"));
    assert!(ratings.access_logs.is_empty(), "the workload's Telemetry turns its logs off");
    assert_eq!(ratings.tracing.map(|t| t.sampling_millionths), Some(0), "and inherits the rest");
    let elsewhere = profile_for(&model, &m, "amime-system", &class("default", "x"));
    assert_eq!(elsewhere.tracing.map(|t| t.sampling_millionths), Some(1_000_000), "root applies mesh-wide");
    let shop = profile_for(&model, &m, "amime-system", &class("shop", "x"));
    assert!(shop.access_logs.is_empty());
}

#[test]
fn a_telemetry_turning_logs_on_without_providers_uses_envoy() {
    let mut t = telemetry("bookinfo", "logs", None);
    t.access_logging = Some(AccessLogging::default());
    let p = profile_for(&index(vec![t]), &MeshTelemetry::default(), "amime-system", &class("bookinfo", "a"));
    assert_eq!(p.access_logs.len(), 1);
    assert_eq!(p.access_logs[0].provider.path, "/dev/stdout");
}

#[test]
fn status_filters_use_envoys_comparisons() {
    use comparison_filter::Op;
    let single = |f: AccessLogFilter| match f.filter_specifier {
        Some(access_log_filter::FilterSpecifier::StatusCodeFilter(s)) => {
            let c = s.comparison.expect("comparison");
            (Op::try_from(c.op).expect("op"), c.value.expect("value").default_value)
        }
        other => panic!("{other:?}"),
    };
    let f = |op, code| status_filter(ResponseCodeFilter { op, code });
    assert_eq!(single(f(CodeComparison::Ge, 400)), (Op::Ge, 400));
    assert_eq!(single(f(CodeComparison::Gt, 399)), (Op::Ge, 400));
    assert_eq!(single(f(CodeComparison::Lt, 300)), (Op::Le, 299));
    assert_eq!(single(f(CodeComparison::Eq, 404)), (Op::Eq, 404));
    let Some(access_log_filter::FilterSpecifier::OrFilter(or)) = f(CodeComparison::Ne, 200).filter_specifier else {
        panic!("!= is an or of two comparisons")
    };
    let parts: Vec<_> = or.filters.into_iter().map(single).collect();
    assert_eq!(parts, [(Op::Le, 199), (Op::Ge, 201)]);
}

fn hcm_listener() -> Listener {
    use super::super::envoy::{filter_chain, http_connection_manager, RouteSource};
    Listener {
        name: "outbound".into(),
        filter_chains: vec![filter_chain(
            "outbound",
            http_connection_manager("outbound", RouteSource::Rds("r".into()), true),
        )],
        ..Default::default()
    }
}

fn hcm_of(listener: &Listener) -> HttpConnectionManager {
    let Some(filter::ConfigType::TypedConfig(any)) = &listener.filter_chains[0].filters[0].config_type else {
        panic!("typed config")
    };
    HttpConnectionManager::decode(any.value.as_slice()).expect("an HCM")
}

#[test]
fn profiles_add_access_logs_and_a_tracer_to_connection_managers() {
    let mut listener = hcm_listener();
    apply(&mut listener, &TelemetryProfile::default(), TrafficDirection::Outbound);
    assert_eq!(listener, hcm_listener(), "an empty profile changes nothing");

    let profile = profile_for(&Index::new(), &mesh(MESH), "amime-system", &class("bookinfo", "reviews"));
    apply(&mut listener, &profile, TrafficDirection::Outbound);
    assert_eq!(listener.traffic_direction, TrafficDirection::Outbound as i32);
    let hcm = hcm_of(&listener);
    assert_eq!(hcm.access_log.len(), 1);
    assert_eq!(hcm.access_log[0].name, "envoy.access_loggers.file");
    let hcm_tracing = hcm.tracing.expect("tracing");
    assert_eq!(hcm_tracing.random_sampling, Some(Percent { value: 1.0 }));
    assert_eq!(hcm_tracing.max_path_tag_length, Some(UInt32Value { value: 256 }));
    let provider = hcm_tracing.provider.expect("provider");
    assert_eq!(provider.name, "envoy.tracers.zipkin");
    let Some(tracing::http::ConfigType::TypedConfig(config)) = provider.config_type else { panic!("typed config") };
    let zipkin = ZipkinConfig::decode(config.value.as_slice()).expect("zipkin");
    assert_eq!(
        (zipkin.collector_cluster.as_str(), zipkin.collector_endpoint.as_str()),
        ("collector|9411|127.0.0.9", "/api/v2/spans")
    );
    assert!(hcm.generate_request_id.is_none_or(|g| g.value), "request ids are generated");
    let tags: Vec<&str> = hcm_tracing.custom_tags.iter().map(|t| t.tag.as_str()).collect();
    assert_eq!(tags, ["istio.canonical_revision", "istio.canonical_service", "istio.namespace"]);
}

#[test]
fn collectors_outside_the_mesh_get_a_dns_cluster() {
    let m = mesh("extensionProviders:\n- {name: z, zipkin: {service: jaeger.example.com, port: 9411}}\n- {name: o, opentelemetry: {service: observability/otel.example.com, port: 4317}}\n");
    let mut problems = Problems::default();
    let clusters = collector_clusters(&Index::new(), &m, &mut problems);
    let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["collector|4317|otel.example.com", "collector|9411|jaeger.example.com"]);
    assert!(
        clusters[0]
            .typed_extension_protocol_options
            .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
        "OTLP is gRPC"
    );
    assert!(clusters[1].typed_extension_protocol_options.is_empty());
    assert!(problems.list.is_empty());
}
