//! Model-based protocol test: a simulated Envoy ([`envoy::SimEnvoy`]) against the real
//! [`xds::session::Session`], through long random sequences of config changes,
//! reconnects (to the same server and to a restarted one that knows nothing of the
//! proxy), slow ACKs and NACKs.
//!
//! At every quiet point (nothing in flight either way, the server has a snapshot):
//! - the server's status for the proxy is SYNCED exactly when the proxy holds the
//!   current snapshot (what it subscribes to) with no cluster warming;
//! - when the snapshot holds nothing Envoy rejects, the proxy has converged.
//!
//! After each sequence a good snapshot and a drain must converge it.
//!
//! [`loopback`] runs the same simulated Envoy against the real `AdsServer` over gRPC.
//!
//! Seeded: 500 sequences per API by default; `MODEL_SEED` replays one seed,
//! `MODEL_CASES` sets how many per API, `MODEL_TRACE` prints the shrunk failure. A
//! failing sequence is shrunk (chunks of actions removed while it still fails) and
//! printed with its seed.

mod envoy;
mod loopback;
mod rng;
mod world;

use std::sync::Arc;

use xds::session::{Response, Session};
use xds::status::RegisteredConnection;
use xds::{ConnectionRegistry, ProxyState, Snapshot, XdsApi};

use envoy::{SimEnvoy, Wire, TYPES};
use rng::Rng;

#[derive(Clone, Debug)]
enum Action {
    /// The control plane has a new snapshot (drawn from this seed).
    Snapshot(u64),
    /// Up to n responses reach the proxy, which answers each.
    ToProxy(usize),
    /// Up to n requests reach the server (ACKs held back until then are "slow").
    ToServer(usize),
    /// Everything in flight is delivered until nothing is.
    Drain,
    /// The stream breaks and the proxy reconnects; `restart`: to a server process that
    /// starts afresh; `late_snapshot`: one that has no snapshot until the next change.
    Reconnect { restart: bool, late_snapshot: bool },
}

fn draw_actions(rng: &mut Rng) -> Vec<Action> {
    let len = 10 + rng.below(50) as usize;
    (0..len)
        .map(|_| match rng.below(100) {
            0..=32 => Action::ToProxy(1 + rng.below(3) as usize),
            33..=65 => Action::ToServer(1 + rng.below(3) as usize),
            66..=83 => Action::Snapshot(rng.next()),
            84..=92 => Action::Drain,
            _ => Action::Reconnect { restart: rng.below(2) == 0, late_snapshot: rng.below(3) == 0 },
        })
        .collect()
}

/// The server side and the proxy, connected by one stream.
struct Run {
    api: XdsApi,
    registry: ConnectionRegistry,
    conn: RegisteredConnection,
    session: Session,
    proxy: SimEnvoy,
    wire: Wire,
    current: Arc<Snapshot>,
    /// The server (restarted) has no snapshot yet.
    waiting_for_snapshot: bool,
}

impl Run {
    fn new(api: XdsApi, explicit_wildcard: bool, first: Arc<Snapshot>) -> Run {
        let registry = ConnectionRegistry::new();
        let proxy = SimEnvoy::new(api, explicit_wildcard);
        let conn = registry.register(proxy.node_id.clone(), api, None);
        let session = Session::new(api, conn.status.clone(), registry.clone());
        let mut run = Run {
            api,
            registry,
            conn,
            session,
            proxy,
            wire: Wire::default(),
            current: first,
            waiting_for_snapshot: false,
        };
        run.reconnect(false, false);
        run
    }

    fn reconnect(&mut self, restart: bool, late_snapshot: bool) {
        self.wire = Wire::default();
        if restart {
            self.registry = ConnectionRegistry::new();
        }
        self.conn = self.registry.register(self.proxy.node_id.clone(), self.api, None);
        self.session = Session::new(self.api, self.conn.status.clone(), self.registry.clone());
        self.waiting_for_snapshot = restart && late_snapshot;
        if !self.waiting_for_snapshot {
            let out: Vec<_> = self.session.on_snapshot(self.current.clone()).iter().map(Response::decoded).collect();
            self.wire.to_client.extend(out);
        }
        let requests = self.proxy.connect();
        self.wire.to_server.extend(requests);
    }

    fn deliver_to_server(&mut self, n: usize) {
        for _ in 0..n {
            let Some(request) = self.wire.to_server.pop_front() else { return };
            trace(|| format!("-> {request:?}"));
            let out = request.apply(&mut self.session);
            for r in &out {
                trace(|| format!("   produces {}", describe_response(r)));
            }
            self.wire.to_client.extend(out);
        }
    }

    fn deliver_to_proxy(&mut self, n: usize) {
        for _ in 0..n {
            let Some(response) = self.wire.to_client.pop_front() else { return };
            trace(|| format!("<- {}", describe_response(&response)));
            let out = self.proxy.on_response(response);
            self.wire.to_server.extend(out);
        }
    }

    fn drain(&mut self) -> Result<(), String> {
        for _ in 0..1000 {
            if self.wire.is_quiet() {
                return Ok(());
            }
            self.deliver_to_server(usize::MAX);
            self.deliver_to_proxy(usize::MAX);
        }
        Err("messages still flowing after 1000 rounds".into())
    }

    fn apply(&mut self, action: &Action) -> Result<(), String> {
        match action {
            Action::Snapshot(seed) => {
                self.current = world::snapshot(*seed, true);
                self.waiting_for_snapshot = false;
                let out: Vec<_> =
                    self.session.on_snapshot(self.current.clone()).iter().map(Response::decoded).collect();
                for r in &out {
                    trace(|| format!("   snapshot produces {}", describe_response(r)));
                }
                self.wire.to_client.extend(out);
            }
            Action::ToProxy(n) => self.deliver_to_proxy(*n),
            Action::ToServer(n) => self.deliver_to_server(*n),
            Action::Drain => self.drain()?,
            Action::Reconnect { restart, late_snapshot } => self.reconnect(*restart, *late_snapshot),
        }
        Ok(())
    }

    fn divergence(&self) -> Option<String> {
        divergence(&self.proxy, &self.current)
    }

    /// The quiet-point invariants.
    fn check_quiet(&self) -> Result<(), String> {
        if !self.wire.is_quiet() || self.waiting_for_snapshot {
            return Ok(());
        }
        let divergence = self.divergence();
        let state = self.conn.status.proxy_state();
        match (&divergence, state) {
            (Some(why), ProxyState::Synced) => Err(format!("status says SYNCED but {why}")),
            (None, state) if state != ProxyState::Synced => {
                Err(format!("proxy holds the snapshot but status says {state:?}: {:#?}", self.conn.status.report()))
            }
            (Some(why), _) if !world::has_needed_bad(&self.current) => {
                Err(format!("quiet with a good snapshot but not converged: {why}"))
            }
            _ => Ok(()),
        }
    }
}

/// Why `proxy` does not hold exactly `current` (what it subscribes to of it, with
/// nothing warming), if it does not.
fn divergence(proxy: &SimEnvoy, current: &Snapshot) -> Option<String> {
    if !proxy.warming().is_empty() {
        return Some(format!("clusters warming: {:?}", proxy.warming()));
    }
    for ty in TYPES {
        let set = current.set(ty);
        let wanted: Vec<String> = if ty.is_wildcard_type() {
            set.names().map(|n| n.to_string()).collect()
        } else {
            let wanted = proxy.wanted(ty);
            if &wanted != proxy.subscribed(ty) {
                return Some(format!("{ty}: subscribed {:?}, needs {wanted:?}", proxy.subscribed(ty)));
            }
            wanted.into_iter().collect()
        };
        let held = proxy.held(ty);
        if ty.is_wildcard_type() && held.len() != set.len() {
            let names: Vec<_> = held.keys().collect();
            return Some(format!("{ty}: holds {names:?}, snapshot has {wanted:?}"));
        }
        for name in wanted {
            let expected = set.get(&name).map(|r| &r.body().value);
            if held.get(&name).map(|h| &h.body) != expected {
                return Some(format!("{ty}: {name} differs from the snapshot"));
            }
        }
    }
    None
}

/// Runs one sequence; `Err` says what broke and where.
fn run(api: XdsApi, explicit_wildcard: bool, first: u64, actions: &[Action], last: u64) -> Result<(), String> {
    let mut run = Run::new(api, explicit_wildcard, world::snapshot(first, false));
    for (i, action) in actions.iter().enumerate() {
        trace(|| format!("== {action:?}"));
        run.apply(action).map_err(|e| format!("after action {i} {action:?}: {e}"))?;
        run.check_quiet().map_err(|e| format!("after action {i} {action:?}: {e}"))?;
    }
    // A good snapshot at last; everything must settle.
    run.current = world::snapshot(last, false);
    trace(|| {
        format!(
            "== final snapshot: EDS {:?}",
            run.current.set(xds::ResourceType::ClusterLoadAssignment).names().collect::<Vec<_>>()
        )
    });
    run.waiting_for_snapshot = false;
    let out: Vec<_> = run.session.on_snapshot(run.current.clone()).iter().map(Response::decoded).collect();
    run.wire.to_client.extend(out);
    run.drain()?;
    if let Some(why) = run.divergence() {
        return Err(format!("did not converge at the end: {why}"));
    }
    run.check_quiet().map_err(|e| format!("at the end: {e}"))?;
    let state = run.conn.status.proxy_state();
    if state != ProxyState::Synced {
        return Err(format!("converged but status says {state:?}"));
    }
    Ok(())
}

/// Removes chunks of actions while the sequence still fails.
fn shrink(api: XdsApi, wildcard: bool, first: u64, mut actions: Vec<Action>, last: u64) -> Vec<Action> {
    let mut chunk = actions.len().max(1);
    while chunk >= 1 {
        let mut progress = false;
        let mut at = 0;
        while at < actions.len() {
            let mut candidate = actions.clone();
            candidate.drain(at..(at + chunk).min(actions.len()));
            if run(api, wildcard, first, &candidate, last).is_err() {
                actions = candidate;
                progress = true;
            } else {
                at += chunk;
            }
        }
        if !progress {
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
    }
    actions
}

/// With `MODEL_TRACE` set, every message is printed (to replay one seed).
static TRACING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn trace(line: impl FnOnce() -> String) {
    if TRACING.load(std::sync::atomic::Ordering::Relaxed) {
        println!("{}", line());
    }
}

fn describe_response(response: &xds::session::Decoded) -> String {
    use xds::session::Decoded as Response;
    match response {
        Response::Sotw(r) => format!(
            "sotw {} v={} nonce={} resources={:?}",
            r.type_url.rsplit('.').next().unwrap_or_default(),
            r.version_info,
            r.nonce,
            r.resources
                .iter()
                .map(|a| String::from_utf8_lossy(&a.value).chars().take(24).collect::<String>())
                .collect::<Vec<_>>()
        ),
        Response::Delta(r) => format!(
            "delta {} nonce={} resources={:?} removed={:?}",
            r.type_url.rsplit('.').next().unwrap_or_default(),
            r.nonce,
            r.resources.iter().map(|x| (&x.name, &x.version)).collect::<Vec<_>>(),
            r.removed_resources
        ),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn check_api(api: XdsApi) {
    let cases = env_u64("MODEL_CASES").unwrap_or(500);
    let seeds: Vec<u64> = match env_u64("MODEL_SEED") {
        Some(seed) => vec![seed],
        None => (0..cases).map(|i| 0x5eed_0000 + i).collect(),
    };
    for seed in seeds {
        let mut rng = Rng::new(seed);
        let wildcard = rng.below(2) == 0;
        let (first, last) = (rng.next(), rng.next());
        let actions = draw_actions(&mut rng);
        if let Err(error) = run(api, wildcard, first, &actions, last) {
            let small = shrink(api, wildcard, first, actions.clone(), last);
            if std::env::var_os("MODEL_TRACE").is_some() {
                TRACING.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let small_error = run(api, wildcard, first, &small, last).err().unwrap_or_default();
            panic!(
                "{api:?} seed {seed} (MODEL_SEED={seed}) failed: {error}\n\
                 shrunk from {} to {} actions: {small:#?}\nwhich fails with: {small_error}",
                actions.len(),
                small.len()
            );
        }
    }
}

#[test]
fn state_of_the_world_converges_and_status_tells_the_truth() {
    check_api(XdsApi::StateOfTheWorld);
}

#[test]
fn delta_converges_and_status_tells_the_truth() {
    check_api(XdsApi::Delta);
}
