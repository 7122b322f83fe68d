//! The Kubernetes kinds meshd reads: Service, Pod and EndpointSlice (Namespaces and
//! Nodes need their labels only: see `parse_object`).

use serde::Deserialize;
use serde_json::Value;

use super::*;

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
enum IntOrString {
    Int(i64),
    Str(String),
}

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
pub(super) fn port_protocol(name: &str, app_protocol: Option<&str>) -> Protocol {
    let label = app_protocol.unwrap_or_else(|| name.split('-').next().unwrap_or(""));
    match label.to_ascii_lowercase().as_str() {
        "http2" | "grpc" | "grpc-web" | "h2c" | "kubernetes.io/h2c" => Protocol::Http2,
        "tls" | "https" => Protocol::Tls,
        "tcp" | "mongo" | "mysql" | "redis" | "mqtt" | "kafka" | "zookeeper" => Protocol::Tcp,
        _ => Protocol::Http,
    }
}

pub(super) fn parse_service(cx: &mut Context<'_>, namespace: String) -> Result<Service, Diagnostic> {
    // Service names are DNS labels: the translator relies on it (no dots, so a short
    // name never collides with `name.namespace` or an IP as a virtual-host domain).
    check_dns_label(cx, "metadata.name", &cx.raw.name)?;
    let raw = cx.raw;
    schema::check(cx, &raw.body, &kube_api::OBJECT, "")?;
    schema::check(cx, raw.body.get("spec").unwrap_or(&Value::Null), &kube_api::SERVICE_SPEC, "spec")?;
    let spec: ServiceSpec = cx.field("spec")?;
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
    node_name: Option<String>,
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

pub(super) fn parse_pod(cx: &mut Context<'_>, namespace: String) -> Result<Pod, Diagnostic> {
    let raw = cx.raw;
    schema::check(cx, &raw.body, &kube_api::OBJECT, "")?;
    schema::check(cx, raw.body.get("spec").unwrap_or(&Value::Null), &kube_api::POD_SPEC, "spec")?;
    let spec: PodSpec = cx.field("spec")?;
    let status: PodStatus = cx.field("status")?;
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
        node_name: spec.node_name.filter(|n| !n.is_empty()),
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
    node_name: Option<String>,
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

pub(super) fn parse_endpoint_slice(cx: &mut Context<'_>, namespace: String) -> Result<EndpointSlice, Diagnostic> {
    let service =
        cx.raw.labels.get("kubernetes.io/service-name").cloned().ok_or_else(|| {
            cx.error("metadata.labels", "an EndpointSlice needs the label kubernetes.io/service-name")
        })?;
    let raw = cx.raw;
    schema::check(cx, &raw.body, &kube_api::ENDPOINT_SLICE, "")?;
    let address_type: String = cx.field("addressType")?;
    if !matches!(address_type.as_str(), "" | "IPv4" | "IPv6") {
        return Err(cx.error("addressType", format!("{address_type} is not supported; use IPv4 or IPv6")));
    }
    let specs: Vec<SliceEndpointSpec> = cx.field("endpoints")?;
    let port_specs: Vec<SlicePortSpec> = cx.field("ports")?;
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
            node_name: e.node_name.clone().filter(|n| !n.is_empty()),
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
