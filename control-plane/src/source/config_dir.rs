//! The embedded default source: a directory of Kubernetes-style YAML, read
//! recursively (`*.yaml`, `*.yml`, multi-document) and watched for changes.
//!
//! Reading is a pure step over file contents ([`ConfigDir::load`]); watching is the
//! I/O edge ([`watch`]). What is kept when input is bad:
//! - a file that is not valid YAML keeps every object it last held in a good state;
//! - a document that fails validation keeps that object's last good state (when its
//!   kind and name can be read); the other documents of the file apply;
//! - an object defined in two files is taken from the first file (by path) and the
//!   second is reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::model::{MeshObject, ObjectError, ObjectKey, Severity};
use crate::push::MeshState;
use crate::source::documents::parse_file;

#[derive(Debug, thiserror::Error)]
pub enum ConfigDirError {
    #[error("config directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("watching {path}: {source}")]
    Watch { path: PathBuf, source: notify::Error },
}

#[derive(Debug, Default)]
struct FileState {
    hash: u64,
    /// Last good object per key defined in this file.
    objects: BTreeMap<ObjectKey, MeshObject>,
    problems: Vec<ObjectError>,
}

/// The state of one config directory: what each file last held.
#[derive(Debug)]
pub struct ConfigDir {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
}

fn is_config_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Every config file under `root`, sorted; hidden files and directories are skipped.
fn list_files(root: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            let ty = entry.file_type()?;
            if ty.is_dir() && !hidden {
                stack.push(path);
            } else if (ty.is_file() || ty.is_symlink()) && is_config_file(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

impl ConfigDir {
    pub fn new(root: impl Into<PathBuf>) -> ConfigDir {
        ConfigDir { root: root.into(), files: BTreeMap::new() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Re-reads the directory. Unchanged files (by content hash) are not parsed again.
    /// Returns whether anything changed.
    pub fn load(&mut self) -> Result<bool, ConfigDirError> {
        let io = |source| ConfigDirError::Io { path: self.root.clone(), source };
        let paths = list_files(&self.root).map_err(io)?;
        let mut changed = false;
        let mut seen = BTreeMap::new();
        for path in paths {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                // Removed between listing and reading: treat as gone.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    let display = path.display().to_string();
                    let state = self.files.remove(&path).unwrap_or_default();
                    let problem = ObjectError {
                        severity: Severity::Error,
                        file: Some(display),
                        document: None,
                        kind: None,
                        namespace: None,
                        name: None,
                        field: String::new(),
                        message: format!("cannot read: {e}"),
                    };
                    seen.insert(path, FileState { hash: 0, objects: state.objects, problems: vec![problem] });
                    changed = true;
                    continue;
                }
            };
            let hash = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
            let previous = self.files.remove(&path).unwrap_or_default();
            if previous.hash == hash && hash != 0 {
                seen.insert(path, previous);
                continue;
            }
            changed = true;
            let display = path.display().to_string();
            let (objects, problems) = parse_file(&display, &text, &previous.objects);
            let objects = objects.unwrap_or(previous.objects);
            seen.insert(path, FileState { hash, objects, problems });
        }
        if !self.files.is_empty() {
            changed = true; // files were removed
        }
        self.files = seen;
        Ok(changed)
    }

    /// All objects, each key taken from the first file (by path) that defines it.
    pub fn objects(&self) -> (Vec<MeshObject>, Vec<ObjectError>) {
        let mut chosen: BTreeMap<ObjectKey, (&Path, &MeshObject)> = BTreeMap::new();
        let mut problems: Vec<ObjectError> = Vec::new();
        for (path, state) in &self.files {
            problems.extend(state.problems.iter().cloned());
            for (key, object) in &state.objects {
                match chosen.get(key) {
                    Some((first, _)) => problems.push(ObjectError {
                        severity: Severity::Error,
                        file: Some(path.display().to_string()),
                        document: None,
                        kind: Some(key.kind.to_string()),
                        namespace: Some(key.namespace.clone()),
                        name: Some(key.name.clone()),
                        field: "metadata.name".into(),
                        message: format!("{key} is also defined in {}; that definition is used", first.display()),
                    }),
                    None => {
                        chosen.insert(key.clone(), (path, object));
                    }
                }
            }
        }
        (chosen.into_values().map(|(_, o)| o.clone()).collect(), problems)
    }
}

/// Loads `dir` into `state`, reporting problems.
fn sync(dir: &mut ConfigDir, state: &MeshState) -> Result<(), ConfigDirError> {
    if !dir.load()? && state.is_synced() {
        return Ok(());
    }
    let (objects, problems) = dir.objects();
    let old: std::collections::BTreeSet<_> = state.source_problems().into_iter().collect();
    for p in problems.iter().filter(|p| !old.contains(p)) {
        match p.severity {
            Severity::Error => {
                tracing::error!(file = ?p.file, document = ?p.document, kind = ?p.kind, namespace = ?p.namespace, name = ?p.name, field = %p.field, "{}", p.message)
            }
            Severity::Warning => {
                tracing::warn!(file = ?p.file, document = ?p.document, kind = ?p.kind, namespace = ?p.namespace, name = ?p.name, field = %p.field, "{}", p.message)
            }
            Severity::Info => {
                tracing::info!(file = ?p.file, document = ?p.document, kind = ?p.kind, namespace = ?p.namespace, name = ?p.name, field = %p.field, "{}", p.message)
            }
        }
    }
    state.set_source_problems(problems);
    let count = objects.len();
    state.update(|index| index.reset(objects));
    tracing::debug!(objects = count, "config directory loaded");
    Ok(())
}

/// Reads `root` once, marks the source synced, then re-reads it whenever it changes
/// (filesystem events, with a periodic re-read as a safety net). Runs until the task
/// is dropped.
pub async fn watch(root: PathBuf, state: Arc<MeshState>, settle: Duration) -> Result<(), ConfigDirError> {
    use notify::Watcher;
    let mut dir = ConfigDir::new(&root);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
        // Any event means "look again"; a full channel already says so.
        let _ = tx.try_send(());
    })
    .map_err(|source| ConfigDirError::Watch { path: root.clone(), source })?;
    watcher
        .watch(&root, notify::RecursiveMode::Recursive)
        .map_err(|source| ConfigDirError::Watch { path: root.clone(), source })?;
    let root_display = root.display().to_string();
    tokio::task::block_in_place(|| sync(&mut dir, &state))?;
    state.mark_synced();
    tracing::info!(dir = %root_display, "config directory read");
    let mut poll = tokio::time::interval(Duration::from_secs(5));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = rx.recv() => {
                if event.is_none() {
                    return Ok(());
                }
                // Let a burst of events (an editor's save, a copy) settle.
                tokio::time::sleep(settle).await;
                while rx.try_recv().is_ok() {}
            }
            _ = poll.tick() => {}
        }
        if let Err(e) = tokio::task::block_in_place(|| sync(&mut dir, &state)) {
            tracing::error!(dir = %root_display, error = %e, "cannot read config directory; keeping the last good state");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  ports: [{name: http, port: 9080}]\n";

    fn vs(weight: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: bookinfo}}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: {weight}\n    - destination: {{host: reviews, subset: v2}}\n      weight: 50\n"
        )
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("amime-configdir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("nested")).unwrap();
        dir
    }

    fn weights(dir: &ConfigDir) -> Vec<u32> {
        dir.objects()
            .0
            .into_iter()
            .filter_map(|o| match o {
                MeshObject::VirtualService(v) => Some(v.http[0].route.iter().map(|r| r.weight).collect::<Vec<_>>()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn bad_documents_keep_the_last_good_state_and_the_rest_applies() {
        let root = tempdir("keep");
        std::fs::write(root.join("svc.yaml"), SERVICE).unwrap();
        std::fs::write(root.join("nested/vs.yml"), vs("50")).unwrap();
        std::fs::write(root.join("notes.txt"), "not config").unwrap();
        let mut dir = ConfigDir::new(&root);
        assert!(dir.load().unwrap());
        assert_eq!(dir.objects().0.len(), 2);
        assert_eq!(weights(&dir), vec![50, 50]);
        assert!(!dir.load().unwrap(), "nothing changed");

        // An invalid weight: the VirtualService keeps its last good state.
        std::fs::write(root.join("nested/vs.yml"), vs("-5")).unwrap();
        assert!(dir.load().unwrap());
        let (objects, problems) = dir.objects();
        assert_eq!(objects.len(), 2);
        assert_eq!(weights(&dir), vec![50, 50]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let p = &problems[0];
        assert_eq!(p.field, "spec.http[0].route[0].weight");
        assert_eq!(p.document, Some(0));
        assert!(p.file.as_deref().unwrap().ends_with("nested/vs.yml"));
        assert!(p.message.contains("last good state"), "{}", p.message);

        // A YAML syntax error: the whole file keeps its objects; other files apply.
        std::fs::write(root.join("nested/vs.yml"), "apiVersion: [").unwrap();
        std::fs::write(root.join("svc.yaml"), SERVICE.replace("9080", "9081")).unwrap();
        dir.load().unwrap();
        let (objects, problems) = dir.objects();
        assert_eq!(objects.len(), 2);
        assert!(problems[0].message.contains("not valid YAML"), "{problems:?}");
        let port = objects.iter().find_map(|o| match o {
            MeshObject::Service(s) => Some(s.ports[0].port),
            _ => None,
        });
        assert_eq!(port, Some(9081));

        // Fixed, then removed.
        std::fs::write(root.join("nested/vs.yml"), vs("80")).unwrap();
        dir.load().unwrap();
        assert_eq!(weights(&dir), vec![80, 50]);
        assert!(dir.objects().1.is_empty());
        std::fs::remove_file(root.join("nested/vs.yml")).unwrap();
        dir.load().unwrap();
        assert_eq!(dir.objects().0.len(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_object_in_two_files_is_taken_from_the_first() {
        let root = tempdir("dup");
        std::fs::write(root.join("a.yaml"), SERVICE).unwrap();
        std::fs::write(root.join("b.yaml"), SERVICE.replace("9080", "9999")).unwrap();
        let mut dir = ConfigDir::new(&root);
        dir.load().unwrap();
        let (objects, problems) = dir.objects();
        assert_eq!(objects.len(), 1);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("a.yaml"), "{}", problems[0].message);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
