//! `amime-bench`: how meshd scales with the size of the mesh and the number of proxies.
//!
//! Generates a synthetic mesh (N services x M pods across a few namespaces, with routing
//! rules for a tenth of the services), times the in-process translation, then starts a
//! real `meshd` on it and connects K simulated Envoy ADS clients (each its own HTTP/2
//! connection, subscribing CDS -> EDS -> LDS -> RDS and ACKing everything like Envoy).
//! It measures how long the initial config takes to reach and be ACKed by every proxy,
//! meshd's memory per connected proxy, bytes per proxy, and the time from a file write
//! until every proxy has ACKed the resulting route push and endpoint push.
//!
//! The addresses in the generated YAML (10.0.0.0/8 for services and pods, 127.x for the
//! proxies' INSTANCE_IPS) are data only: nothing ever connects to them.
//!
//! ```text
//! cargo build --release -p amime-control-plane --bin meshd -p amime-e2e --bin amime-bench
//! ulimit -n 65536   # K clients here and K streams in meshd (checked at start)
//! target/release/amime-bench --services 1000 --endpoints 5 --proxies 1000
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use clap::{Parser, ValueEnum};
use control_plane::model::index::Index;
use control_plane::source::config_dir::ConfigDir;
use control_plane::translate::contain::CheckStats;
use control_plane::translate::{MeshConfig, MeshSettings};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::{filter::ConfigType, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

// ---- command line ------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Api {
    Delta,
    Sotw,
}

/// How the simulated sidecars get traffic, as their node metadata says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// `INTERCEPTION_MODE: NONE`: each listens on its own IP, so each is its own class.
    Explicit,
    /// `INTERCEPTION_MODE: REDIRECT`: replicas of one workload share one class.
    Transparent,
    /// Both, one after the other, against a fresh meshd each.
    Both,
}

impl Mode {
    fn runs(self) -> Vec<Mode> {
        match self {
            Mode::Both => vec![Mode::Explicit, Mode::Transparent],
            one => vec![one],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Explicit => "explicit",
            Mode::Transparent => "transparent",
            Mode::Both => "both",
        }
    }
}

/// Scale benchmark for meshd: translation time, push latency to K proxies, memory and
/// bytes per proxy.
#[derive(Debug, Parser)]
#[command(name = "amime-bench")]
struct Args {
    /// Number of Services.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Pods (endpoints) per Service.
    #[arg(long, default_value_t = 5)]
    endpoints: usize,
    /// Number of simulated proxies (ADS clients, one connection each).
    #[arg(long, default_value_t = 1000)]
    proxies: usize,
    /// xDS flavour the proxies speak.
    #[arg(long, value_enum, default_value_t = Api::Delta)]
    api: Api,
    /// Interception mode of the proxies. Proxy i is replica i % M of service i / M, so
    /// under capture the replicas of one workload (same labels) share one snapshot.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    mode: Mode,
    /// The meshd binary [default: meshd next to this binary, else target/debug/meshd].
    #[arg(long, value_name = "PATH")]
    meshd: Option<PathBuf>,
    /// Keep the generated config and meshd's logs in DIR (else a temp dir, removed).
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Namespaces the services (and proxies) are spread over.
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// Every n-th service gets a DestinationRule (2 subsets) and a VirtualService.
    #[arg(long, default_value_t = 10)]
    rules_every: usize,
    /// In-process translation runs (the median is reported).
    #[arg(long, default_value_t = 9)]
    translate_runs: usize,
    /// Worker threads of the bench's own runtime (the clients).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Wait this many seconds between the initial sync and the pushes (to attach a
    /// profiler to meshd, whose pid is printed).
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    pause_before_pushes: u64,
    /// Deadline of each phase, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

// ---- targets -----------------------------------------------------------------------

const TRANSLATE_TARGET_MS: f64 = 50.0;
const PUSH_TARGET_S: f64 = 2.0;
const PER_PROXY_TARGET_KB: f64 = 50.0;
/// go-control-plane's LinearCache, measured side by side on the same resources and 1,000
/// delta clients: a route change ACKed by all in 0.11-0.15 s with 0.12-0.15 s of server
/// CPU. meshd's file-write-to-all-ACKed time and CPU per change must beat the low end.
const REFERENCE_ROUTE_PUSH_S: f64 = 0.11;
const REFERENCE_ROUTE_PUSH_CPU_S: f64 = 0.12;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("amime-bench: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("[amime-bench] {}", msg.as_ref());
}

fn run(args: Args) -> Result<()> {
    ensure!(
        args.services >= 1 && args.endpoints >= 1 && args.proxies >= 1,
        "--services, --endpoints and --proxies must be >= 1"
    );
    ensure!(args.namespaces >= 1 && args.rules_every >= 1, "--namespaces and --rules-every must be >= 1");
    check_fd_limit(args.proxies)?;
    // As meshd does at startup: versions hash content read with Envoy's schemas.
    if std::env::var_os("AMIME_BENCH_BYTE_VERSIONS").is_none() {
        xds::set_descriptor_pool(control_plane::envoy_json::descriptor_pool().clone());
    }
    let meshd_bin = locate_meshd(args.meshd.as_deref())?;

    // Work directory: config/ and meshd's logs.
    let work = WorkDir::new(args.keep.clone())?;
    let mesh = SyntheticMesh::generate(&work.path.join("config"), &args)?;
    progress(format!(
        "generated {} services x {} pods in {} namespaces ({} with routing rules) in {}",
        args.services,
        args.endpoints,
        mesh.namespaces.len(),
        mesh.with_rules,
        mesh.dir.display()
    ));

    let translate = bench_translate(&mesh, args.translate_runs.max(1))?;
    progress(format!("translate: median {:.1} ms", translate.total_ms));
    let engine = bench_engine(&translate.model, &mesh, args.api, args.proxies)?;
    progress(format!(
        "xds engine in process: {:.0} us per proxy per endpoint push; publish to {} classes {:.0} ms",
        engine.endpoint_push_us, engine.classes, engine.publish_ms
    ));

    let mut runs = Vec::new();
    for mode in args.mode.runs() {
        if !runs.is_empty() {
            // The previous run rewrote two files; start from the generated mesh again.
            mesh.restore()?;
        }
        let mut meshd = Meshd::start(&meshd_bin, &mesh.dir, &work.path)?;
        progress(format!(
            "[{}] meshd started (pid {}), xDS {}, monitoring {}",
            mode.name(),
            meshd.pid,
            meshd.xds,
            meshd.monitoring
        ));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads.max(1))
            .enable_all()
            .build()
            .context("building the client runtime")?;
        let result = rt.block_on(bench_xds(&args, mode, &mesh, &mut meshd));
        // Stop meshd before the clients are torn down, so nothing reconnects.
        drop(meshd);
        drop(rt);
        runs.push((mode, result?));
    }

    print_report(&args, &meshd_bin, &mesh, &translate, &engine, &runs);
    if let Some(dir) = &args.keep {
        progress(format!("kept config and meshd logs in {}", dir.display()));
    }
    Ok(())
}

/// Each process (the bench with K client sockets, meshd with K accepted ones) needs
/// about K file descriptors plus slack; meshd inherits this process's limit.
fn check_fd_limit(proxies: usize) -> Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    let need = proxies + 256;
    if let Some(soft) = soft {
        ensure!(
            soft >= need,
            "the open-file limit is {soft}, {proxies} proxies need about {need}: run `ulimit -n 65536` first"
        );
    }
    Ok(())
}

fn locate_meshd(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        ensure!(p.is_file(), "--meshd {}: no such file", p.display());
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    let dir = exe.parent().context("this binary has no directory")?;
    let mut candidates = vec![dir.join("meshd")];
    if let Some(target) = dir.parent() {
        candidates.push(target.join("release").join("meshd"));
        candidates.push(target.join("debug").join("meshd"));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        anyhow!(
            "no meshd binary next to {} nor in target/debug: build it (cargo build --release -p amime-control-plane) or pass --meshd",
            dir.display()
        )
    })
}

/// The scratch directory; removed on drop unless the user asked to keep it.
struct WorkDir {
    path: PathBuf,
    remove: bool,
}

impl WorkDir {
    fn new(keep: Option<PathBuf>) -> Result<WorkDir> {
        let (path, remove) = match keep {
            Some(p) => (p, false),
            None => (std::env::temp_dir().join(format!("amime-bench-{}", std::process::id())), true),
        };
        let config = path.join("config");
        if config.exists() {
            std::fs::remove_dir_all(&config).with_context(|| format!("clearing {}", config.display()))?;
        }
        std::fs::create_dir_all(&config).with_context(|| format!("creating {}", config.display()))?;
        Ok(WorkDir { path, remove })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

// ---- the synthetic mesh ------------------------------------------------------------

const SERVICE_PORT: u16 = 8080;

/// A 10.0.0.0/8 address from an index (data only).
fn ten_net(base: u32, i: usize) -> String {
    let v = (10u32 << 24) | ((base << 16) + i as u32);
    format!("{}.{}.{}.{}", v >> 24, (v >> 16) & 255, (v >> 8) & 255, v & 255)
}

struct SyntheticMesh {
    dir: PathBuf,
    namespaces: Vec<String>,
    services: usize,
    endpoints: usize,
    with_rules: usize,
}

impl SyntheticMesh {
    fn namespace_of(&self, service: usize) -> &str {
        &self.namespaces[service % self.namespaces.len()]
    }

    fn service_name(service: usize) -> String {
        format!("svc-{service:05}")
    }

    fn generate(dir: &Path, args: &Args) -> Result<SyntheticMesh> {
        ensure!(args.services * args.endpoints < (127 - 64) << 16, "too many pods for the address plan");
        let mut mesh = SyntheticMesh {
            dir: dir.to_path_buf(),
            namespaces: (0..args.namespaces).map(|n| format!("bench-{n:02}")).collect(),
            services: args.services,
            endpoints: args.endpoints,
            with_rules: 0,
        };
        let mut ns_yaml = String::new();
        for ns in &mesh.namespaces {
            ns_yaml.push_str(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    amime-injection: enabled\n---\n"
            ));
            std::fs::create_dir_all(dir.join(ns))?;
        }
        write_file(&dir.join("namespaces.yaml"), &ns_yaml)?;
        for s in 0..args.services {
            write_file(&mesh.service_path(s), &mesh.service_yaml(s, None))?;
            if s % args.rules_every == 0 {
                write_file(&mesh.rules_path(s), &mesh.rules_yaml(s, 90))?;
                mesh.with_rules += 1;
            }
        }
        Ok(mesh)
    }

    /// Writes back the two files the push phases change.
    fn restore(&self) -> Result<()> {
        replace_file(&self.rules_path(0), &self.rules_yaml(0, 90))?;
        let s = 1 % self.services;
        replace_file(&self.service_path(s), &self.service_yaml(s, None))
    }

    fn service_path(&self, s: usize) -> PathBuf {
        self.dir.join(self.namespace_of(s)).join(format!("{}.yaml", Self::service_name(s)))
    }

    fn rules_path(&self, s: usize) -> PathBuf {
        self.dir.join(self.namespace_of(s)).join(format!("{}-rules.yaml", Self::service_name(s)))
    }

    /// The Service and its pods; `moved_pod` gives pod 0 a different IP.
    fn service_yaml(&self, s: usize, moved_pod: Option<&str>) -> String {
        let name = Self::service_name(s);
        let ns = self.namespace_of(s);
        let cluster_ip = ten_net(96, s);
        let mut y = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  clusterIP: {cluster_ip}\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    port: {SERVICE_PORT}\n    targetPort: http-web\n"
        );
        for p in 0..self.endpoints {
            let ip = match (p, moved_pod) {
                (0, Some(ip)) => ip.to_owned(),
                _ => ten_net(128, s * self.endpoints + p),
            };
            let version = p % 2 + 1;
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}-{p}\n  namespace: {ns}\n  labels:\n    app: {name}\n    version: v{version}\nspec:\n  containers:\n  - name: app\n    image: example/app:v{version}\n    ports:\n    - name: http-web\n      containerPort: {SERVICE_PORT}\nstatus:\n  podIP: {ip}\n"
            ));
        }
        y
    }

    /// A DestinationRule with subsets v1/v2 and a VirtualService with a header match to
    /// v2 and a v1/v2 split of `v1_weight`/100-`v1_weight`.
    fn rules_yaml(&self, s: usize, v1_weight: u32) -> String {
        let name = Self::service_name(s);
        let ns = self.namespace_of(s);
        let v2_weight = 100 - v1_weight;
        format!(
            "apiVersion: networking.amime.dev/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  host: {name}\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n  - name: v2\n    labels:\n      version: v2\n---\napiVersion: networking.amime.dev/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  hosts:\n  - {name}\n  http:\n  - name: canary\n    match:\n    - headers:\n        x-canary:\n          exact: \"true\"\n    route:\n    - destination:\n        host: {name}\n        subset: v2\n  - name: split\n    route:\n    - destination:\n        host: {name}\n        subset: v1\n      weight: {v1_weight}\n    - destination:\n        host: {name}\n        subset: v2\n      weight: {v2_weight}\n"
        )
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Replaces `path` atomically (the temp file is hidden, so meshd never reads it).
fn replace_file(path: &Path, text: &str) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).context("file name")?;
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    write_file(&tmp, text)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))
}

// ---- in-process translation ---------------------------------------------------------

struct TranslateResult {
    load_ms: f64,
    reload_ms: f64,
    build_ms: f64,
    routes_ms: f64,
    total_ms: f64,
    min_ms: f64,
    max_ms: f64,
    runs: usize,
    clusters: usize,
    endpoints: usize,
    cluster_bytes: usize,
    endpoint_bytes: usize,
    route_bytes_per_ns: usize,
    problems: usize,
    model: Arc<Index>,
    /// The first build (nothing remembered, as when meshd starts): time and checks.
    cold_ms: f64,
    cold_checks: CheckStats,
    /// A later build of the same model (as every push after the first): its checks.
    warm_checks: CheckStats,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench_translate(mesh: &SyntheticMesh, runs: usize) -> Result<TranslateResult> {
    let started = Instant::now();
    let mut dir = ConfigDir::new(&mesh.dir);
    dir.load().context("loading the generated config directory")?;
    let (objects, problems) = dir.objects();
    if let Some(p) = problems.first() {
        bail!("the generated config has {} problems, e.g. {p}", problems.len());
    }
    let mut index = Index::new();
    index.reset(objects);
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    ensure!(
        index.services.len() == mesh.services,
        "loaded {} services, generated {}",
        index.services.len(),
        mesh.services
    );
    // What meshd's config-dir source does on every file event: re-read and hash every
    // file (only changed ones are parsed), collect the objects, rebuild the index.
    let t = Instant::now();
    dir.load().context("re-loading the generated config directory")?;
    let (objects, _) = dir.objects();
    let mut again = index.clone();
    again.reset(objects);
    let reload_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(again);
    let model = Arc::new(index);

    let (mut build, mut routes, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut last: Option<MeshConfig> = None;
    let mut route_bytes = 0;
    let (mut cold_ms, mut cold_checks) = (0.0, CheckStats::default());
    // One run more than asked: the first is cold (nothing to reuse, as when meshd
    // starts) and reported on its own; the others build after the previous one,
    // as meshd's push loop does.
    for run in 0..=runs {
        let t0 = Instant::now();
        let config = MeshConfig::build_after(model.clone(), &MeshSettings::default(), last.as_ref());
        if run == 0 {
            cold_ms = t0.elapsed().as_secs_f64() * 1e3;
            cold_checks = config.checks;
            last = Some(config);
            continue;
        }
        let t1 = Instant::now();
        let sets: Vec<_> = mesh.namespaces.iter().map(|ns| config.routes_for(ns)).collect();
        let t2 = Instant::now();
        route_bytes = sets[0].iter().map(|r| r.encoded_len()).sum();
        build.push((t1 - t0).as_secs_f64() * 1e3);
        routes.push((t2 - t1).as_secs_f64() * 1e3);
        total.push((t2 - t0).as_secs_f64() * 1e3);
        last = Some(config); // the previous one is dropped outside the timed part
    }
    let config = last.expect("runs >= 1");
    let result = TranslateResult {
        load_ms,
        reload_ms,
        build_ms: median(&mut build),
        routes_ms: median(&mut routes),
        min_ms: total.iter().copied().fold(f64::INFINITY, f64::min),
        max_ms: total.iter().copied().fold(0.0, f64::max),
        total_ms: median(&mut total),
        runs,
        clusters: config.clusters().len(),
        endpoints: config.endpoints().len(),
        cluster_bytes: config.clusters().iter().map(|r| r.encoded_len()).sum(),
        endpoint_bytes: config.endpoints().iter().map(|r| r.encoded_len()).sum(),
        route_bytes_per_ns: route_bytes,
        problems: config.problems.len(),
        model: model.clone(),
        cold_ms,
        cold_checks,
        warm_checks: config.checks,
    };
    if let Some(p) = config.problems.first() {
        progress(format!("warning: translation reported {} problems, e.g. {p}", config.problems.len()));
    }
    Ok(result)
}

// ---- meshd -------------------------------------------------------------------------

/// The meshd child process; killed when dropped (also on error and while unwinding).
struct Meshd {
    child: Child,
    pid: u32,
    xds: SocketAddr,
    monitoring: SocketAddr,
    stderr_log: PathBuf,
}

fn free_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?)
}

impl Meshd {
    fn start(bin: &Path, config_dir: &Path, log_dir: &Path) -> Result<Meshd> {
        let xds = free_port()?;
        let monitoring = free_port()?;
        let stdout_log = log_dir.join("meshd.stdout.log");
        let stderr_log = log_dir.join("meshd.stderr.log");
        let child = Command::new(bin)
            .arg("--config-dir")
            .arg(config_dir)
            .args(["--xds-addr", &xds.to_string(), "--monitoring-addr", &monitoring.to_string()])
            .args(["--debounce-quiet", "10", "--debounce-max", "100"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_log)?)
            .stderr(std::fs::File::create(&stderr_log)?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Meshd { pid: child.id(), child, xds, monitoring, stderr_log })
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        for name in ["meshd.stderr.log", "meshd.stdout.log"] {
            let t = std::fs::read_to_string(self.stderr_log.with_file_name(name)).unwrap_or_default();
            let lines: Vec<&str> = t.lines().collect();
            text.extend(lines[lines.len().saturating_sub(15)..].iter().map(|l| format!("\n    {l}")));
        }
        text
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("meshd exited ({status}); last log lines:{}", self.log_tail());
        }
        Ok(())
    }

    /// Resident set size, bytes.
    fn rss(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .context("no VmRSS in /proc/<meshd>/status")?;
        Ok(kb * 1024)
    }

    fn cpu_seconds(&self) -> (f64, f64) {
        cpu_seconds(&format!("/proc/{}/stat", self.pid))
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            self.check_alive()?;
            if let Ok((200, _)) = http_get(self.monitoring, "/readyz").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("meshd not ready after {timeout:?}; last log lines:{}", self.log_tail());
            }
        }
    }

    async fn metrics(&self) -> BTreeMap<String, f64> {
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
fn cpu_seconds(stat_path: &str) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(stat_path) else { return (0.0, 0.0) };
    let Some((_, rest)) = stat.rsplit_once(')') else { return (0.0, 0.0) };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ((ticks(11) + ticks(12)) / 100.0, ticks(12) / 100.0)
}

async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
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

// ---- simulated proxies ---------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Cds = 0,
    Eds = 1,
    Lds = 2,
    Rds = 3,
}

impl Ty {
    const ALL: [Ty; 4] = [Ty::Cds, Ty::Eds, Ty::Lds, Ty::Rds];

    fn url(self) -> &'static str {
        use xds::ResourceType as R;
        match self {
            Ty::Cds => R::Cluster.type_url(),
            Ty::Eds => R::ClusterLoadAssignment.type_url(),
            Ty::Lds => R::Listener.type_url(),
            Ty::Rds => R::RouteConfiguration.type_url(),
        }
    }

    fn from_url(url: &str) -> Result<Ty> {
        Ty::ALL.into_iter().find(|t| t.url() == url).ok_or_else(|| anyhow!("unexpected type_url {url:?}"))
    }
}

enum Event {
    Received { ty: Ty, bytes: usize },
    Acked { client: usize, ty: Ty, version: String, at: Instant },
    Failed { client: usize, error: String },
}

struct ClientSpec {
    index: usize,
    node_id: String,
    namespace: String,
    app: String,
    version: String,
    mode: Mode,
    ip: String,
    uri: String,
    api: Api,
}

fn node(spec: &ClientSpec) -> Node {
    let s = |v: &str| Value { kind: Some(Kind::StringValue(v.to_owned())) };
    let labels = Struct {
        fields: [("app".to_owned(), s(&spec.app)), ("version".to_owned(), s(&spec.version))].into_iter().collect(),
    };
    let mode = if spec.mode == Mode::Transparent { "REDIRECT" } else { "NONE" };
    let fields = [
        ("NAMESPACE".to_owned(), s(&spec.namespace)),
        ("INSTANCE_IPS".to_owned(), s(&spec.ip)),
        ("INTERCEPTION_MODE".to_owned(), s(mode)),
        ("LABELS".to_owned(), Value { kind: Some(Kind::StructValue(labels)) }),
    ];
    Node {
        id: spec.node_id.clone(),
        cluster: spec.app.clone(),
        user_agent_name: "amime-bench".to_owned(),
        metadata: Some(Struct { fields: fields.into_iter().collect() }),
        ..Default::default()
    }
}

/// The head of a Cluster: only what a client needs to know to subscribe to its EDS.
#[derive(Clone, PartialEq, prost::Message)]
struct ClusterHead {
    #[prost(string, tag = "1")]
    name: String,
    /// `Cluster.type` (oneof cluster_discovery_type); EDS = 3.
    #[prost(int32, optional, tag = "2")]
    discovery_type: Option<i32>,
    #[prost(message, optional, tag = "3")]
    eds_cluster_config: Option<EdsClusterConfigHead>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EdsClusterConfigHead {
    #[prost(string, tag = "2")]
    service_name: String,
}

/// (cluster name, EDS resource name if the cluster uses EDS).
fn cluster_eds(body: &[u8]) -> Result<(String, Option<String>)> {
    let c = ClusterHead::decode(body).context("decoding a Cluster")?;
    if c.discovery_type != Some(3) {
        return Ok((c.name, None));
    }
    let service = c.eds_cluster_config.map(|e| e.service_name).filter(|s| !s.is_empty());
    let eds = service.unwrap_or_else(|| c.name.clone());
    Ok((c.name, Some(eds)))
}

/// (listener name, the RDS route configuration names its HTTP connection managers use).
fn listener_routes(body: &[u8]) -> Result<(String, BTreeSet<String>)> {
    let l = Listener::decode(body).context("decoding a Listener")?;
    let mut names = BTreeSet::new();
    for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
        for f in &chain.filters {
            let Some(ConfigType::TypedConfig(any)) = &f.config_type else { continue };
            if !any.type_url.ends_with("HttpConnectionManager") {
                continue;
            }
            let hcm =
                HttpConnectionManager::decode(any.value.as_slice()).context("decoding an HttpConnectionManager")?;
            if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                names.insert(rds.route_config_name);
            }
        }
    }
    Ok((l.name, names))
}

/// What one proxy subscribes to, kept like Envoy does: EDS for the EDS clusters it has,
/// RDS for the route configurations its listeners name.
#[derive(Default)]
struct Subscriptions {
    eds_of_cluster: BTreeMap<String, String>,
    routes_of_listener: BTreeMap<String, BTreeSet<String>>,
}

impl Subscriptions {
    fn eds(&self) -> BTreeSet<String> {
        self.eds_of_cluster.values().cloned().collect()
    }
    fn rds(&self) -> BTreeSet<String> {
        self.routes_of_listener.values().flatten().cloned().collect()
    }
}

/// Added and removed names between two subscriptions.
fn delta(old: &BTreeSet<String>, new: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    (new.difference(old).cloned().collect(), old.difference(new).cloned().collect())
}

/// An Envoy-like xDS client without I/O: a response in, the requests it causes out
/// (subscription changes first, then the ACK). Shared by the network clients and the
/// in-process engine measurement.
#[derive(Default)]
struct ProxyLogic {
    subs: Subscriptions,
    lds_requested: bool,
    /// State of the world: (version, nonce) of the last response per type, and the
    /// names subscribed per type.
    last: [(String, String); 4],
    names: [BTreeSet<String>; 4],
}

fn delta_request(ty: Ty, subscribe: Vec<String>, unsubscribe: Vec<String>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: ty.url().to_owned(),
        resource_names_subscribe: subscribe,
        resource_names_unsubscribe: unsubscribe,
        ..Default::default()
    }
}

impl ProxyLogic {
    fn first_delta(&self, node: Node) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest { node: Some(node), ..delta_request(Ty::Cds, Vec::new(), Vec::new()) }
    }

    fn first_sotw(&self, node: Node) -> DiscoveryRequest {
        DiscoveryRequest { node: Some(node), ..self.sotw_request(Ty::Cds) }
    }

    fn sotw_request(&self, ty: Ty) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: self.last[ty as usize].0.clone(),
            response_nonce: self.last[ty as usize].1.clone(),
            resource_names: self.names[ty as usize].iter().cloned().collect(),
            type_url: ty.url().to_owned(),
            ..Default::default()
        }
    }

    fn on_delta(&mut self, r: &DeltaDiscoveryResponse) -> Result<(Ty, Vec<DeltaDiscoveryRequest>)> {
        let ty = Ty::from_url(&r.type_url)?;
        let mut out = Vec::new();
        match ty {
            Ty::Cds => {
                let before = self.subs.eds();
                for res in &r.resources {
                    let Some(any) = &res.resource else { continue };
                    match cluster_eds(&any.value)? {
                        (name, Some(eds)) => self.subs.eds_of_cluster.insert(name, eds),
                        (name, None) => self.subs.eds_of_cluster.remove(&name),
                    };
                }
                for name in &r.removed_resources {
                    self.subs.eds_of_cluster.remove(name);
                }
                let (add, remove) = delta(&before, &self.subs.eds());
                if !add.is_empty() || !remove.is_empty() {
                    out.push(delta_request(Ty::Eds, add, remove));
                }
                if !self.lds_requested && self.subs.eds_of_cluster.is_empty() {
                    self.lds_requested = true;
                    out.push(delta_request(Ty::Lds, Vec::new(), Vec::new()));
                }
            }
            Ty::Eds => {
                // Clusters are warm: Envoy now asks for listeners.
                if !self.lds_requested {
                    self.lds_requested = true;
                    out.push(delta_request(Ty::Lds, Vec::new(), Vec::new()));
                }
            }
            Ty::Lds => {
                let before = self.subs.rds();
                for res in &r.resources {
                    let Some(any) = &res.resource else { continue };
                    let (name, routes) = listener_routes(&any.value)?;
                    self.subs.routes_of_listener.insert(name, routes);
                }
                for name in &r.removed_resources {
                    self.subs.routes_of_listener.remove(name);
                }
                let (add, remove) = delta(&before, &self.subs.rds());
                if !add.is_empty() || !remove.is_empty() {
                    out.push(delta_request(Ty::Rds, add, remove));
                }
            }
            Ty::Rds => {}
        }
        out.push(DeltaDiscoveryRequest {
            response_nonce: r.nonce.clone(),
            ..delta_request(ty, Vec::new(), Vec::new())
        });
        Ok((ty, out))
    }

    fn on_sotw(&mut self, r: &DiscoveryResponse) -> Result<(Ty, Vec<DiscoveryRequest>)> {
        let ty = Ty::from_url(&r.type_url)?;
        let mut follow_up = Vec::new();
        match ty {
            Ty::Cds => {
                // State of the world: the response is every cluster.
                let mut eds = BTreeSet::new();
                for any in &r.resources {
                    if let (_, Some(name)) = cluster_eds(&any.value)? {
                        eds.insert(name);
                    }
                }
                if eds != self.names[Ty::Eds as usize] {
                    self.names[Ty::Eds as usize] = eds;
                    follow_up.push(Ty::Eds);
                }
                if !self.lds_requested && self.names[Ty::Eds as usize].is_empty() {
                    self.lds_requested = true;
                    follow_up.push(Ty::Lds);
                }
            }
            Ty::Eds => {
                if !self.lds_requested {
                    self.lds_requested = true;
                    follow_up.push(Ty::Lds);
                }
            }
            Ty::Lds => {
                let mut rds = BTreeSet::new();
                for any in &r.resources {
                    rds.extend(listener_routes(&any.value)?.1);
                }
                if rds != self.names[Ty::Rds as usize] {
                    self.names[Ty::Rds as usize] = rds;
                    follow_up.push(Ty::Rds);
                }
            }
            Ty::Rds => {}
        }
        let mut out: Vec<DiscoveryRequest> = follow_up.into_iter().map(|t| self.sotw_request(t)).collect();
        self.last[ty as usize] = (r.version_info.clone(), r.nonce.clone());
        out.push(self.sotw_request(ty));
        Ok((ty, out))
    }
}

const REQUEST_BUFFER: usize = 8;

async fn connect(spec: &ClientSpec, gate: &Semaphore) -> Result<AggregatedDiscoveryServiceClient<Channel>> {
    let _permit = gate.acquire().await?;
    let channel = tonic::transport::Endpoint::from_shared(spec.uri.clone())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(30))
        // Envoy's gRPC client uses large HTTP/2 windows; so do we.
        .initial_stream_window_size(Some(16 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .connect()
        .await
        .context("connecting")?;
    Ok(AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20))
}

async fn client(spec: ClientSpec, events: mpsc::UnboundedSender<Event>, gate: Arc<Semaphore>) {
    let result = match spec.api {
        Api::Delta => delta_client(&spec, &events, &gate).await,
        Api::Sotw => sotw_client(&spec, &events, &gate).await,
    };
    let error = match result {
        Ok(()) => "the server closed the stream".to_owned(),
        Err(e) => format!("{e:#}"),
    };
    let _ = events.send(Event::Failed { client: spec.index, error });
}

async fn delta_client(spec: &ClientSpec, events: &mpsc::UnboundedSender<Event>, gate: &Semaphore) -> Result<()> {
    let mut ads = connect(spec, gate).await?;
    let mut logic = ProxyLogic::default();
    let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
    tx.send(logic.first_delta(node(spec))).await?;
    let mut stream = ads.delta_aggregated_resources(ReceiverStream::new(rx)).await?.into_inner();
    while let Some(r) = stream.message().await? {
        let (ty, requests) = logic.on_delta(&r)?;
        let _ = events.send(Event::Received { ty, bytes: r.encoded_len() });
        for request in requests {
            tx.send(request).await?;
        }
        let _ =
            events.send(Event::Acked { client: spec.index, ty, version: r.system_version_info, at: Instant::now() });
    }
    Ok(())
}

async fn sotw_client(spec: &ClientSpec, events: &mpsc::UnboundedSender<Event>, gate: &Semaphore) -> Result<()> {
    let mut ads = connect(spec, gate).await?;
    let mut logic = ProxyLogic::default();
    let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
    tx.send(logic.first_sotw(node(spec))).await?;
    let mut stream = ads.stream_aggregated_resources(ReceiverStream::new(rx)).await?.into_inner();
    while let Some(r) = stream.message().await? {
        let (ty, requests) = logic.on_sotw(&r)?;
        let _ = events.send(Event::Received { ty, bytes: r.encoded_len() });
        for request in requests {
            tx.send(request).await?;
        }
        let _ = events.send(Event::Acked { client: spec.index, ty, version: r.version_info, at: Instant::now() });
    }
    Ok(())
}

// ---- the xDS engine in process ----------------------------------------------------------

/// CPU time of meshd's per-proxy protocol work (the sans-IO `xds::session::Session`) and
/// of publishing a translation to K proxy classes, measured in this process.
struct EngineResult {
    initial_us: f64,
    route_push_us: f64,
    endpoint_push_us: f64,
    publish_ms: f64,
    classes: usize,
}

/// One simulated proxy talking to one in-process session.
struct EngineProxy {
    session: xds::session::Session,
    logic: ProxyLogic,
    _registered: xds::status::RegisteredConnection,
}

impl EngineProxy {
    /// Answers responses (and the responses to the answers) until quiet; returns the
    /// time spent inside the session.
    fn drive(&mut self, responses: Vec<xds::session::Response>) -> Result<Duration> {
        use xds::session::{Decoded, Response};
        let mut queue: std::collections::VecDeque<Response> = responses.into();
        let mut spent = Duration::ZERO;
        while let Some(response) = queue.pop_front() {
            match response.decoded() {
                Decoded::Delta(r) => {
                    for request in self.logic.on_delta(&r)?.1 {
                        let t = Instant::now();
                        queue.extend(self.session.on_delta_request(request));
                        spent += t.elapsed();
                    }
                }
                Decoded::Sotw(r) => {
                    for request in self.logic.on_sotw(&r)?.1 {
                        let t = Instant::now();
                        queue.extend(self.session.on_sotw_request(request));
                        spent += t.elapsed();
                    }
                }
            }
        }
        Ok(spent)
    }

    fn push(&mut self, snapshot: &Arc<xds::Snapshot>) -> Result<Duration> {
        let t = Instant::now();
        let out = self.session.on_snapshot(snapshot.clone());
        let spent = t.elapsed();
        ensure!(!out.is_empty(), "the in-process push produced no response");
        Ok(spent + self.drive(out)?)
    }
}

fn bench_engine(model: &Arc<Index>, mesh: &SyntheticMesh, api: Api, classes: usize) -> Result<EngineResult> {
    use control_plane::model::MeshObject;
    use control_plane::translate::{InterceptionMode, ProxyClass};

    // The same two changes the network phase makes, applied to the model directly.
    let s = 1 % mesh.services;
    let ns = mesh.namespace_of(s).to_owned();
    let mut moved = (**model).clone();
    let pod = moved.pods.get(&(ns.clone(), format!("{}-0", SyntheticMesh::service_name(s)))).context("pod 0")?;
    let mut pod = (**pod).clone();
    pod.ip = Some("10.127.255.1".parse()?);
    moved.apply(MeshObject::Pod(pod));
    let mut rerouted = (**model).clone();
    let key = (mesh.namespace_of(0).to_owned(), SyntheticMesh::service_name(0));
    let mut vs = (**rerouted.virtual_services.get(&key).context("VirtualService 0")?).clone();
    let split = vs.http.last_mut().context("split route")?;
    split.route[0].weight = 70;
    split.route[1].weight = 30;
    rerouted.apply(MeshObject::VirtualService(vs));
    let meshes: Vec<Arc<MeshConfig>> = [model.clone(), Arc::new(rerouted), Arc::new(moved)]
        .into_iter()
        .map(|m| Arc::new(MeshConfig::build(m, &MeshSettings::default())))
        .collect();

    let class = |i: usize| ProxyClass {
        namespace: mesh.namespace_of(i % mesh.services).to_owned(),
        mode: InterceptionMode::None,
        ip: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0001 + i as u32))),
        labels: Default::default(),
    };
    let snaps: Vec<Arc<xds::Snapshot>> = meshes.iter().map(|m| Arc::new(m.proxy_snapshot(&class(0)))).collect();

    let xapi = match api {
        Api::Delta => xds::XdsApi::Delta,
        Api::Sotw => xds::XdsApi::StateOfTheWorld,
    };
    let registry = xds::ConnectionRegistry::new();
    let mut runs = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..20 {
        let registered = registry.register(format!("proxy-0.{ns}"), xapi, None);
        let session = xds::session::Session::new(xapi, registered.status.clone(), registry.clone());
        let mut p = EngineProxy { session, logic: ProxyLogic::default(), _registered: registered };
        let mut spent = Duration::ZERO;
        let t = Instant::now();
        p.session.on_snapshot(snaps[0].clone());
        let node = node(&ClientSpec {
            index: 0,
            node_id: format!("proxy-0.{ns}"),
            namespace: ns.clone(),
            app: "app".into(),
            version: "v1".into(),
            mode: Mode::Explicit,
            ip: "127.0.0.1".into(),
            uri: String::new(),
            api,
        });
        let first = match api {
            Api::Delta => p.session.on_delta_request(p.logic.first_delta(node)),
            Api::Sotw => p.session.on_sotw_request(p.logic.first_sotw(node)),
        };
        spent += t.elapsed();
        spent += p.drive(first)?;
        runs[0].push(spent.as_secs_f64() * 1e6);
        runs[1].push(p.push(&snaps[1])?.as_secs_f64() * 1e6);
        runs[2].push(p.push(&snaps[2])?.as_secs_f64() * 1e6);
    }

    // Publishing a translation to `classes` proxy classes (one per proxy in explicit mode).
    let distributor = control_plane::push::Distributor::new();
    distributor.publish(meshes[0].clone());
    let watches: Vec<_> = (0..classes).map(|i| distributor.watch_class(class(i))).collect();
    let fresh = Arc::new(MeshConfig::build(meshes[2].model().clone(), &MeshSettings::default()));
    let t = Instant::now();
    distributor.publish(fresh);
    let publish_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(watches);

    let [mut initial, mut route, mut endpoint] = runs;
    Ok(EngineResult {
        initial_us: median(&mut initial),
        route_push_us: median(&mut route),
        endpoint_push_us: median(&mut endpoint),
        publish_ms,
        classes,
    })
}

// ---- what the bench observes ---------------------------------------------------------

struct Tracker {
    k: usize,
    acked: Vec<[Option<String>; 4]>,
    initialized: Vec<bool>,
    initialized_count: usize,
    /// The time the last client completed the current goal.
    last_at: Option<Instant>,
    // Since the last reset:
    bytes: [u64; 4],
    responses: u64,
    // The current push goal: every client ACKs a new version of `ty`.
    goal: Option<(Ty, Vec<Option<String>>)>,
    reached: Vec<bool>,
    reached_count: usize,
}

impl Tracker {
    fn new(k: usize) -> Tracker {
        Tracker {
            k,
            acked: vec![Default::default(); k],
            initialized: vec![false; k],
            initialized_count: 0,
            last_at: None,
            bytes: [0; 4],
            responses: 0,
            goal: None,
            reached: vec![false; k],
            reached_count: 0,
        }
    }

    fn apply(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Received { ty, bytes } => {
                self.bytes[ty as usize] += bytes as u64;
                self.responses += 1;
            }
            Event::Acked { client, ty, version, at } => {
                if let Some((goal, baseline)) = &self.goal {
                    if *goal == ty && !self.reached[client] && baseline[client].as_deref() != Some(version.as_str()) {
                        self.reached[client] = true;
                        self.reached_count += 1;
                        self.last_at = Some(self.last_at.map_or(at, |l| l.max(at)));
                    }
                }
                self.acked[client][ty as usize] = Some(version);
                if self.goal.is_none() && !self.initialized[client] && self.acked[client].iter().all(Option::is_some) {
                    self.initialized[client] = true;
                    self.initialized_count += 1;
                    self.last_at = Some(self.last_at.map_or(at, |l| l.max(at)));
                }
            }
            Event::Failed { client, error } => bail!("proxy {client} failed: {error}"),
        }
        Ok(())
    }

    fn total_bytes(&self) -> u64 {
        self.bytes.iter().sum()
    }

    /// Starts a push goal for `ty`, from each client's current version.
    fn start_goal(&mut self, ty: Ty) {
        let baseline = self.acked.iter().map(|a| a[ty as usize].clone()).collect();
        self.goal = Some((ty, baseline));
        self.reached = vec![false; self.k];
        self.reached_count = 0;
        self.last_at = None;
        self.bytes = [0; 4];
        self.responses = 0;
    }
}

/// Processes client events until `done`, failing on the deadline, a failed client or
/// a dead meshd.
async fn wait_for(
    what: &str,
    events: &mut mpsc::UnboundedReceiver<Event>,
    tracker: &mut Tracker,
    meshd: &mut Meshd,
    timeout: Duration,
    done: impl Fn(&Tracker) -> bool,
    status: impl Fn(&Tracker) -> String,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while !done(tracker) {
        tokio::select! {
            event = events.recv() => {
                tracker.apply(event.context("every client task ended")?)?;
                while let Ok(event) = events.try_recv() {
                    tracker.apply(event)?;
                }
            }
            _ = tick.tick() => {
                meshd.check_alive()?;
                if Instant::now() > deadline {
                    bail!("timed out after {timeout:?} waiting for {what}: {}", status(tracker));
                }
            }
        }
    }
    Ok(())
}

struct Phase {
    seconds: f64,
    /// From the start (a file write) until meshd handed the new translation to the
    /// proxies, and from then until the last proxy ACKed (go-control-plane's
    /// reference is measured like the second: from its snapshot being set).
    to_publish: f64,
    publish_to_acked: f64,
    bytes_per_proxy: f64,
    bytes_by_type: [u64; 4],
    responses: u64,
    server_bytes: f64,
    meshd_cpu: (f64, f64),
    bench_cpu: (f64, f64),
}

struct XdsResult {
    rss_idle: u64,
    rss_connected: u64,
    rss_after_pushes: u64,
    meshd_translate_ms: f64,
    proxy_classes: f64,
    initial: Phase,
    route_push: Phase,
    endpoint_push: Phase,
}

fn sub(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    (a.0 - b.0, a.1 - b.1)
}

struct Meter {
    started: Instant,
    started_wall: std::time::SystemTime,
    meshd_cpu: (f64, f64),
    bench_cpu: (f64, f64),
    server_bytes: f64,
}

impl Meter {
    async fn start(meshd: &Meshd) -> Meter {
        let server_bytes = meshd.metrics().await.get("amime_xds_bytes_sent_total").copied().unwrap_or(0.0);
        Meter {
            started: Instant::now(),
            started_wall: std::time::SystemTime::now(),
            meshd_cpu: meshd.cpu_seconds(),
            bench_cpu: cpu_seconds("/proc/self/stat"),
            server_bytes,
        }
    }

    async fn finish(self, meshd: &Meshd, tracker: &Tracker, k: usize) -> Phase {
        let end = tracker.last_at.unwrap_or_else(Instant::now);
        let metrics = meshd.metrics().await;
        let server_bytes = metrics.get("amime_xds_bytes_sent_total").copied().unwrap_or(0.0);
        let seconds = end.saturating_duration_since(self.started).as_secs_f64();
        let unix = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let published = metrics.get("amime_last_publish_timestamp_seconds").copied().unwrap_or(f64::NAN);
        let to_publish = published - unix(self.started_wall);
        Phase {
            seconds,
            to_publish,
            publish_to_acked: seconds - to_publish,
            bytes_per_proxy: tracker.total_bytes() as f64 / k as f64,
            bytes_by_type: tracker.bytes,
            responses: tracker.responses,
            server_bytes: (server_bytes - self.server_bytes) / k as f64,
            meshd_cpu: sub(meshd.cpu_seconds(), self.meshd_cpu),
            bench_cpu: sub(cpu_seconds("/proc/self/stat"), self.bench_cpu),
        }
    }
}

async fn bench_xds(args: &Args, mode: Mode, mesh: &SyntheticMesh, meshd: &mut Meshd) -> Result<XdsResult> {
    let timeout = Duration::from_secs(args.timeout);
    meshd.wait_ready(Duration::from_secs(120)).await?;
    let rss_idle = meshd.rss()?;
    let meshd_translate_ms =
        meshd.metrics().await.get("amime_translation_last_duration_seconds").copied().unwrap_or(f64::NAN) * 1e3;
    progress(format!(
        "meshd ready: RSS {:.1} MB idle; connecting {} proxies ({:?})",
        mb(rss_idle),
        args.proxies,
        args.api
    ));

    let k = args.proxies;
    let (tx, mut events) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut tracker = Tracker::new(k);

    // Initial config.
    let meter = Meter::start(meshd).await;
    for i in 0..k {
        // Proxy i is pod `replica` of `service`, with that pod's labels and IP (transparent)
        // or a loopback IP of its own to listen on (explicit).
        let (service, replica) = ((i / mesh.endpoints) % mesh.services, i % mesh.endpoints);
        let namespace = mesh.namespace_of(service).to_owned();
        let n = i as u32 + 1;
        let spec = ClientSpec {
            index: i,
            node_id: format!("{}-{replica}-{i}.{namespace}", SyntheticMesh::service_name(service)),
            namespace,
            app: SyntheticMesh::service_name(service),
            version: format!("v{}", replica % 2 + 1),
            mode,
            ip: match mode {
                Mode::Transparent => ten_net(128, service * mesh.endpoints + replica),
                _ => format!("127.{}.{}.{}", 1 + (n >> 16), (n >> 8) & 255, n & 255),
            },
            uri: format!("http://{}", meshd.xds),
            api: args.api,
        };
        tokio::spawn(client(spec, tx.clone(), gate.clone()));
    }
    drop(tx);
    wait_for(
        "the initial config to be ACKed by every proxy",
        &mut events,
        &mut tracker,
        meshd,
        timeout,
        |t| t.initialized_count == t.k,
        |t| format!("{}/{} proxies have ACKed CDS, EDS, LDS and RDS", t.initialized_count, t.k),
    )
    .await?;
    let initial = meter.finish(meshd, &tracker, k).await;
    let rss_connected = meshd.rss()?;
    let proxy_classes = meshd.metrics().await.get("amime_proxy_classes").copied().unwrap_or(f64::NAN);
    progress(format!("initial config ACKed by all {k} in {:.2} s; RSS {:.1} MB", initial.seconds, mb(rss_connected)));

    if args.pause_before_pushes > 0 {
        progress(format!("pausing {} s before the pushes (meshd pid {})", args.pause_before_pushes, meshd.pid));
        tokio::time::sleep(Duration::from_secs(args.pause_before_pushes)).await;
    }

    // Full push: a route change every namespace sees.
    let route_push = push(
        "the route change to be ACKed by every proxy",
        Ty::Rds,
        &mesh.rules_path(0),
        &mesh.rules_yaml(0, 70),
        &mut events,
        &mut tracker,
        meshd,
        timeout,
    )
    .await?;
    progress(format!("route push ACKed by all in {:.3} s", route_push.seconds));

    // One pod moves: one EDS resource changes.
    let s = 1 % mesh.services;
    let endpoint_push = push(
        "the endpoint change to be ACKed by every proxy",
        Ty::Eds,
        &mesh.service_path(s),
        &mesh.service_yaml(s, Some("10.127.255.1")),
        &mut events,
        &mut tracker,
        meshd,
        timeout,
    )
    .await?;
    progress(format!("endpoint push ACKed by all in {:.3} s", endpoint_push.seconds));
    let rss_after_pushes = meshd.rss()?;

    Ok(XdsResult {
        rss_idle,
        rss_connected,
        rss_after_pushes,
        meshd_translate_ms,
        proxy_classes,
        initial,
        route_push,
        endpoint_push,
    })
}

#[allow(clippy::too_many_arguments)]
async fn push(
    what: &str,
    ty: Ty,
    path: &Path,
    text: &str,
    events: &mut mpsc::UnboundedReceiver<Event>,
    tracker: &mut Tracker,
    meshd: &mut Meshd,
    timeout: Duration,
) -> Result<Phase> {
    // Anything still queued belongs to the previous phase.
    while let Ok(event) = events.try_recv() {
        tracker.apply(event)?;
    }
    tracker.start_goal(ty);
    let meter = Meter::start(meshd).await;
    replace_file(path, text)?;
    wait_for(
        what,
        events,
        tracker,
        meshd,
        timeout,
        |t| t.reached_count == t.k,
        move |t| format!("{}/{} proxies have ACKed a new {ty:?} version", t.reached_count, t.k),
    )
    .await?;
    Ok(meter.finish(meshd, tracker, tracker.k).await)
}

// ---- the report ----------------------------------------------------------------------

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn kb(bytes: f64) -> f64 {
    bytes / 1024.0
}

fn verdict(value: f64, target: f64) -> &'static str {
    if value <= target {
        "ok"
    } else {
        "MISSED"
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn print_report(
    args: &Args,
    meshd_bin: &Path,
    mesh: &SyntheticMesh,
    t: &TranslateResult,
    e: &EngineResult,
    runs: &[(Mode, XdsResult)],
) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let meshd_build = if meshd_bin.parent().and_then(|d| d.file_name()).is_some_and(|n| n == "release") {
        "release"
    } else {
        "debug"
    };
    let bench_build = if cfg!(debug_assertions) { "debug" } else { "release" };
    let k = args.proxies;
    let api = match args.api {
        Api::Delta => "delta",
        Api::Sotw => "sotw",
    };
    let phase_detail = |p: &Phase| {
        format!(
            "CDS {:.1} / EDS {:.1} / LDS {:.1} / RDS {:.1} KB; {} responses; meshd counted {:.1} KB/proxy; CPU meshd {:.2} s ({:.2} sys), bench {:.2} s ({:.2} sys)",
            kb(p.bytes_by_type[0] as f64 / k as f64),
            kb(p.bytes_by_type[1] as f64 / k as f64),
            kb(p.bytes_by_type[2] as f64 / k as f64),
            kb(p.bytes_by_type[3] as f64 / k as f64),
            p.responses,
            kb(p.server_bytes),
            p.meshd_cpu.0,
            p.meshd_cpu.1,
            p.bench_cpu.0,
            p.bench_cpu.1,
        )
    };
    println!();
    println!("machine: {cores} cores, {}, build: meshd {meshd_build}, bench {bench_build}", cpu_model());
    println!(
        "mesh: N={} services x M={} endpoints in {} namespaces ({} with DR+VS), K={k} proxies ({api}; proxy i is replica i % M of service i / M)",
        mesh.services,
        mesh.endpoints,
        mesh.namespaces.len(),
        mesh.with_rules
    );
    println!(
        "resources: {} clusters ({:.1} KB), {} endpoint sets ({:.1} KB), RDS per namespace {:.1} KB; translation problems: {}",
        t.clusters,
        kb(t.cluster_bytes as f64),
        t.endpoints,
        kb(t.endpoint_bytes as f64),
        kb(t.route_bytes_per_ns as f64),
        t.problems
    );
    println!(
        "translate whole mesh: {:.1} ms median of {} (min {:.1}, max {:.1}; build {:.1} + routes for {} namespaces {:.1}) (target <= {TRANSLATE_TARGET_MS} ms: {:.2}x of budget, {})",
        t.total_ms,
        t.runs,
        t.min_ms,
        t.max_ms,
        t.build_ms,
        mesh.namespaces.len(),
        t.routes_ms,
        t.total_ms / TRANSLATE_TARGET_MS,
        verdict(t.total_ms, TRANSLATE_TARGET_MS)
    );
    println!(
        "  checking against Envoy's constraints: first build {:.1} ms ({} pieces checked in {:.1} ms, {} refused); later builds check {} pieces ({} verdicts reused)",
        t.cold_ms,
        t.cold_checks.checked,
        t.cold_checks.spent.as_secs_f64() * 1e3,
        t.cold_checks.refused,
        t.warm_checks.checked,
        t.warm_checks.cached,
    );
    println!(
        "  (loading the directory: {:.0} ms; re-reading it on a file event: {:.0} ms; meshd's own last translation, build only: {})",
        t.load_ms,
        t.reload_ms,
        runs.iter().map(|(m, x)| format!("{:.1} ms {}", x.meshd_translate_ms, m.name())).collect::<Vec<_>>().join(", ")
    );
    println!(
        "xds engine, in process (meshd's per-proxy session CPU): initial sync {:.0} us, route push {:.0} us, endpoint push {:.0} us per proxy (x{k} = {:.2} / {:.2} / {:.2} s); publishing a translation to {} proxy classes: {:.0} ms",
        e.initial_us,
        e.route_push_us,
        e.endpoint_push_us,
        e.initial_us * k as f64 / 1e6,
        e.route_push_us * k as f64 / 1e6,
        e.endpoint_push_us * k as f64 / 1e6,
        e.classes,
        e.publish_ms
    );
    for (mode, x) in runs {
        println!();
        println!("--- {} mode ---", mode.name());
        print_xds(x, k, &phase_detail);
    }
    print_comparison(runs, k);
}

/// The figures of one run against meshd.
fn print_xds(x: &XdsResult, k: usize, phase_detail: &dyn Fn(&Phase) -> String) {
    let per_proxy = (x.rss_connected as f64 - x.rss_idle as f64) / k as f64;
    println!("initial config ACKed by all {k}: {:.2} s", x.initial.seconds);
    println!("  {}", phase_detail(&x.initial));
    println!(
        "full push (route change) ACKed by all: {:.3} s (target <= {PUSH_TARGET_S} s, {})",
        x.route_push.seconds,
        verdict(x.route_push.seconds, PUSH_TARGET_S)
    );
    println!("  {}", phase_detail(&x.route_push));
    println!(
        "endpoint change ACKed by all: {:.3} s (target <= {PUSH_TARGET_S} s, {})",
        x.endpoint_push.seconds,
        verdict(x.endpoint_push.seconds, PUSH_TARGET_S)
    );
    println!("  {}", phase_detail(&x.endpoint_push));
    println!(
        "meshd RSS: {:.1} MB idle, {:.1} MB with {k} proxies -> {:.1} KB per proxy (target <= {PER_PROXY_TARGET_KB} KB, {}); {:.1} MB after the pushes; {} proxy classes",
        mb(x.rss_idle),
        mb(x.rss_connected),
        kb(per_proxy),
        verdict(kb(per_proxy), PER_PROXY_TARGET_KB),
        mb(x.rss_after_pushes),
        x.proxy_classes
    );
    println!(
        "bytes per proxy: initial {:.1} KB, route push {:.1} KB, endpoint push {:.2} KB",
        kb(x.initial.bytes_per_proxy),
        kb(x.route_push.bytes_per_proxy),
        kb(x.endpoint_push.bytes_per_proxy)
    );
    let (r, cpu) = (&x.route_push, x.route_push.meshd_cpu.0);
    println!(
        "route change: file write -> published {:.3} s (settle, re-read, debounce, translate) + published -> all ACKed {:.3} s = {:.3} s",
        r.to_publish, r.publish_to_acked, r.seconds
    );
    println!(
        "  against go-control-plane (from its snapshot being set to all ACKed, {REFERENCE_ROUTE_PUSH_S} s): published -> all ACKed {:.2}x, {}; file write -> all ACKed {:.2}x, {}",
        r.publish_to_acked / REFERENCE_ROUTE_PUSH_S,
        verdict(r.publish_to_acked, REFERENCE_ROUTE_PUSH_S),
        r.seconds / REFERENCE_ROUTE_PUSH_S,
        verdict(r.seconds, REFERENCE_ROUTE_PUSH_S)
    );
    println!(
        "  meshd CPU for the whole change {cpu:.3} s (reference {REFERENCE_ROUTE_PUSH_CPU_S} s: {:.2}x, {})",
        cpu / REFERENCE_ROUTE_PUSH_CPU_S,
        verdict(cpu, REFERENCE_ROUTE_PUSH_CPU_S)
    );
}

/// Both modes side by side.
fn print_comparison(runs: &[(Mode, XdsResult)], k: usize) {
    if runs.len() < 2 {
        return;
    }
    println!();
    println!("| mode | proxy classes | KB per proxy | initial s | route push s (CPU s) | endpoint push s (CPU s) |");
    println!("|---|---|---|---|---|---|");
    for (mode, x) in runs {
        let per_proxy = (x.rss_connected as f64 - x.rss_idle as f64) / k as f64;
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.3} ({:.3}) | {:.3} ({:.3}) |",
            mode.name(),
            x.proxy_classes,
            kb(per_proxy),
            x.initial.seconds,
            x.route_push.seconds,
            x.route_push.meshd_cpu.0,
            x.endpoint_push.seconds,
            x.endpoint_push.meshd_cpu.0
        );
    }
}
