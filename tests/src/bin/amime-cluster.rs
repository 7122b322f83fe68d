//! `amime-cluster up|down|env|status --dir DIR`: the test harness's Kubernetes control plane
//! (etcd, kube-apiserver, kube-controller-manager) for a person, on fixed loopback ports,
//! running in the background with its pids in `DIR/pids` and logs in `DIR/logs`.
//! `scripts/cluster.sh` wraps it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use amime_e2e::kube::processes::{kill, pid_runs};
use amime_e2e::kube::{client_for, KubeCluster, Launcher, Layout, Pki};
use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Data directory (etcd data, certificates, kubeconfig, logs, pids).
    #[arg(long, global = true, default_value = ".k8s/local")]
    dir: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Start the control plane in the background (no-op when it runs).
    Up,
    /// Stop every process of the control plane (data is kept).
    Down,
    /// Print `export KUBECONFIG=...`.
    Env,
    /// Say which processes run and whether kube-apiserver is ready.
    Status,
}

fn layout(dir: &Path) -> Layout {
    let ip = [127, 0, 0, 1];
    Layout {
        dir: dir.to_path_buf(),
        etcd_client: (ip, 12379).into(),
        etcd_peer: (ip, 12380).into(),
        apiserver: (ip, 6443).into(),
        controller_manager: (ip, 10257).into(),
        extra_apiserver_args: Vec::new(),
    }
}

/// `(label, pid)` of every recorded process (running or not; the label is also the name of
/// the program, see [`pid_runs`]).
fn recorded_pids(dir: &Path) -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir(dir.join("pids")) else { return Vec::new() };
    let mut pids: Vec<(String, u32)> = entries
        .flatten()
        .filter_map(|entry| {
            let label = entry.path().file_stem()?.to_string_lossy().into_owned();
            let pid = std::fs::read_to_string(entry.path()).ok()?.trim().parse().ok()?;
            Some((label, pid))
        })
        .collect();
    pids.sort();
    pids
}

async fn up(dir: &Path) -> Result<()> {
    let running: Vec<_> = recorded_pids(dir).into_iter().filter(|(label, pid)| pid_runs(*pid, label)).collect();
    if !running.is_empty() {
        println!("already running ({}); `scripts/cluster.sh down` stops it", describe(&running));
        return Ok(());
    }
    down(dir)?;
    let started = Instant::now();
    let cluster = match KubeCluster::start_with(Launcher::Detached, layout(dir)).await {
        Ok(cluster) => cluster,
        Err(e) => {
            down(dir)?;
            return Err(e.context(format!("start the control plane (logs in {})", dir.join("logs").display())));
        }
    };
    let pids: Vec<(String, u32)> = cluster.pids().into_iter().map(|(l, p)| (l.to_string(), p)).collect();
    println!("control plane ready at {} in {:.1?} ({})", cluster.server_url(), started.elapsed(), describe(&pids));
    println!("export KUBECONFIG={}", cluster.kubeconfig().display());
    Ok(())
}

/// Stop the recorded processes that still run their program (a pid file left by a reboot
/// may name an unrelated process by now: that one is left alone) and remove the pid files.
fn down(dir: &Path) -> Result<()> {
    let (running, stale): (Vec<_>, Vec<_>) =
        recorded_pids(dir).into_iter().partition(|(label, pid)| pid_runs(*pid, label));
    for (_, pid) in &running {
        kill(*pid, "TERM")?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.iter().any(|(label, pid)| pid_runs(*pid, label)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for (label, pid) in &running {
        if pid_runs(*pid, label) {
            kill(*pid, "KILL")?;
        }
        println!("stopped {label} (pid {pid})");
    }
    for (label, pid) in &stale {
        println!("{label} (pid {pid}) was not running");
    }
    for (label, _) in running.iter().chain(&stale) {
        let file = dir.join("pids").join(format!("{label}.pid"));
        std::fs::remove_file(&file).with_context(|| format!("remove {}", file.display()))?;
    }
    Ok(())
}

async fn status(dir: &Path) -> Result<()> {
    let pids = recorded_pids(dir);
    if pids.is_empty() {
        println!("not running (no pids in {})", dir.join("pids").display());
        return Ok(());
    }
    for (label, pid) in &pids {
        println!("{label}: pid {pid} {}", if pid_runs(*pid, label) { "running" } else { "NOT running" });
    }
    if !pids.iter().any(|(label, pid)| pid_runs(*pid, label)) {
        return Ok(());
    }
    let client = client_for(&Pki::at(dir).kubeconfig).await?;
    let readyz = client.request_text(http::Request::get("/readyz").body(Vec::new())?).await;
    match readyz {
        Ok(body) => println!("kube-apiserver {} /readyz: {}", layout(dir).server_url(), body.trim()),
        Err(e) => println!("kube-apiserver {} /readyz: {e}", layout(dir).server_url()),
    }
    Ok(())
}

fn describe(pids: &[(String, u32)]) -> String {
    pids.iter().map(|(label, pid)| format!("{label} pid {pid}")).collect::<Vec<_>>().join(", ")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let dir = std::path::absolute(&cli.dir).with_context(|| format!("resolve {}", cli.dir.display()))?;
    match cli.command {
        Command::Up => up(&dir).await,
        Command::Down => down(&dir),
        Command::Env => {
            println!("export KUBECONFIG={}", Pki::at(&dir).kubeconfig.display());
            Ok(())
        }
        Command::Status => status(&dir).await,
    }
}
