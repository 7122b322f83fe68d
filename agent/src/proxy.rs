//! `amime-agent proxy`: the injected sidecar container's entry point. Reads the pod's
//! identity (downward-API environment and labels file, see [`injector::pod_env`]), writes
//! Envoy's bootstrap (the same renderer as `meshctl bootstrap`) to the proxy config
//! directory, and execs Envoy, which then is the container's process (signals, exit code
//! and restarts go to Envoy directly).
//!
//! Design note, mTLS (MISSION §6): the node agent will live here too. `proxy` will then
//! fork instead of exec: the agent keeps running as Envoy's parent, proves the pod's
//! identity to meshd with the projected service-account token (a new volume beside
//! [`conventions::POD_INFO_VOLUME`]), serves the certificate to Envoy over SDS on a unix
//! socket in [`conventions::PROXY_CONFIG_DIR`] (the bootstrap gains an `sds-grpc` cluster
//! pointing at it), forwards SIGTERM to Envoy and exits with Envoy's status. The steps
//! below (read the pod, write the bootstrap, build Envoy's command line) stay as they are;
//! only [`run`]'s last step changes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use injector::bootstrap::render_yaml;
use injector::conventions::{self, env};
use injector::pod_env;

/// The bootstrap's file name in the proxy config directory.
pub const BOOTSTRAP_FILE: &str = "envoy.yaml";

/// `amime-agent proxy` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// The Envoy binary (a name is looked up on PATH).
    #[arg(long, value_name = "PATH", default_value = "envoy")]
    pub envoy: PathBuf,
    /// Envoy worker threads.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub concurrency: u32,
    /// Envoy's log level.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
    /// Seconds Envoy drains connections when told to stop.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub drain_time_s: u32,
    /// Write the bootstrap and print Envoy's command line instead of starting it.
    #[arg(long)]
    pub dry_run: bool,
    /// More Envoy arguments (after `--`).
    #[arg(last = true, value_name = "ENVOY_ARGS")]
    pub envoy_args: Vec<String>,
}

/// Envoy's command line for a sidecar: the bootstrap, no hot restart (one Envoy per
/// container; several pods on one host must not share its shared memory), fast draining.
pub fn envoy_args(args: &ProxyArgs, bootstrap: &Path) -> Vec<String> {
    let mut out = vec![
        "-c".to_string(),
        bootstrap.display().to_string(),
        "--disable-hot-restart".into(),
        "--concurrency".into(),
        args.concurrency.to_string(),
        "--log-level".into(),
        args.log_level.clone(),
        "--drain-time-s".into(),
        args.drain_time_s.to_string(),
        "--drain-strategy".into(),
        "immediate".into(),
        "--log-format".into(),
        "%Y-%m-%dT%T.%fZ\t%l\tenvoy %n\t%v".into(),
    ];
    out.extend(args.envoy_args.iter().cloned());
    out
}

/// The directory `name` (an env override) names, else `default`.
fn dir_from_env(vars: &BTreeMap<String, String>, name: &str, default: &str) -> PathBuf {
    PathBuf::from(vars.get(name).filter(|v| !v.is_empty()).map(String::as_str).unwrap_or(default))
}

/// The process environment as a map (variables that are not UTF-8 are left out: none of
/// ours can be).
pub fn environment() -> BTreeMap<String, String> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

/// Reads the pod, writes the bootstrap; returns its path.
pub fn write_bootstrap(vars: &BTreeMap<String, String>) -> Result<PathBuf> {
    let info_dir = dir_from_env(vars, env::POD_INFO_DIR, conventions::POD_INFO_DIR);
    let labels_path = info_dir.join(conventions::POD_LABELS_FILE);
    let labels = std::fs::read_to_string(&labels_path).with_context(|| {
        format!(
            "read the pod's labels from {} (the downwardAPI volume {} with metadata.labels)",
            labels_path.display(),
            conventions::POD_INFO_VOLUME
        )
    })?;
    let config = pod_env::bootstrap_config_from_pod(vars, &labels).map_err(|e| match e {
        pod_env::PodEnvError::LabelsFile { .. } => anyhow::anyhow!("{}: {e}", labels_path.display()),
        e => e.into(),
    })?;
    let yaml = render_yaml(&config).context("render the Envoy bootstrap")?;

    let config_dir = dir_from_env(vars, env::PROXY_CONFIG_DIR, conventions::PROXY_CONFIG_DIR);
    std::fs::create_dir_all(&config_dir).with_context(|| format!("create {}", config_dir.display()))?;
    let path = config_dir.join(BOOTSTRAP_FILE);
    // Write then rename: Envoy (or a reader) never sees half a file.
    let tmp = config_dir.join(format!(".{BOOTSTRAP_FILE}.tmp"));
    std::fs::write(&tmp, yaml).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    eprintln!(
        "amime-agent proxy: wrote {} for {} (ips {:?}, xDS {} {}, {} app probe(s))",
        path.display(),
        config.node().node_id(),
        config.ips(),
        config.xds_address(),
        config.xds_api(),
        config.app_probes().len()
    );
    Ok(path)
}

/// `amime-agent proxy`: write the bootstrap and become Envoy.
pub fn run(args: &ProxyArgs) -> Result<()> {
    let vars = environment();
    let bootstrap = write_bootstrap(&vars)?;
    let envoy_args = envoy_args(args, &bootstrap);
    if args.dry_run {
        let mut line = vec![args.envoy.display().to_string()];
        line.extend(envoy_args);
        println!("{}", line.join(" "));
        return Ok(());
    }
    let argv: Vec<OsString> = envoy_args.into_iter().map(OsString::from).collect();
    // exec only returns on failure.
    let err = Command::new(&args.envoy).args(&argv).exec();
    if err.kind() == std::io::ErrorKind::NotFound {
        bail!("cannot start Envoy: {} not found (on PATH for a bare name); pass --envoy PATH", args.envoy.display());
    }
    Err(err).with_context(|| format!("cannot start Envoy {}", args.envoy.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProxyArgs,
    }

    #[test]
    fn envoy_gets_the_bootstrap_and_the_extra_args_last() {
        let cli = Cli::parse_from(["x", "--concurrency", "1", "--", "--component-log-level", "upstream:debug"]);
        let args = envoy_args(&cli.args, Path::new("/etc/amime/proxy/envoy.yaml"));
        assert_eq!(&args[..3], ["-c", "/etc/amime/proxy/envoy.yaml", "--disable-hot-restart"]);
        assert!(args.windows(2).any(|w| w == ["--concurrency", "1"]));
        assert!(args.windows(2).any(|w| w == ["--drain-strategy", "immediate"]));
        assert_eq!(&args[args.len() - 2..], ["--component-log-level", "upstream:debug"]);
    }

    #[test]
    fn directories_come_from_the_env_overrides() {
        let mut vars = BTreeMap::new();
        assert_eq!(dir_from_env(&vars, env::POD_INFO_DIR, conventions::POD_INFO_DIR), Path::new("/etc/amime/pod"));
        vars.insert(env::POD_INFO_DIR.to_string(), "/tmp/pod".to_string());
        assert_eq!(dir_from_env(&vars, env::POD_INFO_DIR, conventions::POD_INFO_DIR), Path::new("/tmp/pod"));
    }
}
