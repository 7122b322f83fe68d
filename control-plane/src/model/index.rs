//! The model index: the current set of valid objects, plain synchronous state.
//!
//! Sources call [`Index::apply`], [`Index::delete`] and [`Index::reset`]; the push
//! loop takes a cheap [`Index::snapshot`] (maps of `Arc`s) and hands it to the
//! translator.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;

/// All valid objects, by kind. Cloning shares the objects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Index {
    pub namespaces: BTreeMap<String, Arc<Namespace>>,
    pub services: BTreeMap<(String, String), Arc<Service>>,
    pub pods: BTreeMap<(String, String), Arc<Pod>>,
    pub endpoint_slices: BTreeMap<(String, String), Arc<EndpointSlice>>,
    pub virtual_services: BTreeMap<(String, String), Arc<VirtualService>>,
    pub destination_rules: BTreeMap<(String, String), Arc<DestinationRule>>,
    /// Servers of the gateway proxies their selectors match.
    pub gateways: BTreeMap<(String, String), Arc<Gateway>>,
    /// Their hosts join the registry (see `translate::service_entry`).
    pub service_entries: BTreeMap<(String, String), Arc<ServiceEntry>>,
    pub rate_limits: BTreeMap<(String, String), Arc<RateLimit>>,
    /// TLS Secrets (Gateway certificates).
    pub secrets: BTreeMap<(String, String), Arc<Secret>>,
    pub telemetries: BTreeMap<(String, String), Arc<Telemetry>>,
    /// Nodes by name: where the pods on them run (locality).
    pub nodes: BTreeMap<String, Arc<super::locality::Node>>,
}

/// What changed, so callers can skip work when nothing did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Changed,
    Unchanged,
}

fn put<T: PartialEq>(map: &mut BTreeMap<(String, String), Arc<T>>, key: (String, String), value: T) -> Change {
    match map.get(&key) {
        Some(old) if **old == value => Change::Unchanged,
        _ => {
            map.insert(key, Arc::new(value));
            Change::Changed
        }
    }
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Inserts or replaces one object.
    pub fn apply(&mut self, object: MeshObject) -> Change {
        let key = object.key();
        let k = (key.namespace, key.name);
        match object {
            MeshObject::Namespace(o) => match self.namespaces.get(&o.name) {
                Some(old) if **old == o => Change::Unchanged,
                _ => {
                    self.namespaces.insert(o.name.clone(), Arc::new(o));
                    Change::Changed
                }
            },
            MeshObject::Service(o) => put(&mut self.services, k, o),
            MeshObject::Pod(o) => put(&mut self.pods, k, o),
            MeshObject::EndpointSlice(o) => put(&mut self.endpoint_slices, k, o),
            MeshObject::VirtualService(o) => put(&mut self.virtual_services, k, o),
            MeshObject::DestinationRule(o) => put(&mut self.destination_rules, k, o),
            MeshObject::Gateway(o) => put(&mut self.gateways, k, o),
            MeshObject::ServiceEntry(o) => put(&mut self.service_entries, k, o),
            MeshObject::RateLimit(o) => put(&mut self.rate_limits, k, o),
            MeshObject::Secret(o) => put(&mut self.secrets, k, o),
            MeshObject::Telemetry(o) => put(&mut self.telemetries, k, o),
            MeshObject::Node(o) => match self.nodes.get(&o.name) {
                Some(old) if **old == o => Change::Unchanged,
                _ => {
                    self.nodes.insert(o.name.clone(), Arc::new(o));
                    Change::Changed
                }
            },
        }
    }

    /// Removes one object, if present.
    pub fn delete(&mut self, key: &ObjectKey) -> Change {
        let k = (key.namespace.clone(), key.name.clone());
        let removed = match key.kind {
            Kind::Namespace => self.namespaces.remove(&key.name).is_some(),
            Kind::Service => self.services.remove(&k).is_some(),
            Kind::Pod => self.pods.remove(&k).is_some(),
            Kind::EndpointSlice => self.endpoint_slices.remove(&k).is_some(),
            Kind::VirtualService => self.virtual_services.remove(&k).is_some(),
            Kind::DestinationRule => self.destination_rules.remove(&k).is_some(),
            Kind::Gateway => self.gateways.remove(&k).is_some(),
            Kind::ServiceEntry => self.service_entries.remove(&k).is_some(),
            Kind::RateLimit => self.rate_limits.remove(&k).is_some(),
            Kind::Secret => self.secrets.remove(&k).is_some(),
            Kind::Telemetry => self.telemetries.remove(&k).is_some(),
            Kind::Node => self.nodes.remove(&key.name).is_some(),
        };
        if removed {
            Change::Changed
        } else {
            Change::Unchanged
        }
    }

    /// Replaces everything with `objects` (a relist).
    pub fn reset(&mut self, objects: impl IntoIterator<Item = MeshObject>) -> Change {
        let mut fresh = Index::new();
        for o in objects {
            fresh.apply(o);
        }
        if fresh == *self {
            Change::Unchanged
        } else {
            *self = fresh;
            Change::Changed
        }
    }

    /// Makes the index hold exactly `objects`, like [`Index::reset`], but touches only
    /// what differs: objects equal to the ones held are neither copied nor replaced (a
    /// one-file edit in a large directory costs comparisons, not a rebuild).
    pub fn sync_to<'a>(&mut self, objects: impl IntoIterator<Item = &'a MeshObject>) -> Change {
        let mut changed = false;
        let mut seen: BTreeMap<Kind, std::collections::BTreeSet<(&'a str, &'a str)>> = BTreeMap::new();
        for object in objects {
            let (kind, namespace, name) = object.identity();
            seen.entry(kind).or_default().insert((namespace, name));
            if !self.holds(object) {
                changed |= self.apply(object.clone()) == Change::Changed;
            }
        }
        let empty = std::collections::BTreeSet::new();
        let keep = |kind: Kind| seen.get(&kind).unwrap_or(&empty);
        let before = self.len();
        let namespaces = keep(Kind::Namespace);
        self.namespaces.retain(|name, _| namespaces.contains(&("", name.as_str())));
        fn retain<T>(map: &mut BTreeMap<(String, String), Arc<T>>, keep: &std::collections::BTreeSet<(&str, &str)>) {
            map.retain(|(ns, name), _| keep.contains(&(ns.as_str(), name.as_str())));
        }
        retain(&mut self.services, keep(Kind::Service));
        retain(&mut self.pods, keep(Kind::Pod));
        retain(&mut self.endpoint_slices, keep(Kind::EndpointSlice));
        retain(&mut self.virtual_services, keep(Kind::VirtualService));
        retain(&mut self.destination_rules, keep(Kind::DestinationRule));
        retain(&mut self.gateways, keep(Kind::Gateway));
        retain(&mut self.service_entries, keep(Kind::ServiceEntry));
        retain(&mut self.rate_limits, keep(Kind::RateLimit));
        retain(&mut self.secrets, keep(Kind::Secret));
        retain(&mut self.telemetries, keep(Kind::Telemetry));
        let nodes = keep(Kind::Node);
        self.nodes.retain(|name, _| nodes.contains(&("", name.as_str())));
        changed |= self.len() != before;
        if changed {
            Change::Changed
        } else {
            Change::Unchanged
        }
    }

    /// How many objects the index holds.
    pub fn len(&self) -> usize {
        self.namespaces.len()
            + self.services.len()
            + self.pods.len()
            + self.endpoint_slices.len()
            + self.virtual_services.len()
            + self.destination_rules.len()
            + self.gateways.len()
            + self.service_entries.len()
            + self.rate_limits.len()
            + self.secrets.len()
            + self.telemetries.len()
            + self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the index holds exactly this object.
    /// Whether the index holds exactly `object`.
    pub fn holds(&self, object: &MeshObject) -> bool {
        fn same<T: PartialEq>(map: &BTreeMap<(String, String), Arc<T>>, ns: &str, name: &str, o: &T) -> bool {
            map.get(&(ns.to_owned(), name.to_owned())).is_some_and(|v| **v == *o)
        }
        match object {
            MeshObject::Namespace(o) => self.namespaces.get(&o.name).is_some_and(|v| **v == *o),
            MeshObject::Service(o) => same(&self.services, &o.namespace, &o.name, o),
            MeshObject::Pod(o) => same(&self.pods, &o.namespace, &o.name, o),
            MeshObject::EndpointSlice(o) => same(&self.endpoint_slices, &o.namespace, &o.name, o),
            MeshObject::VirtualService(o) => same(&self.virtual_services, &o.namespace, &o.name, o),
            MeshObject::DestinationRule(o) => same(&self.destination_rules, &o.namespace, &o.name, o),
            MeshObject::Gateway(o) => same(&self.gateways, &o.namespace, &o.name, o),
            MeshObject::ServiceEntry(o) => same(&self.service_entries, &o.namespace, &o.name, o),
            MeshObject::RateLimit(o) => same(&self.rate_limits, &o.namespace, &o.name, o),
            MeshObject::Secret(o) => same(&self.secrets, &o.namespace, &o.name, o),
            MeshObject::Telemetry(o) => same(&self.telemetries, &o.namespace, &o.name, o),
            MeshObject::Node(o) => self.nodes.get(&o.name).is_some_and(|v| **v == *o),
        }
    }

    /// An immutable copy for the translator.
    pub fn snapshot(&self) -> Arc<Index> {
        Arc::new(self.clone())
    }

    /// The objects of `map` in `namespace`, without scanning the others (keys are
    /// ordered by namespace first).
    pub fn in_namespace<'a, T>(
        map: &'a BTreeMap<(String, String), Arc<T>>,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Arc<T>> + 'a {
        map.range((namespace.to_owned(), String::new())..)
            .take_while(move |((ns, _), _)| ns == namespace)
            .map(|(_, v)| v)
    }

    pub fn service_by_hostname(&self, hostname: &str) -> Option<&Arc<Service>> {
        let rest = hostname.strip_suffix(DOMAIN_SUFFIX)?.strip_suffix('.')?;
        let (name, namespace) = rest.split_once('.')?;
        self.services.get(&(namespace.to_owned(), name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_service(ns: &str, name: &str) -> MeshObject {
        MeshObject::Service(Service {
            namespace: ns.into(),
            name: name.into(),
            cluster_ip: None,
            selector: Some(Labels::from([("app".into(), name.into())])),
            ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
                target_port: TargetPort::Number(8080),
                protocol: Protocol::Http,
            }],
        })
    }

    #[test]
    fn apply_delete_reset_report_changes() {
        let mut index = Index::new();
        assert_eq!(index.apply(mk_service("a", "x")), Change::Changed);
        assert_eq!(index.apply(mk_service("a", "x")), Change::Unchanged);
        assert!(index.service_by_hostname("x.a.svc.cluster.local").is_some());
        assert!(index.service_by_hostname("x.b.svc.cluster.local").is_none());
        let key = mk_service("a", "x").key();
        assert_eq!(index.delete(&key), Change::Changed);
        assert_eq!(index.delete(&key), Change::Unchanged);
        assert_eq!(index.reset([mk_service("a", "y")]), Change::Changed);
        assert_eq!(index.reset([mk_service("a", "y")]), Change::Unchanged);
        assert_eq!(index.services.len(), 1);
    }

    #[test]
    fn in_namespace_yields_only_that_namespace() {
        let mut index = Index::new();
        for (ns, name) in [("a", "x"), ("b", "y"), ("b", "z"), ("bb", "w")] {
            index.apply(mk_service(ns, name));
        }
        let names: Vec<_> = Index::in_namespace(&index.services, "b").map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["y", "z"]);
        assert_eq!(Index::in_namespace(&index.services, "c").count(), 0);
    }

    #[test]
    fn sync_to_ends_where_reset_does_and_keeps_what_did_not_change() {
        let ns = |name: &str| MeshObject::Namespace(Namespace { name: name.into(), labels: Labels::new() });
        let mut changed_port = mk_service("a", "y");
        if let MeshObject::Service(s) = &mut changed_port {
            s.ports[0].port = 81;
        }
        let before = [ns("a"), ns("b"), mk_service("a", "x"), mk_service("a", "y"), mk_service("b", "z")];
        let after = [ns("a"), mk_service("a", "x"), changed_port, mk_service("b", "w")];

        let mut synced = Index::new();
        synced.reset(before.clone());
        let kept = synced.services[&("a".to_owned(), "x".to_owned())].clone();
        assert_eq!(synced.sync_to(&after), Change::Changed);
        let mut reset = Index::new();
        reset.reset(after.clone());
        assert_eq!(synced, reset);
        assert!(Arc::ptr_eq(&kept, &synced.services[&("a".to_owned(), "x".to_owned())]), "an unchanged object is kept");
        assert_eq!(synced.sync_to(&after), Change::Unchanged);
        assert_eq!(synced.sync_to(&[]), Change::Changed);
        assert!(synced.is_empty());
    }
}
