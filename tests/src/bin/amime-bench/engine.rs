//! The xDS engine driven in process: per-proxy session CPU.

use super::*;

/// CPU time of meshd's per-proxy protocol work (the sans-IO `xds::session::Session`) and
/// of publishing a translation to K proxy classes, measured in this process.
pub(crate) struct EngineResult {
    pub(crate) initial_us: f64,
    pub(crate) route_push_us: f64,
    pub(crate) endpoint_push_us: f64,
    pub(crate) publish_ms: f64,
    pub(crate) classes: usize,
}

/// One simulated proxy talking to one in-process session.
pub(crate) struct EngineProxy {
    pub(crate) session: xds::session::Session,
    pub(crate) logic: ProxyLogic,
    pub(crate) _registered: xds::status::RegisteredConnection,
}

impl EngineProxy {
    /// Answers responses (and the responses to the answers) until quiet; returns the
    /// time spent inside the session.
    pub(crate) fn drive(&mut self, responses: Vec<xds::session::Response>) -> Result<Duration> {
        use xds::session::{Decoded, Response};
        let mut queue: std::collections::VecDeque<Response> = responses.into();
        let mut spent = Duration::ZERO;
        while let Some(response) = queue.pop_front() {
            match response.decoded() {
                Decoded::Delta(r) => {
                    for request in self.logic.on_delta(&r)?.1 {
                        let t = Instant::now();
                        queue.extend(self.session.on_delta_request(request));
                        spent += t.elapsed();
                    }
                }
                Decoded::Sotw(r) => {
                    for request in self.logic.on_sotw(&r)?.1 {
                        let t = Instant::now();
                        queue.extend(self.session.on_sotw_request(request));
                        spent += t.elapsed();
                    }
                }
            }
        }
        Ok(spent)
    }

    pub(crate) fn push(&mut self, snapshot: &Arc<xds::Snapshot>) -> Result<Duration> {
        let t = Instant::now();
        let out = self.session.on_snapshot(snapshot.clone());
        let spent = t.elapsed();
        ensure!(!out.is_empty(), "the in-process push produced no response");
        Ok(spent + self.drive(out)?)
    }
}

pub(crate) fn bench_engine(model: &Arc<Index>, mesh: &SyntheticMesh, api: Api, classes: usize) -> Result<EngineResult> {
    use control_plane::model::MeshObject;
    use control_plane::translate::{InterceptionMode, ProxyClass};

    // The same two changes the network phase makes, applied to the model directly.
    let s = 1 % mesh.services;
    let ns = mesh.namespace_of(s).to_owned();
    let mut moved = (**model).clone();
    let pod = moved.pods.get(&(ns.clone(), format!("{}-0", SyntheticMesh::service_name(s)))).context("pod 0")?;
    let mut pod = (**pod).clone();
    pod.ip = Some("10.127.255.1".parse()?);
    moved.apply(MeshObject::Pod(pod));
    let mut rerouted = (**model).clone();
    let key = (mesh.namespace_of(0).to_owned(), SyntheticMesh::service_name(0));
    let mut vs = (**rerouted.virtual_services.get(&key).context("VirtualService 0")?).clone();
    let split = vs.http.last_mut().context("split route")?;
    split.route[0].weight = 70;
    split.route[1].weight = 30;
    rerouted.apply(MeshObject::VirtualService(vs));
    let meshes: Vec<Arc<MeshConfig>> = [model.clone(), Arc::new(rerouted), Arc::new(moved)]
        .into_iter()
        .map(|m| Arc::new(MeshConfig::build(m, &MeshSettings::default())))
        .collect();

    let class = |i: usize| ProxyClass {
        namespace: mesh.namespace_of(i % mesh.services).to_owned(),
        mode: InterceptionMode::None,
        ip: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0001 + i as u32))),
        labels: Default::default(),
        kind: Default::default(),
        locality: Default::default(),
    };
    let snaps: Vec<Arc<xds::Snapshot>> = meshes.iter().map(|m| Arc::new(m.proxy_snapshot(&class(0)))).collect();

    let xapi = match api {
        Api::Delta => xds::XdsApi::Delta,
        Api::Sotw => xds::XdsApi::StateOfTheWorld,
    };
    let registry = xds::ConnectionRegistry::new();
    let mut runs = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..20 {
        let registered = registry.register(format!("proxy-0.{ns}"), xapi, None);
        let session = xds::session::Session::new(xapi, registered.status.clone(), registry.clone());
        let mut p = EngineProxy { session, logic: ProxyLogic::default(), _registered: registered };
        let mut spent = Duration::ZERO;
        let t = Instant::now();
        p.session.on_snapshot(snaps[0].clone());
        let node = node(&ClientSpec {
            index: 0,
            node_id: format!("proxy-0.{ns}"),
            namespace: ns.clone(),
            app: "app".into(),
            version: "v1".into(),
            mode: Mode::Explicit,
            ip: "127.0.0.1".into(),
            uri: String::new(),
            api,
        });
        let first = match api {
            Api::Delta => p.session.on_delta_request(p.logic.first_delta(node)),
            Api::Sotw => p.session.on_sotw_request(p.logic.first_sotw(node)),
        };
        spent += t.elapsed();
        spent += p.drive(first)?;
        runs[0].push(spent.as_secs_f64() * 1e6);
        runs[1].push(p.push(&snaps[1])?.as_secs_f64() * 1e6);
        runs[2].push(p.push(&snaps[2])?.as_secs_f64() * 1e6);
    }

    // Publishing a translation to `classes` proxy classes (one per proxy in explicit mode).
    let distributor = control_plane::push::Distributor::new();
    distributor.publish(meshes[0].clone());
    let watches: Vec<_> = (0..classes).map(|i| distributor.watch_class(class(i))).collect();
    let fresh = Arc::new(MeshConfig::build(meshes[2].model().clone(), &MeshSettings::default()));
    let t = Instant::now();
    distributor.publish(fresh);
    let publish_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(watches);

    let [mut initial, mut route, mut endpoint] = runs;
    Ok(EngineResult {
        initial_us: median(&mut initial),
        route_push_us: median(&mut route),
        endpoint_push_us: median(&mut endpoint),
        publish_ms,
        classes,
    })
}
