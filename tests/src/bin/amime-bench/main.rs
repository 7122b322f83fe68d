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
//! With `--source kube` the mesh is created through a real kube-apiserver instead (the
//! harness's etcd, kube-apiserver and kube-controller-manager on loopback block `--block`;
//! the harness plays kubelet) and meshd runs with `--kubeconfig`: see `kube_run`.
//!
//! ```text
//! cargo build --release -p amime-control-plane --bin meshd -p amime-e2e --bin amime-bench
//! ulimit -n 65536   # K clients here and K streams in meshd (checked at start)
//! target/release/amime-bench --services 1000 --endpoints 5 --proxies 1000
//! target/release/amime-bench --source kube --mode transparent
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

mod apiserver;
mod engine;
mod kube_mesh;
mod kube_run;
mod mesh;
mod meshd;
mod observe;
mod proxies;
mod report;
mod translate;

use engine::*;
use mesh::*;
use meshd::*;
use observe::*;
use proxies::*;
use report::*;
use translate::*;

// ---- command line ------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Api {
    Delta,
    Sotw,
}

/// How the simulated sidecars get traffic, as their node metadata says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// `INTERCEPTION_MODE: NONE`: each listens on its own IP, so each is its own class.
    Explicit,
    /// `INTERCEPTION_MODE: REDIRECT`: replicas of one workload share one class.
    Transparent,
    /// Both, one after the other, against a fresh meshd each.
    Both,
}

impl Mode {
    pub(crate) fn runs(self) -> Vec<Mode> {
        match self {
            Mode::Both => vec![Mode::Explicit, Mode::Transparent],
            one => vec![one],
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Explicit => "explicit",
            Mode::Transparent => "transparent",
            Mode::Both => "both",
        }
    }
}

/// Where meshd reads the mesh from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Source {
    /// A generated directory of YAML (`meshd --config-dir`).
    Dir,
    /// Objects created through a real kube-apiserver (`meshd --kubeconfig`).
    Kube,
}

/// Scale benchmark for meshd: translation time, push latency to K proxies, memory and
/// bytes per proxy.
#[derive(Debug, Parser)]
#[command(name = "amime-bench")]
pub(crate) struct Args {
    /// Number of Services.
    #[arg(long, default_value_t = 1000)]
    pub(crate) services: usize,
    /// Pods (endpoints) per Service.
    #[arg(long, default_value_t = 5)]
    pub(crate) endpoints: usize,
    /// Number of simulated proxies (ADS clients, one connection each).
    #[arg(long, default_value_t = 1000)]
    pub(crate) proxies: usize,
    /// xDS flavour the proxies speak.
    #[arg(long, value_enum, default_value_t = Api::Delta)]
    pub(crate) api: Api,
    /// Interception mode of the proxies. Proxy i is replica i % M of service i / M, so
    /// under capture the replicas of one workload (same labels) share one snapshot.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    pub(crate) mode: Mode,
    /// The meshd binary [default: meshd next to this binary, else target/debug/meshd].
    #[arg(long, value_name = "PATH")]
    pub(crate) meshd: Option<PathBuf>,
    /// Keep the generated config and meshd's logs in DIR (else a temp dir, removed).
    #[arg(long, value_name = "DIR")]
    pub(crate) keep: Option<PathBuf>,
    /// Namespaces the services (and proxies) are spread over.
    #[arg(long, default_value_t = 10)]
    pub(crate) namespaces: usize,
    /// Every n-th service gets a DestinationRule (2 subsets) and a VirtualService.
    #[arg(long, default_value_t = 10)]
    pub(crate) rules_every: usize,
    /// In-process translation runs (the median is reported).
    #[arg(long, default_value_t = 9)]
    pub(crate) translate_runs: usize,
    /// Worker threads of the bench's own runtime (the clients).
    #[arg(long, default_value_t = 1)]
    pub(crate) client_threads: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 100)]
    pub(crate) connect_concurrency: usize,
    /// Wait this many seconds between the initial sync and the pushes (to attach a
    /// profiler to meshd, whose pid is printed).
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    pub(crate) pause_before_pushes: u64,
    /// Where the mesh lives: a YAML directory, or a real Kubernetes API server.
    #[arg(long, value_enum, default_value_t = Source::Dir)]
    pub(crate) source: Source,
    /// `--source kube`: the loopback block of the cluster (127.0.N.x; N not used by a test).
    #[arg(long, default_value_t = 231)]
    pub(crate) block: u8,
    /// `--source kube`: API requests in flight while creating the objects.
    #[arg(long, default_value_t = 32)]
    pub(crate) create_concurrency: usize,
    /// `--source kube`: seconds in which kube-apiserver's requests are counted before meshd
    /// starts (what kube-controller-manager does meanwhile: the noise in meshd's figures).
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub(crate) idle_window: u64,
    /// Deadline of each phase, in seconds.
    #[arg(long, default_value_t = 300)]
    pub(crate) timeout: u64,
}

// ---- targets -----------------------------------------------------------------------

pub(crate) const TRANSLATE_TARGET_MS: f64 = 50.0;
pub(crate) const PUSH_TARGET_S: f64 = 2.0;
pub(crate) const PER_PROXY_TARGET_KB: f64 = 50.0;
/// go-control-plane's LinearCache, measured side by side on the same resources and 1,000
/// delta clients: a route change ACKed by all in 0.11-0.15 s with 0.12-0.15 s of server
/// CPU. meshd's file-write-to-all-ACKed time and CPU per change must beat the low end.
pub(crate) const REFERENCE_ROUTE_PUSH_S: f64 = 0.11;
pub(crate) const REFERENCE_ROUTE_PUSH_CPU_S: f64 = 0.12;

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

pub(crate) fn progress(msg: impl AsRef<str>) {
    eprintln!("[amime-bench] {}", msg.as_ref());
}

pub(crate) fn run(args: Args) -> Result<()> {
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
    if args.source == Source::Kube {
        return kube_run::run_kube(&args, &meshd_bin);
    }

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
pub(crate) fn check_fd_limit(proxies: usize) -> Result<()> {
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

pub(crate) fn locate_meshd(explicit: Option<&Path>) -> Result<PathBuf> {
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
pub(crate) struct WorkDir {
    pub(crate) path: PathBuf,
    pub(crate) remove: bool,
}

impl WorkDir {
    pub(crate) fn new(keep: Option<PathBuf>) -> Result<WorkDir> {
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
