//! Simulated Envoy ADS clients (delta and state of the world) over loopback.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Cds = 0,
    Eds = 1,
    Lds = 2,
    Rds = 3,
}

impl Ty {
    const ALL: [Ty; 4] = [Ty::Cds, Ty::Eds, Ty::Lds, Ty::Rds];

    pub(crate) fn url(self) -> &'static str {
        use xds::ResourceType as R;
        match self {
            Ty::Cds => R::Cluster.type_url(),
            Ty::Eds => R::ClusterLoadAssignment.type_url(),
            Ty::Lds => R::Listener.type_url(),
            Ty::Rds => R::RouteConfiguration.type_url(),
        }
    }

    pub(crate) fn from_url(url: &str) -> Result<Ty> {
        Ty::ALL.into_iter().find(|t| t.url() == url).ok_or_else(|| anyhow!("unexpected type_url {url:?}"))
    }
}

pub(crate) enum Event {
    Received { ty: Ty, bytes: usize },
    Acked { client: usize, ty: Ty, version: String, at: Instant },
    Failed { client: usize, error: String },
}

pub(crate) struct ClientSpec {
    pub(crate) index: usize,
    pub(crate) node_id: String,
    pub(crate) namespace: String,
    pub(crate) app: String,
    pub(crate) version: String,
    pub(crate) mode: Mode,
    pub(crate) ip: String,
    pub(crate) uri: String,
    pub(crate) api: Api,
}

pub(crate) fn node(spec: &ClientSpec) -> Node {
    let s = |v: &str| Value { kind: Some(Kind::StringValue(v.to_owned())) };
    let labels = Struct {
        fields: [("app".to_owned(), s(&spec.app)), ("version".to_owned(), s(&spec.version))].into_iter().collect(),
    };
    let mode = if spec.mode == Mode::Transparent { "REDIRECT" } else { "NONE" };
    let fields = [
        ("NAMESPACE".to_owned(), s(&spec.namespace)),
        ("INSTANCE_IPS".to_owned(), s(&spec.ip)),
        ("INTERCEPTION_MODE".to_owned(), s(mode)),
        ("LABELS".to_owned(), Value { kind: Some(Kind::StructValue(labels)) }),
    ];
    Node {
        id: spec.node_id.clone(),
        cluster: spec.app.clone(),
        user_agent_name: "amime-bench".to_owned(),
        metadata: Some(Struct { fields: fields.into_iter().collect() }),
        ..Default::default()
    }
}

/// The head of a Cluster: only what a client needs to know to subscribe to its EDS.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ClusterHead {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    /// `Cluster.type` (oneof cluster_discovery_type); EDS = 3.
    #[prost(int32, optional, tag = "2")]
    pub(crate) discovery_type: Option<i32>,
    #[prost(message, optional, tag = "3")]
    pub(crate) eds_cluster_config: Option<EdsClusterConfigHead>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EdsClusterConfigHead {
    #[prost(string, tag = "2")]
    pub(crate) service_name: String,
}

/// (cluster name, EDS resource name if the cluster uses EDS).
pub(crate) fn cluster_eds(body: &[u8]) -> Result<(String, Option<String>)> {
    let c = ClusterHead::decode(body).context("decoding a Cluster")?;
    if c.discovery_type != Some(3) {
        return Ok((c.name, None));
    }
    let service = c.eds_cluster_config.map(|e| e.service_name).filter(|s| !s.is_empty());
    let eds = service.unwrap_or_else(|| c.name.clone());
    Ok((c.name, Some(eds)))
}

/// (listener name, the RDS route configuration names its HTTP connection managers use).
pub(crate) fn listener_routes(body: &[u8]) -> Result<(String, BTreeSet<String>)> {
    let l = Listener::decode(body).context("decoding a Listener")?;
    let mut names = BTreeSet::new();
    for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
        for f in &chain.filters {
            let Some(ConfigType::TypedConfig(any)) = &f.config_type else { continue };
            if !any.type_url.ends_with("HttpConnectionManager") {
                continue;
            }
            let hcm =
                HttpConnectionManager::decode(any.value.as_slice()).context("decoding an HttpConnectionManager")?;
            if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                names.insert(rds.route_config_name);
            }
        }
    }
    Ok((l.name, names))
}

/// What one proxy subscribes to, kept like Envoy does: EDS for the EDS clusters it has,
/// RDS for the route configurations its listeners name.
#[derive(Default)]
pub(crate) struct Subscriptions {
    pub(crate) eds_of_cluster: BTreeMap<String, String>,
    pub(crate) routes_of_listener: BTreeMap<String, BTreeSet<String>>,
}

impl Subscriptions {
    pub(crate) fn eds(&self) -> BTreeSet<String> {
        self.eds_of_cluster.values().cloned().collect()
    }
    pub(crate) fn rds(&self) -> BTreeSet<String> {
        self.routes_of_listener.values().flatten().cloned().collect()
    }
}

/// Added and removed names between two subscriptions.
pub(crate) fn delta(old: &BTreeSet<String>, new: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    (new.difference(old).cloned().collect(), old.difference(new).cloned().collect())
}

/// An Envoy-like xDS client without I/O: a response in, the requests it causes out
/// (subscription changes first, then the ACK). Shared by the network clients and the
/// in-process engine measurement.
#[derive(Default)]
pub(crate) struct ProxyLogic {
    pub(crate) subs: Subscriptions,
    pub(crate) lds_requested: bool,
    /// State of the world: (version, nonce) of the last response per type, and the
    /// names subscribed per type.
    pub(crate) last: [(String, String); 4],
    pub(crate) names: [BTreeSet<String>; 4],
}

pub(crate) fn delta_request(ty: Ty, subscribe: Vec<String>, unsubscribe: Vec<String>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: ty.url().to_owned(),
        resource_names_subscribe: subscribe,
        resource_names_unsubscribe: unsubscribe,
        ..Default::default()
    }
}

impl ProxyLogic {
    pub(crate) fn first_delta(&self, node: Node) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest { node: Some(node), ..delta_request(Ty::Cds, Vec::new(), Vec::new()) }
    }

    pub(crate) fn first_sotw(&self, node: Node) -> DiscoveryRequest {
        DiscoveryRequest { node: Some(node), ..self.sotw_request(Ty::Cds) }
    }

    pub(crate) fn sotw_request(&self, ty: Ty) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: self.last[ty as usize].0.clone(),
            response_nonce: self.last[ty as usize].1.clone(),
            resource_names: self.names[ty as usize].iter().cloned().collect(),
            type_url: ty.url().to_owned(),
            ..Default::default()
        }
    }

    pub(crate) fn on_delta(&mut self, r: &DeltaDiscoveryResponse) -> Result<(Ty, Vec<DeltaDiscoveryRequest>)> {
        let ty = Ty::from_url(&r.type_url)?;
        let mut out = Vec::new();
        match ty {
            Ty::Cds => {
                let before = self.subs.eds();
                for res in &r.resources {
                    let Some(any) = &res.resource else { continue };
                    match cluster_eds(&any.value)? {
                        (name, Some(eds)) => self.subs.eds_of_cluster.insert(name, eds),
                        (name, None) => self.subs.eds_of_cluster.remove(&name),
                    };
                }
                for name in &r.removed_resources {
                    self.subs.eds_of_cluster.remove(name);
                }
                let (add, remove) = delta(&before, &self.subs.eds());
                if !add.is_empty() || !remove.is_empty() {
                    out.push(delta_request(Ty::Eds, add, remove));
                }
                if !self.lds_requested && self.subs.eds_of_cluster.is_empty() {
                    self.lds_requested = true;
                    out.push(delta_request(Ty::Lds, Vec::new(), Vec::new()));
                }
            }
            Ty::Eds => {
                // Clusters are warm: Envoy now asks for listeners.
                if !self.lds_requested {
                    self.lds_requested = true;
                    out.push(delta_request(Ty::Lds, Vec::new(), Vec::new()));
                }
            }
            Ty::Lds => {
                let before = self.subs.rds();
                for res in &r.resources {
                    let Some(any) = &res.resource else { continue };
                    let (name, routes) = listener_routes(&any.value)?;
                    self.subs.routes_of_listener.insert(name, routes);
                }
                for name in &r.removed_resources {
                    self.subs.routes_of_listener.remove(name);
                }
                let (add, remove) = delta(&before, &self.subs.rds());
                if !add.is_empty() || !remove.is_empty() {
                    out.push(delta_request(Ty::Rds, add, remove));
                }
            }
            Ty::Rds => {}
        }
        out.push(DeltaDiscoveryRequest {
            response_nonce: r.nonce.clone(),
            ..delta_request(ty, Vec::new(), Vec::new())
        });
        Ok((ty, out))
    }

    pub(crate) fn on_sotw(&mut self, r: &DiscoveryResponse) -> Result<(Ty, Vec<DiscoveryRequest>)> {
        let ty = Ty::from_url(&r.type_url)?;
        let mut follow_up = Vec::new();
        match ty {
            Ty::Cds => {
                // State of the world: the response is every cluster.
                let mut eds = BTreeSet::new();
                for any in &r.resources {
                    if let (_, Some(name)) = cluster_eds(&any.value)? {
                        eds.insert(name);
                    }
                }
                if eds != self.names[Ty::Eds as usize] {
                    self.names[Ty::Eds as usize] = eds;
                    follow_up.push(Ty::Eds);
                }
                if !self.lds_requested && self.names[Ty::Eds as usize].is_empty() {
                    self.lds_requested = true;
                    follow_up.push(Ty::Lds);
                }
            }
            Ty::Eds => {
                if !self.lds_requested {
                    self.lds_requested = true;
                    follow_up.push(Ty::Lds);
                }
            }
            Ty::Lds => {
                let mut rds = BTreeSet::new();
                for any in &r.resources {
                    rds.extend(listener_routes(&any.value)?.1);
                }
                if rds != self.names[Ty::Rds as usize] {
                    self.names[Ty::Rds as usize] = rds;
                    follow_up.push(Ty::Rds);
                }
            }
            Ty::Rds => {}
        }
        let mut out: Vec<DiscoveryRequest> = follow_up.into_iter().map(|t| self.sotw_request(t)).collect();
        self.last[ty as usize] = (r.version_info.clone(), r.nonce.clone());
        out.push(self.sotw_request(ty));
        Ok((ty, out))
    }
}

pub(crate) const REQUEST_BUFFER: usize = 8;

pub(crate) async fn connect(spec: &ClientSpec, gate: &Semaphore) -> Result<AggregatedDiscoveryServiceClient<Channel>> {
    let _permit = gate.acquire().await?;
    let channel = tonic::transport::Endpoint::from_shared(spec.uri.clone())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(30))
        // Envoy's gRPC client uses large HTTP/2 windows; so do we.
        .initial_stream_window_size(Some(16 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .connect()
        .await
        .context("connecting")?;
    Ok(AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20))
}

pub(crate) async fn client(spec: ClientSpec, events: mpsc::UnboundedSender<Event>, gate: Arc<Semaphore>) {
    let result = match spec.api {
        Api::Delta => delta_client(&spec, &events, &gate).await,
        Api::Sotw => sotw_client(&spec, &events, &gate).await,
    };
    let error = match result {
        Ok(()) => "the server closed the stream".to_owned(),
        Err(e) => format!("{e:#}"),
    };
    let _ = events.send(Event::Failed { client: spec.index, error });
}

pub(crate) async fn delta_client(
    spec: &ClientSpec,
    events: &mpsc::UnboundedSender<Event>,
    gate: &Semaphore,
) -> Result<()> {
    let mut ads = connect(spec, gate).await?;
    let mut logic = ProxyLogic::default();
    let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
    tx.send(logic.first_delta(node(spec))).await?;
    let mut stream = ads.delta_aggregated_resources(ReceiverStream::new(rx)).await?.into_inner();
    while let Some(r) = stream.message().await? {
        let (ty, requests) = logic.on_delta(&r)?;
        let _ = events.send(Event::Received { ty, bytes: r.encoded_len() });
        for request in requests {
            tx.send(request).await?;
        }
        let _ =
            events.send(Event::Acked { client: spec.index, ty, version: r.system_version_info, at: Instant::now() });
    }
    Ok(())
}

pub(crate) async fn sotw_client(
    spec: &ClientSpec,
    events: &mpsc::UnboundedSender<Event>,
    gate: &Semaphore,
) -> Result<()> {
    let mut ads = connect(spec, gate).await?;
    let mut logic = ProxyLogic::default();
    let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
    tx.send(logic.first_sotw(node(spec))).await?;
    let mut stream = ads.stream_aggregated_resources(ReceiverStream::new(rx)).await?.into_inner();
    while let Some(r) = stream.message().await? {
        let (ty, requests) = logic.on_sotw(&r)?;
        let _ = events.send(Event::Received { ty, bytes: r.encoded_len() });
        for request in requests {
            tx.send(request).await?;
        }
        let _ = events.send(Event::Acked { client: spec.index, ty, version: r.version_info, at: Instant::now() });
    }
    Ok(())
}
