//! Whole-mesh translation timed in process.

use super::*;

pub(crate) struct TranslateResult {
    pub(crate) load_ms: f64,
    pub(crate) reload_ms: f64,
    pub(crate) build_ms: f64,
    pub(crate) routes_ms: f64,
    pub(crate) total_ms: f64,
    pub(crate) min_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) runs: usize,
    pub(crate) clusters: usize,
    pub(crate) endpoints: usize,
    pub(crate) cluster_bytes: usize,
    pub(crate) endpoint_bytes: usize,
    pub(crate) route_bytes_per_ns: usize,
    pub(crate) problems: usize,
    pub(crate) model: Arc<Index>,
    /// The first build (nothing remembered, as when meshd starts): time and checks.
    pub(crate) cold_ms: f64,
    pub(crate) cold_checks: CheckStats,
    /// A later build of the same model (as every push after the first): its checks.
    pub(crate) warm_checks: CheckStats,
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) fn bench_translate(mesh: &SyntheticMesh, runs: usize) -> Result<TranslateResult> {
    let started = Instant::now();
    let mut dir = ConfigDir::new(&mesh.dir);
    dir.load().context("loading the generated config directory")?;
    let (objects, problems) = dir.objects();
    if let Some(p) = problems.first() {
        bail!("the generated config has {} problems, e.g. {p}", problems.len());
    }
    let mut index = Index::new();
    index.reset(objects);
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    ensure!(
        index.services.len() == mesh.services,
        "loaded {} services, generated {}",
        index.services.len(),
        mesh.services
    );
    // What meshd's config-dir source does on every file event: re-read and hash every
    // file (only changed ones are parsed), collect the objects, rebuild the index.
    let t = Instant::now();
    dir.load().context("re-loading the generated config directory")?;
    let (objects, _) = dir.objects();
    let mut again = index.clone();
    again.reset(objects);
    let reload_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(again);
    let model = Arc::new(index);

    let (mut build, mut routes, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut last: Option<MeshConfig> = None;
    let mut route_bytes = 0;
    let (mut cold_ms, mut cold_checks) = (0.0, CheckStats::default());
    // One run more than asked: the first is cold (nothing to reuse, as when meshd
    // starts) and reported on its own; the others build after the previous one,
    // as meshd's push loop does.
    for run in 0..=runs {
        let t0 = Instant::now();
        let config = MeshConfig::build_after(model.clone(), &MeshSettings::default(), last.as_ref());
        if run == 0 {
            cold_ms = t0.elapsed().as_secs_f64() * 1e3;
            cold_checks = config.checks;
            last = Some(config);
            continue;
        }
        let t1 = Instant::now();
        let sets: Vec<_> = mesh.namespaces.iter().map(|ns| config.routes_for(ns, &Default::default())).collect();
        let t2 = Instant::now();
        route_bytes = sets[0].iter().map(|r| r.encoded_len()).sum();
        build.push((t1 - t0).as_secs_f64() * 1e3);
        routes.push((t2 - t1).as_secs_f64() * 1e3);
        total.push((t2 - t0).as_secs_f64() * 1e3);
        last = Some(config); // the previous one is dropped outside the timed part
    }
    let config = last.expect("runs >= 1");
    let result = TranslateResult {
        load_ms,
        reload_ms,
        build_ms: median(&mut build),
        routes_ms: median(&mut routes),
        min_ms: total.iter().copied().fold(f64::INFINITY, f64::min),
        max_ms: total.iter().copied().fold(0.0, f64::max),
        total_ms: median(&mut total),
        runs,
        clusters: config.clusters().len(),
        endpoints: config.endpoints().len(),
        cluster_bytes: config.clusters().iter().map(|r| r.encoded_len()).sum(),
        endpoint_bytes: config.endpoints().iter().map(|r| r.encoded_len()).sum(),
        route_bytes_per_ns: route_bytes,
        problems: config.problems.len(),
        model: model.clone(),
        cold_ms,
        cold_checks,
        warm_checks: config.checks,
    };
    if let Some(p) = config.problems.first() {
        progress(format!("warning: translation reported {} problems, e.g. {p}", config.problems.len()));
    }
    Ok(result)
}
