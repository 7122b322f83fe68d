//! The admin API (`amime.admin.v1.Admin`, see `proto/amime/admin/v1/admin.proto`),
//! served on the gRPC port beside ADS: what `meshctl proxy-status`, `proxy-config` and
//! `version` read.
//!
//! It keeps nothing of its own. Proxy status is the per-connection state the xDS engine
//! keeps ([`xds::ConnectionRegistry`], the same that `/debug/proxies` shows); a config
//! dump is assembled on request from the resource sets the proxies share.

use std::time::{Duration, SystemTime};

use envoy_types::pb::google::protobuf::{Duration as PbDuration, Timestamp};
use proto::admin::{
    self as pb, admin_server::Admin, ConfigDump, DumpedResource, GetConfigDumpRequest, GetServerInfoRequest,
    ListProxiesRequest, ListProxiesResponse, ServerInfo, TypedResources,
};
use tonic::{Request, Response, Status};
use xds::{ConnectionStatus, ResourceType, SyncState, TypeStatus, XdsApi};

use crate::monitoring::Monitored;

/// Where meshd's configuration comes from, for [`ServerInfo`].
#[derive(Clone, Debug)]
pub struct SourceInfo {
    /// `config-dir` or `kubernetes`.
    pub kind: &'static str,
    /// The directory, for `config-dir`.
    pub detail: String,
}

/// The admin service. Cheap to clone.
#[derive(Clone)]
pub struct AdminApi {
    monitored: Monitored,
    source: SourceInfo,
    started_at: SystemTime,
}

impl AdminApi {
    pub fn new(monitored: Monitored, source: SourceInfo) -> AdminApi {
        AdminApi { monitored, source, started_at: SystemTime::now() }
    }

    /// The service, ready for `tonic::transport::Server::add_service`.
    pub fn into_service(self) -> proto::admin::admin_server::AdminServer<AdminApi> {
        proto::admin::admin_server::AdminServer::new(self)
    }
}

fn timestamp_ms(ms: u64) -> Timestamp {
    Timestamp { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

fn timestamp(t: SystemTime) -> Timestamp {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp { seconds: since.as_secs() as i64, nanos: since.subsec_nanos() as i32 }
}

fn duration(d: Duration) -> PbDuration {
    PbDuration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

fn sync_state(state: SyncState) -> pb::SyncState {
    match state {
        SyncState::Synced => pb::SyncState::Synced,
        SyncState::NotSent => pb::SyncState::NotSent,
        SyncState::Stale => pb::SyncState::Stale,
        SyncState::Nacked => pb::SyncState::Nacked,
    }
}

/// A type's state as the admin API says it: clusters acknowledged while some of them
/// wait for endpoints the proxy has not subscribed to are WARMING, not SYNCED.
pub fn type_state(ty: ResourceType, status: &TypeStatus, endpoints_not_subscribed: usize) -> pb::SyncState {
    match status.sync_state() {
        SyncState::Synced if ty == ResourceType::Cluster && endpoints_not_subscribed > 0 => pb::SyncState::Warming,
        state => sync_state(state),
    }
}

/// One type's status on the wire.
pub fn type_status(ty: ResourceType, status: &TypeStatus, endpoints_not_subscribed: usize) -> pb::TypeStatus {
    pb::TypeStatus {
        type_url: ty.type_url().to_owned(),
        short_name: ty.short_name().to_owned(),
        state: type_state(ty, status, endpoints_not_subscribed) as i32,
        sent_version: status.sent_version.clone().unwrap_or_default(),
        sent_nonce: status.sent_nonce.clone().unwrap_or_default(),
        sent_at: status.sent_at_ms.map(timestamp_ms),
        acked_version: status.acked_version.clone().unwrap_or_default(),
        acked_at: status.acked_at_ms.map(timestamp_ms),
        desired_version: status.desired_version.clone().unwrap_or_default(),
        nack: status.last_nack.as_ref().map(|n| pb::Nack {
            rejected_version: n.rejected_version.clone(),
            nonce: n.nonce.clone(),
            message: n.message.clone(),
            at: Some(timestamp_ms(n.at_ms)),
        }),
        resource_count: status.resource_count as u64,
    }
}

/// One connection's status on the wire; `duplicate` when another live stream has its id.
pub fn proxy_status(conn: &ConnectionStatus, duplicate: bool) -> pb::ProxyStatus {
    let unsubscribed = conn.unsubscribed_endpoints();
    let types: Vec<pb::TypeStatus> =
        conn.types().iter().map(|(ty, status)| type_status(*ty, status, unsubscribed)).collect();
    // The worst type; WARMING ranks between SYNCED and the rest.
    let rank = |s: pb::SyncState| match s {
        pb::SyncState::Synced | pb::SyncState::Unspecified => 0,
        pb::SyncState::Warming => 1,
        pb::SyncState::NotSent | pb::SyncState::Stale => 2,
        pb::SyncState::Nacked => 3,
    };
    let worst = types.iter().map(|t| t.state()).max_by_key(|s| rank(*s)).unwrap_or(pb::SyncState::NotSent);
    let state = match worst {
        pb::SyncState::Synced if unsubscribed > 0 => pb::SyncState::Warming,
        pb::SyncState::NotSent => pb::SyncState::Stale,
        other => other,
    };
    let detail = |key: &str| conn.details.get(key).cloned().unwrap_or_default();
    pb::ProxyStatus {
        id: conn.node_id.clone(),
        connection_id: conn.id,
        namespace: detail("namespace"),
        interception_mode: detail("interception_mode"),
        xds_api: match conn.api {
            XdsApi::StateOfTheWorld => pb::XdsApi::Sotw,
            XdsApi::Delta => pb::XdsApi::Delta,
        } as i32,
        connected_at: Some(timestamp_ms(conn.connected_at_ms)),
        peer_address: conn.peer.clone().unwrap_or_default(),
        state: state as i32,
        duplicate_id: duplicate,
        endpoints_not_subscribed: unsubscribed as u64,
        types,
        details: conn.details.clone().into_iter().collect(),
    }
}

/// The resources last sent to `conn` of the types asked for (all when `type_urls` is empty).
pub fn config_dump(conn: &ConnectionStatus, type_urls: &[String]) -> ConfigDump {
    let unsubscribed = conn.unsubscribed_endpoints();
    let types = conn
        .types()
        .iter()
        .filter(|(ty, _)| type_urls.is_empty() || type_urls.iter().any(|u| u == ty.type_url()))
        .map(|(ty, status)| TypedResources {
            type_url: ty.type_url().to_owned(),
            short_name: ty.short_name().to_owned(),
            state: type_state(*ty, status, unsubscribed) as i32,
            version: status.sent_version.clone().unwrap_or_default(),
            resources: status
                .sent_resources()
                .map(|r| DumpedResource {
                    name: r.name().to_owned(),
                    version: r.version().to_owned(),
                    // Private keys (gateway certificates) are never shown.
                    resource: Some(crate::translate::gateway_tls::redact(r.body())),
                })
                .collect(),
        })
        .collect();
    ConfigDump { proxy_id: conn.node_id.clone(), connection_id: conn.id, types }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn list_proxies(
        &self,
        request: Request<ListProxiesRequest>,
    ) -> Result<Response<ListProxiesResponse>, Status> {
        let request = request.into_inner();
        let connections = self.monitored.registry.connections();
        let proxies = connections
            .iter()
            .enumerate()
            .filter(|(_, c)| request.proxy_id.is_empty() || c.node_id == request.proxy_id)
            .filter(|(_, c)| request.namespace.is_empty() || c.details.get("namespace") == Some(&request.namespace))
            .map(|(i, c)| {
                // Connections are ordered by node id: a shared id has a neighbour.
                let same = |j: usize| connections.get(j).is_some_and(|o| o.node_id == c.node_id);
                proxy_status(c, i.checked_sub(1).is_some_and(same) || same(i + 1))
            })
            .collect();
        Ok(Response::new(ListProxiesResponse { proxies }))
    }

    async fn get_config_dump(&self, request: Request<GetConfigDumpRequest>) -> Result<Response<ConfigDump>, Status> {
        let request = request.into_inner();
        for url in &request.type_urls {
            if ResourceType::from_type_url(url).is_none() {
                return Err(Status::invalid_argument(format!("type_urls: {url:?} is not a type meshd serves")));
            }
        }
        // The newest stream of that id (an older one with the same id is on its way out).
        let conn = self.monitored.registry.connections().into_iter().filter(|c| c.node_id == request.proxy_id).last();
        match conn {
            Some(conn) => Ok(Response::new(config_dump(&conn, &request.type_urls))),
            None => Err(Status::not_found(format!("proxy_id: no proxy {:?} is connected", request.proxy_id))),
        }
    }

    async fn get_server_info(&self, _: Request<GetServerInfoRequest>) -> Result<Response<ServerInfo>, Status> {
        Ok(Response::new(ServerInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: Some(timestamp(self.started_at)),
            uptime: Some(duration(self.started_at.elapsed().unwrap_or_default())),
            source_kind: self.source.kind.to_owned(),
            source_detail: self.source.detail.clone(),
            proxies_connected: xds::XdsStats::get(&self.monitored.registry.stats().connected),
            ready: self.monitored.ready(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use envoy_types::pb::google::protobuf::Any;
    use xds::status::Nack;
    use xds::{ConnectionRegistry, Resource, ResourceSet, Subscribed};

    use super::*;

    fn set(ty: ResourceType, names: &[&str]) -> Arc<ResourceSet> {
        let body = |n: &str| Any { type_url: ty.type_url().into(), value: n.as_bytes().to_vec() };
        Arc::new(ResourceSet::new(names.iter().map(|n| Arc::new(Resource::new(*n, body(n))))))
    }

    fn sent(s: &mut TypeStatus, version: &str, acked: bool) {
        s.sent_version = Some(version.into());
        s.sent_nonce = Some("1".into());
        if acked {
            s.acked_version = Some(version.into());
            s.acked_nonce = Some("1".into());
        }
    }

    #[test]
    fn acknowledged_clusters_waiting_for_endpoints_are_warming_not_synced() {
        let mut status = TypeStatus::default();
        sent(&mut status, "v", true);
        assert_eq!(type_state(ResourceType::Cluster, &status, 0), pb::SyncState::Synced);
        assert_eq!(type_state(ResourceType::Cluster, &status, 2), pb::SyncState::Warming);
        assert_eq!(type_state(ResourceType::Listener, &status, 2), pb::SyncState::Synced);
        status.last_nack =
            Some(Nack { rejected_version: "w".into(), nonce: "2".into(), message: "bad".into(), at_ms: 1 });
        let wire = type_status(ResourceType::Cluster, &status, 0);
        assert_eq!(wire.state(), pb::SyncState::Nacked);
        assert_eq!(wire.nack.map(|n| (n.rejected_version, n.message)), Some(("w".into(), "bad".into())));
        assert_eq!(type_state(ResourceType::RouteConfiguration, &TypeStatus::default(), 0), pb::SyncState::NotSent);
    }

    #[test]
    fn a_proxy_is_as_synced_as_its_worst_type_and_shared_ids_are_flagged() {
        let registry = ConnectionRegistry::new();
        let details = [("namespace".to_owned(), "ns".to_owned()), ("interception_mode".to_owned(), "NONE".to_owned())];
        let conn = registry.register_with("a.ns".into(), XdsApi::Delta, Some("127.0.0.1:9".into()), details.into());
        conn.status.update(ResourceType::Cluster, |s| sent(s, "c", true));
        let status = proxy_status(&conn.status, false);
        assert_eq!(
            (status.state(), status.namespace.as_str(), status.xds_api()),
            (pb::SyncState::Synced, "ns", pb::XdsApi::Delta)
        );
        conn.status.update(ResourceType::Listener, |s| sent(s, "l", false));
        assert_eq!(proxy_status(&conn.status, false).state(), pb::SyncState::Stale);
        conn.status.update(ResourceType::RouteConfiguration, |s| {
            s.last_nack = Some(Nack { rejected_version: "r".into(), nonce: "1".into(), message: "m".into(), at_ms: 0 })
        });
        let status = proxy_status(&conn.status, true);
        assert_eq!(status.state(), pb::SyncState::Nacked);
        assert!(status.duplicate_id);
        let names: Vec<&str> = status.types.iter().map(|t| t.short_name.as_str()).collect();
        assert_eq!(names, ["CDS", "LDS", "RDS"], "push order");
    }

    #[test]
    fn a_config_dump_holds_what_was_sent_and_is_still_subscribed() {
        let registry = ConnectionRegistry::new();
        let conn = registry.register("a.ns".into(), XdsApi::StateOfTheWorld, None);
        let clusters = set(ResourceType::Cluster, &["c1", "c2"]);
        conn.status.update(ResourceType::Cluster, |s| {
            sent(s, clusters.version(), true);
            s.sent_set = Some(clusters.clone());
            s.subscription = Subscribed { wildcard: true, names: Arc::default() };
        });
        let endpoints = set(ResourceType::ClusterLoadAssignment, &["c1", "c2", "other"]);
        conn.status.update(ResourceType::ClusterLoadAssignment, |s| {
            sent(s, endpoints.version(), true);
            s.sent_set = Some(endpoints.clone());
            s.subscription = Subscribed { wildcard: false, names: Arc::new(BTreeSet::from(["c2".to_owned()])) };
        });
        let dump = config_dump(&conn.status, &[]);
        let summary: Vec<(String, Vec<String>)> = dump
            .types
            .iter()
            .map(|t| (t.short_name.clone(), t.resources.iter().map(|r| r.name.clone()).collect()))
            .collect();
        assert_eq!(summary, [("CDS".into(), vec!["c1".into(), "c2".into()]), ("EDS".into(), vec!["c2".into()])]);
        let c1 = &dump.types[0].resources[0];
        assert_eq!(c1.resource.as_ref().map(|a| a.value.as_slice()), Some(&b"c1"[..]));
        assert_eq!(c1.version, clusters.get("c1").unwrap().version());
        let only_eds = config_dump(&conn.status, &[ResourceType::ClusterLoadAssignment.type_url().to_owned()]);
        assert_eq!(only_eds.types.len(), 1);
    }
}
