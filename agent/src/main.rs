//! `amime-agent`: the in-pod program of an injected pod.
//!
//! - `amime-agent init [capture flags]` (the `amime-init` init container, root with
//!   NET_ADMIN and NET_RAW): installs the iptables capture ([`init`]);
//! - `amime-agent proxy` (the `amime-proxy` native sidecar, uid 1337): writes Envoy's
//!   bootstrap from the pod's identity and execs Envoy ([`proxy`]).
//!
//! Errors go to stderr with a non-zero exit, so `kubectl describe pod` / the container's
//! logs say what is wrong.
#![forbid(unsafe_code)]

mod init;
mod proxy;

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use injector::capture::{self, CaptureSpec, Ipv4Cidr};

#[derive(Debug, Parser)]
#[command(name = "amime-agent", version, about = "The Amime in-pod agent: traffic capture and the Envoy sidecar.")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install the pod's iptables capture (idempotent); the injected init container runs this.
    Init(InitArgs),
    /// Write Envoy's bootstrap from the pod's identity and exec Envoy; the sidecar runs this.
    Proxy(proxy::ProxyArgs),
}

fn ports(s: &str) -> Result<BTreeSet<u16>, capture::CaptureError> {
    capture::parse_ports(s)
}

fn cidrs(s: &str) -> Result<BTreeSet<Ipv4Cidr>, capture::CaptureError> {
    capture::parse_cidrs(s)
}

/// The flags are the ones `CaptureSpec::to_args` writes (names in `injector::capture::flags`).
#[derive(Debug, Clone, clap::Args)]
struct InitArgs {
    /// Uid of the sidecar, whose traffic is never captured.
    #[arg(long, value_name = "UID", default_value_t = capture::DEFAULT_PROXY_UID)]
    proxy_uid: u32,
    /// Where captured outbound TCP goes.
    #[arg(long, value_name = "PORT", default_value_t = capture::OUTBOUND_CAPTURE_PORT)]
    outbound_port: u16,
    /// Where captured inbound TCP goes.
    #[arg(long, value_name = "PORT", default_value_t = capture::INBOUND_CAPTURE_PORT)]
    inbound_port: u16,
    /// Inbound ports not captured (comma-separated), besides the sidecar's own.
    #[arg(long, value_name = "PORTS", value_parser = ports, default_value = "")]
    exclude_inbound_ports: BTreeSet<u16>,
    /// Outbound destination ports not captured (comma-separated).
    #[arg(long, value_name = "PORTS", value_parser = ports, default_value = "")]
    exclude_outbound_ports: BTreeSet<u16>,
    /// Outbound destination IPv4 ranges not captured (comma-separated CIDRs).
    #[arg(long = "exclude-outbound-ip-ranges", value_name = "CIDRS", value_parser = cidrs, default_value = "")]
    exclude_outbound_cidrs: BTreeSet<Ipv4Cidr>,
    /// Print what would be done (the commands and the iptables-restore input); change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Use this iptables-restore (and the -save beside it) instead of trying iptables-restore,
    /// then iptables-legacy-restore, on PATH.
    #[arg(long, value_name = "PATH")]
    iptables_restore: Option<PathBuf>,
    /// Remove the capture (the jumps into the AMIME_* chains and the chains) instead.
    #[arg(long)]
    cleanup: bool,
}

impl InitArgs {
    fn spec(&self) -> CaptureSpec {
        CaptureSpec {
            proxy_uid: self.proxy_uid,
            outbound_port: self.outbound_port,
            inbound_port: self.inbound_port,
            exclude_inbound_ports: self.exclude_inbound_ports.clone(),
            exclude_outbound_ports: self.exclude_outbound_ports.clone(),
            exclude_outbound_cidrs: self.exclude_outbound_cidrs.clone(),
        }
    }

    fn action(&self) -> init::Action {
        if self.cleanup {
            init::Action::Cleanup
        } else {
            init::Action::Install(self.spec())
        }
    }
}

fn run_init(args: &InitArgs) -> anyhow::Result<()> {
    let action = args.action();
    let backends = init::backends(args.iptables_restore.as_deref());
    if args.dry_run {
        print!("{}", init::dry_run_text(&action, &backends));
        return Ok(());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    for applied in init::apply(&action, &backends, &path)? {
        let what = match (&action, &applied.input) {
            (init::Action::Install(_), _) => "installed the capture",
            (init::Action::Cleanup, Some(_)) => "removed the capture",
            (init::Action::Cleanup, None) => "found no capture to remove",
        };
        eprintln!(
            "amime-agent init: {what} with {} ({} earlier jump(s) removed)",
            applied.backend.restore.display(),
            applied.removed_jumps
        );
        if let Some(input) = applied.input {
            print!("{input}");
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Cmd::Init(args) => run_init(args),
        Cmd::Proxy(args) => proxy::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("amime-agent: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_args_round_trips_through_the_init_flags() {
        let spec = CaptureSpec {
            proxy_uid: 2000,
            outbound_port: 16001,
            inbound_port: 16006,
            exclude_inbound_ports: capture::parse_ports("8081,9090").unwrap(),
            exclude_outbound_ports: capture::parse_ports("5432").unwrap(),
            exclude_outbound_cidrs: capture::parse_cidrs("10.0.0.0/8,192.168.1.7").unwrap(),
        };
        for spec in [spec, CaptureSpec::default()] {
            let argv = ["amime-agent".to_string(), "init".to_string()].into_iter().chain(spec.to_args());
            let Cmd::Init(args) = Cli::parse_from(argv).command else { panic!("not init") };
            assert_eq!(args.spec(), spec);
        }
    }

    #[test]
    fn bad_flag_values_name_the_flag_and_item() {
        for (argv, want) in [
            (vec!["--exclude-outbound-ports", "80,http"], ["--exclude-outbound-ports", "\"http\" is not a valid port"]),
            (vec!["--exclude-outbound-ip-ranges", "10.0.0.0/40"], ["--exclude-outbound-ip-ranges", "prefix length"]),
        ] {
            let all = ["amime-agent", "init"].into_iter().chain(argv);
            let err = Cli::try_parse_from(all).unwrap_err().to_string();
            assert!(want.iter().all(|w| err.contains(w)), "{err}");
        }
    }
}
