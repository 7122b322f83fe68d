//! Kubelet HTTP probes under capture. Injection rewrites each app container's `httpGet`
//! liveness/readiness/startup probe to ask the sidecar's health listener
//! (`<pod ip>:15021` + [`AppProbe::sidecar_path`]-style path); the sidecar forwards to the
//! app's original port and path. The originals travel to the sidecar as JSON in the
//! `AMIME_APP_PROBES` environment variable ([`AppProbes`]).
//!
//! SKELETON: types are the contract; the rewriting is being written (issue 8).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Prefix of the paths kubelet asks the sidecar: `/app-health/<container>/<livez|readyz|startupz>`.
pub const APP_HEALTH_PREFIX: &str = "/app-health/";

/// The scheme of the app's own probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
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
