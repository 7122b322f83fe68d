//! Listing a config directory without reading it: every config file's [`Stamp`]
//! (from `stat`, following symlinks), and every path that cannot be listed or read.
//!
//! Rules it keeps:
//! - nothing here opens a config file, so a scan of an idle directory reads nothing
//!   (the watcher can scan as often as it likes) and never blocks on a FIFO;
//! - one bad entry (dangling symlink, symlink loop, unlistable subdirectory, a FIFO
//!   or device named `*.yaml`) is reported as [`Probe::Unreadable`] and the listing of
//!   the rest goes on;
//! - hidden entries (`.name`) are skipped, which includes the `..data` and
//!   `..2026_…` entries of a Kubernetes ConfigMap volume: its visible `x.yaml ->
//!   ..data/x.yaml` symlinks are followed, so the stamp of `x.yaml` is that of the file
//!   `..data` points to now, and a `..data` swap changes it.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What `stat` says about a config file; a different stamp means the content may differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status-change time, nanoseconds since the epoch (catches a rewrite that keeps
    /// size and mtime, e.g. `touch -r`).
    pub ctime_ns: i128,
}

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

/// One listed path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A regular config file (possibly through symlinks).
    File(Stamp),
    /// A config file or directory that is there but cannot be used; the reason says why.
    Unreadable(String),
}

/// One listing of the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The directory itself is gone or unusable; the reason says why.
    RootUnavailable(String),
    Listed {
        /// Config files (`*.yaml`, `*.yml`) and unusable paths (any name: a subdirectory
        /// that cannot be listed holds config files we cannot see).
        entries: BTreeMap<PathBuf, Probe>,
    },
}

impl Scan {
    pub fn entries(&self) -> Option<&BTreeMap<PathBuf, Probe>> {
        match self {
            Scan::Listed { entries } => Some(entries),
            Scan::RootUnavailable(_) => None,
        }
    }
}

pub fn is_hidden(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

pub fn is_config_name(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Lists `root` recursively. Never opens a file; directories are listed, following
/// symlinks to directories (a symlink cycle is reported, not followed forever).
pub fn scan(root: &Path) -> Scan {
    match std::fs::metadata(root) {
        // Removed while still reachable (a bind mount or a process's cwd keeps a deleted
        // directory visible, and empty): not "every file was removed".
        Ok(meta) if meta.is_dir() && meta.nlink() == 0 => {
            return Scan::RootUnavailable("was deleted (what is mounted here is the deleted directory)".into())
        }
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Scan::RootUnavailable("is not a directory".into()),
        Err(e) => return Scan::RootUnavailable(describe(&e)),
    }
    let mut entries = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    // Directories already listed (dev, ino): a symlink back up the tree is listed once.
    let mut listed = std::collections::HashSet::new();
    while let Some(dir) = stack.pop() {
        if let Ok(meta) = std::fs::metadata(&dir) {
            if !listed.insert((meta.dev(), meta.ino())) {
                continue;
            }
        }
        let reader = match std::fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if dir == root => return Scan::RootUnavailable(describe(&e)),
            Err(e) => {
                entries.insert(dir, Probe::Unreadable(format!("cannot list this directory: {}", describe(&e))));
                continue;
            }
        };
        for entry in reader {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    entries.insert(
                        dir.clone(),
                        Probe::Unreadable(format!("cannot list this directory: {}", describe(&e))),
                    );
                    break;
                }
            };
            let path = entry.path();
            if is_hidden(&path) {
                continue;
            }
            if let Some(probe) = probe(&path, &mut stack) {
                entries.insert(path, probe);
            }
        }
    }
    Scan::Listed { entries }
}

/// What one directory entry contributes: a config file's probe, an unusable path, or
/// nothing (other files; directories are pushed onto `stack`).
fn probe(path: &Path, stack: &mut Vec<PathBuf>) -> Option<Probe> {
    let config = is_config_name(path);
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => {
            let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            let target = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_default();
            let reason = match e.kind() {
                std::io::ErrorKind::NotFound if is_link => format!("dangling symlink (to {target})"),
                // Removed between listing and stat: simply gone.
                std::io::ErrorKind::NotFound => return None,
                _ if is_link => format!("cannot follow symlink to {target}: {}", describe(&e)),
                _ => format!("cannot stat: {}", describe(&e)),
            };
            return Some(Probe::Unreadable(reason));
        }
    };
    if meta.is_dir() {
        stack.push(path.to_path_buf());
        None
    } else if !config {
        None
    } else if meta.is_file() {
        Some(Probe::File(Stamp::of(&meta)))
    } else {
        Some(Probe::Unreadable("not a regular file (a FIFO, socket or device); it is not read".into()))
    }
}

/// Why reading a listed file did not give its text.
#[derive(Debug)]
pub enum ReadError {
    /// The file changed (or was replaced) since it was listed: look again later.
    Changed,
    Io(std::io::Error),
}

/// Reads the file `path` listed with `stamp`, without ever blocking on a FIFO, and only
/// if it is still the file of that stamp before and after the read.
pub fn read_listed(path: &Path, stamp: &Stamp) -> Result<String, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(ReadError::Io)?;
    let before = file.metadata().map_err(ReadError::Io)?;
    if !before.is_file() || Stamp::of(&before) != *stamp {
        return Err(ReadError::Changed);
    }
    let mut bytes = Vec::with_capacity(stamp.len as usize);
    file.read_to_end(&mut bytes).map_err(ReadError::Io)?;
    let after = file.metadata().map_err(ReadError::Io)?;
    if Stamp::of(&after) != *stamp || bytes.len() as u64 != stamp.len {
        return Err(ReadError::Changed);
    }
    String::from_utf8(bytes).map_err(|e| {
        ReadError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8 text ({e})")))
    })
}
