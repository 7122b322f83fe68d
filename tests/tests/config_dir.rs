//! The config-directory source end to end, against the real meshd binary: an idle meshd
//! reads nothing, editors' saves apply once each and only when settled, unreadable paths
//! and the directory vanishing are reported (and everything else keeps working), and a
//! Kubernetes ConfigMap volume's `..data` swap is applied.
//!
//! What meshd applied is read from its own diagnostics: `anchor.yaml` (written long ago)
//! defines Services `marker-1` … `marker-9`; a file that defines some of them again wins
//! (it was written later), and `/debug/config_errors` names each such marker. So the
//! markers named there are exactly those the other files hold as applied.
//!
//! Every test owns one loopback block (`127.0.N.x`, blocks 111..=119 belong to this file).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, SystemTime};

use amime_e2e::mesh::EXAMPLE_RULES_FILE;
use amime_e2e::rules::REVIEWS_VS_ALL_V3;
use amime_e2e::{
    await_condition, hosts, paths, run_test, Bookinfo, BookinfoOptions, IpBlock, MeshDir, Meshd, Tally, TestContext,
};
use anyhow::{bail, ensure, Context as _, Result};

const RELOADS: &str = "amime_config_reloads_total";
const FILES_READ: &str = "amime_config_files_read_total";
/// How long a change may take to show (generous: the machine is shared and loaded).
const APPLIED: Duration = Duration::from_secs(20);

fn marker(n: u32) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: marker-{n}, namespace: default}}\nspec:\n  ports: [{{name: http, port: {}}}]\n",
        9000 + n
    )
}

/// A file holding the Services `marker-<n>` for each of `markers`.
fn markers(markers: &[u32]) -> String {
    markers.iter().map(|n| marker(*n)).collect::<Vec<_>>().join("---\n")
}

/// The config directory with `anchor.yaml` (every marker, modified an hour ago).
fn anchored_dir(ctx: &TestContext) -> Result<MeshDir> {
    let dir = MeshDir::new(ctx)?;
    dir.write("anchor.yaml", &markers(&[1, 2, 3, 4, 5, 6, 7, 8, 9]))?;
    let anchor = std::fs::File::options().write(true).open(dir.path().join("anchor.yaml"))?;
    anchor.set_modified(SystemTime::now() - Duration::from_secs(3600))?;
    Ok(dir)
}

/// The markers that files other than the anchor hold, as meshd reports them.
async fn applied_markers(meshd: &Meshd) -> Result<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    for e in meshd.config_errors().await? {
        if e.file.ends_with("anchor.yaml") && e.message.contains("which was written later") {
            let name = e.name.as_deref().unwrap_or_default();
            out.insert(name.trim_start_matches("marker-").parse().with_context(|| format!("marker name {name}"))?);
        }
    }
    Ok(out)
}

async fn await_markers(meshd: &Meshd, want: &[u32]) -> Result<()> {
    let want: BTreeSet<u32> = want.iter().copied().collect();
    await_condition(&format!("meshd to apply markers {want:?}"), APPLIED, || async {
        let got = applied_markers(meshd).await?;
        ensure!(got == want, "applied markers {got:?}");
        Ok(())
    })
    .await
}

async fn metric(meshd: &Meshd, name: &str) -> Result<f64> {
    meshd.metric(name).await?.with_context(|| format!("meshd /metrics has no {name}"))
}

fn meshd_args(settle_ms: u64) -> Vec<String> {
    vec!["--config-settle".into(), settle_ms.to_string()]
}

async fn start(ctx: &TestContext, dir: &Path, block: IpBlock, settle_ms: u64) -> Result<Meshd> {
    let args = meshd_args(settle_ms);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Meshd::start(ctx, dir, block.ip(hosts::MESHD), &args).await
}

/// Idle, meshd reads nothing: after the first look (and at most one more read of files
/// written just before it started, see `RACY_WINDOW_NS`), its counters stay flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_meshd_reads_nothing() {
    run_test("an_idle_meshd_reads_nothing", |ctx| async move {
        let block = IpBlock(111);
        let dir = anchored_dir(&ctx)?;
        dir.write("nested/more.yaml", &markers(&[1]))?;
        dir.copy_bookinfo_example(block)?;
        let files = 4.0;
        let meshd = start(&ctx, dir.path(), block, 50).await?;
        await_markers(&meshd, &[1]).await?;
        let (reads_at_start, reloads_at_start) = (metric(&meshd, FILES_READ).await?, metric(&meshd, RELOADS).await?);
        ensure!((files..=2.0 * files).contains(&reads_at_start), "{reads_at_start} files read at start");
        // Let the periodic listing (every 5 s) pass once, then watch a quiet window.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let reads = metric(&meshd, FILES_READ).await?;
        ensure!(reads <= 2.0 * files, "{reads} files read in the first 6 s of {files} files");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (reads_later, reloads_later) = (metric(&meshd, FILES_READ).await?, metric(&meshd, RELOADS).await?);
        ensure!(reads_later == reads, "idle meshd read {} files in 3 s", reads_later - reads);
        ensure!(reloads_later == reloads_at_start, "idle meshd reloaded {} times", reloads_later - reloads_at_start);
        Ok(())
    })
    .await;
}

/// Each editor's way of saving is applied exactly once, and a writer that pauses mid-file
/// (for less than the settle period) never gets its first half applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editor_saves_apply_once_each_and_only_when_settled() {
    run_test("editor_saves_apply_once_each_and_only_when_settled", |ctx| async move {
        let block = IpBlock(112);
        let dir = anchored_dir(&ctx)?;
        let file = dir.path().join("edited.yaml");
        std::fs::write(&file, markers(&[1]))?;
        let meshd = start(&ctx, dir.path(), block, 1000).await?;
        await_markers(&meshd, &[1]).await?;
        let reloads = metric(&meshd, RELOADS).await?;

        type Save = fn(&Path, &str) -> Result<()>;
        let saves: [(&str, Save); 4] = [
            ("in place (truncate + write)", |f, text| Ok(std::fs::write(f, text)?)),
            ("vim: write a temp file, rename it over", |f, text| {
                let tmp = f.with_file_name(".edited.yaml.swp");
                std::fs::write(&tmp, text)?;
                Ok(std::fs::rename(&tmp, f)?)
            }),
            ("vim backupcopy=no: rename to a backup, write anew", |f, text| {
                let backup = f.with_file_name("edited.yaml~");
                std::fs::rename(f, &backup)?;
                std::fs::write(f, text)?;
                Ok(std::fs::remove_file(backup)?)
            }),
            ("delete and recreate", |f, text| {
                std::fs::remove_file(f)?;
                Ok(std::fs::write(f, text)?)
            }),
        ];
        for (i, (how, save)) in saves.iter().enumerate() {
            let n = 2 + i as u32;
            save(&file, &markers(&[n])).with_context(|| how.to_string())?;
            await_markers(&meshd, &[n]).await.with_context(|| how.to_string())?;
        }

        // A writer pausing mid-file (0.2 s, under the 1 s settle period): the first half
        // alone (marker 6 without 7) is valid YAML and must never be applied.
        let mut writer = std::fs::File::create(&file)?;
        writer.write_all(format!("{}---\n", marker(6)).as_bytes())?;
        writer.flush()?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        writer.write_all(marker(7).as_bytes())?;
        drop(writer);
        await_markers(&meshd, &[6, 7]).await?;

        let saves_made = saves.len() as f64 + 1.0;
        let reloads_now = metric(&meshd, RELOADS).await?;
        ensure!(
            reloads_now - reloads == saves_made,
            "{saves_made} saves should make {saves_made} reloads, got {}",
            reloads_now - reloads
        );
        Ok(())
    })
    .await;
}

/// A FIFO named `*.yaml` (reading it would block), a dangling symlink, a subdirectory that
/// cannot be listed (a symlink loop: root can list anything else) and the directory itself
/// vanishing: each is reported in `/debug/config_errors` and `/readyz` (which stays 200:
/// the last good config is served), and edits elsewhere still apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_paths_are_reported_and_edits_elsewhere_apply() {
    run_test("unreadable_paths_are_reported_and_edits_elsewhere_apply", |ctx| async move {
        let block = IpBlock(113);
        let dir = anchored_dir(&ctx)?;
        dir.write("edited.yaml", &markers(&[1]))?;
        dir.write("sub/held.yaml", &markers(&[2]))?;
        let meshd = start(&ctx, dir.path(), block, 50).await?;
        await_markers(&meshd, &[1, 2]).await?;

        let root = dir.path();
        let status = std::process::Command::new("mkfifo").arg(root.join("pipe.yaml")).status()?;
        ensure!(status.success(), "mkfifo failed");
        symlink("nowhere.yaml", root.join("dangling.yaml"))?;
        std::fs::remove_dir_all(root.join("sub"))?;
        symlink("sub", root.join("sub"))?;
        dir.write("edited.yaml", &markers(&[3]))?;
        // marker 2 (in the subdirectory that cannot be listed now) stays applied.
        await_markers(&meshd, &[2, 3]).await?;
        let reported: BTreeSet<String> = meshd
            .config_errors()
            .await?
            .into_iter()
            .filter(|e| e.kind.is_none())
            .filter_map(|e| Some(e.file.strip_prefix(&format!("{}/", root.display()))?.to_owned()))
            .collect();
        let want: BTreeSet<String> = ["dangling.yaml", "pipe.yaml", "sub"].map(String::from).into();
        ensure!(reported == want, "unreadable paths reported: {reported:?}");
        let ready = meshd.get("/readyz").await?;
        ensure!(ready.status == 200, "/readyz: {}", ready.summary());
        for (what, text) in
            [("pipe.yaml", "not a regular file"), ("dangling.yaml", "dangling symlink"), ("sub", "stay in force")]
        {
            ensure!(
                ready.body.lines().any(|l| l.contains(what) && l.contains(text)),
                "/readyz should say {what}: {text}; body: {}",
                ready.body
            );
        }
        ensure!(metric(&meshd, "amime_config_unreadable_paths").await? == 3.0);
        check_operator_log(&meshd)?;

        // The directory vanishes: everything stays, and /readyz says why.
        let moved = root.with_extension("moved");
        std::fs::rename(root, &moved)?;
        await_condition("/readyz to say the directory is gone", APPLIED, || async {
            let r = meshd.get("/readyz").await?;
            ensure!(r.status == 200 && r.body.contains("does not exist"), "{}", r.summary());
            Ok(())
        })
        .await?;
        ensure!(applied_markers(&meshd).await? == BTreeSet::from([2, 3]), "everything stays applied");

        // It comes back (another directory now), fixed: applied, and nothing reported.
        std::fs::create_dir(root)?;
        let anchor = std::fs::read_to_string(moved.join("anchor.yaml"))?;
        std::fs::write(root.join("anchor.yaml"), anchor)?;
        let f = std::fs::File::options().write(true).open(root.join("anchor.yaml"))?;
        f.set_modified(SystemTime::now() - Duration::from_secs(3600))?;
        dir.write("edited.yaml", &markers(&[4]))?;
        await_markers(&meshd, &[4]).await?;
        await_condition("/readyz to report nothing unreadable", APPLIED, || async {
            let r = meshd.get("/readyz").await?;
            ensure!(
                r.status == 200 && r.body.starts_with("ready\n") && !r.body.contains("degraded"),
                "{}",
                r.summary()
            );
            Ok(())
        })
        .await?;
        // And the new directory is watched: a later edit applies too.
        dir.write("edited.yaml", &markers(&[5]))?;
        await_markers(&meshd, &[5]).await
    })
    .await;
}

/// A Kubernetes ConfigMap volume, laid out and updated exactly as the kubelet does:
/// `x.yaml -> ..data/x.yaml`, `..data -> ..<timestamp>/`, and an update renames a new
/// `..data_tmp` symlink over `..data`, then removes the old timestamped directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_volume_update_is_applied() {
    run_test("a_configmap_volume_update_is_applied", |ctx| async move {
        let block = IpBlock(114);
        let dir = anchored_dir(&ctx)?;
        let root = dir.path();
        let version = |name: &str, n: &[u32]| -> Result<()> {
            std::fs::create_dir(root.join(name))?;
            Ok(std::fs::write(root.join(name).join("markers.yaml"), markers(n))?)
        };
        version("..2026_12_02_10_00_00.000000001", &[1])?;
        symlink("..2026_12_02_10_00_00.000000001", root.join("..data"))?;
        symlink("..data/markers.yaml", root.join("markers.yaml"))?;
        let meshd = start(&ctx, root, block, 50).await?;
        await_markers(&meshd, &[1]).await?;

        for (i, stamp) in ["..2026_12_02_10_05_00.000000002", "..2026_12_02_10_10_00.000000003"].iter().enumerate() {
            let n = 2 + i as u32;
            let old = std::fs::read_link(root.join("..data"))?;
            version(stamp, &[n, n + 5])?;
            symlink(stamp, root.join("..data_tmp"))?;
            std::fs::rename(root.join("..data_tmp"), root.join("..data"))?;
            std::fs::remove_dir_all(root.join(old))?;
            await_markers(&meshd, &[n, n + 5]).await?;
        }
        let unreadable = metric(&meshd, "amime_config_unreadable_paths").await?;
        if unreadable != 0.0 {
            bail!("the swap left {unreadable} unreadable paths: {:?}", meshd.config_errors().await?);
        }
        Ok(())
    })
    .await;
}

/// Permission bits, which only bind a non-root meshd: it runs as `nobody` here. A
/// subdirectory and a file it may not read are reported (and keep what they held); an
/// edit elsewhere still applies; restoring the permission clears the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_without_permission_are_reported_and_edits_elsewhere_apply() {
    run_test("paths_without_permission_are_reported_and_edits_elsewhere_apply", |ctx| async move {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path, mode: u32| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
        let block = IpBlock(115);
        let dir = anchored_dir(&ctx)?;
        dir.write("edited.yaml", &markers(&[1]))?;
        dir.write("sub/held.yaml", &markers(&[2]))?;
        dir.write("secret.yaml", &markers(&[3]))?;
        let root = dir.path();
        let args = meshd_args(50);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let meshd = Meshd::start_unprivileged(&ctx, root, block.ip(hosts::MESHD), &args).await?;
        await_markers(&meshd, &[1, 2, 3]).await?;

        mode(&root.join("sub"), 0o000)?;
        mode(&root.join("secret.yaml"), 0o000)?;
        // A change of the unreadable file (its stamp changes) makes meshd try to read it.
        std::fs::write(root.join("secret.yaml"), markers(&[4]))?;
        dir.write("edited.yaml", &markers(&[5]))?;
        await_markers(&meshd, &[2, 3, 5]).await?;
        await_condition("/readyz to name both paths", APPLIED, || async {
            let r = meshd.get("/readyz").await?;
            ensure!(r.status == 200, "{}", r.summary());
            for name in ["/sub: cannot list this directory: permission denied", "/secret.yaml: cannot read"] {
                ensure!(r.body.contains(name), "no {name:?} in {}", r.body);
            }
            Ok(())
        })
        .await?;

        mode(&root.join("sub"), 0o755)?;
        mode(&root.join("secret.yaml"), 0o644)?;
        await_markers(&meshd, &[2, 4, 5]).await?;
        await_condition("/readyz to report nothing unreadable", APPLIED, || async {
            let r = meshd.get("/readyz").await?;
            ensure!(r.status == 200 && !r.body.contains("degraded"), "{}", r.summary());
            Ok(())
        })
        .await
    })
    .await;
}

/// Real Envoy never sees a half-written file: the reviews rules file is rewritten in place
/// by a writer that pauses after the DestinationRule (0.7 s, under the 1.5 s settle
/// period). Applied, that half (no VirtualService) would send requests to every version,
/// v2 included; the whole file sends everyone to v3. No request may reach v2 on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_never_gets_a_half_written_file() {
    run_test("envoy_never_gets_a_half_written_file", |ctx| async move {
        let block = IpBlock(116);
        let dir = MeshDir::new(&ctx)?;
        dir.copy_bookinfo_example(block)?;
        let rules = dir.read(EXAMPLE_RULES_FILE)?;
        let destination_rule = rules
            .split("\n---\n")
            .find(|d| d.contains("kind: DestinationRule"))
            .context("the example's DestinationRule")?
            .trim_end()
            .to_owned();
        let options = BookinfoOptions { meshd_args: meshd_args(1500), ..Default::default() };
        let bookinfo = Bookinfo::start(&ctx, block, dir, options).await?;
        let url = Bookinfo::REVIEWS_URL;
        let before = bookinfo.productpage.tally(20, url, &[]).await;
        ensure!(before.total == before.get("v1") + before.get("v3"), "the example sends others to v1/v3: {before}");

        let path = bookinfo.dir.path().join(EXAMPLE_RULES_FILE);
        let mut writer = std::fs::File::create(&path)?;
        writer.write_all(format!("{destination_rule}\n---\n").as_bytes())?;
        writer.flush()?;
        let mut seen = Tally::default();
        let pause = std::time::Instant::now();
        while pause.elapsed() < Duration::from_millis(700) {
            seen.record(bookinfo.productpage.request(url, &[]).await);
        }
        writer.write_all(REVIEWS_VS_ALL_V3.as_bytes())?;
        drop(writer);
        let written = std::time::Instant::now();
        let mut in_a_row = 0;
        while in_a_row < 20 {
            ensure!(written.elapsed() < APPLIED, "everyone should reach v3 in the end; since the write: {seen}");
            let response = bookinfo.productpage.request(url, &[]).await;
            let v3 = response.as_ref().ok().and_then(|r| r.json_str("version")).as_deref() == Some("v3");
            in_a_row = if v3 { in_a_row + 1 } else { 0 };
            seen.record(response);
        }
        ensure!(seen.get("v2") == 0, "the half-written file reached Envoy: requests went to v2: {seen}");
        bookinfo.check_no_nacks().await
    })
    .await;
}

/// meshd's log (a file, not a terminal) is for people: no colour escapes, no `Some(..)`
/// or `None` around fields, durations rounded (`took=428µs`, not `0.428417ms`).
fn check_operator_log(meshd: &Meshd) -> Result<()> {
    let path = meshd.process().stdout_log();
    let log = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    ensure!(log.contains("ERROR"), "the problems above should have been logged:\n{log}");
    for line in log.lines() {
        ensure!(!line.contains('\x1b'), "colour escapes in a log that is not a terminal: {line:?}");
        ensure!(!line.contains("Some(") && !line.contains("=None"), "Debug-formatted Option: {line}");
        if let Some(took) = line.split("took=").nth(1) {
            let took = took.split_whitespace().next().unwrap_or_default();
            let digits = took.trim_end_matches(|c: char| c.is_alphabetic() || c == 'µ');
            ensure!(!digits.contains('.') || took.ends_with('s') && !took.ends_with("ms"), "unrounded: {line}");
        }
    }
    Ok(())
}

/// Flags meshd cannot run with are refused at once, saying what is wrong (exit code 2 for
/// inconsistent flags, 1 for a config directory that is missing or a file).
#[tokio::test]
async fn meshd_refuses_bad_flags_saying_why() {
    run_test("meshd_refuses_bad_flags_saying_why", |ctx| async move {
        let meshd = paths::binary("meshd")?;
        let file = ctx.dir().join("mesh.yaml");
        std::fs::write(&file, "")?;
        let missing = ctx.dir().join("nowhere");
        let (file, missing) = (file.display().to_string(), missing.display().to_string());
        let dir = ctx.dir().display().to_string();
        let cases: [(Vec<&str>, i32, String); 3] = [
            (
                vec!["--config-dir", &dir, "--debounce-quiet", "500", "--debounce-max", "100"],
                2,
                "--debounce-max (100 ms) is below --debounce-quiet (500 ms)".into(),
            ),
            (vec!["--config-dir", &missing], 1, format!("--config-dir {missing}: does not exist")),
            (vec!["--config-dir", &file], 1, format!("--config-dir {file}: is a file, not a directory")),
        ];
        for (args, code, message) in cases {
            let run = tokio::process::Command::new(&meshd).args(&args).kill_on_drop(true).output();
            let out = tokio::time::timeout(Duration::from_secs(10), run).await.context("meshd did not exit")??;
            let stderr = String::from_utf8_lossy(&out.stderr);
            ensure!(out.status.code() == Some(code), "meshd {args:?}: exit {:?}, stderr {stderr}", out.status);
            ensure!(stderr.contains(&message), "meshd {args:?} should say {message:?}; stderr: {stderr}");
        }
        Ok(())
    })
    .await;
}

/// A subdirectory meshd (as `nobody`) may not read from the start: inotify cannot watch
/// it, so meshd says so and falls back to listing every 5 s; edits elsewhere still apply;
/// once the subdirectory is readable the watch is made again and the report clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subdirectory_unreadable_from_the_start_does_not_stop_the_rest() {
    run_test("a_subdirectory_unreadable_from_the_start_does_not_stop_the_rest", |ctx| async move {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path, mode: u32| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
        let block = IpBlock(117);
        let dir = anchored_dir(&ctx)?;
        dir.write("edited.yaml", &markers(&[1]))?;
        dir.write("sub/hidden.yaml", &markers(&[2]))?;
        let root = dir.path();
        mode(&root.join("sub"), 0o000)?;
        let args = meshd_args(50);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let meshd = Meshd::start_unprivileged(&ctx, root, block.ip(hosts::MESHD), &args).await?;
        await_markers(&meshd, &[1]).await?;
        let r = meshd.get("/readyz").await?;
        ensure!(r.status == 200, "{}", r.summary());
        for text in ["/sub: cannot list this directory: permission denied", "cannot watch for changes"] {
            ensure!(r.body.contains(text), "/readyz should say {text:?}: {}", r.body);
        }
        dir.write("edited.yaml", &markers(&[3]))?;
        await_markers(&meshd, &[3]).await?;

        mode(&root.join("sub"), 0o755)?;
        await_markers(&meshd, &[2, 3]).await?;
        await_condition("/readyz to report nothing unreadable", APPLIED, || async {
            let r = meshd.get("/readyz").await?;
            ensure!(r.status == 200 && !r.body.contains("degraded"), "{}", r.summary());
            Ok(())
        })
        .await?;
        // Watched again ("cannot watch" is gone from /readyz above), and edits apply.
        dir.write("edited.yaml", &markers(&[4]))?;
        await_markers(&meshd, &[2, 4]).await?;
        Ok(())
    })
    .await;
}
