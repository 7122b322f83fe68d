//! Sidecar injection as a pure function: (pod, whether its namespace enables injection,
//! settings) → an RFC 6902 JSON patch, shared by meshd's webhook and `meshctl inject`.
//!
//! SKELETON: the types are the contract; the body is being written (issue 8).

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

/// Injects the sidecar into `pod` (a Pod object as JSON) if the rules say so.
/// `namespace_enabled`: the pod's namespace carries `amime-injection=enabled` (meshctl
/// inject passes `true`: injecting is what the user asked for).
pub fn inject(
    pod: &serde_json::Value,
    namespace_enabled: bool,
    settings: &InjectionSettings,
) -> Result<Outcome, InjectError> {
    let _ = (pod, namespace_enabled, settings);
    Ok(Outcome::Skipped(SkipReason::NotEnabled))
}
