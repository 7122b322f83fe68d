//! The three control-plane processes: their addresses, command lines, how they are started
//! (owned by a test, or detached for `amime-cluster up`) and their readiness checks.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};

use super::certs::Pki;
use crate::context::TestContext;
use crate::process::ManagedProcess;
use crate::wait::{await_condition, fatal};

/// Where the processes listen and keep their data.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Data directory: `etcd/`, `pki/`, `kubeconfig`, logs.
    pub dir: PathBuf,
    pub etcd_client: SocketAddr,
    pub etcd_peer: SocketAddr,
    pub apiserver: SocketAddr,
    pub controller_manager: SocketAddr,
    /// Appended to kube-apiserver's flags (e.g. `--watch-cache=false`).
    pub extra_apiserver_args: Vec<String>,
}

impl Layout {
    pub fn server_url(&self) -> String {
        format!("https://{}", self.apiserver)
    }

    pub fn etcd_url(&self) -> String {
        format!("http://{}", self.etcd_client)
    }

    pub fn apiserver_ip(&self) -> IpAddr {
        self.apiserver.ip()
    }

    pub fn etcd_args(&self) -> Vec<String> {
        let client = self.etcd_url();
        let peer = format!("http://{}", self.etcd_peer);
        vec![
            "--name=amime".into(),
            format!("--data-dir={}", self.dir.join("etcd").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=amime={peer}"),
            "--log-level=warn".into(),
            // Tests write little; fsync on every write only slows them down.
            "--unsafe-no-fsync".into(),
        ]
    }

    pub fn apiserver_args(&self, pki: &Pki) -> Vec<String> {
        vec![
            format!("--etcd-servers={}", self.etcd_url()),
            format!("--bind-address={}", self.apiserver.ip()),
            format!("--advertise-address={}", self.apiserver.ip()),
            format!("--secure-port={}", self.apiserver.port()),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", pki.sa_pub.display()),
            format!("--service-account-signing-key-file={}", pki.sa_key.display()),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            format!("--token-auth-file={}", pki.token_file.display()),
            "--authorization-mode=RBAC".into(),
            // The `kubernetes` Service's endpoints would be this loopback address, which
            // EndpointSlice validation rejects (kube-apiserver then refuses to start).
            "--endpoint-reconciler-type=none".into(),
            // No kubelet, no aggregated APIs: skip what only slows the start.
            "--enable-priority-and-fairness=false".into(),
        ]
        .into_iter()
        .chain(self.extra_apiserver_args.iter().cloned())
        .collect()
    }

    pub fn controller_manager_args(&self, pki: &Pki) -> Vec<String> {
        vec![
            format!("--kubeconfig={}", pki.kubeconfig.display()),
            format!("--bind-address={}", self.controller_manager.ip()),
            format!("--secure-port={}", self.controller_manager.port()),
            format!("--service-account-private-key-file={}", pki.sa_key.display()),
            format!("--root-ca-file={}", pki.ca_cert.display()),
            "--use-service-account-credentials=true".into(),
            // No kubelet sends heartbeats: the node lifecycle controller would mark every pod
            // NotReady after ~50 s (and taint-based eviction would delete them).
            "--controllers=*,-node-lifecycle-controller,-taint-eviction-controller,-device-taint-eviction-controller"
                .into(),
            "--leader-elect=false".into(),
            // Reconcile EndpointSlices as soon as pods change (default batches for 0 s too; explicit).
            "--endpointslice-updates-batch-period=0s".into(),
        ]
    }
}

/// How processes are started.
#[derive(Clone)]
pub enum Launcher {
    /// Owned by a test: killed on drop, log tails printed when the test fails.
    Test(TestContext),
    /// Detached (own session) with logs in `<dir>/logs` and pids in `<dir>/pids`: outlives the
    /// starting program (`amime-cluster up`).
    Detached,
}

/// A started control-plane process.
pub enum Proc {
    Managed(Box<ManagedProcess>),
    Detached { label: String, pid: u32, stderr_log: PathBuf },
}

impl Proc {
    pub fn pid(&self) -> u32 {
        match self {
            Proc::Managed(p) => p.pid(),
            Proc::Detached { pid, .. } => *pid,
        }
    }

    /// `Ok` while running; a [`fatal`] error naming the process (with its log tail) once it exited.
    pub fn ensure_running(&self) -> Result<()> {
        match self {
            Proc::Managed(p) => p.ensure_running(),
            Proc::Detached { label, pid, stderr_log } => {
                if pid_alive(*pid) {
                    Ok(())
                } else {
                    Err(fatal(format!(
                        "{label} (pid {pid}) exited; stderr tail:\n{}",
                        crate::context::tail(stderr_log, 20)
                    )))
                }
            }
        }
    }
}

/// True while `/proc/<pid>` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// True while `pid` is alive and runs the program file `name` (the file name of its
/// `argv[0]`): a pid recorded before a reboot may belong to an unrelated process by now.
pub fn pid_runs(pid: u32, name: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let file = argv0.rsplit(|b| *b == b'/').next().unwrap_or_default();
    file == name.as_bytes() && pid_alive(pid)
}

impl Launcher {
    pub fn spawn(&self, layout: &Layout, label: &str, program: &Path, args: &[String]) -> Result<Proc> {
        match self {
            Launcher::Test(ctx) => Ok(Proc::Managed(Box::new(ManagedProcess::spawn(ctx, label, program, args)?))),
            Launcher::Detached => spawn_detached(layout, label, program, args),
        }
    }
}

fn spawn_detached(layout: &Layout, label: &str, program: &Path, args: &[String]) -> Result<Proc> {
    use std::os::unix::process::CommandExt as _;
    let logs = layout.dir.join("logs");
    let pids = layout.dir.join("pids");
    for dir in [&logs, &pids] {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let stderr_log = logs.join(format!("{label}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&stderr_log)
        .with_context(|| format!("open {}", stderr_log.display()))?;
    let child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("start {label} ({})", program.display()))?;
    let pid = child.id();
    let pid_file = pids.join(format!("{label}.pid"));
    std::fs::write(&pid_file, format!("{pid}\n")).with_context(|| format!("write {}", pid_file.display()))?;
    Ok(Proc::Detached { label: label.to_string(), pid, stderr_log })
}

/// Wait until etcd answers `/health` with `"health":"true"`.
pub async fn wait_etcd(layout: &Layout, proc: &Proc, timeout: Duration) -> Result<()> {
    await_condition("etcd /health", timeout, || async {
        proc.ensure_running()?;
        let response = crate::http::get(layout.etcd_client, "/health").await?;
        if response.status == 200 && response.body.contains("true") {
            Ok(())
        } else {
            Err(anyhow!("etcd /health: {}", response.summary()))
        }
    })
    .await
}

/// Wait until kube-apiserver answers `/readyz` with `ok`.
pub async fn wait_apiserver(client: &::kube::Client, proc: &Proc, timeout: Duration) -> Result<()> {
    await_condition("kube-apiserver /readyz", timeout, || async {
        proc.ensure_running()?;
        let request = http::Request::get("/readyz").body(Vec::new())?;
        let body = client.request_text(request).await.context("GET /readyz")?;
        if body.trim() == "ok" {
            Ok(())
        } else {
            bail!("/readyz: {body}")
        }
    })
    .await
}

/// Wait until kube-controller-manager answers `/healthz` with `ok` (self-signed serving cert).
pub async fn wait_controller_manager(layout: &Layout, proc: &Proc, timeout: Duration) -> Result<()> {
    let mut config = ::kube::Config::new(format!("https://{}", layout.controller_manager).parse()?);
    config.accept_invalid_certs = true;
    let client = ::kube::Client::try_from(config).context("client for kube-controller-manager")?;
    await_condition("kube-controller-manager /healthz", timeout, || async {
        proc.ensure_running()?;
        let request = http::Request::get("/healthz").body(Vec::new())?;
        let body = client.request_text(request).await.context("GET /healthz")?;
        if body.trim() == "ok" {
            Ok(())
        } else {
            bail!("/healthz: {body}")
        }
    })
    .await
}

/// Kill a process (SIGKILL): dropping a test's process kills it; a detached one gets `kill -9`.
pub fn stop(proc: Proc) -> Result<()> {
    match proc {
        Proc::Managed(p) => drop(p),
        Proc::Detached { pid, .. } => kill(pid, "KILL")?,
    }
    Ok(())
}

/// `kill -<signal> <pid>` (a no-op when the process is gone).
pub fn kill(pid: u32, signal: &str) -> Result<()> {
    if pid_alive(pid) {
        std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .with_context(|| format!("kill -{signal} {pid}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_runs_checks_the_program_name() {
        let me = std::process::id();
        let argv0 = std::env::args_os().next().unwrap();
        let name = Path::new(&argv0).file_name().unwrap().to_str().unwrap().to_owned();
        assert!(pid_runs(me, &name), "this test process runs {name}");
        assert!(!pid_runs(me, "etcd"), "a live pid running another program is not etcd");
        assert!(!pid_runs(u32::MAX, "etcd"), "no such pid");
    }
}
