//! `meshctl demo` end to end: the measured run (exit codes), the live view in a real terminal
//! (tmux at 80×24 and 200×50), and that quitting, Ctrl-C, SIGTERM and a closed terminal leave no meshd or Envoy
//! running. Loopback blocks 210..=219 belong to this file.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use amime_e2e::process::{run_to_completion, ManagedProcess};
use amime_e2e::{await_condition, paths, run_test, TestContext};
use anyhow::{bail, ensure, Context as _, Result};

/// How long a whole measured run may take (four steps of 240 requests at 80/s, plus start).
const RUN_LIMIT: Duration = Duration::from_secs(90);

fn demo_args(block: u8, extra: &[&str]) -> Result<Vec<String>> {
    let mut args: Vec<String> = vec!["demo".into(), "--block".into(), block.to_string()];
    args.extend(["--envoy".into(), paths::envoy()?.display().to_string()]);
    args.extend(extra.iter().map(|a| a.to_string()));
    Ok(args)
}

/// Start `meshctl demo` (stdout and stderr to the test's logs).
fn spawn_demo(ctx: &TestContext, block: u8, extra: &[&str]) -> Result<ManagedProcess> {
    ManagedProcess::spawn(ctx, "meshctl-demo", &paths::binary("meshctl")?, demo_args(block, extra)?)
}

async fn await_exit(demo: &ManagedProcess, limit: Duration) -> Result<ExitStatus> {
    await_condition("meshctl demo to exit", limit, || async { demo.exit_status().context("still running") }).await
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Processes of the demo on `block`: its meshd and Envoy name its work directory
/// `$TMPDIR/amime-demo-b<block>-<pid>` on their command lines.
fn demo_processes(block: u8) -> Vec<String> {
    let out = Command::new("pgrep").args(["-af", &format!("amime-demo-b{block}-")]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()).unwrap_or_default()
}

fn work_dirs(block: u8) -> Vec<PathBuf> {
    let prefix = format!("amime-demo-b{block}-");
    std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// meshd and Envoy of the demo are running.
fn ensure_mesh_running(block: u8) -> Result<()> {
    let running = demo_processes(block);
    ensure!(
        running.iter().any(|p| p.contains("meshd")) && running.iter().any(|p| p.contains("envoy")),
        "meshd and Envoy of block {block} should be running; pgrep finds {running:?}"
    );
    Ok(())
}

/// Nothing of the demo on `block` is left: no process, no work directory.
async fn await_nothing_left(block: u8) -> Result<()> {
    await_condition(&format!("no meshd or Envoy of block {block} left"), Duration::from_secs(10), || async {
        let left = demo_processes(block);
        ensure!(left.is_empty(), "still running: {left:?}");
        let dirs = work_dirs(block);
        ensure!(dirs.is_empty(), "work directories left: {dirs:?}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_interactive_runs_every_step_and_exits_0() {
    run_test("demo_non_interactive", |ctx| async move {
        let block = 210;
        let demo = spawn_demo(&ctx, block, &["--non-interactive"])?;
        let status = await_exit(&demo, RUN_LIMIT).await?;
        let stdout = read(demo.stdout_log());
        ensure!(status.success(), "exit {status}\nstdout:\n{stdout}\nstderr:\n{}", read(demo.stderr_log()));
        for (step, title) in
            [(1, "All traffic to v1"), (2, "Header-based routing"), (3, "A 50:50 split between v1 and v3")]
        {
            let section = section(&stdout, step)?;
            ensure!(section.starts_with(&format!("Step {step}: {title}")), "{section}");
            ensure!(
                section.contains("rule applied: the sidecar had it") && section.contains("(meshd: SYNCED)"),
                "{section}"
            );
            ensure!(section.contains("240 requests:") && section.trim_end().ends_with("— OK"), "{section}");
        }
        ensure!(section(&stdout, 1)?.contains("seen: 240 of 240 on v1"), "{stdout}");
        ensure!(section(&stdout, 2)?.contains("seen: jason: v2 100% · others: v1 100%"), "{stdout}");
        let fault = section(&stdout, 4)?;
        ensure!(fault.trim_end().ends_with("— OK"), "{fault}");
        await_nothing_left(block).await
    })
    .await;
}

/// The text of `Step N:` up to the next step or the summary.
fn section(stdout: &str, step: usize) -> Result<String> {
    let start = stdout.find(&format!("\nStep {step}: ")).with_context(|| format!("no step {step} in:\n{stdout}"))?;
    let rest = &stdout[start + 1..];
    let end = rest.find("\n\n").unwrap_or(rest.len());
    Ok(rest[..end].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_effect_is_not_seen_exits_1_naming_it() {
    run_test("demo_effect_not_seen", |ctx| async move {
        let block = 211;
        // Step 3's rule is never written: step 2's routes (jason → v2, others → v1) stay.
        let demo = spawn_demo(&ctx, block, &["--non-interactive", "--skip-apply", "3", "--requests", "80"])?;
        let status = await_exit(&demo, RUN_LIMIT).await?;
        let (stdout, stderr) = (read(demo.stdout_log()), read(demo.stderr_log()));
        ensure!(status.code() == Some(1), "want exit 1, got {status}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        // Half the requests are jason's (v2), the rest go to v1; none to v3.
        ensure!(
            stderr.contains(
                "error: step 3 (A 50:50 split between v1 and v3): expected v1 and v3 each 35-65%, nothing on v2; seen v1 "
            ) && stderr.contains(", v3 0%, v2 ")
                && stderr.contains(" of 80"),
            "{stderr}"
        );
        ensure!(section(&stdout, 3)?.contains("rule NOT applied (--skip-apply)"), "{stdout}");
        ensure!(section(&stdout, 2)?.trim_end().ends_with("— OK"), "{stdout}");
        await_nothing_left(block).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_meshd_and_envoy() {
    run_test("demo_sigterm", |ctx| async move {
        let block = 214;
        let demo = spawn_demo(&ctx, block, &["--non-interactive", "--keep-running"])?;
        await_condition("the demo at step 2", Duration::from_secs(60), || async {
            demo.ensure_running()?;
            ensure!(read(demo.stdout_log()).contains("\nStep 2: "), "not yet");
            Ok(())
        })
        .await?;
        ensure_mesh_running(block)?;
        let pid = demo.pid().to_string();
        run_to_completion(Path::new("kill"), ["-TERM", pid.as_str()], Duration::from_secs(5)).await?;
        let status = await_exit(&demo, Duration::from_secs(15)).await?;
        ensure!(status.code() == Some(143), "want exit 143 after SIGTERM, got {status}");
        ensure!(read(demo.stderr_log()).contains("stopped by SIGTERM"), "{}", read(demo.stderr_log()));
        await_nothing_left(block).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_addresses_are_named() {
    run_test("demo_busy", |ctx| async move {
        let block = 215;
        let _taken = std::net::TcpListener::bind(("127.0.215.2", 15010))?;
        let demo = spawn_demo(&ctx, block, &["--non-interactive"])?;
        let status = await_exit(&demo, Duration::from_secs(20)).await?;
        let stderr = read(demo.stderr_log());
        ensure!(status.code() == Some(1), "want exit 1, got {status}: {stderr}");
        ensure!(
            stderr.contains("the demo's addresses on 127.0.215.x are not free:\n  127.0.215.2:15010 (meshd xDS):")
                && stderr.contains("use another block with --block N"),
            "{stderr}"
        );
        ensure!(demo_processes(block).is_empty(), "nothing should have started");
        Ok(())
    })
    .await;
}

/// tmux, from PATH (scripts/test.sh installs it).
const TMUX: &str = "tmux";

/// A tmux server of its own (`-L`), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(ctx: &TestContext, width: u16, height: u16, command: &str) -> Result<Tmux> {
        let tmux = Tmux { socket: format!("amime-{}-{}", ctx.name(), std::process::id()) };
        let (w, h) = (width.to_string(), height.to_string());
        tmux.run(&["-f", "/dev/null", "new-session", "-d", "-s", "demo", "-x", &w, "-y", &h, command])?;
        Ok(tmux)
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(TMUX).arg("-L").arg(&self.socket).args(args).output().context("run tmux")?;
        ensure!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The pane's text; `-J` joins lines the terminal wrapped, so a line printed wider than the
    /// pane shows as one long line.
    fn capture(&self) -> Result<String> {
        self.run(&["capture-pane", "-p", "-J", "-t", "demo"])
    }

    fn send(&self, key: &str) -> Result<()> {
        self.run(&["send-keys", "-t", "demo", key]).map(drop)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new(TMUX).args(["-L", &self.socket, "kill-server"]).output();
    }
}

/// Wait until the pane shows every one of `wanted`; every capture must fit `width` columns.
async fn await_screen(tmux: &Tmux, width: usize, wanted: &[&str]) -> Result<String> {
    await_condition(&format!("the live view to show {wanted:?}"), Duration::from_secs(40), || async {
        let screen = tmux.capture()?;
        if let Some(line) = screen.lines().find(|l| l.chars().count() > width) {
            return Err(amime_e2e::fatal(format!("a line wider than {width} columns: {line:?}\n{screen}")));
        }
        if let Some(missing) = wanted.iter().find(|w| !screen.contains(**w)) {
            bail!("no {missing:?} yet; the pane:\n{screen}");
        }
        Ok(screen)
    })
    .await
}

/// The live view at `width`×`height` with `--auto 2`: step 1 with bars, then step 2 on its own.
async fn live_view(ctx: &TestContext, block: u8, width: u16, height: u16, quit: &str) -> Result<String> {
    let meshctl = paths::binary("meshctl")?;
    let command = format!("exec {} {}", meshctl.display(), demo_args(block, &["--auto", "2"])?.join(" "));
    let tmux = Tmux::start(ctx, width, height, &command)?;
    let w = usize::from(width);
    let step1 =
        await_screen(&tmux, w, &["Step 1: All traffic to v1", "✓ the sidecar has the rule", "seen:     ✓", "█"])
            .await?;
    let bar_line = step1.lines().find(|l| l.trim_start().starts_with("v1 ")).context("no v1 row")?;
    ensure!(bar_line.contains("100.0%"), "step 1 sends everything to v1: {bar_line:?}");
    let step2 = await_screen(&tmux, w, &["Step 2: Header-based routing", "jason → v2 100% | others → v1 100%"]).await?;
    ensure!(step2.contains("step 2/4") && step2.contains("p99"), "{step2}");
    ensure_mesh_running(block)?;
    tmux.send(quit)?;
    await_nothing_left(block).await?;
    await_condition("meshctl demo to exit", Duration::from_secs(10), || async {
        let out = Command::new("pgrep").args(["-f", &format!("demo --block {block} ")]).output()?;
        ensure!(out.stdout.is_empty(), "meshctl still running: {}", String::from_utf8_lossy(&out.stdout));
        Ok(())
    })
    .await?;
    Ok(step1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_view_fits_80x24_and_q_stops_everything() {
    run_test("demo_live_80x24", |ctx| async move {
        let screen = live_view(&ctx, 212, 80, 24, "q").await?;
        ensure!(screen.lines().count() <= 24, "{screen}");
        ensure!(screen.contains("[Enter/space] next step   [q] quit"), "{screen}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_view_uses_a_wide_terminal_and_ctrl_c_stops_everything() {
    run_test("demo_live_200x50", |ctx| async move {
        let screen = live_view(&ctx, 213, 200, 50, "C-c").await?;
        let longest_bar = screen.lines().map(|l| l.matches('█').count()).max().unwrap_or(0);
        ensure!(longest_bar > 120, "a 200-column terminal gets long bars (longest {longest_bar}):\n{screen}");
        ensure!(screen.contains("the rule (VirtualService reviews):") && screen.contains("subset: v1"), "{screen}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_terminal_stops_everything() {
    run_test("demo_sighup", |ctx| async move {
        let block = 216;
        let meshctl = paths::binary("meshctl")?;
        let command = format!("exec {} {}", meshctl.display(), demo_args(block, &[])?.join(" "));
        let tmux = Tmux::start(&ctx, 80, 24, &command)?;
        await_screen(&tmux, 80, &["Step 1: All traffic to v1", "seen:     ✓"]).await?;
        ensure_mesh_running(block)?;
        // The terminal goes away: SIGHUP to the demo (and its process group).
        drop(tmux);
        await_nothing_left(block).await
    })
    .await;
}
