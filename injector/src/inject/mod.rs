//! Sidecar injection as a pure function: (pod, whether its namespace enables injection,
//! settings) → an RFC 6902 JSON patch, shared by meshd's webhook and `meshctl inject`.
//!
//! The decision ([`decide`]), in order:
//! 1. a pod that already carries the sidecar (the status annotation, or a container named
//!    `amime-proxy`/`amime-init`) is left alone: injection is idempotent;
//! 2. the pod's `sidecar.amime.dev/inject` annotation, else its label of that name,
//!    `"true"`/`"false"`, overrides the namespace (any other value is an error);
//! 3. without an override, the namespace label decides;
//! 4. `hostNetwork` pods are never injected (capture would take over the node's network).
//!
//! The patch ([`patch`]) appends the init container `amime-init` (capture rules) and the
//! native sidecar `amime-proxy` after the pod's own init containers, adds the two volumes,
//! rewrites the app's HTTP probes to go through the sidecar ([`crate::probes`]) and records
//! what it did in the status annotation.

mod patch;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conventions::{INIT_CONTAINER, INJECT_ANNOTATION, POD_INFO_VOLUME, PROXY_CONFIG_VOLUME, PROXY_CONTAINER};
use crate::settings::InjectionSettings;

/// Why a pod was left alone (not an error: the pod is admitted unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Neither the namespace label nor the pod's annotation/label asks for injection.
    NotEnabled,
    /// `sidecar.amime.dev/inject: "false"` on the pod.
    DisabledByPod,
    /// `spec.hostNetwork: true`: capture would take over the node's network.
    HostNetwork,
    /// The pod already carries the sidecar (injection is idempotent).
    AlreadyInjected,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SkipReason::NotEnabled => "injection is not enabled for the namespace or the pod",
            SkipReason::DisabledByPod => "the pod opts out (sidecar.amime.dev/inject: \"false\")",
            SkipReason::HostNetwork => "the pod uses the host network",
            SkipReason::AlreadyInjected => "the pod is already injected",
        })
    }
}

/// The result of injecting one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Apply this patch to the pod (paths relative to the Pod object).
    Injected(json_patch::Patch),
    Skipped(SkipReason),
}

/// A pod injection cannot handle; the pod is refused with this message (it names the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InjectError {
    /// JSON path of the offending field, e.g. `metadata.annotations["traffic.amime.dev/excludeOutboundPorts"]`.
    pub field: String,
    pub message: String,
}

impl InjectError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// The value of the status annotation (`sidecar.amime.dev/status`): what injection added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InjectionStatus {
    /// The injected init containers, in order (`amime-init`, `amime-proxy`).
    pub init_containers: Vec<String>,
    pub volumes: Vec<String>,
    /// The image of the injected containers.
    pub image: String,
    /// The app containers whose HTTP probes now go through the sidecar.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewritten_probes: Vec<String>,
}

/// Injects the sidecar into `pod` (a Pod object as JSON) if the rules say so.
/// `namespace_enabled`: the pod's namespace carries `amime-injection=enabled` (meshctl
/// inject passes `true`: injecting is what the user asked for).
pub fn inject(
    pod: &serde_json::Value,
    namespace_enabled: bool,
    settings: &InjectionSettings,
) -> Result<Outcome, InjectError> {
    if let Some(reason) = decide(pod, namespace_enabled)? {
        return Ok(Outcome::Skipped(reason));
    }
    check_reserved_volumes(pod)?;
    patch::patch(pod, settings).map(Outcome::Injected)
}

/// Whether `pod` is left alone (`Some(reason)`) or injected (`None`).
pub fn decide(pod: &Value, namespace_enabled: bool) -> Result<Option<SkipReason>, InjectError> {
    if is_injected(pod) {
        return Ok(Some(SkipReason::AlreadyInjected));
    }
    match pod_override(pod)? {
        Some(false) => return Ok(Some(SkipReason::DisabledByPod)),
        None if !namespace_enabled => return Ok(Some(SkipReason::NotEnabled)),
        _ => {}
    }
    if pod["spec"]["hostNetwork"] == Value::Bool(true) {
        return Ok(Some(SkipReason::HostNetwork));
    }
    Ok(None)
}

/// The pod carries the status annotation or one of the injected containers.
pub fn is_injected(pod: &Value) -> bool {
    if pod["metadata"]["annotations"].get(crate::conventions::STATUS_ANNOTATION).is_some() {
        return true;
    }
    ["containers", "initContainers"].iter().any(|list| {
        pod["spec"][list].as_array().is_some_and(|containers| {
            containers.iter().any(|c| matches!(c["name"].as_str(), Some(PROXY_CONTAINER | INIT_CONTAINER)))
        })
    })
}

/// The pod's own say: its `sidecar.amime.dev/inject` annotation, else its label.
fn pod_override(pod: &Value) -> Result<Option<bool>, InjectError> {
    for map in ["annotations", "labels"] {
        let Some(value) = pod["metadata"][map].get(INJECT_ANNOTATION) else { continue };
        let field = format!("metadata.{map}[{INJECT_ANNOTATION:?}]");
        return match value.as_str() {
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(InjectError::new(field, format!("expected \"true\" or \"false\", got {other:?}"))),
            None => Err(InjectError::new(
                field,
                format!("expected the string \"true\" or \"false\", got {value} (quote the value)"),
            )),
        };
    }
    Ok(None)
}

/// A volume of the pod's own may not take one of our names.
fn check_reserved_volumes(pod: &Value) -> Result<(), InjectError> {
    let Some(volumes) = pod["spec"]["volumes"].as_array() else { return Ok(()) };
    for (i, volume) in volumes.iter().enumerate() {
        if let Some(name @ (PROXY_CONFIG_VOLUME | POD_INFO_VOLUME)) = volume["name"].as_str() {
            return Err(InjectError::new(
                format!("spec.volumes[{i}].name"),
                format!("the volume name {name:?} is reserved for the injected sidecar; rename the pod's volume"),
            ));
        }
    }
    Ok(())
}
