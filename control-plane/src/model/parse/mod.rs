//! From Kubernetes-style objects (as any source reads them) to validated
//! [`MeshObject`]s. The one validation path for every source.
//!
//! Each object is first checked against the field lists of its API ([`schema`],
//! [`istio_api`], [`kube_api`]): a field that is not part of the API is an error naming
//! it (with the closest real field as a suggestion); a real field meshd does not
//! implement yet is a warning where ignoring it cannot change who is routed where, and
//! refuses the object where it could. Then the kind's parser reads the fields meshd
//! implements. Diagnostics name the object and the field
//! (`spec.http[0].route[1].weight`).

use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::*;

mod destination_rule;
mod duration;
mod gateway;
mod http_actions;
mod istio_api;
mod kinds;
mod kube;
mod kube_api;
mod l4_routes;
mod locality;
mod rate_limit;
mod route_actions;
mod schema;
mod scope;
mod secret;
mod service_entry;
mod telemetry;
/// The closest of `candidates` to a mistyped field name (for other config files' checks).
pub(crate) use schema::suggest as schema_suggest;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_actions;
#[cfg(test)]
mod tests_http_actions;
#[cfg(test)]
mod tests_l4;
#[cfg(test)]
mod tests_locality;
#[cfg(test)]
mod tests_rate_limit;
#[cfg(test)]
mod tests_scope;
#[cfg(test)]
mod tests_service_entry;
mod traffic_policy;
mod virtual_service;

/// How bad a reported problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object (or the file) was rejected; its last good state stays in force.
    Error,
    /// The object was applied, but part of it is ignored (or the whole of it has no
    /// effect yet).
    Warning,
    /// Nothing wrong: said so that nothing is skipped silently (a Kubernetes kind
    /// meshd does not use).
    Info,
}

/// Something to tell about one object (or one document that is not yet an object):
/// an error, a warning or a note, with where it is and which field.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Diagnostic {
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

impl Diagnostic {
    /// A problem with one object (the source fills in its file and document).
    pub fn at_object(
        severity: Severity,
        kind: &str,
        namespace: &str,
        name: &str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            severity,
            file: None,
            document: None,
            kind: Some(kind.to_owned()),
            namespace: Some(namespace.to_owned()),
            name: Some(name.to_owned()),
            field: field.into(),
            message: message.into(),
        }
    }

    /// A problem with a file or directory as a whole.
    pub fn at_path(severity: Severity, path: &std::path::Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity,
            file: Some(path.display().to_string()),
            document: None,
            kind: None,
            namespace: None,
            name: None,
            field: String::new(),
            message: message.into(),
        }
    }
}

/// The former name of [`Diagnostic`], kept while other modules move over.
pub type ObjectError = Diagnostic;

impl std::fmt::Display for Diagnostic {
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

impl std::error::Error for Diagnostic {}

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
    pub fn from_value(body: Value) -> Result<RawObject, Diagnostic> {
        let bare = |field: &str, message: String| Diagnostic {
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
    /// A kind meshd reads, with any warnings (ignored fields, not yet in effect).
    Object(MeshObject, Vec<Diagnostic>),
    /// A kind meshd does not read: why (an info for Kubernetes kinds meshd does not
    /// use, a warning for Istio kinds it does not implement yet or kinds it does not
    /// know).
    Skipped(Diagnostic),
}

/// The field tables of an Istio networking kind: the object's top level and its
/// `spec`, for the test that holds the CRD schemas ([`crate::crd`]) to them.
#[cfg(test)]
pub(crate) fn istio_field_tables(kind: &str) -> Option<(Vec<&'static str>, Vec<schema::MessageAt>)> {
    let top = istio_api::OBJECT.fields.iter().map(|f| f.name).collect();
    let spec = if kind == "RateLimit" { &rate_limit::RATE_LIMIT } else { istio_api::spec_of(kind)? };
    Some((top, schema::messages(spec)))
}

/// Validates `raw` into a [`MeshObject`]. The error names the object and field.
pub fn parse_object(raw: &RawObject) -> Result<Parsed, Diagnostic> {
    let mut cx = Context { raw, warnings: Vec::new() };
    match kinds::classify(&raw.api_version, &raw.kind) {
        kinds::KindUse::Read => {}
        kinds::KindUse::Skip { severity, field, message } => {
            return Ok(Parsed::Skipped(cx.report(severity, field, message)))
        }
        kinds::KindUse::Refuse { field, message } => return Err(cx.error(field, message)),
    }
    let namespace = raw.namespace.clone().unwrap_or_else(|| "default".to_owned());
    let object = match raw.kind.as_str() {
        "Namespace" => {
            schema::check(&mut cx, &raw.body, &kube_api::OBJECT, "")?;
            check_dns_label(&cx, "metadata.name", &raw.name)?;
            MeshObject::Namespace(Namespace { name: raw.name.clone(), labels: raw.labels.clone() })
        }
        "Node" => {
            schema::check(&mut cx, &raw.body, &kube_api::OBJECT, "")?;
            let locality = crate::model::locality::node_locality(&raw.labels);
            MeshObject::Node(crate::model::locality::Node { name: raw.name.clone(), locality })
        }
        "Service" => MeshObject::Service(kube::parse_service(&mut cx, namespace)?),
        "Pod" => MeshObject::Pod(kube::parse_pod(&mut cx, namespace)?),
        "EndpointSlice" => MeshObject::EndpointSlice(kube::parse_endpoint_slice(&mut cx, namespace)?),
        "RateLimit" => {
            schema::check(&mut cx, &raw.body, &istio_api::OBJECT, "")?;
            MeshObject::RateLimit(rate_limit::parse_rate_limit(&mut cx, namespace)?)
        }
        "Secret" => {
            schema::check(&mut cx, &raw.body, &kube_api::SECRET, "")?;
            match secret::parse_secret(&mut cx, namespace)? {
                Some(s) => MeshObject::Secret(s),
                None => {
                    let message = format!("meshd reads only Secrets of type {}", secret::TLS_SECRET_TYPE);
                    return Ok(Parsed::Skipped(cx.report(Severity::Info, "type", message)));
                }
            }
        }
        kind => {
            let spec = istio_api::spec_of(kind).expect("classify reads only kinds with a spec schema");
            schema::check(&mut cx, &raw.body, &istio_api::OBJECT, "")?;
            schema::check(&mut cx, raw.body.get("spec").unwrap_or(&Value::Null), spec, "spec")?;
            match kind {
                "VirtualService" => {
                    MeshObject::VirtualService(virtual_service::parse_virtual_service(&mut cx, namespace)?)
                }
                "DestinationRule" => {
                    MeshObject::DestinationRule(destination_rule::parse_destination_rule(&mut cx, namespace)?)
                }
                "Gateway" => MeshObject::Gateway(gateway::parse_gateway(&mut cx, namespace)?),
                "Telemetry" => MeshObject::Telemetry(telemetry::parse_telemetry(&mut cx, namespace)?),
                _ => MeshObject::ServiceEntry(service_entry::parse_service_entry(&mut cx, namespace)?),
            }
        }
    };
    if !object.key().kind.is_cluster_scoped() {
        check_dns_label(&cx, "metadata.namespace", &object.key().namespace)?;
    }
    Ok(Parsed::Object(object, cx.warnings))
}

struct Context<'a> {
    raw: &'a RawObject,
    warnings: Vec<Diagnostic>,
}

impl Context<'_> {
    fn report(&self, severity: Severity, field: &str, message: String) -> Diagnostic {
        Diagnostic {
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

    fn error(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        self.report(Severity::Error, field, message.into())
    }

    fn warn(&mut self, field: &str, message: impl Into<String>) {
        let w = self.report(Severity::Warning, field, message.into());
        self.warnings.push(w);
    }

    /// Deserializes `self.raw.body[key]`, naming the failing field. Unknown fields
    /// were reported by the schema check before.
    fn field<T: DeserializeOwned + Default>(&self, key: &str) -> Result<T, Diagnostic> {
        let Some(value) = self.raw.body.get(key).filter(|v| !v.is_null()) else {
            return Ok(T::default());
        };
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = join_path(key, &e.path().to_string());
            let hint = yaml_colon_hint(value, e.path()).unwrap_or_default();
            self.error(&path, format!("{}{hint}", e.into_inner()))
        })
    }
}

/// A hint for a value YAML read as a one-pair mapping because it ends in `:`
/// (`[2001:db8::]` is `[{"2001:db8:": null}]` to every conforming parser).
fn yaml_colon_hint(root: &Value, path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut value = root;
    for segment in path.iter() {
        value = match segment {
            Segment::Seq { index } => value.get(index)?,
            Segment::Map { key } => value.get(key)?,
            Segment::Enum { .. } | Segment::Unknown => return None,
        };
    }
    let map = value.as_object().filter(|m| m.len() == 1)?;
    let (key, v) = map.iter().next()?;
    (key.ends_with(':') && v.is_null()).then(|| {
        format!(" (YAML reads the unquoted `{key}:` as a mapping because it ends in `:`; quote it: \"{key}:\")")
    })
}

fn join_path(root: &str, path: &str) -> String {
    // serde_path_to_error renders `http[0].route`; normalise to `spec.http[0].route`.
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

fn check_dns_label(cx: &Context<'_>, field: &str, value: &str) -> Result<(), Diagnostic> {
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

/// A DNS subdomain (an object name): dot-separated DNS labels, at most 253 characters.
fn check_dns_subdomain(cx: &Context<'_>, field: &str, value: &str) -> Result<(), Diagnostic> {
    if value.len() <= 253 && value.split('.').all(|l| check_dns_label(cx, field, l).is_ok()) {
        Ok(())
    } else {
        Err(cx.error(field, format!("{value:?} is not a valid name (lower-case DNS labels joined by '.')")))
    }
}

fn check_port(cx: &Context<'_>, field: &str, port: i64) -> Result<u16, Diagnostic> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| cx.error(field, format!("port {port} is out of range 1-65535")))
}

fn parse_ip(cx: &Context<'_>, field: &str, ip: &str) -> Result<IpAddr, Diagnostic> {
    ip.parse().map_err(|_| cx.error(field, format!("{ip:?} is not an IP address")))
}
