//! `meshctl`: the operator CLI for the Amime service mesh.
//!
//! This file only parses the command line and dispatches; each subcommand
//! lives in its own module and errors are reported through `anyhow` here.
#![forbid(unsafe_code)]

mod analyze;
mod bootstrap;
mod inject;
mod install;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "meshctl", about = "Operator CLI for the Amime service mesh", version)]
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
    /// Validate YAML files, directories or a cluster's routing rules as meshd would.
    Analyze(Box<analyze::AnalyzeArgs>),
    /// Print the CRDs and install manifests, for `meshctl install | kubectl apply -f -`.
    Install(Box<install::InstallArgs>),
    /// Print the meshctl version.
    Version,
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
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bootstrap(args) => bootstrap::run(*args),
        Command::Inject(args) => inject::run(*args),
        Command::Install(args) => install::run(*args),
        Command::Analyze(_) => unreachable!("main runs analyze: it has its own exit codes"),
        Command::Version => {
            println!("meshctl {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}
