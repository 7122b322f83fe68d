//! Kubelet HTTP probes under capture. Injection rewrites each app container's `httpGet`
//! liveness/readiness/startup probe to ask the sidecar's health listener
//! (`<pod ip>:15021` + [`AppProbe::sidecar_path`]-style path); the sidecar forwards to the
//! app's original port and path. The originals travel to the sidecar as JSON in the
//! `AMIME_APP_PROBES` environment variable ([`AppProbes`]).
//!
//! Rewritten: each `httpGet` liveness/readiness/startup probe of the app containers and of
//! the pod's own native sidecars (init containers with `restartPolicy: Always`; not their
//! startup probes, which must pass before the injected sidecar starts), its timing fields kept. Left alone: `tcpSocket`, `grpc` and `exec` probes, `httpGet` probes whose
//! named port the container does not declare (kubelet would fail them anyway), and those the
//! sidecar could not replay (a path with a space, a control character in a header).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Prefix of the paths kubelet asks the sidecar: `/app-health/<container>/<livez|readyz|startupz>`.
pub const APP_HEALTH_PREFIX: &str = "/app-health/";

/// The scheme of the app's own probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum ProbeScheme {
    #[default]
    Http,
    /// The sidecar talks TLS to the app without verifying its certificate, as kubelet does.
    Https,
}

/// A header kubelet would have sent (`httpGet.httpHeaders`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeHeader {
    pub name: String,
    pub value: String,
}

/// The app's original `httpGet` probe, as the sidecar replays it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppProbe {
    /// The app's port (named ports resolved at injection).
    pub port: u16,
    /// The app's path (with query), `/` when the probe had none.
    pub path: String,
    #[serde(default)]
    pub scheme: ProbeScheme,
    /// `httpGet.host`, if set (kubelet's default is the pod IP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ProbeHeader>,
}

/// Sidecar path (`/app-health/<container>/<kind>`) → the app's original probe.
pub type AppProbes = BTreeMap<String, AppProbe>;

/// The probes rewritten and the name of each in the sidecar path.
pub const PROBE_KINDS: [(&str, &str); 3] =
    [("livenessProbe", "livez"), ("readinessProbe", "readyz"), ("startupProbe", "startupz")];

/// The sidecar path kubelet asks for the `kind` (`livez`, `readyz`, `startupz`) probe of
/// `container`.
pub fn sidecar_path(container: &str, kind: &str) -> String {
    format!("{APP_HEALTH_PREFIX}{container}/{kind}")
}

/// One probe injection rewrites.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRewrite {
    /// `/app-health/<container>/<kind>`.
    pub sidecar_path: String,
    /// What the sidecar replays.
    pub original: AppProbe,
    /// JSON pointer tokens of the probe's `httpGet` in the pod
    /// (`spec`, `containers`, `0`, `readinessProbe`, `httpGet`).
    pub http_get_path: Vec<String>,
    /// The new `httpGet`: the sidecar's health port and path.
    pub http_get: Value,
}

/// The probes of `pod` to rewrite, in pod order (containers, then the pod's own native
/// sidecars among its init containers).
pub fn rewrite_probes(pod: &Value) -> Vec<ProbeRewrite> {
    let mut out = Vec::new();
    for list in ["containers", "initContainers"] {
        let Some(containers) = pod["spec"][list].as_array() else { continue };
        for (i, container) in containers.iter().enumerate() {
            if list == "initContainers" && container["restartPolicy"] != "Always" {
                continue;
            }
            let Some(name) = container["name"].as_str() else { continue };
            for (field, kind) in PROBE_KINDS {
                // The pod's own native sidecars start before ours: a startup probe through
                // the sidecar could never pass (ours waits for theirs to have started).
                if list == "initContainers" && field == "startupProbe" {
                    continue;
                }
                let Some(original) = app_probe(container, &container[field]["httpGet"]) else { continue };
                let sidecar_path = sidecar_path(name, kind);
                // One the sidecar's bootstrap would refuse stays as it is: kubelet can still
                // run it, a sidecar that refuses its bootstrap never starts.
                let single = AppProbes::from([(sidecar_path.clone(), original.clone())]);
                if crate::bootstrap::health::validate(&single).is_err() {
                    continue;
                }
                out.push(ProbeRewrite {
                    http_get: json!({ "path": sidecar_path, "port": crate::bootstrap::HEALTH_PORT, "scheme": "HTTP" }),
                    sidecar_path,
                    original,
                    http_get_path: ["spec", list, &i.to_string(), field, "httpGet"].map(String::from).into(),
                });
            }
        }
    }
    out
}

/// The app's probe as the sidecar replays it; `None` when `http_get` is absent or cannot
/// be replayed (an undeclared named port, an unknown scheme).
fn app_probe(container: &Value, http_get: &Value) -> Option<AppProbe> {
    let http_get = http_get.as_object()?;
    let port = match &http_get.get("port")? {
        Value::Number(n) => u16::try_from(n.as_u64()?).ok().filter(|p| *p != 0)?,
        Value::String(s) => match s.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => named_port(container, s)?,
        },
        _ => return None,
    };
    let scheme = match http_get.get("scheme").and_then(Value::as_str) {
        None | Some("HTTP") => ProbeScheme::Http,
        Some("HTTPS") => ProbeScheme::Https,
        Some(_) => return None,
    };
    let path = match http_get.get("path").and_then(Value::as_str) {
        None | Some("") => "/".to_string(),
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => format!("/{p}"),
    };
    let headers = http_get
        .get("httpHeaders")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|h| {
                    Some(ProbeHeader { name: h["name"].as_str()?.to_string(), value: h["value"].as_str()?.to_string() })
                })
                .collect()
        })
        .unwrap_or_default();
    let host = http_get.get("host").and_then(Value::as_str).filter(|h| !h.is_empty()).map(String::from);
    Some(AppProbe { port, path, scheme, host, headers })
}

fn named_port(container: &Value, name: &str) -> Option<u16> {
    container["ports"].as_array()?.iter().find(|p| p["name"] == name).and_then(|p| {
        let port = p["containerPort"].as_u64()?;
        u16::try_from(port).ok().filter(|p| *p != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_probes_from_http_get() {
        let container = json!({ "name": "app", "ports": [{ "name": "http", "containerPort": 8080 }] });
        let cases = [
            (
                json!({ "port": 8080 }),
                Some(AppProbe { port: 8080, path: "/".into(), scheme: ProbeScheme::Http, host: None, headers: vec![] }),
            ),
            (
                json!({ "port": "http", "path": "ready?x=1", "scheme": "HTTPS", "host": "app.local",
                     "httpHeaders": [{ "name": "X-Probe", "value": "1" }] }),
                Some(AppProbe {
                    port: 8080,
                    path: "/ready?x=1".into(),
                    scheme: ProbeScheme::Https,
                    host: Some("app.local".into()),
                    headers: vec![ProbeHeader { name: "X-Probe".into(), value: "1".into() }],
                }),
            ),
            (
                json!({ "port": "9090", "path": "/h" }),
                Some(AppProbe {
                    port: 9090,
                    path: "/h".into(),
                    scheme: ProbeScheme::Http,
                    host: None,
                    headers: vec![],
                }),
            ),
            (json!({ "port": "metrics" }), None),
            (json!({ "port": 0 }), None),
            (json!({ "port": 70000 }), None),
            (json!({ "port": 80, "scheme": "FTP" }), None),
            (json!({ "path": "/" }), None),
            (json!(null), None),
        ];
        for (http_get, want) in cases {
            assert_eq!(app_probe(&container, &http_get), want, "{http_get}");
        }
    }

    #[test]
    fn app_probes_json_round_trips() {
        let probes: AppProbes = [(
            sidecar_path("app", "readyz"),
            AppProbe { port: 8443, path: "/ready".into(), scheme: ProbeScheme::Https, host: None, headers: vec![] },
        )]
        .into();
        let text = serde_json::to_string(&probes).unwrap();
        assert_eq!(text, r#"{"/app-health/app/readyz":{"port":8443,"path":"/ready","scheme":"HTTPS"}}"#);
        assert_eq!(serde_json::from_str::<AppProbes>(&text).unwrap(), probes);
    }
}
