//! Tests of [`ConfigDir`] on real temporary directories: editors' save patterns,
//! unreadable paths, a Kubernetes ConfigMap volume's `..data` swap, duplicates.

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::*;
use crate::source::dir_scan::{scan, Probe, Scan};
use crate::source::dir_watch::settled;

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  ports: [{name: http, port: 9080}]\n";

fn service(name: &str, port: u16) -> String {
    SERVICE.replace("name: reviews", &format!("name: {name}")).replace("9080", &port.to_string())
}

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

/// Service name → first port, of what `dir` applies now.
fn ports(dir: &ConfigDir) -> BTreeMap<String, u16> {
    dir.objects()
        .0
        .into_iter()
        .filter_map(|o| match o {
            MeshObject::Service(s) => Some((s.name.clone(), s.ports[0].port)),
            _ => None,
        })
        .collect()
}

/// One look as the watcher does it, counting the files read.
fn load_counting(dir: &mut ConfigDir) -> Applied {
    let listing = scan(dir.root());
    let paths = dir.pending(&listing);
    dir.apply(&listing, &paths, dir_scan::read_listed)
}

/// From now on, `dir` lives 2 s in the future (past the racy window of what it read).
fn two_seconds_later(dir: &mut ConfigDir) {
    dir.clock = || now_ns() + 2_000_000_000;
}

fn set_mtime(path: &Path, ago: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - ago).unwrap();
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
    assert_eq!(ports(&dir)["reviews"], 9081);

    // Fixed (same size as the good version before: caught although the rewrite may
    // share its timestamp tick with the last one), then removed.
    std::fs::write(root.join("nested/vs.yml"), vs("80")).unwrap();
    dir.load().unwrap();
    assert_eq!(weights(&dir), vec![80, 50]);
    std::fs::write(root.join("nested/vs.yml"), vs("70")).unwrap();
    two_seconds_later(&mut dir);
    dir.load().unwrap();
    assert_eq!(weights(&dir), vec![70, 50], "a same-size rewrite right after a read is seen");
    assert!(dir.objects().1.is_empty());
    std::fs::remove_file(root.join("nested/vs.yml")).unwrap();
    dir.load().unwrap();
    assert_eq!(dir.objects().0.len(), 1);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn an_unchanged_directory_is_not_read_again() {
    let root = tempdir("idle");
    for (i, name) in ["a.yaml", "nested/b.yaml", "nested/c.yml"].into_iter().enumerate() {
        std::fs::write(root.join(name), service(&format!("s{i}"), 9000 + i as u16)).unwrap();
        set_mtime(&root.join(name), Duration::from_secs(60));
    }
    let mut dir = ConfigDir::new(&root);
    let first = load_counting(&mut dir);
    assert_eq!((first.changed, first.files_read), (true, 3));
    for _ in 0..5 {
        assert_eq!(load_counting(&mut dir), Applied::default(), "nothing changed: nothing read");
    }
    // Touched without a change: read once, nothing applied.
    set_mtime(&root.join("a.yaml"), Duration::from_secs(30));
    assert_eq!(load_counting(&mut dir), Applied { changed: false, files_read: 1, retry: false });
    assert_eq!(load_counting(&mut dir), Applied::default());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_file_written_just_now_is_read_once_more_then_left_alone() {
    let root = tempdir("racy");
    std::fs::write(root.join("a.yaml"), SERVICE).unwrap();
    let mut dir = ConfigDir::new(&root);
    assert_eq!(load_counting(&mut dir).files_read, 1);
    // Read within the racy window: a look once it has passed reads it again (no change
    // found); looks before do not.
    assert_eq!(load_counting(&mut dir), Applied::default());
    two_seconds_later(&mut dir);
    assert_eq!(load_counting(&mut dir), Applied { changed: false, files_read: 1, retry: false });
    assert_eq!(load_counting(&mut dir), Applied::default(), "read once more, not again");
    set_mtime(&root.join("a.yaml"), Duration::from_secs(10));
    load_counting(&mut dir);
    assert_eq!(load_counting(&mut dir), Applied::default(), "old enough: left alone");
    // A modification time in the future (set by a tool, or another machine's clock)
    // would stay "just now" forever: it is not racy.
    let file = std::fs::File::options().write(true).open(root.join("a.yaml")).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(3600)).unwrap();
    load_counting(&mut dir);
    assert_eq!(load_counting(&mut dir), Applied::default(), "future mtime: left alone");
    std::fs::remove_dir_all(&root).unwrap();
}

/// Each editor's way of saving ends with the new content applied and nothing else.
#[test]
fn editors_save_patterns_are_applied() {
    let root = tempdir("editors");
    let file = root.join("svc.yaml");
    std::fs::write(&file, service("reviews", 9000)).unwrap();
    std::fs::write(root.join("other.yaml"), service("ratings", 7000)).unwrap();
    let mut dir = ConfigDir::new(&root);
    dir.load().unwrap();
    type Save = fn(&Path, &str);
    let saves: [(&str, Save); 5] = [
        ("in place (truncate + write)", |f, text| std::fs::write(f, text).unwrap()),
        ("atomic rename of a temp file (vim writebackup, most IDEs)", |f, text| {
            let tmp = f.with_file_name(".svc.yaml.swp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, f).unwrap();
        }),
        ("backup by rename, then a new file (vim backupcopy=no)", |f, text| {
            let backup = f.with_file_name("svc.yaml~");
            std::fs::rename(f, &backup).unwrap();
            std::fs::write(f, text).unwrap();
            std::fs::remove_file(backup).unwrap();
        }),
        ("delete and recreate", |f, text| {
            std::fs::remove_file(f).unwrap();
            std::fs::write(f, text).unwrap();
        }),
        ("backup copy, then in place (vim backupcopy=yes)", |f, text| {
            let backup = f.with_file_name("svc.yaml~");
            std::fs::copy(f, &backup).unwrap();
            std::fs::write(f, text).unwrap();
            std::fs::remove_file(backup).unwrap();
        }),
    ];
    for (i, (how, save)) in saves.iter().enumerate() {
        let port = 9001 + i as u16;
        save(&file, &service("reviews", port));
        assert!(dir.load().unwrap(), "{how}: a change is seen");
        let want: BTreeMap<String, u16> = [("ratings".into(), 7000), ("reviews".into(), port)].into();
        assert_eq!(ports(&dir), want, "{how}");
        assert!(dir.objects().1.is_empty() && dir.unreadable().is_empty(), "{how}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// A Kubernetes ConfigMap volume, as the kubelet lays it out and updates it.
#[test]
fn a_configmap_volume_data_swap_is_applied() {
    let root = tempdir("configmap");
    let write_version = |version: &str, port: u16| {
        let dir = root.join(version);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("mesh.yaml"), service("reviews", port)).unwrap();
        dir
    };
    let first = write_version("..2026_12_02_10_00_00.000000001", 9000);
    symlink("..2026_12_02_10_00_00.000000001", root.join("..data")).unwrap();
    symlink("..data/mesh.yaml", root.join("mesh.yaml")).unwrap();
    let mut dir = ConfigDir::new(&root);
    assert!(dir.load().unwrap());
    assert_eq!(ports(&dir)["reviews"], 9000);
    assert_eq!(dir.objects().0.len(), 1, "hidden timestamped directories are not read twice");

    // The kubelet's update: a new timestamped directory, a new `..data_tmp` symlink
    // renamed over `..data`, then the old directory removed.
    write_version("..2026_12_02_10_05_00.000000002", 9001);
    symlink("..2026_12_02_10_05_00.000000002", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(first).unwrap();
    assert!(dir.load().unwrap(), "the swap is a change of mesh.yaml");
    assert_eq!(ports(&dir)["reviews"], 9001);
    assert!(dir.unreadable().is_empty(), "{:?}", dir.unreadable());
    assert!(!dir.load().unwrap());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn unreadable_paths_are_reported_and_everything_else_applies() {
    let root = tempdir("unreadable");
    std::fs::write(root.join("good.yaml"), service("good", 1000)).unwrap();
    std::fs::write(root.join("nested/kept.yaml"), service("kept", 2000)).unwrap();
    std::fs::write(root.join("was-file.yaml"), service("was-file", 3000)).unwrap();
    let mut dir = ConfigDir::new(&root);
    dir.load().unwrap();
    assert_eq!(ports(&dir).len(), 3);

    // A FIFO named *.yaml (reading it would block forever), a dangling symlink, a
    // symlink loop standing in for a subdirectory that cannot be listed, a file that
    // is not UTF-8 text, and a file turned into a dangling symlink.
    let status = std::process::Command::new("mkfifo").arg(root.join("pipe.yaml")).status().unwrap();
    assert!(status.success());
    symlink("missing.yaml", root.join("dangling.yaml")).unwrap();
    std::fs::remove_dir_all(root.join("nested")).unwrap();
    symlink("nested", root.join("nested")).unwrap();
    std::fs::write(root.join("binary.yaml"), [0xff, 0xfe, 0x00]).unwrap();
    std::fs::remove_file(root.join("was-file.yaml")).unwrap();
    symlink("gone.yaml", root.join("was-file.yaml")).unwrap();
    std::fs::write(root.join("new.yaml"), service("new", 4000)).unwrap();

    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        dir.load().unwrap();
        tx.send(()).unwrap();
        dir
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("loading never blocks (not even on a FIFO)");
    let dir = handle.join().unwrap();

    let want: BTreeMap<String, u16> =
        [("good".into(), 1000), ("kept".into(), 2000), ("was-file".into(), 3000), ("new".into(), 4000)].into();
    assert_eq!(ports(&dir), want, "what cannot be read now keeps what it held; the rest applies");
    let unreadable: BTreeMap<String, String> = dir
        .unreadable()
        .into_iter()
        .map(|p| {
            let file = p.file.unwrap();
            (file.strip_prefix(&format!("{}/", root.display())).unwrap().to_owned(), p.message)
        })
        .collect();
    let names: Vec<&str> = unreadable.keys().map(String::as_str).collect();
    assert_eq!(names, ["binary.yaml", "dangling.yaml", "nested", "pipe.yaml", "was-file.yaml"], "{unreadable:#?}");
    assert!(unreadable["pipe.yaml"].contains("not a regular file"), "{unreadable:#?}");
    assert!(unreadable["dangling.yaml"].contains("dangling symlink (to missing.yaml)"), "{unreadable:#?}");
    assert!(unreadable["nested"].contains("symlink") && unreadable["nested"].contains("stay in force"));
    assert!(unreadable["binary.yaml"].contains("UTF-8"), "{unreadable:#?}");
    assert!(unreadable["was-file.yaml"].contains("stay in force"), "{unreadable:#?}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// Permission bits, for a non-root user (root reads everything, so there it is skipped).
#[test]
fn a_subdirectory_without_permission_is_reported() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let euid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    if euid == 0 {
        eprintln!("skipped: root ignores permission bits (the symlink-loop case covers an unlistable directory)");
        return;
    }
    let root = tempdir("perm");
    std::fs::write(root.join("nested/a.yaml"), service("a", 1000)).unwrap();
    std::fs::write(root.join("b.yaml"), service("b", 2000)).unwrap();
    let mut dir = ConfigDir::new(&root);
    dir.load().unwrap();
    std::fs::set_permissions(root.join("nested"), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::write(root.join("b.yaml"), service("b", 2001)).unwrap();
    dir.load().unwrap();
    std::fs::set_permissions(root.join("nested"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(ports(&dir), [("a".into(), 1000), ("b".into(), 2001)].into());
    assert!(dir.unreadable()[0].message.contains("permission denied"), "{:?}", dir.unreadable());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_directory_vanishing_keeps_everything_and_its_return_applies() {
    let root = tempdir("vanish");
    std::fs::write(root.join("a.yaml"), service("a", 1000)).unwrap();
    std::fs::write(root.join("nested/b.yaml"), service("b", 2000)).unwrap();
    let mut dir = ConfigDir::new(&root);
    dir.load().unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    let err = dir.load().unwrap_err();
    assert!(matches!(&err, ConfigDirError::Unavailable { reason, .. } if reason == "does not exist"), "{err}");
    assert_eq!(ports(&dir).len(), 2, "everything stays");
    let problems = dir.unreadable();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].message.contains("does not exist"), "{problems:?}");
    assert!(problems[0].message.contains("last good configuration stays"), "{problems:?}");

    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.yaml"), service("a", 1001)).unwrap();
    assert!(dir.load().unwrap());
    assert_eq!(ports(&dir), [("a".into(), 1001)].into(), "the directory as it is now");
    assert!(dir.unreadable().is_empty());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn an_object_in_two_files_is_taken_from_the_one_written_last() {
    let root = tempdir("dup");
    std::fs::write(root.join("a.yaml"), SERVICE).unwrap();
    std::fs::write(root.join("b.yaml"), SERVICE.replace("9080", "9999")).unwrap();
    set_mtime(&root.join("a.yaml"), Duration::from_secs(10));
    set_mtime(&root.join("b.yaml"), Duration::from_secs(20));
    let mut dir = ConfigDir::new(&root);
    dir.load().unwrap();
    let (objects, problems) = dir.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(ports(&dir)["reviews"], 9080, "a.yaml was written last");
    assert_eq!(problems.len(), 1);
    assert!(problems[0].file.as_deref().unwrap().ends_with("b.yaml"));
    let message = &problems[0].message;
    assert!(message.contains("a.yaml, which was written later; that definition is used"), "{message}");

    // Editing b.yaml makes it the last written.
    std::fs::write(root.join("b.yaml"), SERVICE.replace("9080", "9998")).unwrap();
    dir.load().unwrap();
    assert_eq!(ports(&dir)["reviews"], 9998);
    assert!(dir.objects().1[0].file.as_deref().unwrap().ends_with("a.yaml"));

    // Same modification time: the later path wins.
    let when = SystemTime::now() - Duration::from_secs(5);
    for name in ["a.yaml", "b.yaml"] {
        std::fs::File::options().write(true).open(root.join(name)).unwrap().set_modified(when).unwrap();
    }
    dir.load().unwrap();
    assert_eq!(ports(&dir)["reviews"], 9998);
    assert!(dir.objects().1[0].message.contains("same modification time and a later path"));
    std::fs::remove_dir_all(&root).unwrap();
}

/// Only paths whose listing stayed the same over the settle period are applied.
#[test]
fn only_settled_changes_are_applied() {
    let stamp = |len| Stamp { dev: 1, ino: 2, len, mtime_ns: 3, ctime_ns: 4 };
    let listing = |entries: &[(&str, Probe)]| Scan::Listed {
        entries: entries.iter().map(|(p, probe)| (PathBuf::from(p), probe.clone())).collect(),
    };
    let pending: BTreeSet<PathBuf> = ["a.yaml", "b.yaml", "c.yaml", "d.yaml"].map(PathBuf::from).into();
    let before = listing(&[("a.yaml", Probe::File(stamp(10))), ("b.yaml", Probe::File(stamp(10)))]);
    let after = listing(&[
        ("a.yaml", Probe::File(stamp(10))), // unchanged over the period: settled
        ("b.yaml", Probe::File(stamp(20))), // still being written
        ("c.yaml", Probe::File(stamp(5))),  // appeared during the period
                                            // d.yaml: absent in both: its removal settled
    ]);
    let got: Vec<PathBuf> = settled(&pending, &before, &after).into_iter().collect();
    assert_eq!(got, ["a.yaml", "d.yaml"].map(PathBuf::from));
    let gone = Scan::RootUnavailable("does not exist".into());
    assert!(settled(&pending, &before, &gone).is_empty());
}

#[test]
fn a_file_that_changes_while_read_is_not_applied() {
    let root = tempdir("changing");
    let file = root.join("a.yaml");
    std::fs::write(&file, service("a", 1000)).unwrap();
    let listing = scan(&root);
    let Some(Probe::File(stamp)) = listing.entries().unwrap().get(&file).cloned() else { panic!("{listing:?}") };
    std::fs::write(&file, service("a", 10000)).unwrap();
    assert!(matches!(dir_scan::read_listed(&file, &stamp), Err(ReadError::Changed)));
    let mut dir = ConfigDir::new(&root);
    let applied = dir.apply(&listing, &dir.pending(&listing), dir_scan::read_listed);
    assert!(applied.retry && !applied.changed && ports(&dir).is_empty(), "{applied:?}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// A bind mount keeps showing a directory deleted on the host: empty, with no links. That
/// is the directory vanishing, not every file removed.
#[test]
fn a_deleted_directory_still_reachable_keeps_everything() {
    let root = tempdir("deleted");
    std::fs::write(root.join("a.yaml"), service("a", 1000)).unwrap();
    let handle = std::fs::File::open(&root).unwrap();
    let reachable = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&handle)));
    let mut dir = ConfigDir::new(&reachable);
    dir.load().unwrap();
    assert_eq!(ports(&dir).len(), 1);
    std::fs::remove_dir_all(&root).unwrap();
    assert!(std::fs::metadata(&reachable).unwrap().is_dir(), "still reachable");
    assert!(dir.load().is_err());
    assert_eq!(ports(&dir).len(), 1, "everything stays");
    assert!(dir.unreadable()[0].message.contains("was deleted"), "{:?}", dir.unreadable());
}
