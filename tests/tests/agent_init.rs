//! `amime-agent init` against real iptables, in a network namespace of its own (root only;
//! otherwise the tests print `SKIPPED: <reason>`): the rules it installs are the
//! `CaptureSpec`'s, a second run (a restarted init container) leaves exactly one set, a run
//! with other exclusions replaces them, and `--cleanup` removes every trace. Both backends:
//! nf_tables (`iptables-restore`) and legacy (`--iptables-restore .../iptables-legacy-restore`).

use amime_e2e::netns::{self, Netns};
use anyhow::{ensure, Context as _, Result};
use injector::capture::{self, CaptureSpec};

/// `iptables-save` prints `-p tcp --dport N` as `-p tcp -m tcp --dport N`.
fn normalize(rule: &str) -> String {
    rule.replace(" -m tcp", "")
}

/// The `-A` rules of an `iptables-save -t nat` listing, normalized.
fn saved_rules(save: &str) -> Vec<String> {
    save.lines().filter(|l| l.starts_with("-A ")).map(normalize).collect()
}

/// Every rule of `spec` is installed exactly once, and nothing else of ours.
fn ensure_installed_once(save: &str, spec: &CaptureSpec) -> Result<()> {
    let saved = saved_rules(save);
    let want: Vec<String> = spec.restore_input().lines().filter(|l| l.starts_with("-A ")).map(normalize).collect();
    for rule in &want {
        let n = saved.iter().filter(|s| *s == rule).count();
        ensure!(n == 1, "rule {rule:?} is installed {n} times:\n{save}");
    }
    let ours = saved.iter().filter(|s| s.contains("AMIME_")).count();
    ensure!(ours == want.len(), "{ours} rules mention AMIME_, the spec has {}:\n{save}", want.len());
    Ok(())
}

fn spec(outbound_ports: &str, ranges: &str) -> CaptureSpec {
    CaptureSpec {
        exclude_inbound_ports: capture::parse_ports("8081").unwrap(),
        exclude_outbound_ports: capture::parse_ports(outbound_ports).unwrap(),
        exclude_outbound_cidrs: capture::parse_cidrs(ranges).unwrap(),
        ..CaptureSpec::default()
    }
}

/// Install twice, reconfigure, clean up twice; `extra` selects the backend, `save` lists with
/// the matching `-save`.
async fn install_and_remove(ns: &Netns, extra: &[String], save: &str) -> Result<()> {
    let first = spec("5432", "10.9.0.0/16");
    let args = |spec: &CaptureSpec| spec.to_args().into_iter().chain(extra.iter().cloned()).collect::<Vec<_>>();
    let printed = ns.agent_init(args(&first)).await?;
    ensure!(printed == first.restore_input(), "a fresh namespace should get exactly the spec's input:\n{printed}");
    ensure_installed_once(&ns.exec(save, ["-t", "nat"]).await?, &first).context("after the first run")?;

    let again = ns.agent_init(args(&first)).await?;
    ensure!(
        again.contains("-D PREROUTING -p tcp -j AMIME_INBOUND\n"),
        "the rerun did not delete the old jump:\n{again}"
    );
    ensure_installed_once(&ns.exec(save, ["-t", "nat"]).await?, &first).context("after the second run")?;

    let second = spec("6379", "192.168.0.0/16");
    ns.agent_init(args(&second)).await?;
    let listing = ns.exec(save, ["-t", "nat"]).await?;
    ensure_installed_once(&listing, &second).context("after reconfiguring")?;
    ensure!(!listing.contains("5432") && !listing.contains("10.9.0.0/16"), "old exclusions left:\n{listing}");

    let mut cleanup = vec!["--cleanup".to_string()];
    cleanup.extend(extra.iter().cloned());
    for round in 1..=2 {
        ns.agent_init(&cleanup).await.with_context(|| format!("cleanup round {round}"))?;
        let listing = ns.exec(save, ["-t", "nat"]).await?;
        ensure!(!listing.contains("AMIME_"), "cleanup round {round} left rules of ours:\n{listing}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_is_idempotent_and_cleanup_removes_everything() {
    if let Some(reason) = netns::unsupported_reason() {
        eprintln!("SKIPPED: init_is_idempotent_and_cleanup_removes_everything: {reason}");
        return;
    }
    let ns = Netns::create("agent-init-nft").await.unwrap();
    install_and_remove(&ns, &[], "iptables-save").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_works_with_the_legacy_backend() {
    if let Some(reason) = netns::unsupported_reason() {
        eprintln!("SKIPPED: init_works_with_the_legacy_backend: {reason}");
        return;
    }
    let Some(restore) = find_program("iptables-legacy-restore") else {
        eprintln!("SKIPPED: init_works_with_the_legacy_backend: iptables-legacy-restore is not installed");
        return;
    };
    let ns = Netns::create("agent-init-legacy").await.unwrap();
    let extra = ["--iptables-restore".to_string(), restore];
    install_and_remove(&ns, &extra, "iptables-legacy-save").await.unwrap();
}

/// A capture a legacy-only node left (or an earlier run that fell back to legacy) is
/// replaced in place by a plain rerun, never doubled by a second set in the nf_tables tables;
/// a plain `--cleanup` finds and removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_replaces_the_capture_in_the_backend_that_holds_it() {
    let name = "a_rerun_replaces_the_capture_in_the_backend_that_holds_it";
    if let Some(reason) = netns::unsupported_reason() {
        eprintln!("SKIPPED: {name}: {reason}");
        return;
    }
    let Some(restore) = find_program("iptables-legacy-restore") else {
        eprintln!("SKIPPED: {name}: iptables-legacy-restore is not installed");
        return;
    };
    let ns = Netns::create("agent-init-mixed").await.unwrap();
    let spec = spec("5432", "10.9.0.0/16");
    let mut legacy = spec.to_args();
    legacy.extend(["--iptables-restore".to_string(), restore]);
    ns.agent_init(&legacy).await.unwrap();
    ns.agent_init(spec.to_args()).await.unwrap();
    let nft = ns.exec("iptables-save", ["-t", "nat"]).await.unwrap();
    assert!(!nft.contains("AMIME_"), "the rerun added a second capture in nf_tables:\n{nft}");
    ensure_installed_once(&ns.exec("iptables-legacy-save", ["-t", "nat"]).await.unwrap(), &spec).unwrap();
    ns.agent_init(["--cleanup"]).await.unwrap();
    let legacy_after = ns.exec("iptables-legacy-save", ["-t", "nat"]).await.unwrap();
    assert!(!legacy_after.contains("AMIME_"), "a plain cleanup left the legacy capture:\n{legacy_after}");
}

fn find_program(program: &str) -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file()).map(|p| p.display().to_string())
}
