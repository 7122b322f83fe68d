//! Linux network namespaces for the transparent-capture tests.
//!
//! A [`Netns`] is a named network namespace (`ip netns add amime-e2e-<pid>-<tag>`) owned by one
//! test. It is deleted when dropped — also while unwinding from a panic — after every process
//! still inside it has been killed. Namespaces left behind by a test process that was killed
//! outright (SIGKILL runs no `Drop`) are removed by the next [`Netns::create`].
//!
//! What a test can do with one:
//! - run processes inside it ([`Netns::spawn`], [`Netns::spawn_as`]: `ip netns exec NAME ...`;
//!   `ip netns exec` execs, so the [`ManagedProcess`] pid is the program's own pid);
//! - open sockets inside it from the test process itself ([`Netns::connect`], [`Netns::bind`],
//!   [`Netns::start_upstream`], [`Netns::request`]): a short-lived thread enters the namespace
//!   with `setns(2)` and creates the socket there; a socket stays in the namespace it was created
//!   in, so the test's tokio runtime can then use it as usual;
//! - wire two namespaces with a veth pair ([`link_veth`]) and install the sidecar's iptables
//!   capture with the product's own init step ([`Netns::agent_init`]: `amime-agent init`).
//!
//! Nothing here touches the root namespace: veth ends are created directly inside the
//! namespaces, and addresses, routes and iptables rules are set inside them only.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::raw::c_int;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::context::TestContext;
use crate::http::{self, Response};
use crate::paths;
use crate::process::{run_to_completion, ManagedProcess};
use crate::sidecar::Tally;
use crate::upstream::{NextHop, Upstream};
use crate::wait::await_condition;

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/var/run/netns";
/// Prefix of every namespace these tests create.
pub const NAME_PREFIX: &str = "amime-e2e-";
/// The uid (and gid) the sidecar runs as; its own traffic is never captured (as Istio's 1337).
pub const PROXY_UID: u32 = injector::capture::DEFAULT_PROXY_UID;
/// The in-pod agent binary, whose `init` installs the capture.
pub const AGENT_BINARY: &str = injector::conventions::AGENT_BINARY;
/// Timeout for connecting from inside a namespace.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long meshd may take to become ready.
pub const MESHD_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for short `ip` / `iptables` commands.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

const CLONE_NEWNET: c_int = 0x4000_0000;
const SIGKILL: c_int = 9;

extern "C" {
    fn setns(fd: c_int, nstype: c_int) -> c_int;
    fn geteuid() -> u32;
    fn kill(pid: c_int, sig: c_int) -> c_int;
}

static NEXT_PROBE: AtomicU32 = AtomicU32::new(0);

/// `None` if this process can create network namespaces (root, `ip netns` works); otherwise the
/// reason why not (for a test to print `SKIPPED: <reason>`).
pub fn unsupported_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { geteuid() };
    if euid != 0 {
        return Some(format!("network-namespace tests need root (running as uid {euid})"));
    }
    let probe = format!("{NAME_PREFIX}{}-probe{}", std::process::id(), NEXT_PROBE.fetch_add(1, Ordering::SeqCst));
    match StdCommand::new("ip").args(["netns", "add", &probe]).stdin(Stdio::null()).output() {
        Err(e) => Some(format!("cannot run `ip` (iproute2): {e}")),
        Ok(out) if !out.status.success() => {
            Some(format!("`ip netns add` failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
        Ok(_) => {
            let _ = StdCommand::new("ip").args(["netns", "del", &probe]).stdin(Stdio::null()).output();
            None
        }
    }
}

/// One test's addresses inside its namespaces: pods in `10.<pods>.<n>.0/24`, cluster IPs
/// (which only the sidecars know) in `10.<vips>.<n>.0/24`. Namespaces isolate tests from one
/// another; distinct blocks keep their failure output apart.
#[derive(Clone, Copy, Debug)]
pub struct AddressBlock {
    pub pods: u8,
    pub vips: u8,
    pub n: u8,
}

impl AddressBlock {
    pub fn pod(self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.pods, self.n, host)
    }

    pub fn pod_addr(self, host: u8, port: u16) -> SocketAddr {
        SocketAddr::from((self.pod(host), port))
    }

    pub fn vip(self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.vips, self.n, host)
    }

    pub fn vip_addr(self, host: u8, port: u16) -> SocketAddr {
        SocketAddr::from((self.vip(host), port))
    }
}

/// A network namespace owned by a test; killed and deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Create `amime-e2e-<pid>-<tag>` with its loopback up. `tag` must be unique within the
    /// test process (tests in one process run in parallel under `cargo test`).
    pub async fn create(tag: &str) -> Result<Self> {
        remove_stale_namespaces();
        let name = format!("{NAME_PREFIX}{}-{tag}", std::process::id());
        if Path::new(NETNS_DIR).join(&name).exists() {
            bail!("network namespace {name} exists already (tag {tag:?} used twice?)");
        }
        run_to_completion(Path::new("ip"), ["netns", "add", name.as_str()], COMMAND_TIMEOUT)
            .await
            .with_context(|| format!("create network namespace {name}"))?;
        let ns = Self { name };
        ns.ip(["link", "set", "lo", "up"]).await?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// `ip -n <name> ARGS...`.
    pub async fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["-n".into(), self.name.clone().into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        run_ip(&all).await
    }

    /// The arguments of `ip` that run `program ARGS...` inside the namespace
    /// (`netns exec <name> PROGRAM ARGS...`).
    fn netns_exec_args<I, S>(&self, program: &OsStr, args: I) -> Vec<std::ffi::OsString>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> =
            vec!["netns".into(), "exec".into(), self.name.clone().into(), program.to_os_string()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        all
    }

    /// Run a short command inside the namespace (`ip netns exec <name> PROGRAM ARGS...`) and
    /// return its stdout; fails on a non-zero exit.
    pub async fn exec<I, S>(&self, program: &str, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_ip(&self.netns_exec_args(OsStr::new(program), args)).await
    }

    /// Start a long-running process inside the namespace (as the test's own user).
    pub fn spawn<I, S>(&self, ctx: &TestContext, label: &str, program: &Path, args: I) -> Result<ManagedProcess>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let all = self.netns_exec_args(program.as_os_str(), args);
        ManagedProcess::spawn(ctx, label, Path::new("ip"), all)
    }

    /// Start a long-running process inside the namespace as `uid` (gid = uid, no supplementary
    /// groups), via `setpriv`, which execs too.
    pub fn spawn_as<I, S>(
        &self,
        ctx: &TestContext,
        label: &str,
        uid: u32,
        program: &Path,
        args: I,
    ) -> Result<ManagedProcess>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec![
            format!("--reuid={uid}").into(),
            format!("--regid={uid}").into(),
            "--clear-groups".into(),
            program.as_os_str().to_os_string(),
        ];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self.spawn(ctx, label, Path::new("setpriv"), all)
    }

    /// Start `meshd --config-dir DIR` inside the namespace (xDS and monitoring on the given
    /// addresses, then `extra` arguments) and wait until its `/readyz` answers 200.
    pub async fn start_meshd(
        &self,
        ctx: &TestContext,
        config_dir: &Path,
        xds: SocketAddr,
        monitoring: SocketAddr,
        extra: &[&str],
    ) -> Result<ManagedProcess> {
        let mut args = vec![
            "--config-dir".to_string(),
            config_dir.display().to_string(),
            "--xds-addr".into(),
            xds.to_string(),
            "--monitoring-addr".into(),
            monitoring.to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let meshd = self.spawn(ctx, "meshd", &paths::binary("meshd")?, args)?;
        await_condition("meshd to answer 200 on /readyz", MESHD_READY_TIMEOUT, || async {
            meshd.ensure_running()?;
            let response = self.get(monitoring, "/readyz").await?;
            ensure!(response.status == 200, "/readyz: {}", response.summary());
            Ok(())
        })
        .await?;
        Ok(meshd)
    }

    /// Run `f` on a fresh thread that has entered this namespace (sockets it creates live
    /// here). The thread ends with `f`, so no thread of the process stays in the namespace.
    pub async fn run_inside<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let path = self.path();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("netns-{}", self.name))
            .spawn(move || {
                let result = enter_namespace(&path).and_then(|()| f());
                let _ = tx.send(result);
            })
            .context("spawn a thread to enter the network namespace")?;
        rx.await.map_err(|_| anyhow!("the thread inside network namespace {} panicked", self.name))?
    }

    /// Connect to `addr` from inside the namespace (subject to its iptables rules, like any
    /// process there that is not the proxy).
    pub async fn connect(&self, addr: SocketAddr) -> Result<TcpStream> {
        let stream = self
            .run_inside(move || {
                let stream = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                    .with_context(|| format!("connect to {addr}"))?;
                stream.set_nonblocking(true)?;
                Ok(stream)
            })
            .await
            .with_context(|| format!("in network namespace {}", self.name))?;
        Ok(TcpStream::from_std(stream)?)
    }

    /// A listening socket on `addr` inside the namespace.
    pub async fn bind(&self, addr: SocketAddr) -> Result<TcpListener> {
        let listener = self
            .run_inside(move || {
                let listener = std::net::TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .await
            .with_context(|| format!("in network namespace {}", self.name))?;
        Ok(TcpListener::from_std(listener)?)
    }

    /// An [`Upstream`] HTTP server listening on `addr` inside the namespace.
    pub async fn start_upstream(&self, addr: SocketAddr, service: &str, version: &str, pod: &str) -> Result<Upstream> {
        let handle = tokio::runtime::Handle::current();
        let (service, version, pod) = (service.to_string(), version.to_string(), pod.to_string());
        self.run_inside(move || handle.block_on(Upstream::start(addr, &service, &version, &pod)))
            .await
            .with_context(|| format!("in network namespace {}", self.name))
    }

    /// An [`Upstream`] on `addr` inside the namespace that calls `next` for each request (as
    /// [`Upstream::start_calling`]); its onward connections start inside the namespace too,
    /// so the pod's capture sees them: it runs on its own thread, which entered the namespace,
    /// with its own runtime. Stops when the returned handle is dropped.
    pub async fn start_calling_upstream(
        &self,
        addr: SocketAddr,
        identity: [&str; 3],
        next: NextHop,
    ) -> Result<CallingUpstream> {
        let path = self.path();
        let [service, version, pod] = identity.map(str::to_owned);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<SocketAddr>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("netns-app-{pod}"))
            .spawn(move || {
                let runtime = enter_namespace(&path).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread().enable_all().build().context("build a runtime")
                });
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Upstream::start_calling(addr, &service, &version, &pod, next).await {
                        Ok(upstream) => {
                            let _ = ready_tx.send(Ok(upstream.addr()));
                            let _ = stopped.await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .context("spawn a thread to run an app inside the network namespace")?;
        let addr = ready_rx.await.map_err(|_| anyhow!("the app thread in namespace {} panicked", self.name))?;
        let addr = addr.with_context(|| format!("in network namespace {}", self.name))?;
        Ok(CallingUpstream { addr, _stop: stop })
    }

    /// A TCP server on `addr` inside the namespace that answers each connection with
    /// `banner` followed by everything the client sent (until the client shuts down writing).
    pub async fn start_echo(&self, addr: SocketAddr, banner: &str) -> Result<TcpEcho> {
        let listener = self.bind(addr).await?;
        let banner = banner.as_bytes().to_vec();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let banner = banner.clone();
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    if stream.read_to_end(&mut data).await.is_ok() {
                        let _ = stream.write_all(&banner).await;
                        let _ = stream.write_all(&data).await;
                        let _ = stream.shutdown().await;
                    }
                });
            }
        });
        Ok(TcpEcho { addr, task })
    }

    /// Send one HTTP/1.1 request from inside the namespace (origin-form `target`, `Host: host`,
    /// `Connection: close`) and read the whole response.
    pub async fn request(
        &self,
        addr: SocketAddr,
        method: &str,
        target: &str,
        host: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response> {
        let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("Connection: close\r\n\r\n");
        let exchange = async {
            let mut stream = self.connect(addr).await?;
            stream.write_all(request.as_bytes()).await.context("write request")?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.context("read response")?;
            http::parse_response(&raw)
        };
        match tokio::time::timeout(http::REQUEST_TIMEOUT, exchange).await {
            Ok(result) => result
                .with_context(|| format!("{method} {target} (Host: {host}) to {addr} from namespace {}", self.name)),
            Err(_) => {
                bail!("no complete response from {addr} within {:?} (namespace {})", http::REQUEST_TIMEOUT, self.name)
            }
        }
    }

    /// `n` times `GET /` (`Host: host`) to `addr` from inside the namespace, tallied by the
    /// answering version.
    pub async fn tally(&self, n: usize, addr: SocketAddr, host: &str, headers: &[(&str, &str)]) -> Tally {
        let mut tally = Tally::default();
        for _ in 0..n {
            tally.record(self.request(addr, "GET", "/", host, headers).await);
        }
        tally
    }

    /// Wait until `GET /` (`Host: host`) to `addr` from inside the namespace answers 200;
    /// `alive` fails the wait at once when a process the answer needs has died.
    pub async fn await_ok(
        &self,
        addr: SocketAddr,
        host: &str,
        timeout: Duration,
        alive: impl Fn() -> Result<()>,
    ) -> Result<Response> {
        let what = format!("GET http://{host}/ via {addr} from namespace {} to answer 200", self.name);
        await_condition(&what, timeout, || async {
            alive()?;
            let response = self.request(addr, "GET", "/", host, &[]).await?;
            ensure!(response.status == 200, "{}", response.summary());
            Ok(response)
        })
        .await
    }

    /// `GET path` to `addr` from inside the namespace (`Host` = `addr`).
    pub async fn get(&self, addr: SocketAddr, path: &str) -> Result<Response> {
        self.request(addr, "GET", path, &addr.to_string(), &[]).await
    }

    /// Open a TCP connection from inside the namespace, send `payload`, shut down writing and
    /// return everything the server sent until it closed.
    pub async fn tcp_exchange(&self, addr: SocketAddr, payload: &[u8]) -> Result<Vec<u8>> {
        let exchange = async {
            let mut stream = self.connect(addr).await?;
            stream.write_all(payload).await.context("write")?;
            stream.shutdown().await.context("shut down writing")?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.context("read")?;
            Ok::<_, anyhow::Error>(answer)
        };
        match tokio::time::timeout(http::REQUEST_TIMEOUT, exchange).await {
            Ok(result) => result.with_context(|| format!("TCP exchange with {addr} from {}", self.name)),
            Err(_) => {
                bail!("TCP exchange with {addr} from {} did not finish within {:?}", self.name, http::REQUEST_TIMEOUT)
            }
        }
    }

    /// The iptables program that works inside this namespace: `iptables` (nf_tables backend on
    /// current distributions), else `iptables-legacy`.
    pub async fn iptables_program(&self) -> Result<&'static str> {
        let mut failures = Vec::new();
        for program in ["iptables", "iptables-legacy"] {
            match self.exec(program, ["-w", "5", "-t", "nat", "-S"]).await {
                Ok(_) => return Ok(program),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        bail!(
            "no working iptables in namespace {} (install the `iptables` package): {}",
            self.name,
            failures.join("; ")
        )
    }

    /// Install the sidecar's capture the way an injected pod's init container does: run the
    /// built `amime-agent init ARGS...` (the product's init step) inside the namespace, as root.
    /// Returns what it printed (the iptables-restore input it applied).
    pub async fn agent_init<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let agent = paths::binary(AGENT_BINARY)?;
        let mut all: Vec<std::ffi::OsString> = vec!["init".into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        run_ip(&self.netns_exec_args(agent.as_os_str(), all))
            .await
            .with_context(|| format!("`{AGENT_BINARY} init` in network namespace {}", self.name))
    }

    /// `iptables-save -t nat` inside the namespace (the program [`Self::iptables_program`] picks).
    pub async fn nat_save(&self) -> Result<String> {
        let save = format!("{}-save", self.iptables_program().await?);
        self.exec(&save, ["-t", "nat"]).await
    }

    /// `iptables -t nat -S` and the nat counters (`-L -n -v`), for failure messages.
    pub async fn nat_rules(&self) -> Result<String> {
        let program = self.iptables_program().await?;
        self.exec(program, ["-w", "5", "-t", "nat", "-L", "-n", "-v"]).await
    }

    /// Packet count of the first nat rule in `chain` whose line contains `needle`.
    pub async fn nat_packets(&self, chain: &str, needle: &str) -> Result<u64> {
        let program = self.iptables_program().await?;
        let listing = self.exec(program, ["-w", "5", "-t", "nat", "-L", chain, "-n", "-v", "-x"]).await?;
        for line in listing.lines().skip(2) {
            if line.contains(needle) {
                let packets = line.split_whitespace().next().unwrap_or_default();
                return packets.parse().with_context(|| format!("packet count in {line:?}"));
            }
        }
        bail!("no rule containing {needle:?} in nat chain {chain}:\n{listing}")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_processes_in(&self.name);
        let out = StdCommand::new("ip").args(["netns", "del", &self.name]).stdin(Stdio::null()).output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "warning: `ip netns del {}` failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("warning: cannot run `ip netns del {}`: {e}", self.name),
        }
    }
}

/// SIGKILL every process whose network namespace is `name` (never this process itself).
fn kill_processes_in(name: &str) {
    let Ok(out) = StdCommand::new("ip").args(["netns", "pids", name]).stdin(Stdio::null()).output() else {
        return;
    };
    let me = std::process::id();
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
        if pid != me && pid > 1 {
            // SAFETY: kill(2) with a concrete pid and a valid signal number.
            unsafe {
                kill(pid as c_int, SIGKILL);
            }
        }
    }
}

/// Delete `amime-e2e-<pid>-*` namespaces whose creating process no longer exists (left by a
/// test process that was killed before its `Drop`s ran).
fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        kill_processes_in(&name);
        let _ = StdCommand::new("ip").args(["netns", "del", &name]).stdin(Stdio::null()).output();
    }
}

/// `ip ARGS...` (at most [`COMMAND_TIMEOUT`]); its stdout. Fails on a non-zero exit.
async fn run_ip(args: &[std::ffi::OsString]) -> Result<String> {
    let out = run_to_completion(Path::new("ip"), args, COMMAND_TIMEOUT).await?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn enter_namespace(path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: setns(2) on a valid, open namespace fd; it affects only the calling thread.
    let rc = unsafe { setns(file.as_raw_fd(), CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setns({}, CLONE_NEWNET)", path.display()));
    }
    Ok(())
}

/// A veth pair with one end in `a` (named `a_if`, address `a_cidr`) and the other in `b`; both
/// ends are created directly inside the namespaces and brought up.
pub async fn link_veth(a: &Netns, a_if: &str, a_cidr: &str, b: &Netns, b_if: &str, b_cidr: &str) -> Result<()> {
    run_to_completion(
        Path::new("ip"),
        ["link", "add", "name", a_if, "netns", a.name(), "type", "veth", "peer", "name", b_if, "netns", b.name()],
        COMMAND_TIMEOUT,
    )
    .await
    .with_context(|| format!("veth pair {}:{a_if} <-> {}:{b_if}", a.name(), b.name()))?;
    for (ns, ifname, cidr) in [(a, a_if, a_cidr), (b, b_if, b_cidr)] {
        ns.ip(["addr", "add", cidr, "dev", ifname]).await?;
        ns.ip(["link", "set", ifname, "up"]).await?;
    }
    Ok(())
}

/// A veth from `node`'s bridge `br0` (end `peer`) into `pod` (`eth0`, `ip/24`, default route
/// via `node_ip`): how a pod is plugged into a node with several pods.
pub async fn plug_into_bridge(node: &Netns, pod: &Netns, peer: &str, ip: Ipv4Addr, node_ip: Ipv4Addr) -> Result<()> {
    let link = format!("link add name eth0 netns {} type veth peer name {peer} netns {}", pod.name(), node.name());
    run_to_completion(Path::new("ip"), link.split(' '), COMMAND_TIMEOUT)
        .await
        .with_context(|| format!("veth {}:eth0 <-> {}:{peer}", pod.name(), node.name()))?;
    pod.ip(["addr", "add", &format!("{ip}/24"), "dev", "eth0"]).await?;
    pod.ip(["link", "set", "eth0", "up"]).await?;
    pod.ip(["route", "add", "default", "via", &node_ip.to_string()]).await?;
    node.ip(["link", "set", peer, "master", "br0", "up"]).await?;
    Ok(())
}

/// An app started by [`Netns::start_calling_upstream`]; its thread ends when this is dropped.
pub struct CallingUpstream {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl CallingUpstream {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A TCP server started by [`Netns::start_echo`]; stops when dropped.
pub struct TcpEcho {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TcpEcho {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}
