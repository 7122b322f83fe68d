//! meshd's one typed configuration, parsed from flags and environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::translate::{MeshSettings, OutboundTrafficPolicy};

/// meshd: the Amime service-mesh control plane.
///
/// Reads the mesh (Services, Pods, EndpointSlices, VirtualServices, DestinationRules)
/// from the Kubernetes API (in-cluster, `--kubeconfig`, KUBECONFIG or ~/.kube/config) or,
/// with `--config-dir`, from a directory of Kubernetes-style YAML; translates it to Envoy
/// configuration and serves it to Envoy sidecars over xDS (ADS, state of the world and
/// delta).
#[derive(Debug, Clone, Parser)]
#[command(name = "meshd", version)]
pub struct MeshdConfig {
    /// Directory of Kubernetes-style YAML (*.yaml, *.yml, read recursively, multi-document)
    /// to serve; watched, and changes are pushed live. Hidden files and directories are
    /// skipped; symlinks are followed (a Kubernetes ConfigMap volume works as mounted).
    /// Paths that cannot be read keep what they last held and are reported at /readyz and
    /// /debug/config_errors. Without it meshd reads the Kubernetes API.
    #[arg(long, env = "AMIME_CONFIG_DIR", value_name = "DIR", conflicts_with = "kubeconfig")]
    pub config_dir: Option<PathBuf>,

    /// Kubeconfig file for the Kubernetes API (used when --config-dir is not given).
    /// Without it: KUBECONFIG, then ~/.kube/config, then the in-cluster service account.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace meshd runs in: where its leader-election Lease lives (only the leader
    /// writes CRD status; every replica serves xDS).
    #[arg(long, env = "POD_NAMESPACE", default_value = "amime-system", value_name = "NS")]
    pub namespace: String,

    /// This replica's identity in the leader-election Lease (default: POD_NAME, else the
    /// host name and process id, so two meshd on one machine differ).
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub identity: Option<String>,

    /// Address of the gRPC xDS (ADS) server.
    #[arg(long, env = "AMIME_XDS_ADDR", default_value = "0.0.0.0:15010", value_name = "ADDR")]
    pub xds_addr: SocketAddr,

    /// Address of the monitoring HTTP server (/healthz, /readyz, /metrics, /debug/...).
    #[arg(long, env = "AMIME_MONITORING_ADDR", default_value = "0.0.0.0:15014", value_name = "ADDR")]
    pub monitoring_addr: SocketAddr,

    /// Address of the HTTPS sidecar-injection webhook (`POST /inject`, `GET /healthz`), or
    /// `off`.
    #[arg(long, env = "AMIME_WEBHOOK_ADDR", default_value = "0.0.0.0:15017", value_name = "ADDR|off")]
    pub webhook_addr: crate::webhook::WebhookAddr,

    /// PEM certificate (chain) the webhook serves, e.g. from cert-manager; re-read when the
    /// file changes (a bad new pair is logged and the last good one kept). Without it meshd
    /// generates a CA and a serving certificate (with the Kubernetes source kept in the
    /// Secret amime-webhook-tls of --namespace, shared by replicas, and written into the
    /// MutatingWebhookConfiguration amime-sidecar-injector's caBundle; with --config-dir in
    /// memory, its CA at the monitoring server's /debug/webhook-ca).
    #[arg(long, env = "AMIME_WEBHOOK_CERT", value_name = "FILE", requires = "webhook_key")]
    pub webhook_cert: Option<PathBuf>,

    /// PEM private key of --webhook-cert.
    #[arg(long, env = "AMIME_WEBHOOK_KEY", value_name = "FILE", requires = "webhook_cert")]
    pub webhook_key: Option<PathBuf>,

    /// The webhook's Service name: the generated certificate is for <NAME>, <NAME>.<ns>,
    /// <NAME>.<ns>.svc and <NAME>.<ns>.svc.cluster.local (ns: --namespace), and localhost.
    #[arg(long, env = "AMIME_WEBHOOK_SERVICE", default_value = "amime-meshd", value_name = "NAME")]
    pub webhook_service: String,

    /// What the webhook injects into pods.
    #[command(flatten)]
    pub injection: injector::settings::InjectionArgs,

    /// Push once no change has arrived for this many milliseconds...
    #[arg(long, env = "AMIME_DEBOUNCE_QUIET", default_value_t = 100, value_name = "MS")]
    pub debounce_quiet: u64,

    /// ...or once the oldest unpushed change is this many milliseconds old (at least
    /// --debounce-quiet).
    #[arg(long, env = "AMIME_DEBOUNCE_MAX", default_value_t = 1000, value_name = "MS")]
    pub debounce_max: u64,

    /// A changed file in --config-dir is applied once it has stayed the same for this
    /// many milliseconds (a writer pausing mid-file for less never gets its half-written
    /// content applied; writing a temp file and renaming it over is always safe).
    #[arg(long, env = "AMIME_CONFIG_SETTLE", default_value_t = 50, value_name = "MS")]
    pub config_settle: u64,

    /// Where traffic to destinations outside the mesh registry (services and ServiceEntry
    /// hosts) goes, as Istio's `meshConfig.outboundTrafficPolicy.mode`: ALLOW_ANY passes it
    /// through (by IP, or by name in explicit mode); REGISTRY_ONLY blocks it (HTTP answers
    /// 502 saying why).
    /// Default: the mesh config's `outboundTrafficPolicy.mode`, else ALLOW_ANY; when both
    /// are given the flag wins and a differing file value is reported.
    #[arg(long, env = "AMIME_OUTBOUND_TRAFFIC_POLICY", value_name = "POLICY")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,

    /// Istio `MeshConfig` YAML (the `mesh` key of Istio's `istio` ConfigMap): access logs
    /// (`accessLogFile`, `accessLogEncoding`, `accessLogFormat`), tracing (`enableTracing`,
    /// `defaultConfig.tracing.sampling`, `extensionProviders`, `defaultProviders`),
    /// `outboundTrafficPolicy.mode`, `rootNamespace` (default: --namespace). Watched:
    /// changes are pushed live; a bad version is reported and the last good one kept.
    #[arg(long, env = "AMIME_MESH_CONFIG", value_name = "FILE")]
    pub mesh_config: Option<PathBuf>,

    /// With the Kubernetes source: the ConfigMap in --namespace whose key `mesh` holds the
    /// mesh config (the same YAML as --mesh-config; Istio keeps it in the ConfigMap `istio`
    /// of istio-system). Watched: changes are pushed live; a bad version is reported
    /// (naming the ConfigMap and the field) and the last good one kept; absent or deleted:
    /// the defaults. Not read with --mesh-config FILE (the file is the mesh config then;
    /// giving both flags is refused) nor with --config-dir. meshd's Role names
    /// `amime-mesh`: rename it there too.
    #[arg(
        long,
        env = "AMIME_MESH_CONFIG_MAP",
        default_value = crate::mesh_config::configmap::DEFAULT_NAME,
        value_name = "NAME",
        conflicts_with = "mesh_config"
    )]
    pub mesh_config_map: String,

    /// Log format.
    #[arg(long, env = "AMIME_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `info,xds=debug`.
    #[arg(long, env = "AMIME_LOG", default_value = "info")]
    pub log: String,
}

/// A flag combination or value meshd refuses to start with.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--debounce-max ({max} ms) is below --debounce-quiet ({quiet} ms): a push could never wait for quiet; set --debounce-max to at least {quiet}")]
    DebounceMaxBelowQuiet { quiet: u64, max: u64 },
    #[error("--config-dir is not set: meshd reads the Kubernetes API instead")]
    NoConfigDir,
    #[error("--config-dir {0}: does not exist")]
    ConfigDirMissing(PathBuf),
    #[error("--config-dir {0}: is a file, not a directory")]
    ConfigDirNotADirectory(PathBuf),
    #[error("--config-dir {path}: {message}")]
    ConfigDirUnusable { path: PathBuf, message: String },
}

impl MeshdConfig {
    pub fn mesh_settings(&self) -> MeshSettings {
        MeshSettings {
            outbound_traffic_policy: self.outbound_traffic_policy.unwrap_or_default(),
            root_namespace: self.namespace.clone(),
            ..Default::default()
        }
    }

    pub fn debounce(&self) -> crate::push::Debounce {
        crate::push::Debounce {
            quiet: Duration::from_millis(self.debounce_quiet),
            max_delay: Duration::from_millis(self.debounce_max.max(self.debounce_quiet)),
        }
    }

    pub fn config_settle(&self) -> Duration {
        Duration::from_millis(self.config_settle)
    }

    /// Checks what flags alone cannot say, before anything starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.debounce_max < self.debounce_quiet {
            return Err(ConfigError::DebounceMaxBelowQuiet { quiet: self.debounce_quiet, max: self.debounce_max });
        }
        Ok(())
    }

    /// Where the webhook's serving certificate comes from.
    pub fn webhook_certs(&self) -> crate::webhook::CertSource {
        match (&self.webhook_cert, &self.webhook_key) {
            (Some(cert), Some(key)) => crate::webhook::CertSource::Files(crate::webhook::tls::CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => crate::webhook::CertSource::Generated {
                service: self.webhook_service.clone(),
                namespace: self.namespace.clone(),
            },
        }
    }

    /// This replica's identity for leader election: --identity (POD_NAME), else
    /// `<host name>_<pid>`.
    pub fn identity(&self) -> String {
        if let Some(id) = self.identity.as_ref().filter(|s| !s.is_empty()) {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned());
        format!("{}_{}", host.as_deref().unwrap_or("meshd"), std::process::id())
    }

    /// The config directory, checked to be an existing directory.
    pub fn checked_config_dir(&self) -> Result<PathBuf, ConfigError> {
        let path = self.config_dir.clone().ok_or(ConfigError::NoConfigDir)?;
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => Ok(path),
            Ok(_) => Err(ConfigError::ConfigDirNotADirectory(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ConfigError::ConfigDirMissing(path)),
            Err(e) => Err(ConfigError::ConfigDirUnusable { path, message: e.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> MeshdConfig {
        MeshdConfig::try_parse_from(std::iter::once("meshd").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn debounce_max_below_quiet_is_refused() {
        let err = parse(&["--debounce-quiet", "500", "--debounce-max", "200"]).validate().unwrap_err();
        assert_eq!(err, ConfigError::DebounceMaxBelowQuiet { quiet: 500, max: 200 });
        assert!(err.to_string().contains("--debounce-max (200 ms) is below --debounce-quiet (500 ms)"), "{err}");
        assert!(parse(&["--debounce-quiet", "200", "--debounce-max", "200"]).validate().is_ok());
        assert!(parse(&[]).validate().is_ok(), "defaults are consistent");
    }

    #[test]
    fn the_kubernetes_source_flags() {
        let c = parse(&["--kubeconfig", "/k/config", "--namespace", "mesh", "--identity", "meshd-0"]);
        assert_eq!(c.kubeconfig.as_deref(), Some(std::path::Path::new("/k/config")));
        assert_eq!((c.namespace.as_str(), c.identity().as_str()), ("mesh", "meshd-0"));
        assert!(!parse(&[]).identity().is_empty(), "falls back to the host name");
        let both = MeshdConfig::try_parse_from(["meshd", "--config-dir", "/d", "--kubeconfig", "/k"]).unwrap_err();
        assert!(both.to_string().contains("cannot be used with"), "{both}");
    }

    #[test]
    fn the_mesh_config_flags() {
        assert_eq!(parse(&[]).mesh_config_map, "amime-mesh");
        assert_eq!(parse(&["--mesh-config-map", "mesh"]).mesh_config_map, "mesh");
        let file = parse(&["--mesh-config", "/etc/mesh.yaml"]);
        assert_eq!((file.mesh_config.is_some(), file.mesh_config_map.as_str()), (true, "amime-mesh"));
        let both = ["meshd", "--mesh-config", "/m", "--mesh-config-map", "m"];
        let err = MeshdConfig::try_parse_from(both).unwrap_err();
        assert!(err.to_string().contains("cannot be used with"), "{err}");
    }

    #[test]
    fn the_webhook_flags() {
        let c = parse(&[]);
        assert_eq!(c.webhook_addr.0, Some("0.0.0.0:15017".parse().unwrap()));
        assert!(matches!(c.webhook_certs(), crate::webhook::CertSource::Generated { ref service, ref namespace }
            if service == "amime-meshd" && namespace == "amime-system"));
        assert_eq!(parse(&["--webhook-addr", "off"]).webhook_addr.0, None);
        let files = parse(&["--webhook-cert", "/c.pem", "--webhook-key", "/k.pem"]).webhook_certs();
        assert!(matches!(files, crate::webhook::CertSource::Files(ref f) if f.cert.to_str() == Some("/c.pem")));
        let alone = MeshdConfig::try_parse_from(["meshd", "--webhook-cert", "/c.pem"]).unwrap_err();
        assert!(alone.to_string().contains("--webhook-key"), "{alone}");
        let bad = MeshdConfig::try_parse_from(["meshd", "--webhook-addr", "15017"]).unwrap_err();
        assert!(bad.to_string().contains("expected IP:PORT or `off`"), "{bad}");
        assert_eq!(parse(&["--proxy-image", "img:1"]).injection.settings().image, "img:1");
    }

    #[test]
    fn config_dir_says_what_is_wrong_with_it() {
        let base = std::env::temp_dir().join(format!("amime-config-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let file = base.join("mesh.yaml");
        std::fs::write(&file, "").unwrap();
        let missing = base.join("nope");
        let cases = [
            (missing.clone(), format!("--config-dir {}: does not exist", missing.display())),
            (file.clone(), format!("--config-dir {}: is a file, not a directory", file.display())),
        ];
        for (path, want) in cases {
            let err = parse(&["--config-dir", path.to_str().unwrap()]).checked_config_dir().unwrap_err();
            assert_eq!(err.to_string(), want);
        }
        assert_eq!(parse(&["--config-dir", base.to_str().unwrap()]).checked_config_dir().unwrap(), base);
        assert_eq!(parse(&[]).checked_config_dir().unwrap_err(), ConfigError::NoConfigDir);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
