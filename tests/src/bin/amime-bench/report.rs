//! The printed report, with figures against their targets.

use super::*;

pub(crate) fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub(crate) fn kb(bytes: f64) -> f64 {
    bytes / 1024.0
}

pub(crate) fn verdict(value: f64, target: f64) -> &'static str {
    if value <= target {
        "ok"
    } else {
        "MISSED"
    }
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

pub(crate) fn print_report(
    args: &Args,
    meshd_bin: &Path,
    mesh: &SyntheticMesh,
    t: &TranslateResult,
    e: &EngineResult,
    runs: &[(Mode, XdsResult)],
) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let meshd_build = if meshd_bin.parent().and_then(|d| d.file_name()).is_some_and(|n| n == "release") {
        "release"
    } else {
        "debug"
    };
    let bench_build = if cfg!(debug_assertions) { "debug" } else { "release" };
    let k = args.proxies;
    let api = match args.api {
        Api::Delta => "delta",
        Api::Sotw => "sotw",
    };
    let phase_detail = |p: &Phase| {
        format!(
            "CDS {:.1} / EDS {:.1} / LDS {:.1} / RDS {:.1} KB; {} responses; meshd counted {:.1} KB/proxy; CPU meshd {:.2} s ({:.2} sys), bench {:.2} s ({:.2} sys)",
            kb(p.bytes_by_type[0] as f64 / k as f64),
            kb(p.bytes_by_type[1] as f64 / k as f64),
            kb(p.bytes_by_type[2] as f64 / k as f64),
            kb(p.bytes_by_type[3] as f64 / k as f64),
            p.responses,
            kb(p.server_bytes),
            p.meshd_cpu.0,
            p.meshd_cpu.1,
            p.bench_cpu.0,
            p.bench_cpu.1,
        )
    };
    println!();
    println!("machine: {cores} cores, {}, build: meshd {meshd_build}, bench {bench_build}", cpu_model());
    println!(
        "mesh: N={} services x M={} endpoints in {} namespaces ({} with DR+VS), K={k} proxies ({api}; proxy i is replica i % M of service i / M)",
        mesh.services,
        mesh.endpoints,
        mesh.namespaces.len(),
        mesh.with_rules
    );
    println!(
        "resources: {} clusters ({:.1} KB), {} endpoint sets ({:.1} KB), RDS per namespace {:.1} KB; translation problems: {}",
        t.clusters,
        kb(t.cluster_bytes as f64),
        t.endpoints,
        kb(t.endpoint_bytes as f64),
        kb(t.route_bytes_per_ns as f64),
        t.problems
    );
    println!(
        "translate whole mesh: {:.1} ms median of {} (min {:.1}, max {:.1}; build {:.1} + routes for {} namespaces {:.1}) (target <= {TRANSLATE_TARGET_MS} ms: {:.2}x of budget, {})",
        t.total_ms,
        t.runs,
        t.min_ms,
        t.max_ms,
        t.build_ms,
        mesh.namespaces.len(),
        t.routes_ms,
        t.total_ms / TRANSLATE_TARGET_MS,
        verdict(t.total_ms, TRANSLATE_TARGET_MS)
    );
    println!(
        "  checking against Envoy's constraints: first build {:.1} ms ({} pieces checked in {:.1} ms, {} refused); later builds check {} pieces ({} verdicts reused)",
        t.cold_ms,
        t.cold_checks.checked,
        t.cold_checks.spent.as_secs_f64() * 1e3,
        t.cold_checks.refused,
        t.warm_checks.checked,
        t.warm_checks.cached,
    );
    println!(
        "  (loading the directory: {:.0} ms; re-reading it on a file event: {:.0} ms; meshd's own last translation, build only: {})",
        t.load_ms,
        t.reload_ms,
        runs.iter().map(|(m, x)| format!("{:.1} ms {}", x.meshd_translate_ms, m.name())).collect::<Vec<_>>().join(", ")
    );
    println!(
        "xds engine, in process (meshd's per-proxy session CPU): initial sync {:.0} us, route push {:.0} us, endpoint push {:.0} us per proxy (x{k} = {:.2} / {:.2} / {:.2} s); publishing a translation to {} proxy classes: {:.0} ms",
        e.initial_us,
        e.route_push_us,
        e.endpoint_push_us,
        e.initial_us * k as f64 / 1e6,
        e.route_push_us * k as f64 / 1e6,
        e.endpoint_push_us * k as f64 / 1e6,
        e.classes,
        e.publish_ms
    );
    for (mode, x) in runs {
        println!();
        println!("--- {} mode ---", mode.name());
        print_xds(x, k, &phase_detail);
    }
    print_comparison(runs, k);
}

/// The figures of one run against meshd.
pub(crate) fn print_xds(x: &XdsResult, k: usize, phase_detail: &dyn Fn(&Phase) -> String) {
    let per_proxy = (x.rss_connected as f64 - x.rss_idle as f64) / k as f64;
    println!("initial config ACKed by all {k}: {:.2} s", x.initial.seconds);
    println!("  {}", phase_detail(&x.initial));
    println!(
        "full push (route change) ACKed by all: {:.3} s (target <= {PUSH_TARGET_S} s, {})",
        x.route_push.seconds,
        verdict(x.route_push.seconds, PUSH_TARGET_S)
    );
    println!("  {}", phase_detail(&x.route_push));
    println!(
        "endpoint change ACKed by all: {:.3} s (target <= {PUSH_TARGET_S} s, {})",
        x.endpoint_push.seconds,
        verdict(x.endpoint_push.seconds, PUSH_TARGET_S)
    );
    println!("  {}", phase_detail(&x.endpoint_push));
    println!(
        "meshd RSS: {:.1} MB idle, {:.1} MB with {k} proxies -> {:.1} KB per proxy (target <= {PER_PROXY_TARGET_KB} KB, {}); {:.1} MB after the pushes; {} proxy classes",
        mb(x.rss_idle),
        mb(x.rss_connected),
        kb(per_proxy),
        verdict(kb(per_proxy), PER_PROXY_TARGET_KB),
        mb(x.rss_after_pushes),
        x.proxy_classes
    );
    println!(
        "bytes per proxy: initial {:.1} KB, route push {:.1} KB, endpoint push {:.2} KB",
        kb(x.initial.bytes_per_proxy),
        kb(x.route_push.bytes_per_proxy),
        kb(x.endpoint_push.bytes_per_proxy)
    );
    let (r, cpu) = (&x.route_push, x.route_push.meshd_cpu.0);
    println!(
        "route change: file write -> published {:.3} s (settle, re-read, debounce, translate) + published -> all ACKed {:.3} s = {:.3} s",
        r.to_publish, r.publish_to_acked, r.seconds
    );
    println!(
        "  against go-control-plane (from its snapshot being set to all ACKed, {REFERENCE_ROUTE_PUSH_S} s): published -> all ACKed {:.2}x, {}; file write -> all ACKed {:.2}x, {}",
        r.publish_to_acked / REFERENCE_ROUTE_PUSH_S,
        verdict(r.publish_to_acked, REFERENCE_ROUTE_PUSH_S),
        r.seconds / REFERENCE_ROUTE_PUSH_S,
        verdict(r.seconds, REFERENCE_ROUTE_PUSH_S)
    );
    println!(
        "  meshd CPU for the whole change {cpu:.3} s (reference {REFERENCE_ROUTE_PUSH_CPU_S} s: {:.2}x, {})",
        cpu / REFERENCE_ROUTE_PUSH_CPU_S,
        verdict(cpu, REFERENCE_ROUTE_PUSH_CPU_S)
    );
}

/// Both modes side by side.
pub(crate) fn print_comparison(runs: &[(Mode, XdsResult)], k: usize) {
    if runs.len() < 2 {
        return;
    }
    println!();
    println!("| mode | proxy classes | KB per proxy | initial s | route push s (CPU s) | endpoint push s (CPU s) |");
    println!("|---|---|---|---|---|---|");
    for (mode, x) in runs {
        let per_proxy = (x.rss_connected as f64 - x.rss_idle as f64) / k as f64;
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.3} ({:.3}) | {:.3} ({:.3}) |",
            mode.name(),
            x.proxy_classes,
            kb(per_proxy),
            x.initial.seconds,
            x.route_push.seconds,
            x.route_push.meshd_cpu.0,
            x.endpoint_push.seconds,
            x.endpoint_push.meshd_cpu.0
        );
    }
}
