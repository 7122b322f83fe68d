//! The I/O edge of the config-directory source: filesystem events and a periodic
//! listing decide when to look; a change is applied once it has settled.
//!
//! Rules it keeps:
//! - only events that can mean new content wake it (creates, writes, renames, removals,
//!   metadata changes); opens, reads and closes after reading do not, so its own reads
//!   never wake it again;
//! - looking is listing ([`dir_scan::scan`], `stat` only): a file is read only when its
//!   stamp (inode, size, mtime, ctime) differs from the one applied, so an idle meshd
//!   reads nothing, and the periodic safety-net listing costs no reads either;
//! - a change is applied only once the file's stamp has stayed the same for the settle
//!   period (listed before and after it) and again while it was read: a writer pausing
//!   mid-file for less than the settle period never gets its half-written content pushed;
//! - the directory may vanish and come back (or be replaced): while it is gone its
//!   parent is watched, so its return is noticed at once, and the watch is re-made on
//!   the new directory.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::model::ObjectError;
use crate::push::MeshState;
use crate::source::config_dir::{ConfigDir, ConfigDirError};
use crate::source::dir_scan::{self, Scan};

/// How often the directory is listed even without events (a safety net for lost
/// events and filesystems that send none). Listing reads no file.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(5);

/// Whether a filesystem event can mean that a config file's content changed.
pub fn is_content_event(kind: &EventKind) -> bool {
    match kind {
        // A writer closing the file is the end of a write; opens and reads are not news.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        _ => true,
    }
}

/// Whether `event` should make the watcher look at `root` again.
fn wakes(event: &notify::Result<notify::Event>, root: &Path) -> bool {
    match event {
        // Lost events (queue overflow) or a watch error: look, to be sure.
        Err(_) => true,
        Ok(event) if event.need_rescan() => true,
        Ok(event) => is_content_event(&event.kind) && event.paths.iter().any(|p| p.starts_with(root)),
    }
}

/// The notify watch on the directory, re-made when the directory is replaced.
struct DirWatch {
    root: PathBuf,
    wake: mpsc::Sender<()>,
    watcher: Option<notify::RecommendedWatcher>,
    /// (dev, ino) of the directory being watched; `None` with a watcher: the directory
    /// is gone and its parent is watched, for its return.
    watching: Option<(u64, u64)>,
    problem: Option<ObjectError>,
}

impl DirWatch {
    fn new(root: PathBuf, wake: mpsc::Sender<()>) -> DirWatch {
        DirWatch { root, wake, watcher: None, watching: None, problem: None }
    }

    /// Watches the directory now at `root` if it is not the one watched (or watching it
    /// failed last time: a subdirectory that could not be watched may be readable now).
    fn refresh(&mut self) {
        let Ok(meta) = std::fs::metadata(&self.root) else {
            // Gone: watch the parent for its return (the periodic listing, if that fails).
            if self.watching.is_some() || self.watcher.is_none() {
                self.watching = None;
                self.watcher = self.root.parent().and_then(|parent| self.make_watcher(parent, false).ok());
            }
            return;
        };
        let identity = (meta.dev(), meta.ino());
        if self.watching == Some(identity) && self.watcher.is_some() {
            return;
        }
        self.watcher = None;
        self.watching = Some(identity);
        match self.make_watcher(&self.root, true) {
            Ok(watcher) => {
                self.watcher = Some(watcher);
                if self.problem.take().is_some() {
                    tracing::info!(dir = %self.root.display(), "watching the config directory again");
                }
            }
            Err(e) => {
                let message = format!(
                    "cannot watch for changes ({e}); changes are picked up by the listing every {}s",
                    RESCAN_INTERVAL.as_secs()
                );
                if self.problem.as_ref().is_none_or(|p| p.message != message) {
                    tracing::warn!(dir = %self.root.display(), error = %e, "cannot watch the config directory");
                }
                self.problem = Some(ObjectError::at_path(crate::model::Severity::Warning, &self.root, message));
            }
        }
    }

    /// A watcher on `path` (recursively or not) whose events about `root` wake the loop.
    fn make_watcher(&self, path: &Path, recursive: bool) -> Result<notify::RecommendedWatcher, ConfigDirError> {
        let root = self.root.clone();
        let wake = self.wake.clone();
        let watch_error = |source| ConfigDirError::Watch { path: path.to_path_buf(), source };
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if wakes(&event, &root) {
                // A full channel already says "look again".
                let _ = wake.try_send(());
            }
        })
        .map_err(watch_error)?;
        let mode = if recursive { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
        watcher.watch(path, mode).map_err(watch_error)?;
        Ok(watcher)
    }
}

/// The source's loop: owns the directory state and publishes it into [`MeshState`].
struct DirSource {
    dir: ConfigDir,
    watch: DirWatch,
    state: Arc<MeshState>,
    settle: Duration,
    wake: mpsc::Receiver<()>,
}

impl DirSource {
    /// Lists, waits for the pending changes to settle, reads and applies those that did;
    /// repeats while some are pending.
    async fn look(&mut self) {
        let root = self.dir.root().to_path_buf();
        let mut before = tokio::task::block_in_place(|| dir_scan::scan(&root));
        loop {
            self.watch.refresh();
            let pending = self.dir.pending(&before);
            let (after, settled) = if pending.is_empty() {
                (before, BTreeSet::new())
            } else {
                tokio::time::sleep(self.settle).await;
                // The listing after the period sees every change woken for meanwhile.
                while self.wake.try_recv().is_ok() {}
                let after = tokio::task::block_in_place(|| dir_scan::scan(&root));
                let settled = settled(&pending, &before, &after);
                (after, settled)
            };
            let applied = tokio::task::block_in_place(|| self.dir.apply(&after, &settled, dir_scan::read_listed));
            self.publish(applied.changed);
            let stats = &self.state.source_stats;
            stats.files_read.fetch_add(applied.files_read, Ordering::Relaxed);
            // Done unless something is still changing, changed while it was read, or
            // changed during the settle period (its wake-up was drained above).
            if self.dir.pending(&after).is_empty() {
                return;
            }
            before = after;
        }
    }

    /// Hands the directory's objects and problems to the model.
    fn publish(&self, changed: bool) {
        let mut unreadable = self.dir.unreadable();
        unreadable.extend(self.watch.problem.clone());
        let old: BTreeSet<ObjectError> = self.state.unreadable().into_iter().collect();
        for p in unreadable.iter().filter(|p| !old.contains(p)) {
            crate::logging::log_problem(p);
        }
        for p in old.iter().filter(|p| !unreadable.contains(p)) {
            tracing::info!(file = p.file.as_deref(), "readable again (or gone)");
        }
        self.state.set_unreadable(unreadable);
        if !changed && self.state.is_synced() {
            return;
        }
        let (objects, origins, problems) = self.dir.objects_with_origins();
        let old: BTreeSet<ObjectError> = self.state.source_problems().into_iter().collect();
        for p in problems.iter().filter(|p| !old.contains(p)) {
            crate::logging::log_problem(p);
        }
        self.state.set_source_problems(problems);
        self.state.set_origins(origins);
        let count = objects.len();
        self.state.update(|index| index.sync_to(objects));
        self.state.source_stats.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::info!(dir = %self.dir.root().display(), objects = count, "config directory applied");
    }
}

/// The pending paths whose listing is the same in `before` and `after`.
pub fn settled(pending: &BTreeSet<PathBuf>, before: &Scan, after: &Scan) -> BTreeSet<PathBuf> {
    let (Some(b), Some(a)) = (before.entries(), after.entries()) else {
        return BTreeSet::new();
    };
    pending.iter().filter(|p| b.get(*p) == a.get(*p)).cloned().collect()
}

/// Reads `root` once (letting changes in progress settle), marks the source synced, then
/// looks again whenever an event or the periodic listing says something may have changed.
/// Runs until the task is dropped.
pub async fn watch(root: PathBuf, state: Arc<MeshState>, settle: Duration) -> Result<(), ConfigDirError> {
    let (tx, rx) = mpsc::channel::<()>(1);
    let mut source = DirSource {
        dir: ConfigDir::new(&root),
        watch: DirWatch::new(root.clone(), tx),
        state: state.clone(),
        settle,
        wake: rx,
    };
    source.look().await;
    state.mark_synced();
    tracing::info!(dir = %root.display(), "config directory read");
    let mut rescan = tokio::time::interval(RESCAN_INTERVAL);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    rescan.tick().await;
    loop {
        tokio::select! {
            event = source.wake.recv() => {
                if event.is_none() {
                    return Ok(());
                }
            }
            _ = rescan.tick() => {}
        }
        source.look().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};

    #[test]
    fn only_events_that_can_change_content_wake_the_watcher() {
        use AccessKind as A;
        let cases = [
            (EventKind::Access(A::Open(AccessMode::Any)), false),
            (EventKind::Access(A::Read), false),
            (EventKind::Access(A::Close(AccessMode::Read)), false),
            (EventKind::Access(A::Close(AccessMode::Write)), true),
            (EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)), false),
            (EventKind::Modify(ModifyKind::Metadata(MetadataKind::Permissions)), true),
            (EventKind::Modify(ModifyKind::Data(DataChange::Any)), true),
            (EventKind::Modify(ModifyKind::Name(RenameMode::To)), true),
            (EventKind::Create(CreateKind::File), true),
            (EventKind::Remove(RemoveKind::Folder), true),
            (EventKind::Any, true),
        ];
        let root = Path::new("/etc/mesh");
        for (kind, want) in cases {
            assert_eq!(is_content_event(&kind), want, "{kind:?}");
            let event = notify::Event::new(kind).add_path(root.join("a.yaml"));
            assert_eq!(wakes(&Ok(event), root), want, "{kind:?}");
        }
        // The parent is watched only for the directory itself.
        let sibling = notify::Event::new(EventKind::Create(CreateKind::File)).add_path("/etc/other.yaml".into());
        assert!(!wakes(&Ok(sibling), root));
        let back = notify::Event::new(EventKind::Create(CreateKind::Folder)).add_path(root.into());
        assert!(wakes(&Ok(back), root));
        assert!(wakes(&Err(notify::Error::generic("queue overflow")), root));
    }

    /// A change made while another settles is applied too, without waiting for the
    /// periodic listing (its wake-up was drained during the settle period).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_during_the_settle_period_is_not_lost() {
        let root = std::env::temp_dir().join(format!("amime-dirwatch-settle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let state = MeshState::new();
        let task = tokio::spawn(watch(root.clone(), state.clone(), Duration::from_millis(400)));
        while !state.is_synced() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let service =
            "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns}\nspec:\n  ports: [{port: 80}]\n";
        std::fs::write(root.join("a.yaml"), service).unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        std::fs::write(root.join("b.yaml"), service).unwrap();
        // Both applied: the duplicate is reported. Well before the 5 s listing.
        let deadline = tokio::time::Instant::now() + RESCAN_INTERVAL - Duration::from_secs(1);
        while state.source_problems().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "b.yaml was not applied before the periodic listing");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        std::fs::remove_dir_all(&root).unwrap();
    }
}
