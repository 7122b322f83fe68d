//! `meshctl`: the operator CLI for the Amime service mesh.
//!
//! This file only parses the command line and dispatches; each subcommand
//! lives in its own module and errors are reported through `anyhow` here.
#![forbid(unsafe_code)]

mod analyze;
mod bootstrap;
mod cluster;
mod demo;
mod inject;
mod install;
mod meshd;
mod output;
mod proxy_config;
mod proxy_status;
mod target;
mod version;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "meshctl",
    about = "Operator CLI for the Amime service mesh",
    version,
    after_help = "Commands that read meshd's state (proxy-status, proxy-config, version) talk to its admin API on \
its gRPC port. The first that is set wins: --meshd HOST:PORT; --kubeconfig FILE or --context NAME; \
AMIME_MESHD=HOST:PORT; KUBECONFIG or ~/.kube/config; in a pod, its ServiceAccount; else 127.0.0.1:15010.\n\
Through a cluster, meshctl dials a Ready meshd pod (--meshd-namespace, default amime-system) at its pod IP; \
where pod IPs are not reachable: kubectl -n amime-system port-forward deploy/meshd 15010, and --meshd 127.0.0.1:15010"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the Envoy bootstrap for a proxy identity (the same one the injector uses).
    Bootstrap(Box<bootstrap::BootstrapArgs>),
    /// Inject the sidecar into the Pods and workloads of Kubernetes YAML, offline.
    Inject(Box<inject::InjectArgs>),
    /// Run the example mesh locally (meshd, a real Envoy sidecar, reviews v1/v2/v3) and walk
    /// through routing rules applied live: all to v1, header routing, a 50:50 split, faults.
    Demo(Box<demo::DemoArgs>),
    /// Validate YAML files, directories or a cluster's routing rules as meshd would.
    Analyze(Box<analyze::AnalyzeArgs>),
    /// Print the CRDs and install manifests, for `meshctl install | kubectl apply -f -`.
    Install(Box<install::InstallArgs>),
    /// Per proxy and xDS type: SYNCED, STALE, NACKED (with Envoy's message), WARMING or NOT SENT.
    ProxyStatus(proxy_status::ProxyStatusArgs),
    /// What meshd last sent one proxy: its clusters, listeners, routes, endpoints or secrets.
    ProxyConfig(proxy_config::ProxyConfigArgs),
    /// Print meshctl's version and, when meshd answers, meshd's.
    Version(version::VersionArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Analyze(args) = cli.command {
        return analyze::run(*args);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole cause chain on one line, without the
            // backtrace `anyhow` would add when RUST_BACKTRACE is set.
            eprintln!("error: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// A flag value meshctl refuses after clap parsed it (a malformed --meshd, an invalid
/// --namespace): exit 2, as clap's own usage errors and analyze's; 1 stays for a
/// command that could not do its work.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bootstrap(args) => bootstrap::run(*args),
        Command::Inject(args) => inject::run(*args),
        Command::Install(args) => install::run(*args),
        Command::Analyze(_) => unreachable!("main runs analyze: it has its own exit codes"),
        Command::ProxyStatus(args) => block_on(proxy_status::run(args)),
        Command::ProxyConfig(args) => block_on(proxy_config::run(args)),
        Command::Version(args) => block_on(version::run(args)),
        Command::Demo(args) => demo::run(*args),
    }
}

/// Runs one command that talks to meshd on a small single-threaded runtime.
fn block_on(command: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    use anyhow::Context;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(command)
}
