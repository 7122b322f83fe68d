//! `meshctl demo`: the example mesh on this machine — meshd on the embedded default (a
//! temporary copy of `manifests/examples/bookinfo`), productpage's real Envoy sidecar and
//! reviews v1/v2/v3 — walking through four use cases, each applied live by rewriting the
//! rules file meshd watches and shown once the sidecar has it (ACKed).
//!
//! On a terminal it is a live view (a bar per version, redrawn in place; Enter/space for the
//! next step, q to quit; `--auto N` advances by itself). Otherwise, or with
//! `--non-interactive`, it measures every step, prints what it saw, and exits 0 only if every
//! step showed its effect. Ctrl-C, SIGTERM and SIGHUP stop meshd and Envoy (see [`mesh::Children`]).

/// `println!` that ignores a closed stdout (`meshctl demo | head`): the demo still stops
/// its processes and exits with its own code.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod mesh;
mod stats;
mod steps;
mod term;
mod traffic;
mod view;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use mesh::{hosts, Applied, Binaries, Block, Children, Workdir};
use stats::{format_latency, Answer, Summary, User, ERRORS};
use steps::{Check, Kind, Step, STEPS};
use traffic::{Apps, Load};
use view::{Frame, Style};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  meshctl demo                      # the live view; Enter/space: next step, q: quit\n  \
meshctl demo --auto 5             # next step every 5 seconds\n  \
meshctl demo --non-interactive    # measure every step, print it, exit 1 if a step did not show its effect"
)]
pub struct DemoArgs {
    /// Advance to the next step by itself after SECONDS (and finish after the last one).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    auto: Option<u64>,

    /// No live view: run every step to completion, print what each measured, and exit 0 only
    /// if every step showed its effect (the default when stdout is not a terminal).
    #[arg(long)]
    non_interactive: bool,

    /// Run on the loopback block 127.0.N.x (meshd .2, productpage .1, reviews .11-.13).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=254))]
    block: u8,

    /// The meshd binary (default: next to meshctl, then PATH).
    #[arg(long, value_name = "PATH")]
    meshd: Option<PathBuf>,

    /// The Envoy binary (default: $AMIME_ENVOY, the repository's .venv/bin/envoy, then PATH).
    #[arg(long, value_name = "PATH")]
    envoy: Option<PathBuf>,

    /// Requests measured per step without the live view.
    #[arg(long, value_name = "N", default_value_t = 240, value_parser = clap::value_parser!(u64).range(40..=100_000))]
    requests: u64,

    /// Requests per second sent through the sidecar.
    #[arg(long, value_name = "N", default_value_t = 80, value_parser = clap::value_parser!(u32).range(1..=2000))]
    rate: u32,

    /// How long reviews v1, v2 and v3 take to answer, in milliseconds.
    #[arg(long, value_name = "V1,V2,V3", value_delimiter = ',', default_values_t = [5, 15, 25])]
    app_latency_ms: Vec<u64>,

    /// Without the live view: keep the mesh up after the steps until Ctrl-C, to try it by hand.
    #[arg(long)]
    keep_running: bool,

    /// Testing: leave step N's rule unapplied (its effect must then be missed).
    #[arg(long, value_name = "N", hide = true)]
    skip_apply: Vec<usize>,
}

/// The demo ended on a signal; the exit code a shell expects.
#[derive(Debug)]
struct Stopped(&'static str, i32);

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped by {}", self.0)
    }
}

impl std::error::Error for Stopped {}

pub fn run(args: DemoArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = runtime.block_on(run_until_signal(args));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Err(e) => match e.downcast_ref::<Stopped>() {
            Some(Stopped(signal, code)) => {
                eprintln!("meshctl demo: stopped by {signal}; meshd and Envoy are stopped");
                std::process::exit(*code)
            }
            None => Err(e),
        },
        ok => ok,
    }
}

/// What every part of the demo needs.
struct Demo<'a> {
    args: &'a DemoArgs,
    block: Block,
    binaries: Binaries,
    dir: Workdir,
    children: &'a Children,
}

async fn run_until_signal(args: DemoArgs) -> Result<()> {
    let interactive = !args.non_interactive && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if args.app_latency_ms.len() != 3 {
        bail!("--app-latency-ms wants three values (v1,v2,v3), got {:?}", args.app_latency_ms);
    }
    let block = Block(args.block);
    let binaries = Binaries::find(args.meshd.clone(), args.envoy.clone())?;
    mesh::check_ports_free(block)?;
    let children = Children::default();
    let demo = Demo { args: &args, block, binaries, dir: Workdir::create(block)?, children: &children };
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    // A closed terminal (SIGHUP) stops the demo the same way.
    let mut sighup = signal(SignalKind::hangup())?;
    let result = tokio::select! {
        result = demo.run(interactive) => result,
        _ = sigint.recv() => Err(Stopped("SIGINT", 130).into()),
        _ = sigterm.recv() => Err(Stopped("SIGTERM", 143).into()),
        _ = sighup.recv() => Err(Stopped("SIGHUP", 129).into()),
    };
    children.shutdown().await;
    result
}

/// How a step ended.
#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    Shown,
    NotShown,
    /// meshd says it ignores a field the step needs (e.g. `fault` before it is implemented).
    NotSupported(String),
    /// Left before enough requests were measured (live view only).
    TooFew,
}

struct StepResult {
    index: usize,
    step: &'static Step,
    applied: Option<Applied>,
    summary: Summary,
    check: Check,
    verdict: Verdict,
}

fn verdict(step: &Step, applied: Option<&Applied>, summary: &Summary, check: &Check) -> Verdict {
    if summary.total < steps::MIN_SAMPLES {
        return Verdict::TooFew;
    }
    if check.passed {
        return Verdict::Shown;
    }
    if step.kind == Kind::Fault {
        if let Some(note) = applied.filter(|a| !a.has_fault).and_then(|a| a.notes.iter().find(|n| n.contains("fault")))
        {
            return Verdict::NotSupported(note.clone());
        }
    }
    Verdict::NotShown
}

fn slow_threshold(step: &Step) -> Option<Duration> {
    (step.kind == Kind::Fault).then_some(steps::FAULT_DELAY)
}

impl Demo<'_> {
    fn proxy(&self) -> SocketAddr {
        self.block.addr(hosts::PRODUCTPAGE, 15001)
    }

    async fn run(&self, interactive: bool) -> Result<()> {
        let (_apps, load) = self.start().await?;
        let results = if interactive { self.live(&load).await? } else { self.batch(&load).await? };
        drop(load);
        // A step meshd ignores fails too: the demo exits 0 only when every step showed its effect.
        let failed: Vec<&StepResult> = results.iter().filter(|r| r.verdict != Verdict::Shown).collect();
        if interactive {
            results.iter().for_each(|r| print_result(r, true));
        }
        let shown = results.iter().filter(|r| r.verdict == Verdict::Shown).count();
        say!("\n{shown} of {} steps showed their effect.", STEPS.len());
        for r in results.iter().filter(|r| matches!(r.verdict, Verdict::NotSupported(_))) {
            say!("Step {} ({}) is not shown: meshd does not implement it yet.", r.index + 1, r.step.title);
        }
        if !failed.is_empty() {
            let what: Vec<String> = failed
                .iter()
                .map(|r| {
                    format!(
                        "step {} ({}): expected {}; seen {}",
                        r.index + 1,
                        r.step.title,
                        r.step.expect,
                        r.check.seen
                    )
                })
                .collect();
            bail!("{}", what.join("\n       "));
        }
        if self.args.keep_running && !interactive {
            self.keep_running().await?;
        }
        Ok(())
    }

    /// Start the apps, meshd and the sidecar, wait until reviews answer through it, and start
    /// the load.
    async fn start(&self) -> Result<(Apps, Load)> {
        let (block, children) = (self.block, self.children);
        say!("Amime demo on 127.0.{}.x: meshd, an Envoy sidecar, reviews v1/v2/v3", block.0);
        let started = Instant::now();
        let latency = |i: usize| Duration::from_millis(self.args.app_latency_ms.get(i).copied().unwrap_or(0));
        let apps: Vec<(SocketAddr, &str, Duration)> = hosts::REVIEWS
            .iter()
            .enumerate()
            .map(|(i, (h, v))| (block.addr(*h, mesh::APP_PORT), *v, latency(i)))
            .collect();
        let apps = Apps::start(&apps).await?;
        let meshd = mesh::start_meshd(children, &self.binaries, &self.dir, block)?;
        let monitoring = block.addr(hosts::MESHD, 15014);
        mesh::wait_for(children, "meshd to be ready (/readyz)", Duration::from_secs(20), || {
            mesh::get_ok(monitoring, "/readyz")
        })
        .await?;
        let envoy = mesh::start_envoy(children, &self.binaries, &self.dir, block)?;
        let admin = block.addr(hosts::PRODUCTPAGE, 15000);
        mesh::wait_for(children, "Envoy to be ready (admin /ready)", Duration::from_secs(30), || {
            mesh::get_ok(admin, "/ready")
        })
        .await?;
        let proxy = self.proxy();
        mesh::wait_for(children, "reviews to answer through the sidecar", Duration::from_secs(15), || async move {
            match traffic::classify(&traffic::http_get(proxy, traffic::REVIEWS_URL, "reviews:9080", &[]).await) {
                Answer::Version(_) => Ok(()),
                Answer::Failed(why) => bail!("{why}"),
            }
        })
        .await?;
        // Lines that fit 80 columns (the live view's terminal shows them first).
        say!("  started in {:.1} s", started.elapsed().as_secs_f64());
        say!("  meshd  pid {meshd:<7} xDS {}", block.addr(hosts::MESHD, 15010));
        say!("                        http://{monitoring}/debug/proxies");
        say!("  Envoy  pid {envoy:<7} proxy http://{proxy}");
        say!("                        admin http://{admin}");
        say!("         {}", self.binaries.envoy.display());
        say!("  rules  {}", self.dir.rules_path().display());
        Ok((apps, Load::start(proxy, self.args.rate, 8)))
    }

    /// Write step `index`'s rule and wait until the sidecar has it (None with `--skip-apply`).
    async fn apply(&self, index: usize, step: &Step) -> Result<Option<Applied>> {
        if self.args.skip_apply.contains(&(index + 1)) {
            return Ok(None);
        }
        let Some(rules) = steps::rules_file(&self.block.render(mesh::EXAMPLE_RULES), step) else {
            bail!("the example's {} has no DestinationRule", mesh::RULES_FILE);
        };
        self.dir.write_config(mesh::RULES_FILE, &rules)?;
        let saved = Instant::now();
        Ok(Some(mesh::wait_applied(self.children, self.block, step, saved).await?))
    }

    /// Every step measured over `--requests` requests, printed as it ends.
    async fn batch(&self, load: &Load) -> Result<Vec<StepResult>> {
        let mut results = Vec::new();
        let n = usize::try_from(self.args.requests).unwrap_or(usize::MAX);
        for (index, step) in STEPS.iter().enumerate() {
            let applied = self.apply(index, step).await?;
            load.recorder.reset();
            let what = format!("{n} requests through the sidecar");
            mesh::wait_for(self.children, &what, Duration::from_secs(120), || async {
                let have = load.recorder.len();
                if have < n {
                    bail!("{have} so far");
                }
                Ok(())
            })
            .await?;
            let mut samples = load.recorder.samples();
            samples.truncate(n);
            let result = measure(index, step, applied, &samples);
            print_result(&result, false);
            results.push(result);
        }
        Ok(results)
    }

    async fn keep_running(&self) -> Result<()> {
        let pp = self.block.ip(hosts::PRODUCTPAGE);
        say!("\nThe mesh keeps running until Ctrl-C. Try:");
        say!("  curl -x http://{pp}:15001 http://reviews:9080/");
        say!("  curl -x http://{pp}:15001 -H 'end-user: jason' http://reviews:9080/");
        say!("  edit {}  (applied live)", self.dir.rules_path().display());
        say!("  curl http://{}/debug/config_errors", self.block.addr(hosts::MESHD, 15014));
        loop {
            self.children.ensure_running()?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The live view: each step applied, then shown until a key (or `--auto`) moves on.
    async fn live(&self, load: &Load) -> Result<Vec<StepResult>> {
        let mut screen = term::Screen::enter()?;
        let mut results = Vec::new();
        for (index, step) in STEPS.iter().enumerate() {
            let status =
                (format!("… applying: rewriting {} and waiting for the sidecar", mesh::RULES_FILE), Style::Dim);
            let yaml = steps::virtual_service(step);
            let frame = Frame {
                block: self.block.0,
                index,
                steps: STEPS.len(),
                step,
                status,
                summary: &Summary::default(),
                check: None,
                notes: &[],
                elapsed: Duration::ZERO,
                recorded: 0,
                footer: self.footer(index, Duration::ZERO),
                rules_yaml: &yaml,
            };
            draw(&mut screen, &frame)?;
            let applied = self.apply(index, step).await?;
            load.recorder.reset();
            let (key, result) = self.show(&mut screen, load, index, step, applied).await?;
            results.push(result);
            if key == term::Key::Quit {
                break;
            }
        }
        Ok(results)
    }

    /// Redraw step `index` every 250 ms until a key or the `--auto` timer.
    async fn show(
        &self,
        screen: &mut term::Screen,
        load: &Load,
        index: usize,
        step: &'static Step,
        applied: Option<Applied>,
    ) -> Result<(term::Key, StepResult)> {
        let started = Instant::now();
        let status = match &applied {
            Some(a) => (
                format!(
                    "✓ the sidecar has the rule, {} after the file was saved (meshd: {})",
                    format_latency(Some(a.took)),
                    a.state
                ),
                Style::Good,
            ),
            None => ("✗ rule not applied (--skip-apply)".to_string(), Style::Bad),
        };
        let notes = applied.as_ref().map(|a| a.notes.clone()).unwrap_or_default();
        let yaml = steps::virtual_service(step);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let key = loop {
            tokio::select! {
                _ = tick.tick() => {}
                key = screen.keys.recv() => break key.unwrap_or(term::Key::Quit),
            }
            self.children.ensure_running()?;
            if self.args.auto.is_some_and(|s| started.elapsed() >= Duration::from_secs(s)) {
                break term::Key::Next;
            }
            let summary = Summary::of(&load.recorder.samples(), slow_threshold(step));
            let check = steps::check(step, &summary);
            let mark = match verdict(step, applied.as_ref(), &summary, &check) {
                Verdict::TooFew => None,
                Verdict::Shown => Some((view::Mark::Shown, check.seen.as_str())),
                Verdict::NotShown => Some((view::Mark::NotShown, check.seen.as_str())),
                Verdict::NotSupported(_) => Some((view::Mark::Ignored, check.seen.as_str())),
            };
            let elapsed = started.elapsed();
            let frame = Frame {
                block: self.block.0,
                index,
                steps: STEPS.len(),
                step,
                status: status.clone(),
                summary: &summary,
                check: mark,
                notes: &notes,
                elapsed,
                recorded: load.recorder.recorded(),
                footer: self.footer(index, elapsed),
                rules_yaml: &yaml,
            };
            draw(screen, &frame)?;
        };
        Ok((key, measure(index, step, applied, &load.recorder.samples())))
    }

    /// The key help (and the `--auto` countdown) under step `index`.
    fn footer(&self, index: usize, elapsed: Duration) -> String {
        let last = index + 1 == STEPS.len();
        let keys = if last { "[Enter/q] finish" } else { "[Enter/space] next step   [q] quit" };
        match self.args.auto {
            Some(s) => format!(
                "{keys}   (auto: {} in {} s)",
                if last { "finish" } else { "next" },
                s.saturating_sub(elapsed.as_secs())
            ),
            None => format!("{keys}   rules: {}", self.dir.rules_path().display()),
        }
    }
}

fn draw(screen: &mut term::Screen, frame: &Frame<'_>) -> Result<()> {
    let (width, height) = term::Screen::size();
    screen.draw(&view::render(frame, width, height))
}

fn measure(index: usize, step: &'static Step, applied: Option<Applied>, samples: &[stats::Sample]) -> StepResult {
    let summary = Summary::of(samples, slow_threshold(step));
    let check = steps::check(step, &summary);
    let verdict = verdict(step, applied.as_ref(), &summary, &check);
    StepResult { index, step, applied, summary, check, verdict }
}

fn print_result(r: &StepResult, after_live_view: bool) {
    let s = &r.summary;
    say!("\nStep {}: {}", r.index + 1, r.step.title);
    match &r.applied {
        Some(a) => say!(
            "  rule applied: the sidecar had it {} after the file was saved (meshd: {})",
            format_latency(Some(a.took)),
            a.state
        ),
        None => say!("  rule NOT applied (--skip-apply)"),
    }
    for note in r.applied.iter().flat_map(|a| &a.notes) {
        say!("  meshd says: {note}");
    }
    let rows: Vec<String> = s
        .rows
        .iter()
        .map(|row| match row.count {
            0 => format!("{} 0", row.label),
            n => format!(
                "{} {n} ({:.0}%, p50 {}, p99 {})",
                row.label,
                s.share(&row.label),
                format_latency(row.p50),
                format_latency(row.p99)
            ),
        })
        .collect();
    say!("  {} requests: {}", s.total, rows.join(" · "));
    say!("  by user: jason → {} | others → {}", s.user_line(User::Jason), s.user_line(User::Other));
    if s.count(ERRORS) > 0 {
        say!("  errors: {}", s.failure_line());
    }
    say!("  expected: {}", r.step.expect);
    let verdict = match &r.verdict {
        Verdict::Shown => "OK".to_string(),
        Verdict::NotShown => "NOT SEEN".to_string(),
        Verdict::NotSupported(note) => format!("not shown: meshd ignores it ({note})"),
        Verdict::TooFew if after_live_view => "not measured (left early)".to_string(),
        Verdict::TooFew => "not measured".to_string(),
    };
    say!("  seen: {} — {verdict}", r.check.seen);
}
