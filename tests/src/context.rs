//! Per-test scratch directory and log bookkeeping.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Lines of each log printed when a test fails.
pub const LOG_TAIL_LINES: usize = 40;

/// A test's scratch directory (under `std::env::temp_dir()`) plus the logs of the processes it
/// started. Cheap to clone (shared).
///
/// When the last clone is dropped the directory is removed — unless the test failed, in which
/// case the log tails are printed (if not printed already) and the directory is kept for
/// inspection. Set `AMIME_E2E_KEEP=1` to always keep it.
#[derive(Clone)]
pub struct TestContext {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    dir: PathBuf,
    logs: Mutex<Vec<(String, PathBuf)>>,
    logs_printed: AtomicBool,
}

impl TestContext {
    pub fn new(name: &str) -> Result<Self> {
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("amime-e2e-{name}-{}-{id}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clean {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_string(),
                dir,
                logs: Mutex::new(Vec::new()),
                logs_printed: AtomicBool::new(false),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// A path `<dir>/<stem><suffix>` that is not used yet (adds `-2`, `-3`, ... if needed).
    pub fn unique_path(&self, stem: &str, suffix: &str) -> PathBuf {
        let mut n = 1;
        loop {
            let name = if n == 1 { format!("{stem}{suffix}") } else { format!("{stem}-{n}{suffix}") };
            let path = self.inner.dir.join(name);
            if !path.exists() {
                return path;
            }
            n += 1;
        }
    }

    /// Remember a log file so that its tail is printed if the test fails.
    pub fn register_log(&self, label: impl Into<String>, path: PathBuf) {
        self.inner.logs.lock().unwrap().push((label.into(), path));
    }

    /// The last `lines` lines of every registered log.
    pub fn log_tails(&self, lines: usize) -> String {
        let logs = self.inner.logs.lock().unwrap().clone();
        let mut out = String::new();
        for (label, path) in logs {
            out.push_str(&format!("----- {label} ({}) -----\n", path.display()));
            out.push_str(&tail(&path, lines));
            out.push('\n');
        }
        out
    }

    /// Print the log tails to stderr (shown by the test runner for failed tests).
    pub fn print_logs(&self) {
        self.inner.logs_printed.store(true, Ordering::SeqCst);
        eprintln!(
            "===== {}: last {LOG_TAIL_LINES} lines of each process log =====\n{}",
            self.inner.name,
            self.log_tails(LOG_TAIL_LINES)
        );
    }

    /// Turn a test body's result into pass/fail: on error print the logs and panic with the
    /// full error chain.
    #[track_caller]
    pub fn finish(&self, result: Result<()>) {
        if let Err(err) = result {
            self.print_logs();
            panic!("{} failed: {err:?}", self.inner.name);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed && !self.logs_printed.load(Ordering::SeqCst) {
            let ctx_logs = self.logs.lock().map(|l| l.clone()).unwrap_or_default();
            let mut out = String::new();
            for (label, path) in ctx_logs {
                out.push_str(&format!("----- {label} ({}) -----\n{}\n", path.display(), tail(&path, LOG_TAIL_LINES)));
            }
            eprintln!("===== {}: last {LOG_TAIL_LINES} lines of each process log =====\n{out}", self.name);
        }
        if failed || std::env::var_os("AMIME_E2E_KEEP").is_some() {
            eprintln!("(test files kept in {})", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The last `lines` lines of a file (or a note saying why it can't be read).
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            if all.is_empty() {
                return "(empty)".to_string();
            }
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read: {e})"),
    }
}

/// Run a test body with a fresh [`TestContext`]; fails the test (printing process logs) if the
/// body returns an error or panics.
pub async fn run_test<F, Fut>(name: &str, body: F)
where
    F: FnOnce(TestContext) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let ctx = TestContext::new(name).expect("create the test's scratch directory");
    let result = body(ctx.clone()).await;
    ctx.finish(result);
}
