//! meshd as a separate process: start, readiness, metrics, memory and CPU.

use super::*;

/// The meshd child process; killed when dropped (also on error and while unwinding).
pub(crate) struct Meshd {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) xds: SocketAddr,
    pub(crate) monitoring: SocketAddr,
    pub(crate) stderr_log: PathBuf,
    /// When the process was spawned.
    pub(crate) started: Instant,
    pub(crate) started_wall: std::time::SystemTime,
}

pub(crate) fn free_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?)
}

impl Meshd {
    pub(crate) fn start(bin: &Path, config_dir: &Path, log_dir: &Path) -> Result<Meshd> {
        let source = ["--config-dir".as_ref(), config_dir.as_os_str()];
        Self::start_with(bin, &source, &["--debounce-quiet", "10", "--debounce-max", "100"], log_dir)
    }

    /// meshd with `source` flags (`--config-dir DIR` or `--kubeconfig PATH`) and `extra` flags.
    pub(crate) fn start_with(bin: &Path, source: &[&std::ffi::OsStr], extra: &[&str], log_dir: &Path) -> Result<Meshd> {
        let xds = free_port()?;
        let monitoring = free_port()?;
        let stdout_log = log_dir.join("meshd.stdout.log");
        let stderr_log = log_dir.join("meshd.stderr.log");
        let child = Command::new(bin)
            .args(source)
            .args([
                "--xds-addr",
                &xds.to_string(),
                "--monitoring-addr",
                &monitoring.to_string(),
                "--webhook-addr",
                "off",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_log)?)
            .stderr(std::fs::File::create(&stderr_log)?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let (started, started_wall) = (Instant::now(), std::time::SystemTime::now());
        Ok(Meshd { pid: child.id(), child, xds, monitoring, stderr_log, started, started_wall })
    }

    pub(crate) fn log_tail(&self) -> String {
        let mut text = String::new();
        for name in ["meshd.stderr.log", "meshd.stdout.log"] {
            let t = std::fs::read_to_string(self.stderr_log.with_file_name(name)).unwrap_or_default();
            let lines: Vec<&str> = t.lines().collect();
            text.extend(lines[lines.len().saturating_sub(15)..].iter().map(|l| format!("\n    {l}")));
        }
        text
    }

    pub(crate) fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("meshd exited ({status}); last log lines:{}", self.log_tail());
        }
        Ok(())
    }

    /// Resident set size, bytes.
    pub(crate) fn rss(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .context("no VmRSS in /proc/<meshd>/status")?;
        Ok(kb * 1024)
    }

    pub(crate) fn cpu_seconds(&self) -> (f64, f64) {
        cpu_seconds(&format!("/proc/{}/stat", self.pid))
    }

    /// Waits for `/readyz` to answer 200 (polled every 20 ms); returns when it first did.
    pub(crate) async fn wait_ready(&mut self, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            self.check_alive()?;
            if let Ok((200, _)) = http_get(self.monitoring, "/readyz").await {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!("meshd not ready after {timeout:?}; last log lines:{}", self.log_tail());
            }
        }
    }

    pub(crate) async fn metrics(&self) -> BTreeMap<String, f64> {
        let Ok((200, body)) = http_get(self.monitoring, "/metrics").await else { return BTreeMap::new() };
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Meshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (utime + stime, stime) of a process, from /proc/<pid>/stat (USER_HZ = 100).
pub(crate) fn cpu_seconds(stat_path: &str) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(stat_path) else { return (0.0, 0.0) };
    let Some((_, rest)) = stat.rsplit_once(')') else { return (0.0, 0.0) };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ((ticks(11) + ticks(12)) / 100.0, ticks(12) / 100.0)
}

pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("bad HTTP response")?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        anyhow::Ok((code, body))
    };
    tokio::time::timeout(Duration::from_secs(5), fetch).await.context("HTTP request timed out")?
}
