//! `meshctl analyze`: validates YAML files (or what a cluster holds) as meshd would, and
//! prints every finding with its file, document, object and field. The analysis is
//! `control_plane::analyze`; this file reads the input and prints.
//!
//! Exit codes: 0 without errors (warnings alone included), 1 when something is an error,
//! 2 when the input cannot be read (a missing path, an unreadable file, no cluster) or
//! the command line is wrong.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use control_plane::analyze::{analyze_files, analyze_listed, cluster, Analysis, SourceFile};
use control_plane::model::{Diagnostic, Severity};
use control_plane::source::dir_scan::{self, Probe, ReadError, Scan};
use control_plane::source::kube::KubeSourceError;

use crate::meshd::OutputFormat;
use crate::output::{print_text, Table};

#[derive(Debug, Args)]
#[command(after_help = "With -f, files are read as `meshd --config-dir` reads them: a directory recursively \
(*.yaml, *.yml, hidden entries skipped), every file multi-document, all files together as one mesh. \
Without -f, the cluster of --kubeconfig (else KUBECONFIG, ~/.kube/config or the in-cluster service account) \
is read as meshd reads it: Namespaces, Services and the routing kinds of networking.amime.dev and \
networking.istio.io.\n\n\
Exit status: 0 no errors (warnings alone included), 1 errors found, 2 input unreadable or bad usage.\n\n\
Examples:\n  meshctl analyze -f manifests/examples/bookinfo\n  \
kubectl get vs,dr -A -o yaml | meshctl analyze -f -\n  meshctl analyze --kubeconfig ~/.kube/config -o json")]
pub struct AnalyzeArgs {
    /// Files or directories to analyze (directories recursively); `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-", num_args = 1.., conflicts_with = "kubeconfig")]
    files: Vec<String>,

    /// Analyze the cluster of this kubeconfig (the default without -f: KUBECONFIG, ~/.kube/config or
    /// in-cluster).
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,

    /// Only findings about objects of this namespace (the whole mesh is still analyzed).
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    namespace: Option<String>,

    /// Output format: table (aligned columns and a closing count), json or yaml (the findings with every
    /// field, and the counts).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table, hide_possible_values = true)]
    output: OutputFormat,

    /// Also list notes (objects of kinds meshd does not read, such as Deployments).
    #[arg(long)]
    show_info: bool,
}

/// Exit status when the input cannot be read.
const UNREADABLE: u8 = 2;

pub fn run(args: AnalyzeArgs) -> ExitCode {
    let (mut analysis, unreadable, place) = if args.files.is_empty() {
        match analyze_cluster(args.kubeconfig.as_deref()) {
            Ok(analysis) => (analysis, Vec::new(), "the cluster".to_owned()),
            Err(err) => {
                eprintln!("error: {err:#}");
                return ExitCode::from(UNREADABLE);
            }
        }
    } else {
        let (files, unreadable) = read_inputs(&args.files);
        let analysis = analyze_files(&files);
        let place = count(analysis.summary.files, "file");
        (analysis, unreadable, place)
    };
    if let Some(namespace) = &args.namespace {
        analysis.retain(|d| d.namespace.as_deref().is_none_or(|ns| ns == namespace || ns.is_empty()));
    }
    if !args.show_info {
        analysis.retain(|d| d.severity != Severity::Info);
    }
    for problem in &unreadable {
        eprintln!("error: {problem}");
    }
    if let Err(err) = print(&analysis, args.output, &place) {
        eprintln!("error: {err:#}");
        return ExitCode::from(UNREADABLE);
    }
    if !unreadable.is_empty() {
        ExitCode::from(UNREADABLE)
    } else if analysis.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn analyze_cluster(kubeconfig: Option<&Path>) -> anyhow::Result<Analysis> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = control_plane::source::kube::connect(kubeconfig).await.map_err(|e| match e {
            KubeSourceError::NotConfigured { message } => anyhow::anyhow!(
                "no Kubernetes API configured: tried KUBECONFIG, ~/.kube/config and the in-cluster service \
                 account ({message}); pass --kubeconfig PATH, or -f FILE|DIR to analyze files"
            ),
            e => e.into(),
        })?;
        let lists = cluster::list_cluster(&client).await?;
        Ok(analyze_listed(lists))
    })
}

/// The files named on the command line (directories listed as meshd lists its
/// --config-dir), and what could not be read. A file that two inputs both name (`-f dir
/// -f ./dir/a.yaml`, a relative and an absolute path) is read once, under the first
/// name; within one directory every listed entry counts, as meshd counts them.
fn read_inputs(inputs: &[String]) -> (Vec<SourceFile>, Vec<String>) {
    let mut files: Vec<SourceFile> = Vec::new();
    // The input each file came from, and the file it is on disk.
    let mut seen: Vec<(usize, Option<PathBuf>)> = Vec::new();
    let mut unreadable = Vec::new();
    let mut add = |input: usize, file: SourceFile| {
        let real = std::fs::canonicalize(&file.path).ok();
        let same = |(i, f): (&(usize, Option<PathBuf>), &SourceFile)| {
            f.path == file.path || (i.0 != input && real.is_some() && i.1 == real)
        };
        if !seen.iter().zip(&files).any(same) {
            seen.push((input, real));
            files.push(file);
        }
    };
    for (at, input) in inputs.iter().enumerate() {
        let mut add = |file: SourceFile| add(at, file);
        if input == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => add(SourceFile { path: "<stdin>".into(), text, mtime_ns: 0 }),
                Err(e) => unreadable.push(format!("standard input: {e}")),
            }
            continue;
        }
        let path = Path::new(input);
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => match dir_scan::scan(path) {
                Scan::RootUnavailable(reason) => unreadable.push(format!("{input}: {reason}")),
                Scan::Listed { entries } => {
                    for (path, probe) in entries {
                        match probe {
                            Probe::File(stamp) => match read_listed(&path, &stamp) {
                                Ok(text) => {
                                    add(SourceFile { path: path.display().to_string(), text, mtime_ns: stamp.mtime_ns })
                                }
                                Err(e) => unreadable.push(format!("{}: {e}", path.display())),
                            },
                            Probe::Unreadable(reason) => unreadable.push(format!("{}: {reason}", path.display())),
                        }
                    }
                }
            },
            Ok(meta) => match std::fs::read_to_string(path) {
                Ok(text) => {
                    let mtime_ns = dir_scan::Stamp::of(&meta).mtime_ns;
                    add(SourceFile { path: input.clone(), text, mtime_ns })
                }
                Err(e) => unreadable.push(format!("{input}: cannot read: {e}")),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => unreadable.push(format!("{input}: does not exist")),
            Err(e) => unreadable.push(format!("{input}: {e}")),
        }
    }
    (files, unreadable)
}

/// A listed file's text (never blocking on a FIFO); one more try if it changed meanwhile.
fn read_listed(path: &Path, stamp: &dir_scan::Stamp) -> Result<String, String> {
    match dir_scan::read_listed(path, stamp) {
        Ok(text) => Ok(text),
        Err(ReadError::Changed) => std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}")),
        Err(ReadError::Io(e)) => Err(format!("cannot read: {e}")),
    }
}

fn print(analysis: &Analysis, format: OutputFormat, place: &str) -> anyhow::Result<()> {
    let text = match format {
        OutputFormat::Json => serde_json::to_string_pretty(analysis)? + "\n",
        OutputFormat::Yaml => serde_yaml::to_string(analysis)?,
        OutputFormat::Table => {
            let s = &analysis.summary;
            let mut text = table(&analysis.diagnostics);
            let (errors, warnings) = (count(s.errors, "error"), count(s.warnings, "warning"));
            text.push_str(&format!("{errors}, {warnings} in {place} ({})\n", count(s.objects, "object")));
            text
        }
    };
    print_text(&text)
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// One row per finding (the message last); the FILE and DOC columns only when some
/// finding has a file.
fn table(diagnostics: &[Diagnostic]) -> String {
    if diagnostics.is_empty() {
        return String::new();
    }
    let with_files = diagnostics.iter().any(|d| d.file.is_some());
    let mut table = if with_files {
        Table::new(&["SEVERITY", "FILE", "DOC", "OBJECT", "FIELD", "MESSAGE"])
    } else {
        Table::new(&["SEVERITY", "OBJECT", "FIELD", "MESSAGE"])
    };
    let dash = |s: &str| if s.is_empty() { "-".to_owned() } else { s.to_owned() };
    for d in diagnostics {
        let severity = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        let object = match (&d.kind, &d.namespace, &d.name) {
            (Some(kind), Some(ns), Some(name)) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
            (Some(kind), _, Some(name)) => format!("{kind} {name}"),
            (Some(kind), _, None) => kind.clone(),
            _ => String::new(),
        };
        let mut row = vec![severity.to_owned()];
        if with_files {
            row.push(dash(d.file.as_deref().unwrap_or_default()));
            row.push(d.document.map_or_else(|| "-".to_owned(), |n| n.to_string()));
        }
        row.extend([dash(&object), dash(&d.field), d.message.clone()]);
        table.row(row);
    }
    table.render()
}
