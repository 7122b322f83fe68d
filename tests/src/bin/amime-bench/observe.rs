//! What the bench observes of the clients: ACKs per phase, bytes, time.

use super::*;

pub(crate) struct Tracker {
    pub(crate) k: usize,
    pub(crate) acked: Vec<[Option<String>; 4]>,
    pub(crate) initialized: Vec<bool>,
    pub(crate) initialized_count: usize,
    /// The time the last client completed the current goal.
    pub(crate) last_at: Option<Instant>,
    // Since the last reset:
    pub(crate) bytes: [u64; 4],
    pub(crate) responses: u64,
    // The current push goal: every client ACKs a new version of `ty`.
    pub(crate) goal: Option<(Ty, Vec<Option<String>>)>,
    pub(crate) reached: Vec<bool>,
    pub(crate) reached_count: usize,
}

impl Tracker {
    pub(crate) fn new(k: usize) -> Tracker {
        Tracker {
            k,
            acked: vec![Default::default(); k],
            initialized: vec![false; k],
            initialized_count: 0,
            last_at: None,
            bytes: [0; 4],
            responses: 0,
            goal: None,
            reached: vec![false; k],
            reached_count: 0,
        }
    }

    pub(crate) fn apply(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Received { ty, bytes } => {
                self.bytes[ty as usize] += bytes as u64;
                self.responses += 1;
            }
            Event::Acked { client, ty, version, at } => {
                if let Some((goal, baseline)) = &self.goal {
                    if *goal == ty && !self.reached[client] && baseline[client].as_deref() != Some(version.as_str()) {
                        self.reached[client] = true;
                        self.reached_count += 1;
                        self.last_at = Some(self.last_at.map_or(at, |l| l.max(at)));
                    }
                }
                self.acked[client][ty as usize] = Some(version);
                if self.goal.is_none() && !self.initialized[client] && self.acked[client].iter().all(Option::is_some) {
                    self.initialized[client] = true;
                    self.initialized_count += 1;
                    self.last_at = Some(self.last_at.map_or(at, |l| l.max(at)));
                }
            }
            Event::Failed { client, error } => bail!("proxy {client} failed: {error}"),
        }
        Ok(())
    }

    pub(crate) fn total_bytes(&self) -> u64 {
        self.bytes.iter().sum()
    }

    /// Starts a push goal for `ty`, from each client's current version.
    pub(crate) fn start_goal(&mut self, ty: Ty) {
        let baseline = self.acked.iter().map(|a| a[ty as usize].clone()).collect();
        self.goal = Some((ty, baseline));
        self.reached = vec![false; self.k];
        self.reached_count = 0;
        self.last_at = None;
        self.bytes = [0; 4];
        self.responses = 0;
    }
}

/// Processes client events until `done`, failing on the deadline, a failed client or
/// a dead meshd.
pub(crate) async fn wait_for(
    what: &str,
    clients: &mut Clients,
    meshd: &mut Meshd,
    timeout: Duration,
    done: impl Fn(&Tracker) -> bool,
    status: impl Fn(&Tracker) -> String,
) -> Result<()> {
    let Clients { events, tracker } = clients;
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while !done(tracker) {
        tokio::select! {
            event = events.recv() => {
                tracker.apply(event.context("every client task ended")?)?;
                while let Ok(event) = events.try_recv() {
                    tracker.apply(event)?;
                }
            }
            _ = tick.tick() => {
                meshd.check_alive()?;
                if Instant::now() > deadline {
                    bail!("timed out after {timeout:?} waiting for {what}: {}", status(tracker));
                }
            }
        }
    }
    Ok(())
}

pub(crate) struct Phase {
    pub(crate) seconds: f64,
    /// From the start (a file write) until meshd handed the new translation to the
    /// proxies, and from then until the last proxy ACKed (go-control-plane's
    /// reference is measured like the second: from its snapshot being set).
    pub(crate) to_publish: f64,
    pub(crate) publish_to_acked: f64,
    pub(crate) bytes_per_proxy: f64,
    pub(crate) bytes_by_type: [u64; 4],
    pub(crate) responses: u64,
    pub(crate) server_bytes: f64,
    pub(crate) meshd_cpu: (f64, f64),
    pub(crate) bench_cpu: (f64, f64),
}

pub(crate) struct XdsResult {
    pub(crate) rss_idle: u64,
    pub(crate) rss_connected: u64,
    pub(crate) rss_after_pushes: u64,
    pub(crate) meshd_translate_ms: f64,
    pub(crate) proxy_classes: f64,
    pub(crate) initial: Phase,
    pub(crate) route_push: Phase,
    pub(crate) endpoint_push: Phase,
}

pub(crate) fn sub(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    (a.0 - b.0, a.1 - b.1)
}

pub(crate) struct Meter {
    pub(crate) started: Instant,
    pub(crate) started_wall: std::time::SystemTime,
    pub(crate) meshd_cpu: (f64, f64),
    pub(crate) bench_cpu: (f64, f64),
    pub(crate) server_bytes: f64,
}

impl Meter {
    pub(crate) async fn start(meshd: &Meshd) -> Meter {
        let server_bytes = meshd.metrics().await.get("amime_xds_bytes_sent_total").copied().unwrap_or(0.0);
        Meter {
            started: Instant::now(),
            started_wall: std::time::SystemTime::now(),
            meshd_cpu: meshd.cpu_seconds(),
            bench_cpu: cpu_seconds("/proc/self/stat"),
            server_bytes,
        }
    }

    pub(crate) async fn finish(self, meshd: &Meshd, tracker: &Tracker, k: usize) -> Phase {
        let end = tracker.last_at.unwrap_or_else(Instant::now);
        let metrics = meshd.metrics().await;
        let server_bytes = metrics.get("amime_xds_bytes_sent_total").copied().unwrap_or(0.0);
        let seconds = end.saturating_duration_since(self.started).as_secs_f64();
        let unix = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let published = metrics.get("amime_last_publish_timestamp_seconds").copied().unwrap_or(f64::NAN);
        let to_publish = published - unix(self.started_wall);
        Phase {
            seconds,
            to_publish,
            publish_to_acked: seconds - to_publish,
            bytes_per_proxy: tracker.total_bytes() as f64 / k as f64,
            bytes_by_type: tracker.bytes,
            responses: tracker.responses,
            server_bytes: (server_bytes - self.server_bytes) / k as f64,
            meshd_cpu: sub(meshd.cpu_seconds(), self.meshd_cpu),
            bench_cpu: sub(cpu_seconds("/proc/self/stat"), self.bench_cpu),
        }
    }
}

/// The connected clients: their events and what they ACKed.
pub(crate) struct Clients {
    pub(crate) events: mpsc::UnboundedReceiver<Event>,
    pub(crate) tracker: Tracker,
}

/// Connects `args.proxies` simulated proxies to `meshd` and waits until every one has ACKed
/// CDS, EDS, LDS and RDS. Proxy i is pod `i % M` of service `i / M`, with that pod's labels
/// and IP (transparent) or a loopback IP of its own to listen on (explicit).
pub(crate) async fn connect_all(
    args: &Args,
    mode: Mode,
    mesh: &SyntheticMesh,
    meshd: &mut Meshd,
) -> Result<(Clients, Phase)> {
    let k = args.proxies;
    let (tx, events) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut clients = Clients { events, tracker: Tracker::new(k) };
    let meter = Meter::start(meshd).await;
    for i in 0..k {
        let (service, replica) = ((i / mesh.endpoints) % mesh.services, i % mesh.endpoints);
        let namespace = mesh.namespace_of(service).to_owned();
        let n = i as u32 + 1;
        let spec = ClientSpec {
            index: i,
            node_id: format!("{}-{replica}-{i}.{namespace}", SyntheticMesh::service_name(service)),
            namespace,
            app: SyntheticMesh::service_name(service),
            version: format!("v{}", replica % 2 + 1),
            mode,
            ip: match mode {
                Mode::Transparent => ten_net(128, service * mesh.endpoints + replica),
                _ => format!("127.{}.{}.{}", 1 + (n >> 16), (n >> 8) & 255, n & 255),
            },
            uri: format!("http://{}", meshd.xds),
            api: args.api,
        };
        tokio::spawn(client(spec, tx.clone(), gate.clone()));
    }
    drop(tx);
    wait_for(
        "the initial config to be ACKed by every proxy",
        &mut clients,
        meshd,
        Duration::from_secs(args.timeout),
        |t| t.initialized_count == t.k,
        |t| format!("{}/{} proxies have ACKed CDS, EDS, LDS and RDS", t.initialized_count, t.k),
    )
    .await?;
    let initial = meter.finish(meshd, &clients.tracker, k).await;
    Ok((clients, initial))
}

pub(crate) async fn bench_xds(args: &Args, mode: Mode, mesh: &SyntheticMesh, meshd: &mut Meshd) -> Result<XdsResult> {
    let timeout = Duration::from_secs(args.timeout);
    meshd.wait_ready(Duration::from_secs(120)).await?;
    let rss_idle = meshd.rss()?;
    let meshd_translate_ms =
        meshd.metrics().await.get("amime_translation_last_duration_seconds").copied().unwrap_or(f64::NAN) * 1e3;
    progress(format!(
        "meshd ready: RSS {:.1} MB idle; connecting {} proxies ({:?})",
        mb(rss_idle),
        args.proxies,
        args.api
    ));
    let k = args.proxies;
    let (mut clients, initial) = connect_all(args, mode, mesh, meshd).await?;
    let rss_connected = meshd.rss()?;
    let proxy_classes = meshd.metrics().await.get("amime_proxy_classes").copied().unwrap_or(f64::NAN);
    progress(format!("initial config ACKed by all {k} in {:.2} s; RSS {:.1} MB", initial.seconds, mb(rss_connected)));

    if args.pause_before_pushes > 0 {
        progress(format!("pausing {} s before the pushes (meshd pid {})", args.pause_before_pushes, meshd.pid));
        tokio::time::sleep(Duration::from_secs(args.pause_before_pushes)).await;
    }

    // Full push: a route change every namespace sees.
    let (path, text) = (mesh.rules_path(0), mesh.rules_yaml(0, 70));
    let write = async move { replace_file(&path, &text) };
    let route_push = push("the route change", Ty::Rds, write, &mut clients, meshd, timeout).await?;
    progress(format!("route push ACKed by all in {:.3} s", route_push.seconds));

    // One pod moves: one EDS resource changes.
    let s = 1 % mesh.services;
    let (path, text) = (mesh.service_path(s), mesh.service_yaml(s, Some("10.127.255.1")));
    let write = async move { replace_file(&path, &text) };
    let endpoint_push = push("the endpoint change", Ty::Eds, write, &mut clients, meshd, timeout).await?;
    progress(format!("endpoint push ACKed by all in {:.3} s", endpoint_push.seconds));
    let rss_after_pushes = meshd.rss()?;

    Ok(XdsResult {
        rss_idle,
        rss_connected,
        rss_after_pushes,
        meshd_translate_ms,
        proxy_classes,
        initial,
        route_push,
        endpoint_push,
    })
}

/// Makes a change (`write`, run after the meter started) and waits until every proxy has
/// ACKed a new version of `ty`.
pub(crate) async fn push(
    what: &str,
    ty: Ty,
    write: impl std::future::Future<Output = Result<()>>,
    clients: &mut Clients,
    meshd: &mut Meshd,
    timeout: Duration,
) -> Result<Phase> {
    // Anything still queued belongs to the previous phase.
    while let Ok(event) = clients.events.try_recv() {
        clients.tracker.apply(event)?;
    }
    clients.tracker.start_goal(ty);
    let meter = Meter::start(meshd).await;
    write.await.with_context(|| format!("making {what}"))?;
    wait_for(
        &format!("{what} to be ACKed by every proxy"),
        clients,
        meshd,
        timeout,
        |t| t.reached_count == t.k,
        move |t| format!("{}/{} proxies have ACKed a new {ty:?} version", t.reached_count, t.k),
    )
    .await?;
    Ok(meter.finish(meshd, &clients.tracker, clients.tracker.k).await)
}
