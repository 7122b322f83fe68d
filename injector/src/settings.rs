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
}

impl Default for InjectionSettings {
    fn default() -> Self {
        Self {
            image: DEFAULT_PROXY_IMAGE.to_string(),
            image_pull_policy: "IfNotPresent".to_string(),
            proxy_uid: DEFAULT_PROXY_UID,
            xds_address: DEFAULT_XDS_ADDRESS.to_string(),
            xds_api: XdsApi::Delta,
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
    #[arg(long = "proxy-uid", value_name = "UID", default_value_t = DEFAULT_PROXY_UID)]
    pub proxy_uid: u32,
    /// meshd's xDS address as injected sidecars dial it, HOST:PORT.
    #[arg(long = "proxy-xds-address", value_name = "HOST:PORT", default_value = DEFAULT_XDS_ADDRESS)]
    pub xds_address: String,
}

#[cfg(feature = "cli")]
impl InjectionArgs {
    pub fn settings(&self) -> InjectionSettings {
        InjectionSettings {
            image: self.image.clone(),
            image_pull_policy: self.image_pull_policy.clone(),
            proxy_uid: self.proxy_uid,
            xds_address: self.xds_address.clone(),
            ..InjectionSettings::default()
        }
    }
}
