//! `--source kube`: meshd (`--kubeconfig`) on a real cluster holding the synthetic mesh,
//! measured for its initial sync, a rule change and an endpoint change written through
//! kube-apiserver, its memory with K proxies, and the API-server requests it made.

use super::apiserver::{self, Requests};
use super::kube_mesh::{KubeMesh, MESHD_NAMESPACE};
use super::*;

pub(crate) const SYNC_TARGET_S: f64 = 5.0;
pub(crate) const RULE_TARGET_S: f64 = 1.0;
pub(crate) const RSS_TARGET_MB: f64 = 150.0;

/// The figures of one meshd run against the cluster.
pub(crate) struct KubeRun {
    pub(crate) mode: Mode,
    /// meshd start -> `/readyz` 200, and -> the first translation handed to the proxies.
    pub(crate) to_ready: f64,
    pub(crate) to_publish: f64,
    pub(crate) rss_ready: u64,
    pub(crate) rss_connected: u64,
    pub(crate) rss_after: u64,
    pub(crate) proxy_classes: f64,
    pub(crate) initial: Phase,
    pub(crate) rule: Phase,
    pub(crate) endpoint: Phase,
    /// Translations meshd made for the rule change and for the endpoint change (1 each
    /// when nothing else, e.g. its own status write coming back, caused a push).
    pub(crate) rule_translations: f64,
    pub(crate) endpoint_translations: f64,
    /// kube-apiserver requests while only meshd acted: start -> synced, proxies connected,
    /// status written; the rule change (the bench's PATCH subtracted); the endpoint change
    /// (the bench's pod status PATCH subtracted; kube-controller-manager's EndpointSlice
    /// write stays, marked).
    pub(crate) startup_requests: Requests,
    pub(crate) rule_requests: Requests,
    pub(crate) endpoint_requests: Requests,
    pub(crate) watches: Requests,
    pub(crate) status_writes: f64,
}

pub(crate) fn run_kube(args: &Args, meshd_bin: &Path) -> Result<()> {
    let work = WorkDir::new(args.keep.clone())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
        .context("building the client runtime")?;
    rt.block_on(async {
        let km = KubeMesh::create(args).await?;
        let s = &km.setup;
        progress(format!(
            "setup {:.1} s: cluster {:.1}, {} pods {:.1}, {} services {:.1}, rules {:.1}, EndpointSlices complete {:.1}",
            s.total,
            s.cluster,
            km.pods(),
            s.pods,
            km.mesh.services,
            s.services,
            s.rules,
            s.slices
        ));
        let idle = quiet_window(&km, args).await?;
        let mut runs = Vec::new();
        for (i, mode) in args.mode.runs().into_iter().enumerate() {
            if i > 0 {
                // Back to the mesh as created (meshd is not running).
                km.set_split(90).await?;
                km.set_pod_ready(1 % km.mesh.services, true).await?;
                km.wait_endpoint_slices(Duration::from_secs(args.timeout)).await?;
            }
            runs.push(bench_kube(args, mode, &km, meshd_bin, &work.path).await?);
        }
        print_kube_report(args, meshd_bin, &km, &idle, &runs);
        anyhow::Ok(())
    })?;
    if let Some(dir) = &args.keep {
        progress(format!("kept meshd logs in {}", dir.display()));
    }
    Ok(())
}

/// Counts kube-apiserver's requests in windows of `--idle-window` seconds until one has none
/// (kube-controller-manager finished with the new objects), at most 12; returns the last.
async fn quiet_window(km: &KubeMesh, args: &Args) -> Result<Requests> {
    let mut before = apiserver::completed(&scrape(km).await?);
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(args.idle_window)).await;
        let now = apiserver::completed(&scrape(km).await?);
        let idle = apiserver::delta(&now, &before);
        progress(format!(
            "kube-apiserver requests in {} s with meshd not running: {}",
            args.idle_window,
            apiserver::describe(&idle)
        ));
        if idle.is_empty() {
            return Ok(idle);
        }
        before = now;
    }
    Ok(apiserver::delta(&apiserver::completed(&scrape(km).await?), &before))
}

async fn scrape(km: &KubeMesh) -> Result<String> {
    km.cluster.apiserver_metrics().await
}

async fn meshd_metric(meshd: &Meshd, name: &str) -> f64 {
    meshd.metrics().await.get(name).copied().unwrap_or(f64::NAN)
}

/// Polls meshd's metric `name` until `done` says so (every 50 ms, up to `timeout`).
async fn until_metric(meshd: &mut Meshd, name: &str, timeout: Duration, done: impl Fn(f64) -> bool) -> Result<f64> {
    let deadline = Instant::now() + timeout;
    loop {
        meshd.check_alive()?;
        let v = meshd_metric(meshd, name).await;
        if done(v) {
            return Ok(v);
        }
        ensure!(Instant::now() < deadline, "meshd's {name} is {v} after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until meshd holds the Lease and its status writes have stopped for a second.
async fn status_settled(meshd: &mut Meshd, timeout: Duration) -> Result<f64> {
    until_metric(meshd, "amime_kube_leader", timeout, |v| v == 1.0).await?;
    let (mut last, mut since) = (f64::NAN, Instant::now());
    loop {
        let v = until_metric(meshd, "amime_kube_status_writes_total", timeout, |v| !v.is_nan()).await?;
        if v != last {
            (last, since) = (v, Instant::now());
        } else if since.elapsed() > Duration::from_secs(1) {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The translations meshd made after `before`, once a second has passed without a new one.
async fn translations_since(meshd: &Meshd, before: f64) -> f64 {
    let mut last = meshd_metric(meshd, "amime_translations_total").await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = meshd_metric(meshd, "amime_translations_total").await;
        if now == last {
            return now - before;
        }
        last = now;
    }
}

/// Starts meshd on the cluster; returns it with its start -> `/readyz` 200 and start -> first
/// publish times.
async fn start_meshd(
    km: &KubeMesh,
    mode: Mode,
    bin: &Path,
    work: &Path,
    timeout: Duration,
) -> Result<(Meshd, f64, f64)> {
    let source = ["--kubeconfig".as_ref(), km.cluster.kubeconfig().as_os_str()];
    // One identity for every run: a later meshd takes over its predecessor's Lease at once.
    let extra = ["--namespace", MESHD_NAMESPACE, "--identity", "amime-bench"];
    let mut meshd = Meshd::start_with(bin, &source, &extra, work)?;
    progress(format!(
        "[{}] meshd started (pid {}) with --kubeconfig {}",
        mode.name(),
        meshd.pid,
        km.cluster.kubeconfig().display()
    ));
    let ready_at = meshd.wait_ready(timeout).await?;
    let to_ready = ready_at.duration_since(meshd.started).as_secs_f64();
    let published = until_metric(&mut meshd, "amime_last_publish_timestamp_seconds", timeout, |v| v > 0.0).await?;
    let started_unix = meshd.started_wall.duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
    Ok((meshd, to_ready, published - started_unix))
}

async fn bench_kube(args: &Args, mode: Mode, km: &KubeMesh, bin: &Path, work: &Path) -> Result<KubeRun> {
    let timeout = Duration::from_secs(args.timeout);
    let m0 = scrape(km).await?;
    let (mut meshd, to_ready, to_publish) = start_meshd(km, mode, bin, work, timeout).await?;
    let rss_ready = meshd.rss()?;
    progress(format!(
        "[{}] meshd ready {to_ready:.2} s, first publish {to_publish:.2} s after start; RSS {:.1} MB; connecting {} proxies",
        mode.name(),
        mb(rss_ready),
        args.proxies
    ));

    let (mut clients, initial) = connect_all(args, mode, &km.mesh, &mut meshd).await?;
    let rss_connected = meshd.rss()?;
    let proxy_classes = meshd_metric(&meshd, "amime_proxy_classes").await;
    progress(format!(
        "initial config ACKed by all {} in {:.2} s; RSS {:.1} MB",
        args.proxies,
        initial.seconds,
        mb(rss_connected)
    ));
    let status_writes = status_settled(&mut meshd, timeout).await?;
    let m1 = scrape(km).await?;

    // The rule change: a VirtualService's split, written through kube-apiserver.
    let weight = if mode == Mode::Transparent { 60 } else { 70 };
    let before = meshd_metric(&meshd, "amime_translations_total").await;
    let rule = push("the rule change", Ty::Rds, km.set_split(weight), &mut clients, &mut meshd, timeout).await?;
    progress(format!("rule change ACKed by all in {:.3} s", rule.seconds));
    let rule_translations = translations_since(&meshd, before).await;
    status_settled(&mut meshd, timeout).await?;
    let m2 = scrape(km).await?;

    // The endpoint change: a pod turns NotReady; kube-controller-manager updates its slice.
    let before = meshd_metric(&meshd, "amime_translations_total").await;
    let s = 1 % km.mesh.services;
    let endpoint =
        push("the endpoint change", Ty::Eds, km.set_pod_ready(s, false), &mut clients, &mut meshd, timeout).await?;
    progress(format!("endpoint change ACKed by all in {:.3} s", endpoint.seconds));
    let endpoint_translations = translations_since(&meshd, before).await;
    let m3 = scrape(km).await?;
    let rss_after = meshd.rss()?;

    let completed = |t: &str| apiserver::completed(t);
    let mut rule_requests = apiserver::delta(&completed(&m2), &completed(&m1));
    apiserver::subtract(&mut rule_requests, "PATCH virtualservices.networking.amime.dev", 1.0);
    let mut endpoint_requests = apiserver::delta(&completed(&m3), &completed(&m2));
    apiserver::subtract(&mut endpoint_requests, "PATCH pods/status", 1.0);
    Ok(KubeRun {
        mode,
        to_ready,
        to_publish,
        rss_ready,
        rss_connected,
        rss_after,
        proxy_classes,
        initial,
        rule,
        endpoint,
        rule_translations,
        endpoint_translations,
        startup_requests: apiserver::delta(&completed(&m1), &completed(&m0)),
        rule_requests,
        endpoint_requests,
        watches: apiserver::delta(&apiserver::open_watches(&m1), &apiserver::open_watches(&m0)),
        status_writes,
    })
}

pub(crate) fn met(value: f64, target: f64) -> &'static str {
    if value <= target {
        "MET"
    } else {
        "MISSED"
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn print_kube_report(args: &Args, meshd_bin: &Path, km: &KubeMesh, idle: &Requests, runs: &[KubeRun]) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let s = &km.setup;
    println!();
    println!("machine: {cores} cores, {}; load average now {}; meshd {}", cpu_model(), load(), meshd_bin.display());
    println!(
        "cluster: {} Services x {} Ready pods = {} endpoints in {} namespaces, {} DestinationRules + VirtualServices, created through kube-apiserver; K={} proxies ({:?})",
        km.mesh.services,
        km.mesh.endpoints,
        km.pods(),
        km.mesh.namespaces.len(),
        km.mesh.with_rules,
        args.proxies,
        args.api
    );
    println!(
        "setup: {:.1} s (control plane {:.1}, pods created + Ready {:.1}, services {:.1}, rules {:.1}, until the EndpointSlices held every endpoint {:.1}; {} in flight)",
        s.total, s.cluster, s.pods, s.services, s.rules, s.slices, args.create_concurrency
    );
    println!(
        "kube-apiserver requests in the last {} s before meshd started (kube-controller-manager, background): {}",
        args.idle_window,
        apiserver::describe(idle)
    );
    for r in runs {
        println!();
        println!("--- {} mode ---", r.mode.name());
        println!(
            "initial sync: meshd start -> /readyz 200 {:.2} s (target <= {SYNC_TARGET_S} s, {}); -> first publish {:.2} s (target <= {SYNC_TARGET_S} s, {})",
            r.to_ready,
            met(r.to_ready, SYNC_TARGET_S),
            r.to_publish,
            met(r.to_publish, SYNC_TARGET_S)
        );
        println!("initial config ACKed by all {}: {:.2} s after they connected", args.proxies, r.initial.seconds);
        println!(
            "rule change (VirtualService PATCH -> all {} ACKed): {:.3} s (target <= {RULE_TARGET_S} s, {}); API write -> published {:.3} s + published -> all ACKed {:.3} s; {} translation(s); meshd CPU {:.3} s",
            args.proxies,
            r.rule.seconds,
            met(r.rule.seconds, RULE_TARGET_S),
            r.rule.to_publish,
            r.rule.publish_to_acked,
            r.rule_translations,
            r.rule.meshd_cpu.0
        );
        println!(
            "endpoint change (pod status PATCH -> kube-controller-manager's EndpointSlice -> all ACKed): {:.3} s (no target; includes kube-controller-manager); {} translation(s)",
            r.endpoint.seconds, r.endpoint_translations
        );
        println!(
            "meshd RSS: {:.1} MB synced, {:.1} MB with {} proxies (target <= {RSS_TARGET_MB} MB, {}), {:.1} MB after the changes; {} proxy classes",
            mb(r.rss_ready),
            mb(r.rss_connected),
            args.proxies,
            met(mb(r.rss_connected), RSS_TARGET_MB),
            mb(r.rss_after),
            r.proxy_classes
        );
        print_requests(km, r, args.proxies);
    }
}

/// The request budget of an initial sync: per watched kind one LIST page per 500 objects
/// (kube-rs's page size) at least one, one open WATCH each; a status write per CRD object; a
/// few lease and discovery requests. Anything per object beyond that is a finding.
fn startup_budget(km: &KubeMesh) -> f64 {
    let pages = |n: usize| n.div_ceil(500).max(1) as f64;
    let ns = km.mesh.namespaces.len() + 3;
    let lists = pages(km.pods()) + pages(km.mesh.services + 1) + pages(km.mesh.services + 1) + pages(ns);
    let crd_kinds = 8.0; // 4 kinds x 2 groups: their CRD watches and, where present, the kind's own
    lists + 2.0 + 2.0 * crd_kinds + 2.0 * km.mesh.with_rules as f64 + 10.0
}

fn print_requests(km: &KubeMesh, r: &KubeRun, k: usize) {
    let startup = apiserver::total(&r.startup_requests);
    let budget = startup_budget(km);
    println!(
        "kube-apiserver requests from meshd start to synced + {} proxies served + status written: {startup} (target <= {budget}, {}): {}",
        k,
        met(startup, budget),
        apiserver::describe(&r.startup_requests)
    );
    println!("  meshd wrote {} statuses; watches it holds open: {}", r.status_writes, apiserver::describe(&r.watches));
    let rule = apiserver::total(&r.rule_requests);
    let leases: f64 = r.rule_requests.iter().filter(|(k, _)| k.contains(" leases")).map(|(_, v)| v).sum();
    println!(
        "kube-apiserver requests for the rule change (the bench's PATCH subtracted): {rule}, of which {} not Lease renewals (target <= 1, the changed VirtualService's status write: {}): {}",
        rule - leases,
        met(rule - leases, 1.0),
        apiserver::describe(&r.rule_requests)
    );
    println!(
        "kube-apiserver requests for the endpoint change (the bench's PATCH subtracted; EndpointSlice writes are kube-controller-manager's): {}",
        apiserver::describe(&r.endpoint_requests)
    );
}
