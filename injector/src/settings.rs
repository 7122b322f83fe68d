//! Mesh-wide injection settings: what meshd's webhook and `meshctl inject` put into pods.

use crate::bootstrap::XdsApi;
use crate::capture::DEFAULT_PROXY_UID;

/// Default image of the sidecar and init containers (Envoy + `amime-agent` + iptables).
pub const DEFAULT_PROXY_IMAGE: &str = concat!("ghcr.io/amime/proxy:", env!("CARGO_PKG_VERSION"));
/// Default xDS address sidecars dial: meshd's Service in the install namespace.
pub const DEFAULT_XDS_ADDRESS: &str = "amime-meshd.amime-system.svc:15010";

/// What injection puts into a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectionSettings {
    /// Image of both injected containers.
    pub image: String,
    /// `imagePullPolicy` of both injected containers.
    pub image_pull_policy: String,
    /// Uid (and gid) the sidecar runs as; capture skips its traffic.
    pub proxy_uid: u32,
    /// meshd's xDS address as the sidecar dials it.
    pub xds_address: String,
    pub xds_api: XdsApi,
    /// Resources of the sidecar container.
    pub proxy_resources: Resources,
    /// Resources of the init container.
    pub init_resources: Resources,
}

/// A container's `resources` (Kubernetes quantities such as `100m`, `128Mi`); an empty
/// string leaves that request or limit out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

/// Sidecar defaults (as Istio's): requests 100m / 128Mi, limits 2 CPUs / 1Gi.
pub const DEFAULT_PROXY_RESOURCES: [&str; 4] = ["100m", "128Mi", "2", "1Gi"];
/// Init container defaults: requests 10m / 10Mi, limits 100m / 50Mi.
pub const DEFAULT_INIT_RESOURCES: [&str; 4] = ["10m", "10Mi", "100m", "50Mi"];

impl Resources {
    /// From `[cpu request, memory request, cpu limit, memory limit]`.
    pub fn new([cpu_request, memory_request, cpu_limit, memory_limit]: [&str; 4]) -> Self {
        Self {
            cpu_request: cpu_request.into(),
            memory_request: memory_request.into(),
            cpu_limit: cpu_limit.into(),
            memory_limit: memory_limit.into(),
        }
    }

    /// The container's `resources` object (empty values left out).
    pub fn to_json(&self) -> serde_json::Value {
        let list = |cpu: &str, memory: &str| {
            let mut map = serde_json::Map::new();
            for (key, value) in [("cpu", cpu), ("memory", memory)] {
                if !value.is_empty() {
                    map.insert(key.into(), value.into());
                }
            }
            map
        };
        let mut out = serde_json::Map::new();
        for (key, map) in [
            ("requests", list(&self.cpu_request, &self.memory_request)),
            ("limits", list(&self.cpu_limit, &self.memory_limit)),
        ] {
            if !map.is_empty() {
                out.insert(key.into(), map.into());
            }
        }
        out.into()
    }
}

/// Checks a Kubernetes resource quantity (`100m`, `1.5`, `128Mi`, `1e3`); empty is allowed
/// (it means "not set").
pub fn check_quantity(value: &str) -> Result<String, String> {
    const SUFFIXES: [&str; 14] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P"];
    if value.is_empty() {
        return Ok(String::new());
    }
    let number =
        SUFFIXES.iter().find_map(|s| value.strip_suffix(s)).or_else(|| value.strip_suffix('E')).unwrap_or(value);
    let number = number.strip_prefix('+').unwrap_or(number);
    let (mantissa, exponent) = match number.split_once(['e', 'E']) {
        Some((m, e)) if number.len() == value.len() => (m, Some(e)),
        _ => (number, None),
    };
    let mantissa_ok = !mantissa.is_empty()
        && mantissa != "."
        && mantissa.chars().all(|c| c.is_ascii_digit() || c == '.')
        && mantissa.matches('.').count() <= 1;
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    if mantissa_ok && exponent_ok {
        Ok(value.to_string())
    } else {
        Err(format!("{value:?} is not a Kubernetes quantity (e.g. 100m, 0.5, 128Mi, 1Gi)"))
    }
}

/// The sidecar's uid: not root (the sidecar runs with `runAsNonRoot: true`, and the capture
/// would let every root process's traffic through).
pub fn check_proxy_uid(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(0) => Err("the sidecar cannot run as root (uid 0): kubelet refuses runAsNonRoot with uid 0".into()),
        Ok(uid) => Ok(uid),
        Err(_) => Err(format!("{value:?} is not a uid")),
    }
}

/// Checks an xDS address as the sidecar's bootstrap will (`HOST:PORT`); every injected
/// sidecar refuses to start with one that fails.
pub fn check_xds_address(value: &str) -> Result<String, String> {
    value.parse::<crate::bootstrap::XdsAddress>().map(|_| value.to_string()).map_err(|e| e.to_string())
}

impl Default for InjectionSettings {
    fn default() -> Self {
        Self {
            image: DEFAULT_PROXY_IMAGE.to_string(),
            image_pull_policy: "IfNotPresent".to_string(),
            proxy_uid: DEFAULT_PROXY_UID,
            xds_address: DEFAULT_XDS_ADDRESS.to_string(),
            xds_api: XdsApi::Delta,
            proxy_resources: Resources::new(DEFAULT_PROXY_RESOURCES),
            init_resources: Resources::new(DEFAULT_INIT_RESOURCES),
        }
    }
}

/// Command-line flags for [`InjectionSettings`], shared by meshd and `meshctl inject`.
#[cfg(feature = "cli")]
#[derive(Debug, Clone, clap::Args)]
pub struct InjectionArgs {
    /// Image of the injected sidecar and init containers.
    #[arg(long = "proxy-image", value_name = "IMAGE", default_value = DEFAULT_PROXY_IMAGE)]
    pub image: String,
    /// imagePullPolicy of the injected containers.
    #[arg(long = "proxy-image-pull-policy", value_name = "POLICY", default_value = "IfNotPresent",
          value_parser = ["Always", "IfNotPresent", "Never"])]
    pub image_pull_policy: String,
    /// Uid (and gid) the sidecar runs as; the capture rules skip its traffic.
    #[arg(long = "proxy-uid", value_name = "UID", default_value_t = DEFAULT_PROXY_UID, value_parser = check_proxy_uid)]
    pub proxy_uid: u32,
    /// meshd's xDS address as injected sidecars dial it, HOST:PORT.
    #[arg(long = "proxy-xds-address", value_name = "HOST:PORT", default_value = DEFAULT_XDS_ADDRESS,
          value_parser = check_xds_address)]
    pub xds_address: String,
    /// The sidecar's CPU request (empty: none).
    #[arg(long, value_name = "QUANTITY", default_value = DEFAULT_PROXY_RESOURCES[0], value_parser = check_quantity)]
    pub proxy_cpu_request: String,
    /// The sidecar's memory request (empty: none).
    #[arg(long, value_name = "QUANTITY", default_value = DEFAULT_PROXY_RESOURCES[1], value_parser = check_quantity)]
    pub proxy_memory_request: String,
    /// The sidecar's CPU limit (empty: none).
    #[arg(long, value_name = "QUANTITY", default_value = DEFAULT_PROXY_RESOURCES[2], value_parser = check_quantity)]
    pub proxy_cpu_limit: String,
    /// The sidecar's memory limit (empty: none).
    #[arg(long, value_name = "QUANTITY", default_value = DEFAULT_PROXY_RESOURCES[3], value_parser = check_quantity)]
    pub proxy_memory_limit: String,
}

#[cfg(feature = "cli")]
impl InjectionArgs {
    pub fn settings(&self) -> InjectionSettings {
        InjectionSettings {
            image: self.image.clone(),
            image_pull_policy: self.image_pull_policy.clone(),
            proxy_uid: self.proxy_uid,
            xds_address: self.xds_address.clone(),
            proxy_resources: Resources {
                cpu_request: self.proxy_cpu_request.clone(),
                memory_request: self.proxy_memory_request.clone(),
                cpu_limit: self.proxy_cpu_limit.clone(),
                memory_limit: self.proxy_memory_limit.clone(),
            },
            ..InjectionSettings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for good in ["", "100m", "2", "0.5", "128Mi", "1Gi", "1e3", "1E", "+1k", ".5"] {
            assert_eq!(check_quantity(good).as_deref(), Ok(good), "{good}");
        }
        for bad in ["m", "1 Gi", "1GB", "-", "1.2.3", "abc", "1e", "."] {
            let err = check_quantity(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn resources_leave_out_empty_values() {
        let json = Resources::new(["100m", "", "", "1Gi"]).to_json();
        assert_eq!(json, serde_json::json!({"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}));
        assert_eq!(Resources::new(["", "", "", ""]).to_json(), serde_json::json!({}));
    }
}

#[cfg(all(test, feature = "cli"))]
mod cli_tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        injection: InjectionArgs,
    }

    /// Every injected sidecar dials this address and refuses to start without a valid one:
    /// a bad value is refused where it is given, not in every pod.
    #[test]
    fn a_bad_xds_address_is_refused_at_the_flag() {
        for bad in ["meshd", "meshd:0", "meshd:http", "bad_host!:15010"] {
            let err = Cli::try_parse_from(["x", "--proxy-xds-address", bad]).err().map(|e| e.to_string());
            assert!(err.as_deref().is_some_and(|e| e.contains("--proxy-xds-address")), "{bad}: {err:?}");
        }
        // The sidecar runs with runAsNonRoot: kubelet would refuse uid 0 in every pod.
        let err = Cli::try_parse_from(["x", "--proxy-uid", "0"]).err().map(|e| e.to_string());
        assert!(err.as_deref().is_some_and(|e| e.contains("--proxy-uid") && e.contains("root")), "{err:?}");
        let ok = Cli::try_parse_from(["x", "--proxy-xds-address", "10.0.0.1:15010"]).unwrap();
        assert_eq!(ok.injection.settings().xds_address, "10.0.0.1:15010");
    }
}
