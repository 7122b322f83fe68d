//! From a MeshConfig YAML document to [`MeshConfigFile`], or the first error naming the
//! field (`extensionProviders[1].zipkin.port: ...`). Fields of Istio's MeshConfig that meshd
//! does not implement are warnings (they shape nothing meshd serves) or, for the fields of
//! the sections it reads, errors; a field that is no MeshConfig field at all is an error
//! with the closest real one as a suggestion.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::*;
use crate::model::parse::schema_suggest;
use crate::model::{Diagnostic, Severity};

/// What reading one mesh-config document gave: the settings (if it is valid) and every
/// diagnostic (warnings also when valid).
#[derive(Debug)]
pub struct Outcome {
    pub config: Option<MeshConfigFile>,
    pub diagnostics: Vec<Diagnostic>,
}

struct Cx<'a> {
    file: &'a str,
    warnings: Vec<Diagnostic>,
}

impl Cx<'_> {
    fn diag(&self, severity: Severity, field: &str, message: String) -> Diagnostic {
        Diagnostic {
            severity,
            file: Some(self.file.to_owned()),
            document: None,
            kind: Some("MeshConfig".to_owned()),
            namespace: None,
            name: None,
            field: field.to_owned(),
            message,
        }
    }

    fn error(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        self.diag(Severity::Error, field, message.into())
    }
}

/// Istio MeshConfig fields meshd accepts and does not implement (they configure what
/// meshd has no part of); a warning each.
const IGNORED_TOP: &[&str] = &[
    "trustDomain",
    "trustDomainAliases",
    "enableAutoMtls",
    "enablePrometheusMerge",
    "ingressClass",
    "ingressService",
    "ingressControllerMode",
    "ingressSelector",
    "localityLbSetting",
    "connectTimeout",
    "protocolDetectionTimeout",
    "dnsRefreshRate",
    "discoverySelectors",
    "serviceSettings",
    "certificates",
    "caCertificates",
    "defaultServiceExportTo",
    "defaultVirtualServiceExportTo",
    "defaultDestinationRuleExportTo",
    "h2UpgradePolicy",
    "inboundClusterStatName",
    "outboundClusterStatName",
    "verifyCertificateAtClient",
    "meshMTLS",
    "tlsDefaults",
];

const IGNORED_PROXY: &[&str] = &[
    "discoveryAddress",
    "proxyMetadata",
    "holdApplicationUntilProxyStarts",
    "concurrency",
    "drainDuration",
    "terminationDrainDuration",
    "statsTags",
    "proxyStatsMatcher",
    "image",
    "tracingServiceName",
];

fn path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Checks that `value` is a mapping whose keys are in `read` (or `ignored`: a warning).
fn fields<'v>(
    cx: &mut Cx<'_>,
    value: &'v Value,
    at: &str,
    read: &[&str],
    ignored: &[&str],
) -> Result<&'v Map<String, Value>, Diagnostic> {
    let Value::Object(map) = value else {
        return Err(cx.error(at, "must be a mapping"));
    };
    for (key, v) in map {
        if read.contains(&key.as_str()) {
            continue;
        }
        let here = path(at, key);
        if ignored.contains(&key.as_str()) {
            if !v.is_null() {
                let w = cx.diag(Severity::Warning, &here, format!("`{key}` is not implemented by meshd; ignored"));
                cx.warnings.push(w);
            }
            continue;
        }
        let all = read.iter().chain(ignored).copied();
        let message = match schema_suggest(key, all) {
            Some(s) => format!("unknown field `{key}`; did you mean `{s}`?"),
            None => format!("unknown field `{key}` (not a MeshConfig field meshd knows)"),
        };
        return Err(cx.error(&here, message));
    }
    Ok(map)
}

fn string(cx: &Cx<'_>, map: &Map<String, Value>, at: &str, key: &str) -> Result<Option<String>, Diagnostic> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(cx.error(&path(at, key), format!("must be a string, not {other}"))),
    }
}

fn strings(cx: &Cx<'_>, map: &Map<String, Value>, at: &str, key: &str) -> Result<Vec<String>, Diagnostic> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                _ => Err(cx.error(&format!("{}[{i}]", path(at, key)), "must be a provider name")),
            })
            .collect(),
        Some(_) => Err(cx.error(&path(at, key), "must be a list of provider names")),
    }
}

fn number(cx: &Cx<'_>, map: &Map<String, Value>, at: &str, key: &str) -> Result<Option<f64>, Diagnostic> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(cx.error(&path(at, key), format!("must be a number, not {other}"))),
    }
}

pub use crate::model::telemetry::percent_millionths;

/// Parses one MeshConfig YAML document; `file` names it in diagnostics.
pub fn parse(file: &str, text: &str) -> Outcome {
    let mut cx = Cx { file, warnings: Vec::new() };
    let result = serde_yaml::from_str::<Value>(text)
        .map_err(|e| cx.error("", format!("not valid YAML: {e}")))
        .and_then(|value| read_mesh_config(&mut cx, &value));
    let mut diagnostics = cx.warnings;
    match result {
        Ok(config) => Outcome { config: Some(config), diagnostics },
        Err(e) => {
            diagnostics.push(e);
            Outcome { config: None, diagnostics }
        }
    }
}

fn read_mesh_config(cx: &mut Cx<'_>, value: &Value) -> Result<MeshConfigFile, Diagnostic> {
    if value.is_null() {
        return Ok(MeshConfigFile::default());
    }
    let read = [
        "accessLogFile",
        "accessLogEncoding",
        "accessLogFormat",
        "enableTracing",
        "defaultConfig",
        "extensionProviders",
        "defaultProviders",
        "outboundTrafficPolicy",
        "rootNamespace",
    ];
    let map = fields(cx, value, "", &read, IGNORED_TOP)?;
    let mut t = MeshTelemetry { access_log_file: string(cx, map, "", "accessLogFile")?, ..Default::default() };
    t.access_log_file = t.access_log_file.filter(|f| !f.is_empty());
    t.access_log_encoding = encoding(cx, string(cx, map, "", "accessLogEncoding")?, "accessLogEncoding")?;
    t.access_log_format = string(cx, map, "", "accessLogFormat")?.filter(|f| !f.is_empty());
    match map.get("enableTracing") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => t.enable_tracing = *b,
        Some(_) => return Err(cx.error("enableTracing", "must be true or false")),
    }
    if let Some(proxy) = map.get("defaultConfig").filter(|v| !v.is_null()) {
        t.sampling_millionths = default_config_sampling(cx, proxy)?.unwrap_or(t.sampling_millionths);
    }
    if let Some(list) = map.get("extensionProviders").filter(|v| !v.is_null()) {
        let Value::Array(items) = list else { return Err(cx.error("extensionProviders", "must be a list")) };
        for (i, item) in items.iter().enumerate() {
            let (name, provider) = extension_provider(cx, item, &format!("extensionProviders[{i}]"))?;
            if name == ENVOY_PROVIDER || t.providers.contains_key(&name) {
                return Err(cx.error(&format!("extensionProviders[{i}].name"), format!("{name:?} is defined twice")));
            }
            t.providers.insert(name, provider);
        }
    }
    if let Some(defaults) = map.get("defaultProviders").filter(|v| !v.is_null()) {
        let d = fields(cx, defaults, "defaultProviders", &["tracing", "accessLogging"], &["metrics"])?;
        t.default_tracing = strings(cx, d, "defaultProviders", "tracing")?;
        t.default_access_logging = strings(cx, d, "defaultProviders", "accessLogging")?;
        check_defaults(cx, &t)?;
    }
    t.root_namespace = string(cx, map, "", "rootNamespace")?.filter(|n| !n.is_empty());
    let mut outbound_traffic_policy = None;
    if let Some(policy) = map.get("outboundTrafficPolicy").filter(|v| !v.is_null()) {
        let p = fields(cx, policy, "outboundTrafficPolicy", &["mode"], &["egressProxy"])?;
        if let Some(mode) = string(cx, p, "outboundTrafficPolicy", "mode")? {
            outbound_traffic_policy =
                Some(mode.parse::<OutboundTrafficPolicy>().map_err(|e| cx.error("outboundTrafficPolicy.mode", e))?);
        }
    }
    Ok(MeshConfigFile { telemetry: t, outbound_traffic_policy })
}

fn encoding(cx: &Cx<'_>, value: Option<String>, at: &str) -> Result<LogEncoding, Diagnostic> {
    match value.as_deref() {
        None | Some("") | Some("TEXT") => Ok(LogEncoding::Text),
        Some("JSON") => Ok(LogEncoding::Json),
        Some(other) => Err(cx.error(at, format!("{other:?} is not TEXT or JSON"))),
    }
}

/// `defaultConfig.tracing.sampling` (percent), in millionths, when set.
fn default_config_sampling(cx: &mut Cx<'_>, proxy: &Value) -> Result<Option<u32>, Diagnostic> {
    let p = fields(cx, proxy, "defaultConfig", &["tracing"], IGNORED_PROXY)?;
    let Some(tracing) = p.get("tracing").filter(|v| !v.is_null()) else { return Ok(None) };
    let at = "defaultConfig.tracing";
    let tr = fields(cx, tracing, at, &["sampling"], &["zipkin", "maxPathTagLength", "customTags", "tlsSettings"])?;
    match number(cx, tr, at, "sampling")? {
        None => Ok(None),
        Some(v) => percent_millionths(v)
            .map(Some)
            .ok_or_else(|| cx.error(&path(at, "sampling"), format!("{v} is not a percentage between 0 and 100"))),
    }
}

fn extension_provider(cx: &mut Cx<'_>, item: &Value, at: &str) -> Result<(String, Provider), Diagnostic> {
    const KINDS: &[&str] = &["zipkin", "opentelemetry", "envoyFileAccessLog"];
    const OTHER_KINDS: &[&str] = &[
        "envoyExtAuthzHttp",
        "envoyExtAuthzGrpc",
        "datadog",
        "lightstep",
        "stackdriver",
        "skywalking",
        "prometheus",
        "envoyHttpAls",
        "envoyTcpAls",
        "envoyOtelAls",
        "sds",
    ];
    let map = fields(cx, item, at, &[&["name"][..], KINDS, OTHER_KINDS].concat(), &[])?;
    let name = string(cx, map, at, "name")?.filter(|n| !n.is_empty());
    let name = name.ok_or_else(|| cx.error(&path(at, "name"), "required"))?;
    let present: Vec<&str> = map.keys().map(String::as_str).filter(|k| *k != "name").collect();
    let [kind] = present.as_slice() else {
        return Err(cx.error(at, format!("a provider has exactly one of {}", KINDS.join(", "))));
    };
    let here = path(at, kind);
    let body = &map[*kind];
    let provider = match *kind {
        "zipkin" | "opentelemetry" => {
            let ignored: &[&str] = if *kind == "zipkin" { &["enable64bitTraceId"] } else { &["resourceDetectors"] };
            let m = fields(cx, body, &here, &["service", "port", "maxTagLength"], ignored)?;
            let service = string(cx, m, &here, "service")?.filter(|s| !s.is_empty());
            let service = service.ok_or_else(|| cx.error(&path(&here, "service"), "required"))?;
            let port = number(cx, m, &here, "port")?.ok_or_else(|| cx.error(&path(&here, "port"), "required"))?;
            let port = (port.fract() == 0.0 && (1.0..=65535.0).contains(&port))
                .then_some(port as u16)
                .ok_or_else(|| cx.error(&path(&here, "port"), format!("{port} is not a port (1-65535)")))?;
            let max = number(cx, m, &here, "maxTagLength")?.unwrap_or(256.0);
            let max_tag_length =
                (max.fract() == 0.0 && (1.0..=u32::MAX as f64).contains(&max))
                    .then_some(max as u32)
                    .ok_or_else(|| cx.error(&path(&here, "maxTagLength"), format!("{max} is not a positive length")))?;
            let kind = if *kind == "zipkin" { TracerKind::Zipkin } else { TracerKind::OpenTelemetry };
            Provider::Tracing(TracingProvider { kind, service, port, max_tag_length })
        }
        "envoyFileAccessLog" => Provider::FileLog(file_access_log(cx, body, &here)?),
        other => {
            return Err(cx.error(
                &here,
                format!(
                    "`{other}` providers are not supported by meshd (zipkin, opentelemetry and envoyFileAccessLog are)"
                ),
            ))
        }
    };
    Ok((name, provider))
}

fn file_access_log(cx: &mut Cx<'_>, body: &Value, at: &str) -> Result<FileLogProvider, Diagnostic> {
    let m = fields(cx, body, at, &["path", "logFormat"], &[])?;
    let path_value = string(cx, m, at, "path")?.filter(|p| !p.is_empty());
    let file = path_value.ok_or_else(|| cx.error(&path(at, "path"), "required"))?;
    let mut out =
        FileLogProvider { path: file, encoding: LogEncoding::Text, format: None, json_labels: BTreeMap::new() };
    if let Some(format) = m.get("logFormat").filter(|v| !v.is_null()) {
        let here = path(at, "logFormat");
        let f = fields(cx, format, &here, &["text", "labels"], &[])?;
        out.format = string(cx, f, &here, "text")?.filter(|t| !t.is_empty());
        if let Some(labels) = f.get("labels").filter(|v| !v.is_null()) {
            let Value::Object(labels) = labels else {
                return Err(cx.error(&path(&here, "labels"), "must be a mapping"));
            };
            for (k, v) in labels {
                let Value::String(s) = v else {
                    return Err(cx.error(&path(&here, &format!("labels.{k}")), "must be an Envoy format string"));
                };
                out.json_labels.insert(k.clone(), s.clone());
            }
            out.encoding = LogEncoding::Json;
        }
        if out.format.is_some() && !out.json_labels.is_empty() {
            return Err(cx.error(&here, "`text` and `labels` are exclusive"));
        }
    }
    Ok(out)
}

fn check_defaults(cx: &Cx<'_>, t: &MeshTelemetry) -> Result<(), Diagnostic> {
    for (i, name) in t.default_tracing.iter().enumerate() {
        if !matches!(t.providers.get(name), Some(Provider::Tracing(_))) {
            return Err(cx.error(
                &format!("defaultProviders.tracing[{i}]"),
                format!("{name:?} is not a zipkin or opentelemetry provider of extensionProviders"),
            ));
        }
    }
    if t.default_tracing.len() > 1 {
        return Err(cx.error("defaultProviders.tracing", "Envoy sends spans to one tracer: name one provider"));
    }
    for (i, name) in t.default_access_logging.iter().enumerate() {
        if !matches!(t.provider(name), Some(Provider::FileLog(_))) {
            return Err(cx.error(
                &format!("defaultProviders.accessLogging[{i}]"),
                format!("{name:?} is not `envoy` or an envoyFileAccessLog provider of extensionProviders"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
