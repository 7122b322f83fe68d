//! `amime-demo`: a local mesh on the embedded default, showing routing rules take effect live.
//!
//! Starts `meshd` on a temporary copy of `manifests/examples/bookinfo` (127.0.10.x), the reviews
//! v1/v2/v3 apps and productpage's Envoy sidecar, then sends traffic through the sidecar and
//! edits the rules. Run it with `scripts/demo.sh [--keep-running]`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use amime_e2e::mesh::{hosts, EXAMPLE_RULES_FILE};
use amime_e2e::rules::reviews_vs_jason_v2_else_split;
use amime_e2e::sidecar::weighted_clusters;
use amime_e2e::{await_condition, Bookinfo, BookinfoOptions, IpBlock, MeshDir, Tally, TestContext};
use anyhow::{bail, ensure, Context as _, Result};

struct Args {
    keep_running: bool,
    block: IpBlock,
}

const USAGE: &str = "usage: amime-demo [--keep-running] [--block N]

  --keep-running  keep the mesh up after the demo until Ctrl-C
  --block N       run on 127.0.N.x instead of 127.0.10.x (if that block is busy)";

fn parse_args() -> Result<Args> {
    let mut args = Args { keep_running: false, block: IpBlock::EXAMPLE };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--keep-running" => args.keep_running = true,
            "--block" => {
                let value = argv.next().unwrap_or_default();
                match value.parse::<u8>() {
                    Ok(n) if (1..=254).contains(&n) => args.block = IpBlock(n),
                    _ => bail!("--block wants a number 1..=254, got {value:?}\n{USAGE}"),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("amime-demo: {e}");
            return ExitCode::from(2);
        }
    };
    let ctx = match TestContext::new("demo") {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("amime-demo: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = demo(&ctx, &args).await;
    // Every process has been stopped when `demo` returns.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\n{}", ctx.log_tails(25));
            eprintln!("amime-demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bar(count: usize, total: usize) -> String {
    let width = (count * 40 + total / 2).checked_div(total).unwrap_or(0);
    "█".repeat(width)
}

fn print_counts(tally: &Tally) {
    for version in ["v1", "v2", "v3"] {
        let n = tally.get(version);
        println!("    reviews {version}: {n:>4}  {}", bar(n, tally.total));
    }
    let others: Vec<String> = tally
        .counts
        .iter()
        .filter(|(k, _)| !["v1", "v2", "v3"].contains(&k.as_str()))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    if !others.is_empty() {
        println!("    other answers: {}", others.join(", "));
    }
}

async fn demo(ctx: &TestContext, args: &Args) -> Result<()> {
    let block = args.block;
    println!("Amime demo: meshd + an Envoy sidecar + reviews v1/v2/v3, all on 127.0.{}.x\n", block.0);

    let dir = MeshDir::new(ctx)?;
    dir.copy_bookinfo_example(block)?;
    let started = Instant::now();
    let bookinfo = Bookinfo::start(ctx, block, dir, BookinfoOptions::default()).await.with_context(|| {
        format!("starting the mesh on 127.0.{}.x (is another demo running? try --block N)", block.0)
    })?;
    let proxy = bookinfo.productpage.proxy_addr();
    println!("Started in {:.1?}:", started.elapsed());
    println!(
        "  meshd            pid {:<7} xDS {}  monitoring http://{}",
        bookinfo.meshd.pid(),
        bookinfo.meshd.xds_addr(),
        bookinfo.meshd.monitoring_addr()
    );
    println!(
        "  productpage-v1   pid {:<7} sidecar proxy {proxy}  admin http://{}",
        bookinfo.productpage.pid(),
        bookinfo.productpage.admin_addr()
    );
    for upstream in &bookinfo.reviews {
        println!("  {:<16} app on {}", upstream.pod(), upstream.addr());
    }
    println!("  rules: {}", bookinfo.dir.path().join(EXAMPLE_RULES_FILE).display());

    // (a) Header routing.
    println!("\n(a) 10 requests as jason (end-user: jason) -> rule `jason-to-v2`:");
    let mut line = String::new();
    for i in 1..=10 {
        let response = bookinfo.productpage.request(Bookinfo::REVIEWS_URL, &[("end-user", "jason")]).await?;
        let version = response.json_str("version");
        ensure!(version.as_deref() == Some("v2"), "request {i} as jason was not served by v2: {}", response.summary());
        line.push_str(&format!(" {}", version.unwrap_or_default()));
    }
    println!("   {line}   (all v2)");

    // (b) Weighted split.
    println!("\n(b) 100 requests without the header -> rule `split-v1-v3` (50/50):");
    let tally = bookinfo.productpage.tally(100, Bookinfo::REVIEWS_URL, &[]).await;
    print_counts(&tally);
    ensure!(
        tally.get("v2") == 0 && tally.get("v1") > 0 && tally.get("v3") > 0 && tally.get("v1") + tally.get("v3") == 100,
        "unexpected split: {tally}"
    );

    // (c) Live edit.
    println!("\n(c) Editing {EXAMPLE_RULES_FILE}: split-v1-v3 becomes 80/20 ...");
    let pids = (bookinfo.meshd.pid(), bookinfo.productpage.pid());
    // The example's rules with the split changed to 80/20 (the DestinationRule stays).
    let renamed = bookinfo.dir.replace_virtual_service(
        EXAMPLE_RULES_FILE,
        &format!("# Edited by amime-demo: the split is now 80/20.\n{}", reviews_vs_jason_v2_else_split(80, 20)),
    )?;
    await_condition("the sidecar's route to carry the 80/20 split", Duration::from_secs(10), || async {
        let dump = bookinfo.productpage.config_dump().await?;
        let splits = weighted_clusters(&dump);
        let found = splits.iter().any(|split| {
            split.len() == 2 && split[0].1 * 20 == split[1].1 * 80 && split[0].1 > 0
                || split.len() == 2 && split[1].1 * 20 == split[0].1 * 80 && split[1].1 > 0
        });
        ensure!(found, "weighted clusters in the config dump: {splits:?}");
        Ok(())
    })
    .await?;
    let took = renamed.elapsed();
    ensure!(
        pids == (bookinfo.meshd.pid(), bookinfo.productpage.pid())
            && bookinfo.meshd.process().is_running()
            && bookinfo.productpage.process().is_running(),
        "meshd or Envoy restarted during the edit"
    );
    println!("    applied by the sidecar {:.0} ms after the file was saved (no restart)", took.as_secs_f64() * 1000.0);
    let tally = bookinfo.productpage.tally(100, Bookinfo::REVIEWS_URL, &[]).await;
    println!("    100 requests without the header:");
    print_counts(&tally);
    ensure!(
        tally.get("v2") == 0 && tally.get("v1") > tally.get("v3") && tally.get("v1") + tally.get("v3") == 100,
        "unexpected split after the edit: {tally}"
    );

    // (d) Try it yourself.
    let pp = block.ip(hosts::PRODUCTPAGE);
    println!(
        "\n(d) Try it yourself{}:",
        if args.keep_running { "" } else { " (rerun with --keep-running to keep the mesh up)" }
    );
    println!("    curl -x http://{pp}:15001 http://reviews:9080/");
    println!("    curl -x http://{pp}:15001 -H 'end-user: jason' http://reviews:9080/");
    println!("    edit {}  (changes apply live)", bookinfo.dir.path().join(EXAMPLE_RULES_FILE).display());
    println!("    curl http://{}/debug/config_errors", bookinfo.meshd.monitoring_addr());
    println!("    curl http://{}/metrics", bookinfo.meshd.monitoring_addr());

    if args.keep_running {
        println!("\nThe mesh is running. Press Ctrl-C to stop.");
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            result = watch_processes(&bookinfo) => result?,
        }
        println!("\nStopping.");
    } else {
        println!("\nDemo finished.");
    }
    Ok(())
}

/// Returns an error when meshd or Envoy exits on its own.
async fn watch_processes(bookinfo: &Bookinfo) -> Result<()> {
    loop {
        bookinfo.meshd.process().ensure_running()?;
        bookinfo.productpage.process().ensure_running()?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
