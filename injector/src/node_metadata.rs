//! The contract between a sidecar's bootstrap and meshd: the `node.metadata` keys the
//! bootstrap writes and meshd reads to identify a proxy (MISSION §2), and the
//! interception mode and the proxy kind (sidecar or gateway). One home for both sides.

/// The proxy's namespace.
pub const NAMESPACE: &str = "NAMESPACE";
/// The workload's labels (a map of strings).
pub const LABELS: &str = "LABELS";
/// The pod's IPs, comma-separated; the first is where an explicit proxy listens.
pub const INSTANCE_IPS: &str = "INSTANCE_IPS";
/// The pod's service account.
pub const SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
/// `REDIRECT` or `NONE` ([`InterceptionMode::metadata_value`]).
pub const INTERCEPTION_MODE: &str = "INTERCEPTION_MODE";
/// `sidecar` or `router` ([`ProxyKind::metadata_value`]); unset means `sidecar`.
pub const PROXY_TYPE: &str = "PROXY_TYPE";

/// What the proxy is (`node.metadata.PROXY_TYPE`, Istio's node type names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub enum ProxyKind {
    /// A workload's sidecar: outbound and inbound listeners (15001, 15006).
    #[default]
    Sidecar,
    /// A standalone ingress gateway: only the listeners of the Gateways whose
    /// `spec.selector` matches its labels.
    Gateway,
}

impl ProxyKind {
    /// The value Envoy sees in `node.metadata.PROXY_TYPE`.
    pub fn metadata_value(self) -> &'static str {
        match self {
            ProxyKind::Sidecar => "sidecar",
            ProxyKind::Gateway => "router",
        }
    }

    /// The kind a `node.metadata.PROXY_TYPE` value names (exactly as written).
    pub fn from_metadata_value(value: &str) -> Option<ProxyKind> {
        match value {
            "sidecar" => Some(ProxyKind::Sidecar),
            "router" => Some(ProxyKind::Gateway),
            _ => None,
        }
    }

    /// The user-facing name (`sidecar` / `gateway`).
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::Sidecar => "sidecar",
            ProxyKind::Gateway => "gateway",
        }
    }
}

/// How application traffic reaches the sidecar (`node.metadata.INTERCEPTION_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub enum InterceptionMode {
    /// "transparent": iptables capture (`REDIRECT`): outbound to 15001 (original
    /// destination), inbound to 15006. The default in Kubernetes.
    #[default]
    Redirect,
    /// "explicit": the application uses the sidecar as an HTTP proxy on `<ip>:15001`
    /// (`NONE`); no capture.
    None,
}

impl InterceptionMode {
    /// The value Envoy sees in `node.metadata.INTERCEPTION_MODE`.
    pub fn metadata_value(self) -> &'static str {
        match self {
            InterceptionMode::Redirect => "REDIRECT",
            InterceptionMode::None => "NONE",
        }
    }

    /// The mode a `node.metadata.INTERCEPTION_MODE` value names (exactly as written).
    pub fn from_metadata_value(value: &str) -> Option<InterceptionMode> {
        match value {
            "REDIRECT" => Some(InterceptionMode::Redirect),
            "NONE" => Some(InterceptionMode::None),
            _ => None,
        }
    }

    /// The user-facing name (`transparent` / `explicit`).
    pub fn name(self) -> &'static str {
        match self {
            InterceptionMode::Redirect => "transparent",
            InterceptionMode::None => "explicit",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_values_round_trip() {
        for mode in [InterceptionMode::Redirect, InterceptionMode::None] {
            assert_eq!(InterceptionMode::from_metadata_value(mode.metadata_value()), Some(mode));
        }
        assert_eq!(InterceptionMode::from_metadata_value("TPROXY"), None);
        for kind in [ProxyKind::Sidecar, ProxyKind::Gateway] {
            assert_eq!(ProxyKind::from_metadata_value(kind.metadata_value()), Some(kind));
        }
        assert_eq!(ProxyKind::from_metadata_value("gateway"), None);
    }
}
