//! From Kubernetes-style objects (as any source reads them) to validated
//! [`MeshObject`]s. The one validation path for every source.
//!
//! Errors name the object and the field (`spec.http[0].route[1].weight`). Fields of
//! Istio's API that meshd does not implement yet are accepted and reported as
//! warnings, so a user's Istio YAML loads and they are told what is ignored.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::*;

/// How bad a reported problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object (or the file) was rejected; its last good state stays in force.
    Error,
    /// The object was applied, but part of it is ignored.
    Warning,
}

/// A problem with one object (or one document that is not yet an object).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct ObjectError {
    pub severity: Severity,
    /// Where the object came from (a file path), if the source knows.
    pub file: Option<String>,
    /// Index of the YAML document in its file, from 0.
    pub document: Option<usize>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Path of the offending field, e.g. `spec.http[0].match[0].uri.regex`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ObjectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}")?;
            if let Some(doc) = self.document {
                write!(f, " (document {doc})")?;
            }
            write!(f, ": ")?;
        }
        if let Some(kind) = &self.kind {
            write!(f, "{kind} ")?;
        }
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) if !ns.is_empty() => write!(f, "{ns}/{name}: ")?,
            (_, Some(name)) => write!(f, "{name}: ")?,
            _ => {}
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ObjectError {}

/// An object as read from YAML or the API server: type and metadata picked out, the
/// rest kept as JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct RawObject {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub labels: Labels,
    pub body: Value,
}

impl RawObject {
    /// Picks type and metadata out of a JSON object.
    pub fn from_value(body: Value) -> Result<RawObject, ObjectError> {
        let bare = |field: &str, message: String| ObjectError {
            severity: Severity::Error,
            file: None,
            document: None,
            kind: body.get("kind").and_then(Value::as_str).map(str::to_owned),
            namespace: None,
            name: body.pointer("/metadata/name").and_then(Value::as_str).map(str::to_owned),
            field: field.to_owned(),
            message,
        };
        if !body.is_object() {
            return Err(bare("", "a Kubernetes object must be a mapping with apiVersion, kind and metadata".into()));
        }
        let text = |ptr: &str| body.pointer(ptr).and_then(Value::as_str).map(str::to_owned);
        let api_version = text("/apiVersion").ok_or_else(|| bare("apiVersion", "required".into()))?;
        let kind = text("/kind").ok_or_else(|| bare("kind", "required".into()))?;
        let name =
            text("/metadata/name").filter(|n| !n.is_empty()).ok_or_else(|| bare("metadata.name", "required".into()))?;
        let namespace = text("/metadata/namespace");
        let labels = match body.pointer("/metadata/labels") {
            None | Some(Value::Null) => Labels::new(),
            Some(v) => serde_json::from_value::<Labels>(v.clone())
                .map_err(|e| bare("metadata.labels", format!("must map strings to strings: {e}")))?,
        };
        Ok(RawObject { api_version, kind, name, namespace, labels, body })
    }
}

/// What parsing an object gave.
#[derive(Debug)]
pub enum Parsed {
    /// A kind meshd uses, with any warnings about ignored fields.
    Object(MeshObject, Vec<ObjectError>),
    /// A kind meshd does not use (Deployment, ConfigMap, ...): nothing to do.
    Ignored,
}

const NETWORKING_GROUPS: [&str; 4] = [
    "networking.amime.dev/v1",
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

/// Validates `raw` into a [`MeshObject`]. The error names the object and field.
pub fn parse_object(raw: &RawObject) -> Result<Parsed, ObjectError> {
    let mut cx = Context { raw, warnings: Vec::new() };
    let namespace = raw.namespace.clone().unwrap_or_else(|| "default".to_owned());
    let networking = NETWORKING_GROUPS.contains(&raw.api_version.as_str());
    let object = match (raw.api_version.as_str(), raw.kind.as_str()) {
        ("v1", "Namespace") => {
            check_dns_label(&cx, "metadata.name", &raw.name)?;
            MeshObject::Namespace(Namespace { name: raw.name.clone(), labels: raw.labels.clone() })
        }
        ("v1", "Service") => MeshObject::Service(parse_service(&mut cx, namespace)?),
        ("v1", "Pod") => MeshObject::Pod(parse_pod(&mut cx, namespace)?),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            MeshObject::EndpointSlice(parse_endpoint_slice(&mut cx, namespace)?)
        }
        (_, "VirtualService") if networking => MeshObject::VirtualService(parse_virtual_service(&mut cx, namespace)?),
        (_, "DestinationRule") if networking => {
            MeshObject::DestinationRule(parse_destination_rule(&mut cx, namespace)?)
        }
        (_, "VirtualService" | "DestinationRule" | "Gateway" | "ServiceEntry")
            if raw.api_version.starts_with("networking.") =>
        {
            return Err(cx.error(
                "apiVersion",
                format!(
                    "{} is not a supported API version for {}; use one of {}",
                    raw.api_version,
                    raw.kind,
                    NETWORKING_GROUPS.join(", ")
                ),
            ));
        }
        _ => return Ok(Parsed::Ignored),
    };
    if !matches!(object, MeshObject::Namespace(_)) {
        check_dns_label(&cx, "metadata.namespace", &object.key().namespace)?;
    }
    Ok(Parsed::Object(object, cx.warnings))
}

struct Context<'a> {
    raw: &'a RawObject,
    warnings: Vec<ObjectError>,
}

impl Context<'_> {
    fn report(&self, severity: Severity, field: &str, message: String) -> ObjectError {
        ObjectError {
            severity,
            file: None,
            document: None,
            kind: Some(self.raw.kind.clone()),
            namespace: Some(self.raw.namespace.clone().unwrap_or_else(|| "default".into())),
            name: Some(self.raw.name.clone()),
            field: field.to_owned(),
            message,
        }
    }

    fn error(&self, field: &str, message: impl Into<String>) -> ObjectError {
        self.report(Severity::Error, field, message.into())
    }

    fn warn(&mut self, field: &str, message: impl Into<String>) {
        let w = self.report(Severity::Warning, field, message.into());
        self.warnings.push(w);
    }

    /// Deserializes `self.raw.body[key]`, naming the failing field. With `report_ignored`,
    /// fields the type does not know become warnings.
    fn field<T: DeserializeOwned + Default>(&mut self, key: &str, report_ignored: bool) -> Result<T, ObjectError> {
        let Some(value) = self.raw.body.get(key).filter(|v| !v.is_null()).cloned() else {
            return Ok(T::default());
        };
        let mut ignored: Vec<String> = Vec::new();
        let result: Result<T, _> = if report_ignored {
            let mut record = |path: serde_ignored::Path<'_>| ignored.push(path.to_string());
            let de = serde_ignored::Deserializer::new(value, &mut record);
            serde_path_to_error::deserialize(de)
        } else {
            serde_path_to_error::deserialize(value)
        };
        match result {
            Ok(v) => {
                for path in ignored {
                    self.warn(&join_path(key, &path), "field is not supported by meshd yet and is ignored");
                }
                Ok(v)
            }
            Err(e) => {
                let path = join_path(key, &e.path().to_string());
                Err(self.error(&path, e.into_inner().to_string()))
            }
        }
    }
}

fn join_path(root: &str, path: &str) -> String {
    // serde_path_to_error renders sequences as `http[0]`-style already with `.`
    // separators; serde_ignored uses `http.0.fault`. Normalise to `a.b[0].c`.
    let mut out = root.to_owned();
    for seg in path.split('.').filter(|s| !s.is_empty() && *s != "?") {
        if let Some(rest) = seg.strip_prefix('[') {
            out.push('[');
            out.push_str(rest);
        } else if seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            out.push('.');
            out.push_str(seg);
        }
    }
    out
}

fn check_dns_label(cx: &Context<'_>, field: &str, value: &str) -> Result<(), ObjectError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(cx.error(
            field,
            format!("{value:?} is not a valid DNS label (lower-case letters, digits and '-', at most 63)"),
        ))
    }
}

fn check_port(cx: &Context<'_>, field: &str, port: i64) -> Result<u16, ObjectError> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| cx.error(field, format!("port {port} is out of range 1-65535")))
}

fn parse_ip(cx: &Context<'_>, field: &str, ip: &str) -> Result<IpAddr, ObjectError> {
    ip.parse().map_err(|_| cx.error(field, format!("{ip:?} is not an IP address")))
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
enum IntOrString {
    Int(i64),
    Str(String),
}

// ---- Service -----------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ServiceSpec {
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    selector: Option<Labels>,
    #[serde(default)]
    ports: Vec<ServicePortSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServicePortSpec {
    name: Option<String>,
    port: i64,
    target_port: Option<IntOrString>,
    protocol: Option<String>,
    app_protocol: Option<String>,
}

/// Istio's protocol selection: `appProtocol`, else the port name's prefix
/// (`http`, `http-web`, `grpc-api`, `tcp-db`, ...). Unnamed ports are treated as HTTP.
fn port_protocol(name: &str, app_protocol: Option<&str>) -> Protocol {
    let label = app_protocol.unwrap_or_else(|| name.split('-').next().unwrap_or(""));
    match label.to_ascii_lowercase().as_str() {
        "http2" | "grpc" | "grpc-web" | "h2c" | "kubernetes.io/h2c" => Protocol::Http2,
        "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" | "mqtt" | "kafka" | "zookeeper" => Protocol::Tcp,
        _ => Protocol::Http,
    }
}

fn parse_service(cx: &mut Context<'_>, namespace: String) -> Result<Service, ObjectError> {
    // Service names are DNS labels: the translator relies on it (no dots, so a short
    // name never collides with `name.namespace` or an IP as a virtual-host domain).
    check_dns_label(cx, "metadata.name", &cx.raw.name)?;
    let spec: ServiceSpec = cx.field("spec", false)?;
    let cluster_ip = match spec.cluster_ip.as_deref() {
        None | Some("") | Some("None") => None,
        Some(ip) => Some(parse_ip(cx, "spec.clusterIP", ip)?),
    };
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        let port = check_port(cx, &format!("{field}.port"), p.port)?;
        match p.protocol.as_deref() {
            None | Some("TCP") => {}
            Some(other) => {
                cx.warn(&format!("{field}.protocol"), format!("{other} ports are not proxied; port {port} is ignored"));
                continue;
            }
        }
        let target_port = match &p.target_port {
            None => TargetPort::Number(port),
            Some(IntOrString::Int(n)) => TargetPort::Number(check_port(cx, &format!("{field}.targetPort"), *n)?),
            Some(IntOrString::Str(s)) => match s.parse::<i64>() {
                Ok(n) => TargetPort::Number(check_port(cx, &format!("{field}.targetPort"), n)?),
                Err(_) => TargetPort::Name(s.clone()),
            },
        };
        let name = p.name.clone().unwrap_or_default();
        if ports.iter().any(|q: &ServicePort| q.port == port) {
            return Err(cx.error(&format!("{field}.port"), format!("port {port} is listed twice")));
        }
        ports.push(ServicePort { protocol: port_protocol(&name, p.app_protocol.as_deref()), name, port, target_port });
    }
    Ok(Service { namespace, name: cx.raw.name.clone(), cluster_ip, selector: spec.selector, ports })
}

// ---- Pod ---------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    service_account_name: Option<String>,
    #[serde(default)]
    containers: Vec<ContainerSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerSpec {
    #[serde(default)]
    ports: Vec<ContainerPortSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerPortSpec {
    name: Option<String>,
    container_port: i64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodStatus {
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    phase: Option<String>,
    #[serde(default)]
    conditions: Vec<Condition>,
}

#[derive(Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

fn parse_pod(cx: &mut Context<'_>, namespace: String) -> Result<Pod, ObjectError> {
    let spec: PodSpec = cx.field("spec", false)?;
    let status: PodStatus = cx.field("status", false)?;
    let ip = match status.pod_ip.as_deref() {
        None | Some("") => None,
        Some(ip) => Some(parse_ip(cx, "status.podIP", ip)?),
    };
    let mut ports = Vec::new();
    for (c, container) in spec.containers.iter().enumerate() {
        for (i, p) in container.ports.iter().enumerate() {
            let port = check_port(cx, &format!("spec.containers[{c}].ports[{i}].containerPort"), p.container_port)?;
            ports.push(ContainerPort { name: p.name.clone(), port });
        }
    }
    let terminal = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
    let not_ready = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status != "True");
    Ok(Pod {
        namespace,
        name: cx.raw.name.clone(),
        labels: cx.raw.labels.clone(),
        ip,
        service_account: spec.service_account_name.unwrap_or_else(|| "default".to_owned()),
        ports,
        ready: !terminal && !not_ready,
    })
}

// ---- EndpointSlice -----------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SliceEndpointSpec {
    #[serde(default)]
    addresses: Vec<String>,
    conditions: Option<SliceConditions>,
    target_ref: Option<TargetRef>,
}

#[derive(Deserialize)]
struct SliceConditions {
    ready: Option<bool>,
}

#[derive(Deserialize)]
struct TargetRef {
    kind: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct SlicePortSpec {
    name: Option<String>,
    port: Option<i64>,
    protocol: Option<String>,
}

fn parse_endpoint_slice(cx: &mut Context<'_>, namespace: String) -> Result<EndpointSlice, ObjectError> {
    let service =
        cx.raw.labels.get("kubernetes.io/service-name").cloned().ok_or_else(|| {
            cx.error("metadata.labels", "an EndpointSlice needs the label kubernetes.io/service-name")
        })?;
    let address_type: String = cx.field("addressType", false)?;
    if !matches!(address_type.as_str(), "" | "IPv4" | "IPv6") {
        return Err(cx.error("addressType", format!("{address_type} is not supported; use IPv4 or IPv6")));
    }
    let specs: Vec<SliceEndpointSpec> = cx.field("endpoints", false)?;
    let port_specs: Vec<SlicePortSpec> = cx.field("ports", false)?;
    let mut endpoints = Vec::new();
    for (i, e) in specs.iter().enumerate() {
        let addresses = e
            .addresses
            .iter()
            .enumerate()
            .map(|(j, a)| parse_ip(cx, &format!("endpoints[{i}].addresses[{j}]"), a))
            .collect::<Result<Vec<_>, _>>()?;
        let pod = e.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")).and_then(|r| r.name.clone());
        endpoints.push(SliceEndpoint {
            addresses,
            ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
            pod,
        });
    }
    let mut ports = Vec::new();
    for (i, p) in port_specs.iter().enumerate() {
        if p.protocol.as_deref().is_some_and(|p| p != "TCP") {
            continue;
        }
        let Some(port) = p.port else { continue };
        ports.push((p.name.clone().unwrap_or_default(), check_port(cx, &format!("ports[{i}].port"), port)?));
    }
    Ok(EndpointSlice { namespace, name: cx.raw.name.clone(), service, ports, endpoints })
}

// ---- VirtualService ----------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct VirtualServiceSpec {
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    gateways: Vec<String>,
    #[serde(default)]
    http: Vec<HttpRouteSpec>,
    #[serde(default)]
    export_to: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpRouteSpec {
    name: Option<String>,
    #[serde(rename = "match", default)]
    matches: Vec<HttpMatchSpec>,
    #[serde(default)]
    route: Vec<RouteDestinationSpec>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct HttpMatchSpec {
    name: Option<String>,
    uri: Option<StringMatchSpec>,
    #[serde(default)]
    headers: BTreeMap<String, StringMatchSpec>,
    #[serde(default)]
    without_headers: BTreeMap<String, StringMatchSpec>,
    #[serde(default)]
    query_params: BTreeMap<String, StringMatchSpec>,
    method: Option<StringMatchSpec>,
    authority: Option<StringMatchSpec>,
    port: Option<i64>,
    #[serde(default)]
    ignore_uri_case: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StringMatchSpec {
    exact: Option<String>,
    prefix: Option<String>,
    regex: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RouteDestinationSpec {
    destination: Option<DestinationSpec>,
    weight: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DestinationSpec {
    #[serde(default)]
    host: String,
    subset: Option<String>,
    port: Option<PortSelector>,
}

#[derive(Deserialize)]
struct PortSelector {
    number: Option<i64>,
}

fn string_match(cx: &Context<'_>, field: &str, spec: &StringMatchSpec) -> Result<Option<StringMatch>, ObjectError> {
    let set = [spec.exact.is_some(), spec.prefix.is_some(), spec.regex.is_some()].iter().filter(|b| **b).count();
    if set > 1 {
        return Err(cx.error(field, "set only one of exact, prefix and regex"));
    }
    Ok(if let Some(v) = &spec.exact {
        Some(StringMatch::Exact(v.clone()))
    } else if let Some(v) = &spec.prefix {
        Some(StringMatch::Prefix(v.clone()))
    } else if let Some(v) = &spec.regex {
        check_regex(cx, &format!("{field}.regex"), v)?;
        Some(StringMatch::Regex(v.clone()))
    } else {
        None
    })
}

/// Envoy uses RE2; the `regex` crate accepts the same syntax (no backreferences or
/// look-around), so what it rejects Envoy would reject too.
fn check_regex(cx: &Context<'_>, field: &str, pattern: &str) -> Result<(), ObjectError> {
    regex::Regex::new(pattern).map_err(|e| {
        let detail = e.to_string().lines().last().unwrap_or_default().trim().to_owned();
        cx.error(field, format!("invalid regular expression {pattern:?}: {detail}"))
    })?;
    // Envoy also rejects a regex whose RE2 program is too large (sidecars get a limit
    // of 32768 instructions from their bootstrap). Compiled here with ASCII classes as
    // RE2 has them, a program takes 36-56 bytes per RE2 instruction (measured), so
    // this bound stays below Envoy's with a margin.
    const MAX_COMPILED_BYTES: usize = 20 * 32768;
    regex::bytes::RegexBuilder::new(pattern).unicode(false).size_limit(MAX_COMPILED_BYTES).build().map(|_| ()).map_err(
        |_| {
            cx.error(
                field,
                format!("regular expression {pattern:?} is too large for Envoy (RE2 program size limit); simplify it"),
            )
        },
    )
}

fn check_header_name(cx: &Context<'_>, field: &str, name: &str) -> Result<(), ObjectError> {
    let ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.:".contains(&b))
        && (!name.starts_with(':') || matches!(name, ":authority" | ":method" | ":path" | ":scheme"));
    if ok {
        Ok(())
    } else {
        Err(cx.error(field, format!("{name:?} is not a valid header name (lower-case letters, digits, '-', '_', '.')")))
    }
}

fn header_matches(
    cx: &Context<'_>,
    field: &str,
    specs: &BTreeMap<String, StringMatchSpec>,
) -> Result<BTreeMap<String, HeaderMatch>, ObjectError> {
    let mut out = BTreeMap::new();
    for (name, spec) in specs {
        let f = format!("{field}.{name}");
        check_header_name(cx, &f, name)?;
        let m = match string_match(cx, &f, spec)? {
            Some(m) => HeaderMatch::Value(m),
            None => HeaderMatch::Present,
        };
        out.insert(name.clone(), m);
    }
    Ok(out)
}

fn parse_virtual_service(cx: &mut Context<'_>, namespace: String) -> Result<VirtualService, ObjectError> {
    let spec: VirtualServiceSpec = cx.field("spec", true)?;
    if spec.hosts.is_empty() {
        return Err(cx.error("spec.hosts", "at least one host is required"));
    }
    for (i, host) in spec.hosts.iter().enumerate() {
        if host.is_empty() || host.contains('/') || host.contains(' ') {
            return Err(cx.error(&format!("spec.hosts[{i}]"), format!("{host:?} is not a valid host name")));
        }
    }
    if !spec.export_to.is_empty() {
        cx.warn("spec.exportTo", "exportTo is not supported yet; the rule is visible to the whole mesh");
    }
    let mut http = Vec::new();
    for (i, r) in spec.http.iter().enumerate() {
        let field = format!("spec.http[{i}]");
        let mut matches = Vec::new();
        for (j, m) in r.matches.iter().enumerate() {
            let mf = format!("{field}.match[{j}]");
            let port = match m.port {
                Some(p) => Some(check_port(cx, &format!("{mf}.port"), p)?),
                None => None,
            };
            let mut query_params = BTreeMap::new();
            for (k, v) in &m.query_params {
                if let Some(sm) = string_match(cx, &format!("{mf}.queryParams.{k}"), v)? {
                    query_params.insert(k.clone(), sm);
                }
            }
            matches.push(HttpMatch {
                name: m.name.clone(),
                uri: match &m.uri {
                    Some(s) => string_match(cx, &format!("{mf}.uri"), s)?,
                    None => None,
                },
                headers: header_matches(cx, &format!("{mf}.headers"), &m.headers)?,
                without_headers: header_matches(cx, &format!("{mf}.withoutHeaders"), &m.without_headers)?,
                query_params,
                method: match &m.method {
                    Some(s) => string_match(cx, &format!("{mf}.method"), s)?,
                    None => None,
                },
                authority: match &m.authority {
                    Some(s) => string_match(cx, &format!("{mf}.authority"), s)?,
                    None => None,
                },
                port,
                ignore_uri_case: m.ignore_uri_case,
            });
        }
        if r.route.is_empty() {
            return Err(cx.error(&format!("{field}.route"), "at least one route destination is required"));
        }
        let mut route = Vec::new();
        for (j, d) in r.route.iter().enumerate() {
            let df = format!("{field}.route[{j}]");
            let dest = d.destination.as_ref().ok_or_else(|| cx.error(&format!("{df}.destination"), "required"))?;
            if dest.host.is_empty() {
                return Err(cx.error(&format!("{df}.destination.host"), "required"));
            }
            let port = match dest.port.as_ref().and_then(|p| p.number) {
                Some(n) => Some(check_port(cx, &format!("{df}.destination.port.number"), n)?),
                None => None,
            };
            let weight = match d.weight {
                None => None,
                Some(w) if (0..=i64::from(i32::MAX)).contains(&w) => Some(w as u32),
                Some(w) => {
                    return Err(
                        cx.error(&format!("{df}.weight"), format!("weight {w} must be between 0 and {}", i32::MAX))
                    )
                }
            };
            if let Some(subset) = &dest.subset {
                if subset.is_empty() {
                    return Err(cx.error(&format!("{df}.destination.subset"), "must not be empty"));
                }
            }
            route.push((Destination { host: dest.host.clone(), subset: dest.subset.clone(), port }, weight));
        }
        let route: Vec<RouteDestination> = if route.len() == 1 {
            route.into_iter().map(|(destination, _)| RouteDestination { destination, weight: 100 }).collect()
        } else {
            if route.iter().all(|(_, w)| w.unwrap_or(0) == 0) {
                return Err(cx.error(
                    &format!("{field}.route"),
                    "with more than one destination, give weights; they are all 0 or missing",
                ));
            }
            route.into_iter().map(|(destination, w)| RouteDestination { destination, weight: w.unwrap_or(0) }).collect()
        };
        http.push(HttpRoute { name: r.name.clone(), matches, route });
    }
    Ok(VirtualService { namespace, name: cx.raw.name.clone(), hosts: spec.hosts, gateways: spec.gateways, http })
}

// ---- DestinationRule ---------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DestinationRuleSpec {
    #[serde(default)]
    host: String,
    traffic_policy: Option<TrafficPolicySpec>,
    #[serde(default)]
    subsets: Vec<SubsetSpec>,
    #[serde(default)]
    export_to: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TrafficPolicySpec {
    load_balancer: Option<LoadBalancerSpec>,
}

#[derive(Deserialize, Default)]
struct LoadBalancerSpec {
    simple: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubsetSpec {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: Labels,
    traffic_policy: Option<TrafficPolicySpec>,
}

fn parse_traffic_policy(cx: &Context<'_>, field: &str, spec: &TrafficPolicySpec) -> Result<TrafficPolicy, ObjectError> {
    let load_balancer = match spec.load_balancer.as_ref().and_then(|lb| lb.simple.as_deref()) {
        None | Some("UNSPECIFIED") => None,
        Some("ROUND_ROBIN") => Some(LoadBalancer::RoundRobin),
        Some("LEAST_REQUEST" | "LEAST_CONN") => Some(LoadBalancer::LeastRequest),
        Some("RANDOM") => Some(LoadBalancer::Random),
        Some("PASSTHROUGH") => Some(LoadBalancer::Passthrough),
        Some(other) => {
            return Err(cx.error(
                &format!("{field}.loadBalancer.simple"),
                format!("{other:?} is not one of ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM, PASSTHROUGH"),
            ))
        }
    };
    Ok(TrafficPolicy { load_balancer })
}

fn parse_destination_rule(cx: &mut Context<'_>, namespace: String) -> Result<DestinationRule, ObjectError> {
    let spec: DestinationRuleSpec = cx.field("spec", true)?;
    if spec.host.is_empty() {
        return Err(cx.error("spec.host", "required"));
    }
    if !spec.export_to.is_empty() {
        cx.warn("spec.exportTo", "exportTo is not supported yet; the rule is visible to the whole mesh");
    }
    let traffic_policy = match &spec.traffic_policy {
        Some(tp) => Some(parse_traffic_policy(cx, "spec.trafficPolicy", tp)?),
        None => None,
    };
    let mut subsets: Vec<Subset> = Vec::new();
    for (i, s) in spec.subsets.iter().enumerate() {
        let field = format!("spec.subsets[{i}]");
        check_dns_label(cx, &format!("{field}.name"), &s.name)?;
        if subsets.iter().any(|o| o.name == s.name) {
            return Err(cx.error(&format!("{field}.name"), format!("subset {:?} is defined twice", s.name)));
        }
        let tp = match &s.traffic_policy {
            Some(tp) => Some(parse_traffic_policy(cx, &format!("{field}.trafficPolicy"), tp)?),
            None => None,
        };
        subsets.push(Subset { name: s.name.clone(), labels: s.labels.clone(), traffic_policy: tp });
    }
    Ok(DestinationRule { namespace, name: cx.raw.name.clone(), host: spec.host, traffic_policy, subsets })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_yaml(yaml: &str) -> Result<Parsed, ObjectError> {
        let value: Value = serde_yaml::from_str(yaml).expect("test YAML parses");
        parse_object(&RawObject::from_value(value)?)
    }

    const VS: &str =
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: ns}\nspec:\n";

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("kind: Service\nmetadata: {name: x}", "apiVersion", "required"),
            ("apiVersion: v1\nkind: Service\nmetadata: {}", "metadata.name", "required"),
            ("apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: Bad_NS}", "metadata.namespace", "DNS label"),
            ("apiVersion: v1\nkind: Service\nmetadata: {name: a.b}", "metadata.name", "DNS label"),
            ("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 70000}]}", "spec.ports[0].port", "out of range"),
            ("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {clusterIP: nope}", "spec.clusterIP", "not an IP"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nstatus: {podIP: 1.2.3}", "status.podIP", "not an IP"),
            ("apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: x}", "apiVersion", "not a supported API version"),
            (&format!("{VS}  hosts: []"), "spec.hosts", "at least one host"),
            (&format!("{VS}  hosts: [r]\n  http: [{{route: [{{destination: {{host: r}}, weight: -5}}, {{destination: {{host: r}}}}]}}]"), "spec.http[0].route[0].weight", "between 0"),
            (&format!("{VS}  hosts: [r]\n  http: [{{match: [{{uri: {{regex: '(('}}}}], route: [{{destination: {{host: r}}}}]}}]"), "spec.http[0].match[0].uri.regex", "invalid regular expression"),
            (&format!("{VS}  hosts: [r]\n  http: [{{match: [{{uri: {{exact: /a, prefix: /b}}}}], route: [{{destination: {{host: r}}}}]}}]"), "spec.http[0].match[0].uri", "only one"),
            (&format!("{VS}  hosts: [r]\n  http: [{{match: [{{uri: {{regex: '([a-z]{{1,100}}){{1,100}}'}}}}], route: [{{destination: {{host: r}}}}]}}]"), "spec.http[0].match[0].uri.regex", "too large for Envoy"),
            (&format!("{VS}  hosts: [r]\n  http: [{{match: [{{headers: {{End-User: {{exact: j}}}}}}], route: [{{destination: {{host: r}}}}]}}]"), "spec.http[0].match[0].headers.End-User", "header name"),
            (&format!("{VS}  hosts: [r]\n  http: [{{route: [{{destination: {{host: r}}}}, {{destination: {{host: r, subset: v2}}}}]}}]"), "spec.http[0].route", "give weights"),
            (&format!("{VS}  hosts: [r]\n  http: [{{route: [{{destination: {{subset: v1}}}}]}}]"), "spec.http[0].route[0].destination.host", "required"),
            (&format!("{VS}  hosts: [r]\n  http: [{{route: [{{destination: {{host: r}}, weight: ten}}]}}]"), "spec.http[0].route[0].weight", "invalid type"),
            ("apiVersion: networking.amime.dev/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec: {host: r, subsets: [{name: v1}, {name: v1}]}", "spec.subsets[1].name", "defined twice"),
            ("apiVersion: networking.amime.dev/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec: {host: r, trafficPolicy: {loadBalancer: {simple: FASTEST}}}", "spec.trafficPolicy.loadBalancer.simple", "FASTEST"),
            ("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\nendpoints: []", "metadata.labels", "service-name"),
        ];
        for (yaml, field, message) in cases {
            match parse_yaml(yaml) {
                Err(e) => {
                    assert_eq!(e.field, field, "field for:\n{yaml}\n{e}");
                    assert!(e.message.contains(message), "message for:\n{yaml}\n{e}");
                }
                Ok(p) => panic!("accepted:\n{yaml}\n{p:?}"),
            }
        }
    }

    #[test]
    fn unsupported_istio_fields_are_warnings_naming_the_field() {
        let yaml = format!("{VS}  hosts: [r]\n  http: [{{fault: {{abort: {{httpStatus: 500}}}}, route: [{{destination: {{host: r}}}}]}}]");
        let Ok(Parsed::Object(MeshObject::VirtualService(vs), warnings)) = parse_yaml(&yaml) else {
            panic!("rejected")
        };
        assert_eq!(vs.http[0].route[0].weight, 100);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].field, "spec.http[0].fault");
        assert_eq!(warnings[0].severity, Severity::Warning);
    }

    #[test]
    fn kinds_meshd_does_not_use_are_ignored() {
        assert!(matches!(
            parse_yaml("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}"),
            Ok(Parsed::Ignored)
        ));
    }

    #[test]
    fn services_pick_protocols_like_istio() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - {name: http-web, port: 80}\n  - {name: grpc, port: 81}\n  - {name: tcp-db, port: 82}\n  - {port: 83, appProtocol: mysql}\n  - {port: 84, targetPort: web}\n  - {port: 85, protocol: UDP}\n";
        let Ok(Parsed::Object(MeshObject::Service(s), warnings)) = parse_yaml(yaml) else { panic!("rejected") };
        let protocols: Vec<_> = s.ports.iter().map(|p| p.protocol).collect();
        assert_eq!(protocols, [Protocol::Http, Protocol::Http2, Protocol::Tcp, Protocol::Tcp, Protocol::Http]);
        assert_eq!(s.ports[4].target_port, TargetPort::Name("web".into()));
        assert_eq!(s.namespace, "default");
        assert_eq!(warnings.len(), 1, "UDP port reported: {warnings:?}");
    }
}
