//! `meshctl inject`: offline sidecar injection of Kubernetes YAML (the same patch the
//! webhook gives pods). The transform is `injector::workload`; this file only reads and
//! writes.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use injector::settings::InjectionArgs;
use injector::workload::{inject_stream, WorkloadOutcome};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  meshctl inject -f deploy.yaml | kubectl apply -f -\n  \
kubectl get deploy web -o yaml | meshctl inject -f - -o web-injected.yaml")]
pub struct InjectArgs {
    /// The YAML to inject (multi-document); `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE|-")]
    file: String,

    /// Write the result to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,

    /// Namespace of the objects that name none (used in messages).
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    namespace: Option<String>,

    #[command(flatten)]
    injection: InjectionArgs,
}

pub fn run(args: InjectArgs) -> anyhow::Result<()> {
    let input = read_input(&args.file)?;
    let settings = args.injection.settings();
    let injected = match inject_stream(&input, args.namespace.as_deref(), &settings) {
        Ok(injected) => injected,
        Err(errors) => {
            for error in &errors {
                eprintln!("error: {}: {error}", args.file);
            }
            bail!("{} document(s) of {} cannot be injected; nothing was written", errors.len(), args.file);
        }
    };
    for workload in &injected.workloads {
        if let WorkloadOutcome::Skipped(reason) = &workload.outcome {
            eprintln!("{}: {}: not injected: {reason}", args.file, workload.object);
        }
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, &injected.output).with_context(|| format!("cannot write {}", path.display()))
        }
        None => std::io::stdout().write_all(injected.output.as_bytes()).context("cannot write to standard output"),
    }
}

fn read_input(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut input = String::new();
        std::io::stdin().read_to_string(&mut input).context("cannot read standard input")?;
        return Ok(input);
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))
}
