//! `meshctl`: the operator CLI for the Amime service mesh.
//!
//! This file only parses the command line and dispatches; each subcommand
//! lives in its own module and errors are reported through `anyhow` here.
#![forbid(unsafe_code)]

mod bootstrap;
mod demo;
mod inject;

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
    /// Run the example mesh locally (meshd, a real Envoy sidecar, reviews v1/v2/v3) and walk
    /// through routing rules applied live: all to v1, header routing, a 50:50 split, faults.
    Demo(Box<demo::DemoArgs>),
    /// Print the meshctl version.
    Version,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
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
        Command::Demo(args) => demo::run(*args),
        Command::Version => {
            println!("meshctl {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}
