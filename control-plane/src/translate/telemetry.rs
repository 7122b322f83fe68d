//! Access logs and tracing: which apply to a proxy (the mesh config's defaults, then the
//! Telemetry objects of the root namespace, the proxy's namespace and its workload, the
//! narrowest setting of each field winning, as in Istio), and what they add to its HTTP
//! connection managers and to the shared clusters (one per tracing collector).
//!
//! Rules it keeps:
//! - a proxy with no access log and no tracer gets exactly the listeners it would get
//!   without this module (the empty [`TelemetryProfile`]);
//! - listeners are built once per distinct profile and shared by every proxy class with
//!   that profile (tracing profiles carry the workload's identity tags, so they are per
//!   workload; access-log-only profiles are shared mesh-wide);
//! - a collector cluster exists for every tracing provider of the mesh config before any
//!   listener names it (Envoy refuses a tracer whose cluster it does not know).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::accesslog::v3::{
    access_log, access_log_filter, comparison_filter, AccessLog, AccessLogFilter, ComparisonFilter, OrFilter,
    StatusCodeFilter,
};
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    address, data_source, grpc_service, socket_address, substitution_format_string, Address, DataSource, GrpcService,
    RuntimeUInt32, SocketAddress, SubstitutionFormatString, TrafficDirection,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, Listener};
use envoy_types::pb::envoy::config::trace::v3::{tracing, zipkin_config, OpenTelemetryConfig, ZipkinConfig};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{file_access_log, FileAccessLog};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, HttpConnectionManager,
};
use envoy_types::pb::envoy::r#type::tracing::v3::{custom_tag, CustomTag as EnvoyCustomTag};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{value, Struct, UInt32Value, Value};
use prost::Message;

use super::envoy::{any, seconds};
use super::{cluster_name, Problems, ProxyClass};
use crate::mesh_config::{FileLogProvider, LogEncoding, MeshTelemetry, Provider, TracerKind, TracingProvider};
use crate::model::index::Index;
use crate::model::telemetry::{CodeComparison, CustomTag, ResponseCodeFilter, Telemetry};
use crate::model::{selector_matches, Protocol};

const HCM: &str = "envoy.filters.network.http_connection_manager";

/// Istio's default TEXT access-log line.
pub const DEFAULT_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% \
%PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \
\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \
%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \
\"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% \
%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// Istio's default JSON access-log keys.
pub const DEFAULT_JSON_FIELDS: &[(&str, &str)] = &[
    ("start_time", "%START_TIME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    ("connection_termination_details", "%CONNECTION_TERMINATION_DETAILS%"),
    ("upstream_transport_failure_reason", "%UPSTREAM_TRANSPORT_FAILURE_REASON%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    ("upstream_service_time", "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%"),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    ("route_name", "%ROUTE_NAME%"),
];

/// One access log of a profile.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccessLogProfile {
    pub provider: FileLogProvider,
    pub filter: Option<ResponseCodeFilter>,
}

/// The tracer of a profile.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TracingProfile {
    pub provider: TracingProvider,
    /// The collector's cluster (see [`collector_cluster_name`]).
    pub cluster: String,
    pub sampling_millionths: u32,
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// The span's service (OpenTelemetry; Zipkin takes Envoy's `node.cluster`, the same).
    pub service_name: String,
}

/// What telemetry a proxy's HTTP connection managers get.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TelemetryProfile {
    pub access_logs: Vec<AccessLogProfile>,
    pub tracing: Option<TracingProfile>,
}

impl TelemetryProfile {
    pub fn is_empty(&self) -> bool {
        self.access_logs.is_empty() && self.tracing.is_none()
    }
}

/// The Telemetry objects that apply to `class`, broadest first: the root namespace's
/// (no selector), the class namespace's (no selector), the workload's (selector matches).
/// At each level the first by name; the others are reported by [`check`].
fn applicable<'a>(model: &'a Index, root_namespace: &'a str, class: &'a ProxyClass) -> Vec<&'a Telemetry> {
    fn in_ns<'a>(model: &'a Index, ns: &'a str) -> impl Iterator<Item = &'a Telemetry> + 'a {
        Index::in_namespace(&model.telemetries, ns).map(|t| &**t)
    }
    let mut out = Vec::new();
    out.extend(in_ns(model, root_namespace).find(|t| t.selector.is_none()));
    if class.namespace != root_namespace {
        out.extend(in_ns(model, &class.namespace).find(|t| t.selector.is_none()));
    }
    let picks = |t: &&Telemetry| t.selector.as_ref().is_some_and(|s| selector_matches(s, &class.labels));
    out.extend(in_ns(model, &class.namespace).find(picks));
    out
}

/// The telemetry of `class`: mesh-config defaults overridden field by field by the
/// applicable Telemetry objects, narrowest last.
pub fn profile_for(model: &Index, mesh: &MeshTelemetry, root_namespace: &str, class: &ProxyClass) -> TelemetryProfile {
    let telemetries = applicable(model, root_namespace, class);
    let mut log_providers = mesh.default_access_log_providers();
    let (mut log_disabled, mut log_filter, mut log_set) = (false, None, false);
    let mut trace_providers = if mesh.enable_tracing { mesh.default_tracing.clone() } else { Vec::new() };
    let (mut sampling, mut no_spans, mut tags) = (mesh.sampling_millionths, false, BTreeMap::new());
    for t in &telemetries {
        if let Some(a) = &t.access_logging {
            log_set = true;
            log_providers = a.providers.clone().unwrap_or(log_providers);
            log_disabled = a.disabled.unwrap_or(log_disabled);
            log_filter = a.filter.or(log_filter);
        }
        if let Some(tr) = &t.tracing {
            trace_providers = tr.providers.clone().unwrap_or(trace_providers);
            sampling = tr.sampling_millionths.unwrap_or(sampling);
            no_spans = tr.disable_span_reporting.unwrap_or(no_spans);
            tags = tr.custom_tags.clone().unwrap_or(tags);
        }
    }
    if log_set && log_providers.is_empty() {
        log_providers.push(crate::mesh_config::ENVOY_PROVIDER.to_owned());
    }
    let access_logs = if log_disabled {
        Vec::new()
    } else {
        let files = log_providers.iter().filter_map(|name| match mesh.provider(name) {
            Some(Provider::FileLog(provider)) => Some(AccessLogProfile { provider, filter: log_filter }),
            _ => None,
        });
        let mut files: Vec<AccessLogProfile> = files.collect();
        files.dedup();
        files
    };
    let tracing = match (no_spans, trace_providers.first().and_then(|name| mesh.providers.get(name))) {
        (false, Some(Provider::Tracing(provider))) => {
            let service = class.labels.get("app").cloned().unwrap_or_else(|| "unknown".to_owned());
            let version = class.labels.get("version").cloned().unwrap_or_else(|| "latest".to_owned());
            for (tag, value) in [
                ("istio.namespace", class.namespace.clone()),
                ("istio.canonical_service", service.clone()),
                ("istio.canonical_revision", version),
            ] {
                tags.entry(tag.to_owned()).or_insert(CustomTag::Literal(value));
            }
            Some(TracingProfile {
                cluster: collector_cluster_name(model, provider),
                provider: provider.clone(),
                sampling_millionths: sampling,
                custom_tags: tags,
                service_name: format!("{service}.{}", class.namespace),
            })
        }
        _ => None,
    };
    TelemetryProfile { access_logs, tracing }
}

/// `service` without an Istio `namespace/` prefix.
fn collector_host(provider: &TracingProvider) -> &str {
    provider.service.split_once('/').map_or(provider.service.as_str(), |(_, host)| host)
}

/// The registry service behind a collector host, if it is one (with the port's protocol).
fn registry_port(model: &Index, provider: &TracingProvider) -> Option<Protocol> {
    let host = collector_host(provider);
    let service = model.service_by_hostname(host)?;
    service.ports.iter().find(|p| p.port == provider.port).map(|p| p.protocol)
}

/// A mesh service's outbound cluster, else meshd's own DNS cluster to the host.
pub fn collector_cluster_name(model: &Index, provider: &TracingProvider) -> String {
    let host = collector_host(provider);
    match registry_port(model, provider) {
        Some(_) => cluster_name(provider.port, None, host),
        None => format!("collector|{}|{host}", provider.port),
    }
}

/// The clusters of the tracing collectors that are no mesh service (STRICT_DNS to the
/// host; HTTP/2 for OTLP gRPC), and problems with the others.
pub fn collector_clusters(model: &Index, mesh: &MeshTelemetry, problems: &mut Problems) -> Vec<Cluster> {
    let mut out: BTreeMap<String, Cluster> = BTreeMap::new();
    for (name, provider) in &mesh.providers {
        let Provider::Tracing(provider) = provider else { continue };
        let cluster = collector_cluster_name(model, provider);
        match (registry_port(model, provider), provider.kind) {
            (Some(_), TracerKind::Zipkin) | (Some(Protocol::Http2), _) => continue,
            (Some(_), TracerKind::OpenTelemetry) => {
                problems.report(
                    "MeshConfig",
                    "",
                    "mesh",
                    &format!("extensionProviders[{name}].opentelemetry.port"),
                    format!(
                        "{}:{} is not an HTTP/2 (grpc) port of its Service; OTLP over gRPC needs one",
                        provider.service, provider.port
                    ),
                );
                continue;
            }
            (None, _) => {}
        }
        let host = collector_host(provider);
        let mut c = Cluster {
            name: cluster.clone(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::StrictDns as i32)),
            connect_timeout: Some(seconds(10)),
            dns_lookup_family: cluster::DnsLookupFamily::V4Preferred as i32,
            load_assignment: Some(load_assignment_dns(&cluster, host, provider.port)),
            ..Default::default()
        };
        if provider.kind == TracerKind::OpenTelemetry {
            let (key, options) = super::envoy::upstream_http_options(true, None, None);
            c.typed_extension_protocol_options.insert(key, options);
        }
        out.insert(cluster, c);
    }
    out.into_values().collect()
}

/// Reports Telemetry objects that name providers the mesh config does not have, and
/// those shadowed by another at the same level.
pub fn check(model: &Index, mesh: &MeshTelemetry, problems: &mut Problems) {
    let mut seen: BTreeMap<(String, Option<crate::model::Labels>), &Telemetry> = BTreeMap::new();
    for t in model.telemetries.values() {
        let mut report =
            |field: &str, message: String| problems.report("Telemetry", &t.namespace, &t.name, field, message);
        if let Some(first) = seen.get(&(t.namespace.clone(), t.selector.clone())) {
            report(
                "spec.selector",
                format!(
                    "Telemetry {}/{} already applies to the same workloads; this one is ignored",
                    first.namespace, first.name
                ),
            );
            continue;
        }
        seen.insert((t.namespace.clone(), t.selector.clone()), t);
        let logs = t.access_logging.iter().flat_map(|a| a.providers.iter().flatten());
        for (i, name) in logs.enumerate() {
            if !matches!(mesh.provider(name), Some(Provider::FileLog(_))) {
                report(
                    &format!("spec.accessLogging[0].providers[{i}].name"),
                    format!("{name:?} is not `envoy` or an envoyFileAccessLog provider of the mesh config; ignored"),
                );
            }
        }
        for (i, name) in t.tracing.iter().flat_map(|tr| tr.providers.iter().flatten()).enumerate() {
            if !matches!(mesh.providers.get(name), Some(Provider::Tracing(_))) {
                report(
                    &format!("spec.tracing[0].providers[{i}].name"),
                    format!("{name:?} is not a zipkin or opentelemetry provider of the mesh config; no spans are sent"),
                );
            }
        }
    }
}

fn text_source(text: &str) -> substitution_format_string::Format {
    substitution_format_string::Format::TextFormatSource(DataSource {
        specifier: Some(data_source::Specifier::InlineString(text.to_owned())),
        ..Default::default()
    })
}

fn log_format(p: &FileLogProvider) -> SubstitutionFormatString {
    let format = match p.encoding {
        LogEncoding::Text => {
            let mut text = p.format.clone().unwrap_or_else(|| DEFAULT_TEXT_FORMAT.to_owned());
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text_source(&text)
        }
        LogEncoding::Json => {
            let pairs: Vec<(String, String)> = if p.json_labels.is_empty() {
                DEFAULT_JSON_FIELDS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
            } else {
                p.json_labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            };
            let fields =
                pairs.into_iter().map(|(k, v)| (k, Value { kind: Some(value::Kind::StringValue(v)) })).collect();
            substitution_format_string::Format::JsonFormat(Struct { fields })
        }
    };
    SubstitutionFormatString { format: Some(format), ..Default::default() }
}

fn code_comparison(op: comparison_filter::Op, code: u32) -> AccessLogFilter {
    AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::StatusCodeFilter(StatusCodeFilter {
            comparison: Some(ComparisonFilter {
                op: op as i32,
                value: Some(RuntimeUInt32 { default_value: code, runtime_key: "amime.access_log.status".to_owned() }),
            }),
        })),
    }
}

/// Envoy's status-code filter compares with ==, >= and <= only; the rest are built from them.
pub fn status_filter(f: ResponseCodeFilter) -> AccessLogFilter {
    use comparison_filter::Op;
    match f.op {
        CodeComparison::Eq => code_comparison(Op::Eq, f.code),
        CodeComparison::Ge => code_comparison(Op::Ge, f.code),
        CodeComparison::Le => code_comparison(Op::Le, f.code),
        CodeComparison::Gt => code_comparison(Op::Ge, f.code + 1),
        CodeComparison::Lt if f.code == 0 => code_comparison(Op::Le, 0), // never true for a real code
        CodeComparison::Lt => code_comparison(Op::Le, f.code - 1),
        CodeComparison::Ne => AccessLogFilter {
            filter_specifier: Some(access_log_filter::FilterSpecifier::OrFilter(OrFilter {
                filters: vec![code_comparison(Op::Le, f.code.saturating_sub(1)), code_comparison(Op::Ge, f.code + 1)],
            })),
        },
    }
}

fn access_log(p: &AccessLogProfile) -> AccessLog {
    let file = FileAccessLog {
        path: p.provider.path.clone(),
        access_log_format: Some(file_access_log::AccessLogFormat::LogFormat(log_format(&p.provider))),
    };
    AccessLog {
        name: "envoy.access_loggers.file".to_owned(),
        filter: p.filter.map(status_filter),
        config_type: Some(access_log::ConfigType::TypedConfig(any(file))),
    }
}

fn envoy_tag(name: &str, tag: &CustomTag) -> EnvoyCustomTag {
    let r#type = match tag {
        CustomTag::Literal(value) => custom_tag::Type::Literal(custom_tag::Literal { value: value.clone() }),
        CustomTag::Header { name, default_value } => custom_tag::Type::RequestHeader(custom_tag::Header {
            name: name.clone(),
            default_value: default_value.clone().unwrap_or_default(),
        }),
        CustomTag::Environment { name, default_value } => custom_tag::Type::Environment(custom_tag::Environment {
            name: name.clone(),
            default_value: default_value.clone().unwrap_or_default(),
        }),
    };
    EnvoyCustomTag { tag: name.to_owned(), r#type: Some(r#type) }
}

fn tracer(t: &TracingProfile) -> tracing::Http {
    let typed = |config| Some(tracing::http::ConfigType::TypedConfig(config));
    match t.provider.kind {
        TracerKind::Zipkin => tracing::Http {
            name: "envoy.tracers.zipkin".to_owned(),
            config_type: typed(any(ZipkinConfig {
                collector_cluster: t.cluster.clone(),
                collector_endpoint: "/api/v2/spans".to_owned(),
                collector_endpoint_version: zipkin_config::CollectorEndpointVersion::HttpJson as i32,
                collector_hostname: collector_host(&t.provider).to_owned(),
                trace_id_128bit: true,
                shared_span_context: Some(envoy_types::pb::google::protobuf::BoolValue { value: false }),
                ..Default::default()
            })),
        },
        TracerKind::OpenTelemetry => tracing::Http {
            name: "envoy.tracers.opentelemetry".to_owned(),
            config_type: typed(any(OpenTelemetryConfig {
                grpc_service: Some(GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc_service::EnvoyGrpc {
                        cluster_name: t.cluster.clone(),
                        authority: collector_host(&t.provider).to_owned(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
                service_name: t.service_name.clone(),
                ..Default::default()
            })),
        },
    }
}

fn hcm_tracing(t: &TracingProfile) -> http_connection_manager::Tracing {
    http_connection_manager::Tracing {
        random_sampling: Some(Percent { value: f64::from(t.sampling_millionths) / 10_000.0 }),
        max_path_tag_length: Some(UInt32Value { value: t.provider.max_tag_length }),
        custom_tags: t.custom_tags.iter().map(|(name, tag)| envoy_tag(name, tag)).collect(),
        provider: Some(tracer(t)),
        ..Default::default()
    }
}

/// `filter` with the profile's access logs and tracer if it is an HTTP connection manager.
fn apply_to_filter(f: &mut Filter, profile: &TelemetryProfile) {
    if f.name != HCM {
        return;
    }
    let Some(filter::ConfigType::TypedConfig(config)) = &mut f.config_type else { return };
    let Ok(mut hcm) = HttpConnectionManager::decode(config.value.as_slice()) else { return };
    hcm.access_log.extend(profile.access_logs.iter().map(access_log));
    if let Some(t) = &profile.tracing {
        hcm.tracing = Some(hcm_tracing(t));
    }
    config.value = hcm.encode_to_vec();
}

/// `listener` with the profile applied to every HTTP connection manager, marked as
/// `direction` (spans are client spans outbound, server spans inbound). Unchanged when
/// the profile is empty.
pub fn apply(listener: &mut Listener, profile: &TelemetryProfile, direction: TrafficDirection) {
    if profile.is_empty() {
        return;
    }
    listener.traffic_direction = direction as i32;
    for chain in listener.filter_chains.iter_mut().chain(listener.default_filter_chain.as_mut()) {
        for f in &mut chain.filters {
            apply_to_filter(f, profile);
        }
    }
}

/// The load assignment of a DNS cluster: `host:port`, resolved by Envoy.
fn load_assignment_dns(cluster: &str, host: &str, port: u16) -> ClusterLoadAssignment {
    let address = Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    };
    ClusterLoadAssignment {
        cluster_name: cluster.to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(address),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "telemetry_tests.rs"]
mod tests;
