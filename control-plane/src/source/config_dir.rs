//! The embedded default source: a directory of Kubernetes-style YAML, read
//! recursively (`*.yaml`, `*.yml`, multi-document) and watched for changes.
//!
//! [`ConfigDir`] is what each file last held, updated from a listing ([`Scan`]) by
//! reading only the files whose stamp changed; the watcher ([`super::dir_watch`]) decides
//! when to list and which changes have settled. What is kept when input is bad:
//! - a file that is not valid YAML keeps every object it last held in a good state;
//! - a document that fails validation keeps that object's last good state (when its
//!   kind and name can be read); the other documents of the file apply;
//! - a file that cannot be read (or turned into a dangling symlink, a FIFO, …) keeps
//!   its objects, and so does every file under a subdirectory that cannot be listed;
//!   the directory itself vanishing keeps everything. Each is reported;
//! - an object defined in two files is taken from the file written last (modification
//!   time, then the later path), as `kubectl apply` would leave it; the other file is
//!   told which one wins.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::{MeshObject, ObjectError, ObjectKey, Origin, Origins, Severity};
use crate::source::dir_scan::{self, Probe, ReadError, Scan, Stamp};
use crate::source::documents::{parse_file_documents, FileObjects};

#[derive(Debug, thiserror::Error)]
pub enum ConfigDirError {
    #[error("watching {path}: {source}")]
    Watch { path: PathBuf, source: notify::Error },
    #[error("config directory {path}: {reason}")]
    Unavailable { path: PathBuf, reason: String },
}

#[derive(Debug, Default)]
struct FileState {
    /// The stamp of the content below (or of the last failed read).
    stamp: Option<Stamp>,
    hash: u64,
    /// Last good object per key defined in this file.
    objects: BTreeMap<ObjectKey, MeshObject>,
    /// The YAML document (from 0) that defines each object.
    documents: BTreeMap<ObjectKey, usize>,
    problems: Vec<ObjectError>,
    /// Why the file could not be read at `stamp`, if it could not.
    read_error: Option<String>,
    /// Read so soon after its last modification that a same-size rewrite in the same
    /// timestamp tick would not change the stamp: read it once more after this time
    /// (nanoseconds since the epoch).
    racy_until_ns: Option<i128>,
}

/// A file read less than this after its modification time is read once more on the
/// first look this long after (as git treats "racily clean" index entries): filesystem
/// timestamps are only as fine as the kernel's clock tick (or a second, on some
/// filesystems).
pub const RACY_WINDOW_NS: i128 = 1_000_000_000;

fn now_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

/// What one [`ConfigDir::apply`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The files' objects or their problems changed: the model needs the new set.
    /// (A change in [`ConfigDir::unreadable`] alone is not one.)
    pub changed: bool,
    pub files_read: u64,
    /// Some file changed while it was being read: look again after the settle period.
    pub retry: bool,
}

/// The state of one config directory: what each file last held.
#[derive(Debug)]
pub struct ConfigDir {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// Problems of the last listing: the directory gone, paths that cannot be used.
    listing_problems: Vec<ObjectError>,
    /// Wall-clock time, nanoseconds since the epoch (tests move it on).
    clock: fn() -> i128,
}

fn io_problem(path: &Path, message: String) -> ObjectError {
    ObjectError::at_path(Severity::Error, path, message)
}

impl ConfigDir {
    pub fn new(root: impl Into<PathBuf>) -> ConfigDir {
        ConfigDir { root: root.into(), files: BTreeMap::new(), listing_problems: Vec::new(), clock: now_ns }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether a file we hold may still exist but cannot be seen in `entries`: it is
    /// listed as unusable, or lies under a subdirectory that cannot be listed.
    fn hidden_by_problem(entries: &BTreeMap<PathBuf, Probe>, path: &Path) -> bool {
        path.ancestors().any(|a| matches!(entries.get(a), Some(Probe::Unreadable(_))))
    }

    /// Config files whose listing in `scan` differs from what is applied: new, changed
    /// (by stamp) or removed. Unusable paths are not pending: what they held stays.
    pub fn pending(&self, scan: &Scan) -> BTreeSet<PathBuf> {
        let now_ns = (self.clock)();
        let Some(entries) = scan.entries() else {
            return BTreeSet::new(); // the directory is gone: keep everything
        };
        let mut out = BTreeSet::new();
        for (path, probe) in entries {
            if let Probe::File(stamp) = probe {
                let held = self.files.get(path);
                let racy_due = held.and_then(|f| f.racy_until_ns).is_some_and(|t| now_ns >= t);
                if held.and_then(|f| f.stamp.as_ref()) != Some(stamp) || racy_due {
                    out.insert(path.clone());
                }
            }
        }
        for path in self.files.keys() {
            if !entries.contains_key(path) && !Self::hidden_by_problem(entries, path) {
                out.insert(path.clone());
            }
        }
        out
    }

    /// Takes the listing problems of `scan`, and reads and applies the config files
    /// `paths` (as listed in `scan`; a path no longer listed is removed) with `read`.
    pub fn apply(
        &mut self,
        scan: &Scan,
        paths: &BTreeSet<PathBuf>,
        mut read: impl FnMut(&Path, &Stamp) -> Result<String, ReadError>,
    ) -> Applied {
        let mut applied = Applied::default();
        self.listing_problems = self.listing_problems_of(scan);
        let Some(entries) = scan.entries() else {
            return applied;
        };
        for path in paths {
            match entries.get(path) {
                Some(Probe::File(stamp)) => {
                    applied.files_read += 1;
                    match read(path, stamp) {
                        Ok(text) => applied.changed |= self.update_file(path, *stamp, &text),
                        Err(ReadError::Changed) => applied.retry = true,
                        Err(ReadError::Io(e)) => {
                            let state = self.files.entry(path.clone()).or_default();
                            state.stamp = Some(*stamp);
                            state.read_error = Some(format!("cannot read: {e}"));
                            state.racy_until_ns = None;
                            applied.changed = true;
                        }
                    }
                }
                Some(Probe::Unreadable(_)) => {}
                None if !Self::hidden_by_problem(entries, path) => {
                    applied.changed |= self.files.remove(path).is_some();
                }
                None => {}
            }
        }
        applied
    }

    /// Parses `text` as the new content of `path`; returns whether anything changed.
    fn update_file(&mut self, path: &Path, stamp: Stamp, text: &str) -> bool {
        let hash = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
        // (A modification time set far in the future is not racy: it would stay so.)
        let now = (self.clock)();
        let racy = (-RACY_WINDOW_NS..RACY_WINDOW_NS).contains(&(now - stamp.mtime_ns));
        let racy_until_ns = racy.then_some(now + RACY_WINDOW_NS);
        let previous = self.files.remove(path).unwrap_or_default();
        if previous.stamp.is_some() && previous.hash == hash && previous.read_error.is_none() {
            // Touched, or rewritten with the same content: nothing to parse.
            self.files.insert(path.to_path_buf(), FileState { stamp: Some(stamp), racy_until_ns, ..previous });
            return false;
        }
        let display = path.display().to_string();
        let (parsed, problems) = parse_file_documents(&display, text, &previous.objects);
        let (objects, documents) = match parsed {
            Some(FileObjects { objects, documents, .. }) => (objects, documents),
            None => (previous.objects, previous.documents),
        };
        let state =
            FileState { stamp: Some(stamp), hash, objects, documents, problems, read_error: None, racy_until_ns };
        self.files.insert(path.to_path_buf(), state);
        true
    }

    fn listing_problems_of(&self, scan: &Scan) -> Vec<ObjectError> {
        let keeps = |path: &Path| {
            let held = self.files.iter().filter(|(p, s)| p.starts_with(path) && !s.objects.is_empty()).count();
            match held {
                0 => String::new(),
                1 => "; the objects it held stay in force".to_owned(),
                n => format!("; the objects of the {n} files it held stay in force"),
            }
        };
        match scan {
            Scan::RootUnavailable(reason) => vec![io_problem(
                &self.root,
                format!("config directory {reason}; the last good configuration stays in force"),
            )],
            Scan::Listed { entries } => entries
                .iter()
                .filter_map(|(path, probe)| match probe {
                    Probe::Unreadable(reason) => Some(io_problem(path, format!("{reason}{}", keeps(path)))),
                    Probe::File(_) => None,
                })
                .collect(),
        }
    }

    /// Paths that cannot be used now (the directory, files, subdirectories), one problem each.
    pub fn unreadable(&self) -> Vec<ObjectError> {
        let mut out = self.listing_problems.clone();
        for (path, state) in &self.files {
            if let Some(error) = &state.read_error {
                let keeps = if state.objects.is_empty() { "" } else { "; the objects it held stay in force" };
                out.push(io_problem(path, format!("{error}{keeps}")));
            }
        }
        out
    }

    /// Lists and reads the directory at once (no settling), applying every change.
    /// Returns whether anything changed; an error if the directory itself cannot be
    /// listed (what it held stays, and [`Self::unreadable`] says so).
    pub fn load(&mut self) -> Result<bool, ConfigDirError> {
        let scan = dir_scan::scan(&self.root);
        let paths = self.pending(&scan);
        let changed = self.apply(&scan, &paths, dir_scan::read_listed).changed;
        match scan {
            Scan::RootUnavailable(reason) => Err(ConfigDirError::Unavailable { path: self.root.clone(), reason }),
            Scan::Listed { .. } => Ok(changed),
        }
    }

    /// All objects, each key taken from the file written last, and the problems of
    /// the files' contents (not those of [`Self::unreadable`]).
    pub fn objects(&self) -> (Vec<MeshObject>, Vec<ObjectError>) {
        let (objects, _, problems) = self.objects_with_origins();
        (objects.into_iter().cloned().collect(), problems)
    }

    /// [`ConfigDir::objects`], with the file and document each object was taken from.
    pub fn objects_with_origins(&self) -> (Vec<&MeshObject>, Origins, Vec<ObjectError>) {
        merge_files(self.files.iter().map(|(path, state)| FileDefinitions {
            path,
            mtime_ns: state.stamp.map_or(0, |s| s.mtime_ns),
            objects: &state.objects,
            documents: &state.documents,
            problems: &state.problems,
        }))
    }
}

/// What one file defines, for [`merge_files`].
#[derive(Clone, Copy, Debug)]
pub struct FileDefinitions<'a> {
    pub path: &'a Path,
    /// Modification time, nanoseconds since the epoch: of two definitions of one object,
    /// the file written last wins (then the later path), as `kubectl apply` would leave it.
    pub mtime_ns: i128,
    pub objects: &'a BTreeMap<ObjectKey, MeshObject>,
    /// The YAML document (from 0) that defines each object.
    pub documents: &'a BTreeMap<ObjectKey, usize>,
    /// The problems of the file's content.
    pub problems: &'a [ObjectError],
}

/// The objects of several files, each key taken from the file written last; the file and
/// document each was taken from; the files' problems, and one error per definition that
/// lost to another file's. Pure: the config-directory source and `meshctl analyze` share it.
pub fn merge_files<'a>(
    files: impl IntoIterator<Item = FileDefinitions<'a>>,
) -> (Vec<&'a MeshObject>, Origins, Vec<ObjectError>) {
    /// One definition of an object: its file's modification time, path (and its display
    /// form, shared by the file's objects), the object and its document.
    type Definition<'a> = (i128, &'a Path, Arc<str>, &'a MeshObject, Option<usize>);
    let mut origins = Origins::new();
    let mut defined: BTreeMap<&ObjectKey, Vec<Definition<'_>>> = BTreeMap::new();
    let mut problems: Vec<ObjectError> = Vec::new();
    for file in files {
        let display: Arc<str> = Arc::from(file.path.display().to_string());
        problems.extend(file.problems.iter().cloned());
        for (key, object) in file.objects {
            let document = file.documents.get(key).copied();
            defined.entry(key).or_default().push((file.mtime_ns, file.path, display.clone(), object, document));
        }
    }
    let mut objects = Vec::with_capacity(defined.len());
    for (key, mut sources) in defined {
        sources.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let (winner_mtime, winner, display, object, document) = sources.pop().expect("at least one definition");
        objects.push(object);
        if let Some(document) = document {
            origins.insert(key.clone(), Origin { file: display, document });
        }
        for (mtime, path, _, _, document) in sources {
            let mut problem = duplicate_problem(key, path, winner, mtime == winner_mtime);
            problem.document = document;
            problems.push(problem);
        }
    }
    (objects, origins, problems)
}

/// The diagnostic for the definition of `key` in `loser`, overridden by `winner`.
fn duplicate_problem(key: &ObjectKey, loser: &Path, winner: &Path, same_mtime: bool) -> ObjectError {
    let why = if same_mtime { "has the same modification time and a later path" } else { "was written later" };
    ObjectError {
        severity: Severity::Error,
        file: Some(loser.display().to_string()),
        document: None,
        kind: Some(key.kind.to_string()),
        namespace: Some(key.namespace.clone()),
        name: Some(key.name.clone()),
        field: "metadata.name".into(),
        message: format!(
            "{key} is also defined in {}, which {why}; that definition is used and this one is ignored",
            winner.display()
        ),
    }
}

#[cfg(test)]
#[path = "config_dir_tests.rs"]
mod tests;
