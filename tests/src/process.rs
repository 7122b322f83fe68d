//! Child processes owned by a test: logs to files, killed on drop.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use tokio::process::{Child, Command};

use crate::context::{tail, TestContext};
use crate::wait::fatal;

/// A long-running child process.
///
/// stdout and stderr go to `<test dir>/<label>.stdout.log` / `.stderr.log` (registered with the
/// [`TestContext`] so their tails are printed when the test fails). The process is killed
/// (SIGKILL) when this value is dropped, including while unwinding from a panic.
pub struct ManagedProcess {
    label: String,
    command_line: String,
    pid: u32,
    child: Mutex<Child>,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
}

impl ManagedProcess {
    pub fn spawn<I, S>(ctx: &TestContext, label: &str, program: &Path, args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
        let command_line = std::iter::once(program.as_os_str())
            .chain(args.iter().map(|a| a.as_os_str()))
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let stdout_log = ctx.unique_path(label, ".stdout.log");
        let stderr_log = ctx.unique_path(label, ".stderr.log");
        let stdout = std::fs::File::create(&stdout_log).with_context(|| format!("create {}", stdout_log.display()))?;
        let stderr = std::fs::File::create(&stderr_log).with_context(|| format!("create {}", stderr_log.display()))?;
        let child = Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {label}: {command_line}"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{label} exited before its pid was read"))?;
        ctx.register_log(format!("{label} (pid {pid}) stderr"), stderr_log.clone());
        ctx.register_log(format!("{label} (pid {pid}) stdout"), stdout_log.clone());
        Ok(Self { label: label.to_string(), command_line, pid, child: Mutex::new(child), stdout_log, stderr_log })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// `Some(status)` once the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().ok().flatten()
    }

    pub fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    /// `Ok` while the process runs; a [`fatal`] error (with the log tail) once it has exited,
    /// so that an [`await_condition`](crate::wait::await_condition) waiting on it stops at once.
    pub fn ensure_running(&self) -> Result<()> {
        match self.exit_status() {
            None => Ok(()),
            Some(status) => Err(fatal(format!(
                "{} exited ({status}); command: {}\nstderr tail:\n{}",
                self.label,
                self.command_line,
                self.log_tail(20)
            ))),
        }
    }

    /// The last lines of stderr and stdout.
    pub fn log_tail(&self, lines: usize) -> String {
        format!("[stderr]\n{}\n[stdout]\n{}", tail(&self.stderr_log, lines), tail(&self.stdout_log, lines))
    }

    pub fn stderr_log(&self) -> &Path {
        &self.stderr_log
    }

    pub fn stdout_log(&self) -> &Path {
        &self.stdout_log
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        // kill_on_drop would do this too; be explicit (and also cover a poisoned mutex).
        let child = match self.child.get_mut() {
            Ok(child) => child,
            Err(poisoned) => poisoned.into_inner(),
        };
        let _ = child.start_kill();
    }
}

/// Run a short-lived command to completion; fails (with its output) on a non-zero exit or after
/// `timeout`.
pub async fn run_to_completion<I, S>(program: &Path, args: I, timeout: Duration) -> Result<std::process::Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
    let command_line = std::iter::once(program.as_os_str())
        .chain(args.iter().map(|a| a.as_os_str()))
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let child = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start `{command_line}`"))?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(output) => output.with_context(|| format!("run `{command_line}`"))?,
        Err(_) => bail!("`{command_line}` did not finish within {timeout:?}"),
    };
    if !output.status.success() {
        bail!(
            "`{command_line}` failed ({}):\nstderr: {}\nstdout: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        );
    }
    Ok(output)
}
