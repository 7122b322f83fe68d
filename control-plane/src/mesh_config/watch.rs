//! The I/O edge of `--mesh-config FILE`: reads the file at start and whenever it changes,
//! and hands each version's settings to the push loop.
//!
//! Rules it keeps:
//! - the file's directory is watched (not the file): editors that write a temp file and
//!   rename it over, truncate and write, or swap a ConfigMap volume's `..data` symlink all
//!   show up as events there; a listing every [`RECHECK_INTERVAL`] is the safety net;
//! - a change is applied once the file's stamp (inode, size, mtime, ctime) has stayed the
//!   same for the settle period and while it was read, so a half-written file is never
//!   applied;
//! - a file that is missing, unreadable or invalid is reported (file and field) and the last
//!   good settings stay in force (at start: the flags' and Istio's defaults).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::parse::parse;
use super::MeshConfigFile;
use crate::model::{Diagnostic, Severity};
use crate::push::MeshState;
use crate::translate::{MeshSettings, OutboundTrafficPolicy};

/// How often the file is looked at even without events.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The settings a mesh-config document gives on top of meshd's flags, and what conflicts.
/// `flag_policy` is `--outbound-traffic-policy` when given: it wins over the document, and
/// a document saying otherwise is reported. `source` names the document (a file, or a
/// ConfigMap and key) in diagnostics.
pub fn settings(
    source: &str,
    config: &MeshConfigFile,
    flag_policy: Option<OutboundTrafficPolicy>,
    namespace: &str,
) -> (MeshSettings, Vec<Diagnostic>) {
    let mut problems = Vec::new();
    let policy = match (flag_policy, config.outbound_traffic_policy) {
        (Some(flag), Some(from_file)) if flag != from_file => {
            let mut d = Diagnostic::at_path(
                Severity::Warning,
                Path::new(source),
                format!("{from_file} conflicts with --outbound-traffic-policy {flag}; the flag wins"),
            );
            d.kind = Some("MeshConfig".to_owned());
            d.field = "outboundTrafficPolicy.mode".to_owned();
            problems.push(d);
            flag
        }
        (Some(flag), _) => flag,
        (None, from_file) => from_file.unwrap_or_default(),
    };
    let root_namespace = config.telemetry.root_namespace.clone().unwrap_or_else(|| namespace.to_owned());
    let settings =
        MeshSettings { outbound_traffic_policy: policy, telemetry: config.telemetry.clone(), root_namespace };
    (settings, problems)
}

/// (dev, ino, size, mtime, ctime) of what `path` points to, or `None` if it cannot be read.
fn stamp(path: &Path) -> Option<(u64, u64, u64, i64, i64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime_nsec() + m.mtime() * 1_000_000_000,
        m.ctime_nsec() + m.ctime() * 1_000_000_000,
    ))
}

/// Reads `path` once its stamp has held still for `settle`.
async fn settled_read(path: &Path, settle: Duration) -> Result<String, std::io::Error> {
    loop {
        let before = stamp(path);
        tokio::time::sleep(settle).await;
        let text = tokio::fs::read_to_string(path).await?;
        if stamp(path) == before && before.is_some() {
            return Ok(text);
        }
    }
}

/// What one look at the file gave.
pub struct Look {
    pub settings: Option<MeshSettings>,
    pub problems: Vec<Diagnostic>,
}

/// Reads and parses the file now (after it has settled).
pub async fn look(path: &Path, flag_policy: Option<OutboundTrafficPolicy>, namespace: &str, settle: Duration) -> Look {
    let shown = path.display().to_string();
    match settled_read(path, settle).await {
        Err(e) => {
            let mut d = Diagnostic::at_path(
                Severity::Error,
                path,
                format!("cannot read the mesh config ({e}); the last good one stays in force"),
            );
            d.kind = Some("MeshConfig".to_owned());
            Look { settings: None, problems: vec![d] }
        }
        Ok(text) => {
            let outcome = parse(&shown, &text);
            let mut problems = outcome.diagnostics;
            let settings = outcome.config.map(|config| {
                let (settings, conflicts) = settings(&shown, &config, flag_policy, namespace);
                problems.extend(conflicts);
                settings
            });
            Look { settings, problems }
        }
    }
}

/// Watches `path` until `state` goes away, applying each good version to `state`.
pub async fn run(
    path: PathBuf,
    state: Arc<MeshState>,
    flag_policy: Option<OutboundTrafficPolicy>,
    namespace: String,
    settle: Duration,
) -> anyhow::Result<()> {
    let (wake_tx, mut wake) = mpsc::channel::<()>(1);
    let dir = path.parent().map(Path::to_path_buf).filter(|d| !d.as_os_str().is_empty()).unwrap_or_else(|| ".".into());
    let name = path.file_name().map(|n| n.to_owned());
    let _watcher = {
        let wake_tx = wake_tx.clone();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                Err(_) => true,
                Ok(e) => {
                    crate::source::dir_watch::is_content_event(&e.kind)
                        && (e.paths.is_empty()
                            || e.paths.iter().any(|p| p.file_name() == name.as_deref() || p.ends_with("..data")))
                }
            };
            if relevant {
                let _ = wake_tx.try_send(());
            }
        })?;
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the mesh config's directory; re-read every 5s");
        }
        watcher
    };
    let mut applied = stamp(&path);
    loop {
        // Wait for an event or the recheck; look again only if the file changed.
        loop {
            let _ = tokio::time::timeout(RECHECK_INTERVAL, wake.recv()).await;
            let now = stamp(&path);
            if now != applied {
                applied = now;
                break;
            }
        }
        apply(&state, &path.display().to_string(), look(&path, flag_policy, &namespace, settle).await);
    }
}

/// Puts what a look found into `state`: its problems, and its settings if it is good.
/// `source` names where the mesh config came from (a file, a ConfigMap) in the log.
pub fn apply(state: &MeshState, source: &str, look: Look) {
    for p in &look.problems {
        crate::logging::log_problem(p);
    }
    state.set_mesh_config_problems(look.problems);
    if let Some(settings) = look.settings {
        if state.set_settings(settings) {
            tracing::info!(source = %source, "mesh config applied");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_the_file_and_a_conflict_is_reported() {
        use OutboundTrafficPolicy::{AllowAny, RegistryOnly};
        let file = "/etc/amime/mesh";
        // (flag, file, policy in force, conflict reported)
        let cases = [
            (None, None, AllowAny, false),
            (None, Some(RegistryOnly), RegistryOnly, false),
            (Some(RegistryOnly), None, RegistryOnly, false),
            (Some(RegistryOnly), Some(RegistryOnly), RegistryOnly, false),
            (Some(AllowAny), Some(RegistryOnly), AllowAny, true),
        ];
        for (flag, from_file, want, conflict) in cases {
            let config = MeshConfigFile { outbound_traffic_policy: from_file, ..Default::default() };
            let (s, problems) = settings(file, &config, flag, "mesh-system");
            assert_eq!(s.outbound_traffic_policy, want, "{flag:?} {from_file:?}");
            assert_eq!(problems.len(), usize::from(conflict), "{problems:?}");
            assert_eq!(s.root_namespace, "mesh-system", "rootNamespace defaults to meshd's namespace");
            if conflict {
                assert_eq!(problems[0].field, "outboundTrafficPolicy.mode");
                assert!(problems[0].to_string().contains("conflicts with --outbound-traffic-policy ALLOW_ANY"));
            }
        }
    }
}
