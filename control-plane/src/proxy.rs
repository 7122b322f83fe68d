//! A proxy's identity, read from the Envoy `Node` of its first xDS request
//! (MISSION §2: `node.id` = `<pod>.<namespace>`, metadata `NAMESPACE`, `LABELS`,
//! `INSTANCE_IPS`, `SERVICE_ACCOUNT`, `INTERCEPTION_MODE`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind as ValueKind, Struct};

use injector::node_metadata as keys;

use crate::model::locality::{pod_locality, Locality};
use crate::model::Labels;
use crate::translate::{InterceptionMode, ProxyClass, ProxyKind};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProxyError {
    #[error("node.id {0:?} is not <pod-name>.<namespace>")]
    BadId(String),
    #[error("node.metadata.{field}: {message}")]
    BadMetadata { field: &'static str, message: String },
}

/// Who a proxy is and how it intercepts traffic.
#[derive(Clone, Debug, PartialEq)]
pub struct Proxy {
    pub id: String,
    pub pod_name: String,
    pub namespace: String,
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    pub service_account: String,
    pub mode: InterceptionMode,
    /// Sidecar, or ingress gateway (`PROXY_TYPE=router`).
    pub kind: ProxyKind,
    /// Envoy's `node.locality` (`meshctl bootstrap --locality`), else the workload's
    /// `istio-locality` label (as its endpoints get it); empty when neither is set (the
    /// push then looks for the proxy's pod and its Node).
    pub locality: Locality,
}

fn string_field(meta: &Struct, field: &'static str) -> Result<Option<String>, ProxyError> {
    match meta.fields.get(field).and_then(|v| v.kind.as_ref()) {
        None | Some(ValueKind::NullValue(_)) => Ok(None),
        Some(ValueKind::StringValue(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ProxyError::BadMetadata { field, message: "must be a string".into() }),
    }
}

impl Proxy {
    pub fn from_node(node: &Node) -> Result<Proxy, ProxyError> {
        let (pod_name, id_namespace) = node
            .id
            .rsplit_once('.')
            .filter(|(p, n)| !p.is_empty() && !n.is_empty())
            .ok_or_else(|| ProxyError::BadId(node.id.clone()))?;
        let empty = Struct::default();
        let meta = node.metadata.as_ref().unwrap_or(&empty);
        let namespace = string_field(meta, keys::NAMESPACE)?.unwrap_or_else(|| id_namespace.to_owned());
        if namespace != id_namespace {
            return Err(ProxyError::BadMetadata {
                field: keys::NAMESPACE,
                message: format!("{namespace:?} differs from the namespace in node.id {:?}", node.id),
            });
        }
        let mut labels = BTreeMap::new();
        match meta.fields.get(keys::LABELS).and_then(|v| v.kind.as_ref()) {
            None | Some(ValueKind::NullValue(_)) => {}
            Some(ValueKind::StructValue(s)) => {
                for (k, v) in &s.fields {
                    match &v.kind {
                        Some(ValueKind::StringValue(val)) => {
                            labels.insert(k.clone(), val.clone());
                        }
                        _ => {
                            return Err(ProxyError::BadMetadata {
                                field: keys::LABELS,
                                message: format!("label {k:?} must be a string"),
                            })
                        }
                    }
                }
            }
            Some(_) => {
                return Err(ProxyError::BadMetadata { field: keys::LABELS, message: "must be a map of strings".into() })
            }
        }
        let ips = match string_field(meta, keys::INSTANCE_IPS)? {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpAddr>().map_err(|_| ProxyError::BadMetadata {
                        field: keys::INSTANCE_IPS,
                        message: format!("{s:?} is not an IP address"),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        if ips.is_empty() {
            return Err(ProxyError::BadMetadata {
                field: keys::INSTANCE_IPS,
                message: "at least one IP is required".into(),
            });
        }
        let mode = match string_field(meta, keys::INTERCEPTION_MODE)?.as_deref() {
            None => InterceptionMode::Redirect,
            Some(value) => InterceptionMode::from_metadata_value(value).ok_or_else(|| ProxyError::BadMetadata {
                field: keys::INTERCEPTION_MODE,
                message: format!("{value:?} is not REDIRECT or NONE"),
            })?,
        };
        let kind = match string_field(meta, keys::PROXY_TYPE)?.as_deref() {
            None => ProxyKind::Sidecar,
            Some(value) => ProxyKind::from_metadata_value(value).ok_or_else(|| ProxyError::BadMetadata {
                field: keys::PROXY_TYPE,
                message: format!("{value:?} is not sidecar or router"),
            })?,
        };
        let locality = node
            .locality
            .as_ref()
            .map(|l| Locality { region: l.region.clone(), zone: l.zone.clone(), subzone: l.sub_zone.clone() })
            .filter(|l| !l.is_empty())
            .or_else(|| pod_locality(&labels))
            .unwrap_or_default();
        Ok(Proxy {
            id: node.id.clone(),
            pod_name: pod_name.to_owned(),
            namespace,
            labels,
            ips,
            service_account: string_field(meta, keys::SERVICE_ACCOUNT)?.unwrap_or_else(|| "default".into()),
            mode,
            kind,
            locality,
        })
    }

    /// What `/debug/proxies` shows of the proxy beside its xDS state.
    pub fn details(&self) -> std::collections::BTreeMap<String, String> {
        let ips: Vec<String> = self.ips.iter().map(ToString::to_string).collect();
        [
            ("instance_ips", ips.join(",")),
            ("namespace", self.namespace.clone()),
            ("interception_mode", self.mode.metadata_value().to_owned()),
            ("proxy_type", self.kind.name().to_owned()),
            ("locality", self.locality.to_string()),
            ("service_account", self.service_account.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The part of the identity the translator depends on.
    pub fn class(&self) -> ProxyClass {
        ProxyClass {
            namespace: self.namespace.clone(),
            mode: self.mode,
            ip: (self.mode == InterceptionMode::None).then_some(self.ips[0]),
            labels: self.labels.clone(),
            kind: self.kind,
            locality: self.locality.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Value;

    fn s(v: &str) -> Value {
        Value { kind: Some(ValueKind::StringValue(v.into())) }
    }

    fn node(id: &str, fields: &[(&str, Value)]) -> Node {
        Node {
            id: id.into(),
            metadata: Some(Struct { fields: fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect() }),
            ..Default::default()
        }
    }

    #[test]
    fn parses_identity_and_rejects_bad_metadata() {
        let labels = Value {
            kind: Some(ValueKind::StructValue(Struct {
                fields: [("app".to_string(), s("reviews"))].into_iter().collect(),
            })),
        };
        let p = Proxy::from_node(&node(
            "reviews-v1.bookinfo",
            &[("INSTANCE_IPS", s("127.0.10.11")), ("INTERCEPTION_MODE", s("NONE")), ("LABELS", labels)],
        ))
        .unwrap();
        assert_eq!(
            (p.pod_name.as_str(), p.namespace.as_str(), p.mode),
            ("reviews-v1", "bookinfo", InterceptionMode::None)
        );
        assert_eq!(p.labels.get("app").map(String::as_str), Some("reviews"));

        type Case<'a> = (&'a str, &'a [(&'a str, Value)], &'a str);
        let cases: &[Case<'_>] = &[
            ("nodot", &[("INSTANCE_IPS", s("127.0.0.1"))], "node.id"),
            ("a.b", &[], "INSTANCE_IPS"),
            ("a.b", &[("INSTANCE_IPS", s("not-an-ip"))], "INSTANCE_IPS"),
            ("a.b", &[("INSTANCE_IPS", s("127.0.0.1")), ("INTERCEPTION_MODE", s("TPROXY"))], "INTERCEPTION_MODE"),
            ("a.b", &[("INSTANCE_IPS", s("127.0.0.1")), ("NAMESPACE", s("c"))], "NAMESPACE"),
            ("a.b", &[("INSTANCE_IPS", s("127.0.0.1")), ("PROXY_TYPE", s("gateway"))], "PROXY_TYPE"),
        ];
        for (id, fields, want) in cases {
            let err = Proxy::from_node(&node(id, fields)).unwrap_err().to_string();
            assert!(err.contains(want), "{id}: {err}");
        }
    }

    #[test]
    fn replicas_share_a_class_under_capture_but_not_as_explicit_proxies() {
        let labels = || Value {
            kind: Some(ValueKind::StructValue(Struct {
                fields: [("app".to_string(), s("reviews"))].into_iter().collect(),
            })),
        };
        let class = |id: &str, ip: &str, mode: &str| {
            let fields = [("INSTANCE_IPS", s(ip)), ("INTERCEPTION_MODE", s(mode)), ("LABELS", labels())];
            Proxy::from_node(&node(id, &fields)).unwrap().class()
        };
        // Capture listeners bind the wildcard address: the pod IP is not part of the config.
        assert_eq!(class("r-1.bookinfo", "10.0.0.1", "REDIRECT"), class("r-2.bookinfo", "10.0.0.2", "REDIRECT"));
        assert_eq!(class("r-1.bookinfo", "10.0.0.1", "REDIRECT").ip, None);
        // An explicit proxy listens on its own IP.
        assert_ne!(class("r-1.bookinfo", "10.0.0.1", "NONE"), class("r-2.bookinfo", "10.0.0.2", "NONE"));
    }

    #[test]
    fn gateways_are_told_apart_from_sidecars() {
        let fields = |kind: Option<&str>| {
            let mut f = vec![("INSTANCE_IPS", s("10.0.0.1"))];
            f.extend(kind.map(|k| ("PROXY_TYPE", s(k))));
            f
        };
        let kind = |k: Option<&str>| Proxy::from_node(&node("gw-1.ingress", &fields(k))).unwrap().class().kind;
        assert_eq!(kind(None), ProxyKind::Sidecar);
        assert_eq!(kind(Some("sidecar")), ProxyKind::Sidecar);
        assert_eq!(kind(Some("router")), ProxyKind::Gateway);
        // Gateway replicas under capture share one class (and one snapshot).
        let replica = |id: &str, ip: &str| {
            let f = [("INSTANCE_IPS", s(ip)), ("PROXY_TYPE", s("router"))];
            Proxy::from_node(&node(id, &f)).unwrap().class()
        };
        assert_eq!(replica("gw-1.ingress", "10.0.0.1"), replica("gw-2.ingress", "10.0.0.2"));
    }

    #[test]
    fn the_locality_is_the_nodes_else_the_workload_label() {
        use envoy_types::pb::envoy::config::core::v3::Locality as PbLocality;
        let labels = Value {
            kind: Some(ValueKind::StructValue(Struct {
                fields: [("istio-locality".to_string(), s("r2.z2"))].into_iter().collect(),
            })),
        };
        let mut n = node("a.b", &[("INSTANCE_IPS", s("10.0.0.1")), ("LABELS", labels)]);
        let locality = |n: &Node| Proxy::from_node(n).unwrap().class().locality.to_string();
        assert_eq!(locality(&n), "r2/z2");
        n.locality = Some(PbLocality { region: "r1".into(), zone: "z1".into(), sub_zone: "s1".into() });
        assert_eq!(locality(&n), "r1/z1/s1");
        assert_eq!(locality(&node("a.b", &[("INSTANCE_IPS", s("10.0.0.1"))])), "");
    }
}
