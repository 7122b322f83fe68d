//! The sidecar's stats tags: labels on Envoy's Prometheus stats (`:15090/stats/prometheus`)
//! taken from meshd's Istio-style cluster names, `outbound|<port>|<subset>|<host>`.
//!
//! Envoy names a cluster's stats `cluster.<cluster name>.<stat>`; its default tag extractor
//! for the cluster name takes one dot-separated token, which cuts a name like
//! `outbound|9080|v2|reviews.bookinfo.svc.cluster.local` after `reviews` and leaves the
//! rest of the host in the metric's name (`envoy_cluster_bookinfo_svc_cluster_local_upstream_rq`).
//! So the bootstrap replaces that one default (`envoy.cluster_name`) and adds the destination
//! tags. Envoy applies its defaults before the configured tags and keeps the first value of a
//! tag name, so replacing one default means turning the defaults off
//! (`use_all_default_tags: false`) and naming every other one ([`ENVOY_DEFAULT_TAGS`]: a
//! tag named without a regex is Envoy's default extractor of that name), as Istio's bootstrap
//! does. The list is Envoy 1.40's; a name Envoy does not know makes it refuse the bootstrap,
//! so every sidecar test checks it.
//!
//!
//! | tag | value for `outbound\|9080\|v2\|reviews.bookinfo.svc.cluster.local` |
//! |---|---|
//! | `envoy_cluster_name` | the whole cluster name |
//! | `destination_service` | `reviews.bookinfo.svc.cluster.local` (the host) |
//! | `destination_service_name` | `reviews` (Kubernetes services, `<name>.<ns>.svc.<domain>`) |
//! | `destination_namespace` | `bookinfo` (Kubernetes services) |
//! | `destination_subset` | `v2` (absent when the cluster has no subset) |
//! | `destination_port` | `9080` |
//!
//! Where does the host end? A stat name is flat, so the end of the host is where the rest
//! of the name is one of the stat shapes Envoy emits for a cluster ([`stat_suffix`]): a
//! word (`upstream_rq_200`, `version`), or a known prefix and a word
//! (`external.upstream_rq_2xx`, `circuit_breakers.default.rq_open`, `ssl.handshake`,
//! `ssl.versions.TLSv1.3`). Host labels never contain `_`, so only a host whose *last*
//! label is one of the prefix words without `_` (`external`, `internal`, `canary`, `http1`,
//! `http2`, `http3`, `ssl`, `default`) can be read wrongly, and then only for stats without
//! such a prefix. Zone stats (`zone.<from>.<to>.…`) are not recognized: sidecars have no
//! locality zone.
//!
//! Envoy applies these regexes (ECMAScript, `std::regex`) to the whole stat name: the first
//! group is removed from the name, the second is the tag's value. They use only what
//! ECMAScript and Rust's `regex` crate read alike (no look-around), so the tests below run
//! them as Envoy does.

use serde_json::{json, Value};

/// Tag of the whole cluster name (replaces Envoy's default extractor of this name).
pub const CLUSTER_NAME_TAG: &str = "envoy.cluster_name";
pub const DESTINATION_SERVICE_TAG: &str = "destination_service";
pub const DESTINATION_SERVICE_NAME_TAG: &str = "destination_service_name";
pub const DESTINATION_NAMESPACE_TAG: &str = "destination_namespace";
pub const DESTINATION_SUBSET_TAG: &str = "destination_subset";
pub const DESTINATION_PORT_TAG: &str = "destination_port";

/// Envoy's default tags (1.40), except `envoy.cluster_name`, which [`stats_tags`] replaces.
pub const ENVOY_DEFAULT_TAGS: [&str; 44] = [
    "envoy.response_code",
    "envoy.response_code_class",
    "envoy.dynamo_partition_id",
    "envoy.dynamo_operation",
    "envoy.mongo_callsite",
    "envoy.dynamo_table",
    "envoy.mongo_collection",
    "envoy.mongo_cmd",
    "envoy.grpc_bridge_method",
    "envoy.http_user_agent",
    "envoy.virtual_cluster",
    "envoy.fault_downstream_cluster",
    "envoy.ssl_cipher",
    "envoy.ssl_curve",
    "envoy.ssl_sigalg",
    "envoy.ssl_version",
    "cipher_suite",
    "envoy.grpc_bridge_service",
    "envoy.tcp_prefix",
    "envoy.udp_prefix",
    "envoy.clientssl_prefix",
    "envoy.ratelimit_prefix",
    "envoy.http_conn_manager_prefix",
    "envoy.ext_authz_prefix",
    "envoy.worker_id",
    "envoy.listener_address",
    "envoy.virtual_host",
    "envoy.mongo_prefix",
    "envoy.rds_route_config",
    "envoy.scoped_rds_config",
    "envoy.route",
    "envoy.thrift_prefix",
    "envoy.redis_prefix",
    "envoy.local_http_ratelimit_prefix",
    "envoy.local_network_ratelimit_prefix",
    "envoy.local_listener_ratelimit_prefix",
    "envoy.dns_filter_prefix",
    "envoy.connection_limit_prefix",
    "envoy.rbac_prefix",
    "envoy.rbac_http_prefix",
    "envoy.rbac_policy_name",
    "envoy.proxy_protocol_prefix",
    "envoy.proxy_protocol_version",
    "envoy.google_grpc_client_prefix",
];

/// One word of a stat name (`upstream_rq_200`, `TLSv1`).
const WORD: &str = "[A-Za-z0-9_]+";

/// What follows `cluster.<name>.` in the name of a cluster stat, to the end.
pub fn stat_suffix() -> String {
    format!(
        "(?:(?:external|internal|canary)\\.upstream_rq_{WORD}\
         |circuit_breakers\\.{WORD}\\.{WORD}\
         |(?:outlier_detection|health_check|client_ssl_socket_factory|http1|http2|http3|default)\\.{WORD}\
         |ssl\\.(?:(?:ciphers|curves|sigalgs|versions)\\.[^|]+|{WORD})\
         |{WORD})$"
    )
}

/// The start of an Istio-style cluster name: direction and port.
const DIRECTION: &str = "(?:outbound|inbound)\\|";

/// `(tag name, regex)` for every tag the bootstrap adds, in the order Envoy applies them.
pub fn stats_tags() -> Vec<(&'static str, String)> {
    let suffix = stat_suffix();
    vec![
        // Any cluster: its name is everything before the stat (shortest match).
        (CLUSTER_NAME_TAG, format!("^cluster\\.((.+?)\\.){suffix}")),
        (DESTINATION_SERVICE_TAG, format!("^cluster\\.({DIRECTION}[0-9]+\\|[^|]*\\|(.+?)\\.){suffix}")),
        (
            DESTINATION_SERVICE_NAME_TAG,
            format!("^cluster\\.({DIRECTION}[0-9]+\\|[^|]*\\|([^.|]+)\\.[^.|]+\\.svc\\..+?\\.){suffix}"),
        ),
        (
            DESTINATION_NAMESPACE_TAG,
            format!("^cluster\\.({DIRECTION}[0-9]+\\|[^|]*\\|[^.|]+\\.([^.|]+)\\.svc\\..+?\\.){suffix}"),
        ),
        (DESTINATION_SUBSET_TAG, format!("^cluster\\.({DIRECTION}[0-9]+\\|([^|]+)\\|)")),
        (DESTINATION_PORT_TAG, format!("^cluster\\.({DIRECTION}([0-9]+)\\|)")),
    ]
}

/// The bootstrap's `stats_config`: the cluster name's tag, Envoy's other default tags, and
/// the destination tags.
pub fn stats_config() -> Value {
    let mut tags: Vec<Value> =
        stats_tags().into_iter().map(|(name, regex)| json!({ "tag_name": name, "regex": regex })).collect();
    let defaults = ENVOY_DEFAULT_TAGS.iter().map(|name| json!({ "tag_name": name }));
    tags.splice(1..1, defaults);
    json!({ "use_all_default_tags": false, "stats_tags": tags })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Envoy makes of `stat` with these tags alone: the tags it carries and the name
    /// left once every tag's first group is removed (Envoy's other default tags, applied
    /// to the same name, only remove more).
    fn extract(stat: &str) -> (Vec<(&'static str, String)>, String) {
        let mut tags = Vec::new();
        let mut removed = vec![false; stat.len()];
        for (name, pattern) in stats_tags() {
            let re = regex::Regex::new(&pattern).unwrap_or_else(|e| panic!("{name}: {e}"));
            let Some(c) = re.captures(stat) else { continue };
            let remove = c.get(1).expect("a first group");
            let value = c.get(2).unwrap_or(remove);
            tags.push((name, value.as_str().to_owned()));
            removed[remove.range()].iter_mut().for_each(|r| *r = true);
        }
        let rest: String = stat.char_indices().filter(|(i, _)| !removed[*i]).map(|(_, c)| c).collect();
        (tags, rest)
    }

    const REVIEWS_V2: &str = "outbound|9080|v2|reviews.bookinfo.svc.cluster.local";

    /// Stat names as real Envoy (1.40) emits them for clusters: plain, response-code,
    /// internal/external, circuit breaker, outlier, health check, TLS and HTTP/2 stats.
    const SUFFIXES: [&str; 14] = [
        "upstream_rq_total",
        "upstream_rq_200",
        "upstream_rq_5xx",
        "external.upstream_rq_503",
        "internal.upstream_rq_completed",
        "version",
        "circuit_breakers.default.rq_pending_open",
        "outlier_detection.ejections_active",
        "health_check.attempt",
        "client_ssl_socket_factory.ssl_context_update_by_sds",
        "default.total_match_count",
        "ssl.handshake",
        "ssl.versions.TLSv1.3",
        "http2.rx_reset",
    ];

    #[test]
    fn istio_cluster_names_become_destination_tags_for_every_stat_shape() {
        for suffix in SUFFIXES {
            let stat = format!("cluster.{REVIEWS_V2}.{suffix}");
            let (tags, rest) = extract(&stat);
            assert_eq!(
                tags,
                [
                    (CLUSTER_NAME_TAG, REVIEWS_V2.to_owned()),
                    (DESTINATION_SERVICE_TAG, "reviews.bookinfo.svc.cluster.local".to_owned()),
                    (DESTINATION_SERVICE_NAME_TAG, "reviews".to_owned()),
                    (DESTINATION_NAMESPACE_TAG, "bookinfo".to_owned()),
                    (DESTINATION_SUBSET_TAG, "v2".to_owned()),
                    (DESTINATION_PORT_TAG, "9080".to_owned()),
                ],
                "{stat}"
            );
            assert_eq!(rest, format!("cluster.{suffix}"), "{stat}");
        }
    }

    #[test]
    fn names_without_a_subset_or_outside_kubernetes_get_the_tags_they_have() {
        let table: [(&str, &[(&str, &str)]); 5] = [
            (
                "cluster.outbound|9080||ratings.default.svc.cluster.local.upstream_rq_2xx",
                &[
                    (CLUSTER_NAME_TAG, "outbound|9080||ratings.default.svc.cluster.local"),
                    (DESTINATION_SERVICE_TAG, "ratings.default.svc.cluster.local"),
                    (DESTINATION_SERVICE_NAME_TAG, "ratings"),
                    (DESTINATION_NAMESPACE_TAG, "default"),
                    (DESTINATION_PORT_TAG, "9080"),
                ],
            ),
            // A ServiceEntry host: no namespace in it. `internal` as a last label is read
            // right for stats that are not `upstream_rq_*`.
            (
                "cluster.outbound|5432||db.corp.internal.upstream_cx_total",
                &[
                    (CLUSTER_NAME_TAG, "outbound|5432||db.corp.internal"),
                    (DESTINATION_SERVICE_TAG, "db.corp.internal"),
                    (DESTINATION_PORT_TAG, "5432"),
                ],
            ),
            (
                "cluster.outbound|443||*.example.com.external.upstream_rq_xx",
                &[
                    (CLUSTER_NAME_TAG, "outbound|443||*.example.com"),
                    (DESTINATION_SERVICE_TAG, "*.example.com"),
                    (DESTINATION_PORT_TAG, "443"),
                ],
            ),
            // meshd's other clusters keep the name Envoy's default gave them.
            ("cluster.PassthroughCluster.upstream_rq_200", &[(CLUSTER_NAME_TAG, "PassthroughCluster")]),
            ("cluster.xds-grpc.upstream_cx_rx_bytes_total", &[(CLUSTER_NAME_TAG, "xds-grpc")]),
        ];
        for (stat, want) in table {
            let (tags, _) = extract(stat);
            let want: Vec<(&str, String)> = want.iter().map(|(n, v)| (*n, (*v).to_owned())).collect();
            assert_eq!(tags, want, "{stat}");
        }
    }

    #[test]
    fn other_stats_are_left_alone() {
        for stat in [
            "http.outbound_15001.downstream_rq_2xx",
            "listener.127.0.0.1_15001.downstream_cx_total",
            "cluster_manager.cds.update_success",
            "server.live",
        ] {
            assert_eq!(extract(stat), (vec![], stat.to_owned()), "{stat}");
        }
    }

    #[test]
    fn stats_config_names_every_default_tag_but_the_cluster_name_once() {
        let config = stats_config();
        assert_eq!(config["use_all_default_tags"], false);
        let tags = config["stats_tags"].as_array().unwrap();
        let names: Vec<&str> = tags.iter().map(|t| t["tag_name"].as_str().unwrap()).collect();
        assert_eq!(names[0], CLUSTER_NAME_TAG);
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "a tag named twice: {names:?}");
        assert_eq!(names.len(), ENVOY_DEFAULT_TAGS.len() + stats_tags().len());
        // Envoy's defaults carry no regex (Envoy's own is used); ours all do.
        let with_regex = tags.iter().filter(|t| t.get("regex").is_some()).count();
        assert_eq!(with_regex, stats_tags().len());
    }
}
