//! Which kinds meshd reads, which it knows but does not use, and how an object of any
//! other apiVersion/kind is reported.

use super::schema::suggest;
use super::Severity;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    /// meshd reads and validates it.
    Read,
    /// An Istio (or Gateway API) kind meshd does not implement yet.
    NotImplemented,
    /// A Kubernetes kind that says nothing about routing.
    Unused,
}

struct Row {
    group: &'static str,
    versions: &'static [&'static str],
    kinds: &'static [&'static str],
    use_: Use,
}

const ISTIO_NETWORKING: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const GATEWAY_API: &[&str] = &["v1", "v1beta1", "v1alpha2", "v1alpha3"];

const ROWS: &[Row] = &[
    Row { group: "", versions: &["v1"], kinds: &["Namespace", "Service", "Pod", "Secret", "Node"], use_: Use::Read },
    Row { group: "discovery.k8s.io", versions: &["v1"], kinds: &["EndpointSlice"], use_: Use::Read },
    Row {
        group: "networking.istio.io",
        versions: ISTIO_NETWORKING,
        kinds: &["VirtualService", "DestinationRule", "Gateway", "ServiceEntry"],
        use_: Use::Read,
    },
    Row {
        group: "networking.amime.dev",
        versions: &["v1"],
        kinds: &["VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "RateLimit"],
        use_: Use::Read,
    },
    Row {
        group: "networking.istio.io",
        versions: ISTIO_NETWORKING,
        kinds: &["Sidecar", "EnvoyFilter", "WorkloadEntry", "WorkloadGroup", "ProxyConfig"],
        use_: Use::NotImplemented,
    },
    Row {
        group: "security.istio.io",
        versions: &["v1", "v1beta1"],
        kinds: &["AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication"],
        use_: Use::NotImplemented,
    },
    Row { group: "telemetry.istio.io", versions: &["v1", "v1alpha1"], kinds: &["Telemetry"], use_: Use::Read },
    Row { group: "telemetry.amime.dev", versions: &["v1"], kinds: &["Telemetry"], use_: Use::Read },
    Row { group: "extensions.istio.io", versions: &["v1alpha1"], kinds: &["WasmPlugin"], use_: Use::NotImplemented },
    Row {
        group: "gateway.networking.k8s.io",
        versions: GATEWAY_API,
        kinds: &[
            "Gateway",
            "GatewayClass",
            "HTTPRoute",
            "GRPCRoute",
            "TCPRoute",
            "TLSRoute",
            "UDPRoute",
            "ReferenceGrant",
            "BackendTLSPolicy",
        ],
        use_: Use::NotImplemented,
    },
    Row {
        group: "",
        versions: &["v1"],
        kinds: &[
            "ConfigMap",
            "ServiceAccount",
            "PersistentVolumeClaim",
            "PersistentVolume",
            "ReplicationController",
            "Endpoints",
            "LimitRange",
            "ResourceQuota",
            "Event",
            "PodTemplate",
            "Binding",
            "ComponentStatus",
        ],
        use_: Use::Unused,
    },
    Row {
        group: "apps",
        versions: &["v1"],
        kinds: &["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ControllerRevision"],
        use_: Use::Unused,
    },
    Row { group: "batch", versions: &["v1"], kinds: &["Job", "CronJob"], use_: Use::Unused },
    Row { group: "autoscaling", versions: &["v1", "v2"], kinds: &["HorizontalPodAutoscaler"], use_: Use::Unused },
    Row {
        group: "networking.k8s.io",
        versions: &["v1"],
        kinds: &["Ingress", "IngressClass", "NetworkPolicy", "IPAddress", "ServiceCIDR"],
        use_: Use::Unused,
    },
    Row { group: "policy", versions: &["v1"], kinds: &["PodDisruptionBudget"], use_: Use::Unused },
    Row {
        group: "rbac.authorization.k8s.io",
        versions: &["v1"],
        kinds: &["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"],
        use_: Use::Unused,
    },
    Row { group: "apiextensions.k8s.io", versions: &["v1"], kinds: &["CustomResourceDefinition"], use_: Use::Unused },
    Row {
        group: "admissionregistration.k8s.io",
        versions: &["v1"],
        kinds: &[
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ],
        use_: Use::Unused,
    },
    Row {
        group: "storage.k8s.io",
        versions: &["v1"],
        kinds: &["StorageClass", "CSIDriver", "CSINode", "VolumeAttachment", "CSIStorageCapacity"],
        use_: Use::Unused,
    },
    Row { group: "scheduling.k8s.io", versions: &["v1"], kinds: &["PriorityClass"], use_: Use::Unused },
    Row { group: "coordination.k8s.io", versions: &["v1"], kinds: &["Lease"], use_: Use::Unused },
    Row { group: "certificates.k8s.io", versions: &["v1"], kinds: &["CertificateSigningRequest"], use_: Use::Unused },
    Row { group: "node.k8s.io", versions: &["v1"], kinds: &["RuntimeClass"], use_: Use::Unused },
    Row { group: "apiregistration.k8s.io", versions: &["v1"], kinds: &["APIService"], use_: Use::Unused },
    Row { group: "events.k8s.io", versions: &["v1"], kinds: &["Event"], use_: Use::Unused },
];

/// What to do with an object of a given apiVersion and kind.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum KindUse {
    /// A kind meshd reads.
    Read,
    /// Not read: report `message` at `severity` and go on.
    Skip { severity: Severity, field: &'static str, message: String },
    /// A mistake in apiVersion or kind: the object is refused.
    Refuse { field: &'static str, message: String },
}

fn split(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}

fn api_versions(row: &Row) -> String {
    let full =
        row.versions.iter().map(|v| if row.group.is_empty() { (*v).to_owned() } else { format!("{}/{v}", row.group) });
    full.collect::<Vec<_>>().join(", ")
}

fn not_implemented(kind: &str) -> String {
    let unenforced = match kind {
        "AuthorizationPolicy" => Some("its rules are NOT enforced: requests it would deny are allowed"),
        "PeerAuthentication" => Some("its mTLS mode is NOT enforced: plain-text connections are accepted"),
        "RequestAuthentication" => Some("it is NOT enforced: request tokens are not validated"),
        _ => None,
    };
    match unenforced {
        Some(what) => format!("{kind} is not implemented by meshd yet; {what}"),
        None => format!("{kind} is not implemented by meshd yet; it is accepted and has no effect"),
    }
}

/// Classifies `api_version`/`kind`.
pub(super) fn classify(api_version: &str, kind: &str) -> KindUse {
    let (group, version) = split(api_version);
    let in_group: Vec<&Row> = ROWS.iter().filter(|r| r.group == group && r.kinds.contains(&kind)).collect();
    if let Some(row) = in_group.iter().find(|r| r.versions.contains(&version)) {
        return match row.use_ {
            Use::Read => KindUse::Read,
            Use::NotImplemented => {
                KindUse::Skip { severity: Severity::Warning, field: "", message: not_implemented(kind) }
            }
            Use::Unused => KindUse::Skip {
                severity: Severity::Info,
                field: "",
                message: format!("{kind} says nothing meshd uses; ignored"),
            },
        };
    }
    if let Some(row) = in_group.first() {
        if row.use_ == Use::Unused {
            let message = format!("{kind} says nothing meshd uses; ignored");
            return KindUse::Skip { severity: Severity::Info, field: "", message };
        }
        let message = format!("{api_version} is not an API version of {kind}; use one of {}", api_versions(row));
        return KindUse::Refuse { field: "apiVersion", message };
    }
    let elsewhere: Vec<String> = ROWS.iter().filter(|r| r.kinds.contains(&kind)).map(api_versions).collect();
    if !elsewhere.is_empty() {
        let message =
            format!("{kind} is not a kind of {api_version}; its apiVersion is one of {}", elsewhere.join(", "));
        return KindUse::Refuse { field: "apiVersion", message };
    }
    if ROWS.iter().any(|r| r.group == group) {
        let kinds = ROWS.iter().filter(|r| r.group == group).flat_map(|r| r.kinds.iter().copied());
        let message = match suggest(kind, kinds) {
            Some(s) => format!("unknown kind `{kind}` in {api_version}; did you mean `{s}`?"),
            None => format!("unknown kind `{kind}` in {api_version}"),
        };
        return KindUse::Refuse { field: "kind", message };
    }
    if let Some(close) = suggest(group, ROWS.iter().map(|r| r.group).filter(|g| !g.is_empty())) {
        let message = format!("unknown apiVersion `{api_version}`; did you mean `{close}/{version}`?");
        return KindUse::Refuse { field: "apiVersion", message };
    }
    if let Some(close) =
        suggest(kind, ROWS.iter().filter(|r| r.use_ != Use::Unused).flat_map(|r| r.kinds.iter().copied()))
    {
        let message = format!("unknown kind `{kind}` of unknown apiVersion `{api_version}`; did you mean `{close}`?");
        return KindUse::Refuse { field: "kind", message };
    }
    KindUse::Skip {
        severity: Severity::Warning,
        field: "kind",
        message: format!("{kind} ({api_version}) is not a kind meshd knows; ignored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_classified() {
        use Severity::*;
        let skip = |severity, m: &str| (severity, m.to_owned());
        // Ok: read; Err(Ok): skipped with (severity, message part); Err(Err): refused
        // with (field, message part).
        type Want = Result<(), Result<(Severity, String), (&'static str, &'static str)>>;
        let cases: Vec<(&str, &str, Want)> = vec![
            ("v1", "Service", Ok(())),
            ("networking.istio.io/v1", "Gateway", Ok(())),
            ("networking.istio.io/v1alpha3", "ServiceEntry", Ok(())),
            ("networking.istio.io/v1beta1", "VirtualService", Ok(())),
            ("discovery.k8s.io/v1", "EndpointSlice", Ok(())),
            ("networking.amime.dev/v1", "RateLimit", Ok(())),
            ("networking.istio.io/v1", "RateLimit", Err(Err(("apiVersion", "networking.amime.dev/v1")))),
            ("apps/v1", "Deployment", Err(Ok(skip(Info, "ignored")))),
            ("v1", "ConfigMap", Err(Ok(skip(Info, "ignored")))),
            ("apps/v1beta2", "Deployment", Err(Ok(skip(Info, "ignored")))),
            ("security.istio.io/v1", "AuthorizationPolicy", Err(Ok(skip(Warning, "NOT enforced")))),
            ("security.istio.io/v1beta1", "PeerAuthentication", Err(Ok(skip(Warning, "NOT enforced")))),
            ("security.istio.io/v1", "RequestAuthentication", Err(Ok(skip(Warning, "NOT enforced")))),
            ("networking.istio.io/v1", "Sidecar", Err(Ok(skip(Warning, "has no effect")))),
            ("networking.istio.io/v1alpha3", "EnvoyFilter", Err(Ok(skip(Warning, "has no effect")))),
            ("telemetry.istio.io/v1", "Telemetry", Ok(())),
            ("telemetry.istio.io/v1alpha1", "Telemetry", Ok(())),
            ("telemetry.amime.dev/v1", "Telemetry", Ok(())),
            ("gateway.networking.k8s.io/v1", "HTTPRoute", Err(Ok(skip(Warning, "has no effect")))),
            ("cert-manager.io/v1", "Certificate", Err(Ok(skip(Warning, "not a kind meshd knows")))),
            ("v1", "Servcie", Err(Err(("kind", "did you mean `Service`?")))),
            ("networking.istio.io/v1", "VirtualSevice", Err(Err(("kind", "did you mean `VirtualService`?")))),
            (
                "networking.istio.io/v2",
                "VirtualService",
                Err(Err(("apiVersion", "use one of networking.istio.io/v1,"))),
            ),
            ("v1", "Deployment", Err(Err(("apiVersion", "apps/v1")))),
            ("networking.isito.io/v1", "VirtualService", Err(Err(("apiVersion", "not a kind of")))),
            ("networking.isito.io/v1", "Foo", Err(Err(("apiVersion", "did you mean `networking.istio.io/v1`?")))),
            ("example.com/v1", "DestinatonRule", Err(Err(("kind", "did you mean `DestinationRule`?")))),
        ];
        for (api_version, kind, want) in cases {
            let got = classify(api_version, kind);
            match (&got, want) {
                (KindUse::Read, Ok(())) => {}
                (KindUse::Skip { severity, message, .. }, Err(Ok((s, m)))) => {
                    assert_eq!(*severity, s, "{api_version} {kind}: {message}");
                    assert!(message.contains(&m), "{api_version} {kind}: {message}");
                }
                (KindUse::Refuse { field, message }, Err(Err((f, m)))) => {
                    assert_eq!(*field, f, "{api_version} {kind}: {message}");
                    assert!(message.contains(m), "{api_version} {kind}: {message}");
                    assert!(!message.contains(&format!("{api_version},")), "contradicts itself: {message}");
                }
                (got, want) => panic!("{api_version} {kind}: got {got:?}, want {want:?}"),
            }
        }
    }
}
