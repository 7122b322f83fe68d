//! The names injection writes into pods and the in-pod agent reads back: labels,
//! annotations, container and volume names, environment variables and paths. One home for
//! each (MISSION §2); meshd, meshctl, the agent and the tests all use these.

/// Namespace label that turns injection on for the namespace's pods.
pub const NAMESPACE_INJECTION_LABEL: &str = "amime-injection";
/// The value of [`NAMESPACE_INJECTION_LABEL`] that enables injection.
pub const NAMESPACE_INJECTION_ENABLED: &str = "enabled";
/// Pod annotation (or label) `"true"`/`"false"` that overrides the namespace label.
pub const INJECT_ANNOTATION: &str = "sidecar.amime.dev/inject";
/// Pod annotation written by injection: what was injected (JSON); its presence marks the
/// pod as injected.
pub const STATUS_ANNOTATION: &str = "sidecar.amime.dev/status";
/// Pod annotation: outbound ports (comma-separated) that bypass the sidecar.
pub const EXCLUDE_OUTBOUND_PORTS_ANNOTATION: &str = "traffic.amime.dev/excludeOutboundPorts";
/// Pod annotation: inbound ports (comma-separated) that bypass the sidecar.
pub const EXCLUDE_INBOUND_PORTS_ANNOTATION: &str = "traffic.amime.dev/excludeInboundPorts";
/// Pod annotation: outbound CIDRs (comma-separated) that bypass the sidecar (IPv6 ones are
/// accepted and left out: the capture is IPv4 only, so IPv6 traffic bypasses it anyway).
pub const EXCLUDE_OUTBOUND_IP_RANGES_ANNOTATION: &str = "traffic.amime.dev/excludeOutboundIPRanges";

/// The injected sidecar container (Envoy started by `amime-agent proxy`).
pub const PROXY_CONTAINER: &str = "amime-proxy";
/// The injected init container (`amime-agent init`: the capture rules).
pub const INIT_CONTAINER: &str = "amime-init";
/// The in-pod agent binary (both containers run it).
pub const AGENT_BINARY: &str = "amime-agent";

/// emptyDir volume where the agent writes Envoy's bootstrap.
pub const PROXY_CONFIG_VOLUME: &str = "amime-proxy-config";
/// Where [`PROXY_CONFIG_VOLUME`] is mounted in the sidecar.
pub const PROXY_CONFIG_DIR: &str = "/etc/amime/proxy";
/// downwardAPI volume with the pod's labels and annotations.
pub const POD_INFO_VOLUME: &str = "amime-podinfo";
/// Where [`POD_INFO_VOLUME`] is mounted in the sidecar.
pub const POD_INFO_DIR: &str = "/etc/amime/pod";
/// File in [`POD_INFO_DIR`] with the pod's labels (downward API `metadata.labels`).
pub const POD_LABELS_FILE: &str = "labels";
/// File in [`POD_INFO_DIR`] with the pod's annotations (downward API `metadata.annotations`).
pub const POD_ANNOTATIONS_FILE: &str = "annotations";

/// Sidecar environment, filled by the downward API.
pub mod env {
    /// `metadata.name`.
    pub const POD_NAME: &str = "POD_NAME";
    /// `metadata.namespace`.
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    /// `status.podIPs` (comma-separated).
    pub const INSTANCE_IPS: &str = "INSTANCE_IPS";
    /// `spec.serviceAccountName`.
    pub const SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
    /// meshd's xDS address, `HOST:PORT`.
    pub const XDS_ADDRESS: &str = "AMIME_XDS_ADDRESS";
    /// `delta` or `sotw`.
    pub const XDS_API: &str = "AMIME_XDS_API";
    /// The app's rewritten HTTP probes (JSON, see `probes::AppProbes`).
    pub const APP_PROBES: &str = "AMIME_APP_PROBES";
    /// Overrides [`super::POD_INFO_DIR`] (tests run the agent outside a pod).
    pub const POD_INFO_DIR: &str = "AMIME_POD_INFO_DIR";
    /// Overrides [`super::PROXY_CONFIG_DIR`].
    pub const PROXY_CONFIG_DIR: &str = "AMIME_PROXY_CONFIG_DIR";
}
