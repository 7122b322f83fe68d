//! The mesh config from a ConfigMap (with the Kubernetes source): the key `mesh` of the
//! ConfigMap `--mesh-config-map` (default `amime-mesh`) in meshd's namespace, as Istio reads
//! the key `mesh` of the ConfigMap `istio` in istio-system. Same document and parser as
//! `--mesh-config FILE` ([`super::parse`]).
//!
//! Rules it keeps:
//! - the ConfigMap is watched by name (a `metadata.name` field selector, in meshd's namespace
//!   only, so a Role limited to that name allows it); every version is applied live;
//! - a ConfigMap that is absent (at start or after a relist) or deleted means the defaults
//!   (the flags' and Istio's), as for a cluster without Istio's `istio` ConfigMap;
//! - a version without the key `mesh`, or whose document is invalid, is reported naming the
//!   ConfigMap, the key and the field (meshd's log, `/debug/config_errors`, `/readyz`'s
//!   problems), and the last good settings stay in force.
//!
//! [`MeshConfigMap::event`] is the pure part (watch events in, what to apply out); [`run`] is
//! the I/O edge, on the source's watcher.

use std::sync::Arc;

use kube::api::ApiResource;
use kube::runtime::watcher;
use serde_json::Value;
use tokio::sync::mpsc;

use super::watch::{apply, settings, Look};
use super::MeshConfigFile;
use crate::model::{Diagnostic, Severity};
use crate::push::MeshState;
use crate::source::kube::feed::WatchEvent;
use crate::source::kube::stats::KubeStats;
use crate::source::kube::watch::{self as kube_watch, Message, Origin, WatchSpec};
use crate::translate::OutboundTrafficPolicy;

/// The ConfigMap's default name (`--mesh-config-map`).
pub const DEFAULT_NAME: &str = "amime-mesh";
/// The key holding the MeshConfig YAML (Istio's key in its `istio` ConfigMap).
pub const KEY: &str = "mesh";

/// Which ConfigMap, and what meshd's flags add to it.
#[derive(Clone, Debug)]
pub struct MeshConfigMap {
    pub namespace: String,
    pub name: String,
    /// `--outbound-traffic-policy`, when given (it wins over the document).
    pub flag_policy: Option<OutboundTrafficPolicy>,
    /// During a relist: whether the ConfigMap was seen.
    relist_seen: Option<bool>,
}

impl MeshConfigMap {
    pub fn new(namespace: &str, name: &str, flag_policy: Option<OutboundTrafficPolicy>) -> MeshConfigMap {
        MeshConfigMap { namespace: namespace.to_owned(), name: name.to_owned(), flag_policy, relist_seen: None }
    }

    /// How diagnostics and logs name the document: `ConfigMap <ns>/<name> key mesh`.
    pub fn source(&self) -> String {
        format!("ConfigMap {}/{} key {KEY}", self.namespace, self.name)
    }

    /// What one watch event means: `Some(look)` to apply, `None` for nothing to do.
    pub fn event(&mut self, event: WatchEvent) -> Option<Look> {
        match event {
            WatchEvent::Init => {
                self.relist_seen = Some(false);
                None
            }
            WatchEvent::InitApply(object) | WatchEvent::Apply(object) => {
                if object.pointer("/metadata/name").and_then(Value::as_str) != Some(self.name.as_str()) {
                    return None;
                }
                if let Some(seen) = &mut self.relist_seen {
                    *seen = true;
                }
                Some(self.look(Some(&object)))
            }
            WatchEvent::Delete(_) => Some(self.look(None)),
            WatchEvent::InitDone => match self.relist_seen.take() {
                Some(false) => Some(self.look(None)),
                _ => None,
            },
        }
    }

    /// The settings of a ConfigMap version (`None`: there is none, so the defaults) and
    /// its problems.
    pub fn look(&self, object: Option<&Value>) -> Look {
        let source = self.source();
        let Some(object) = object else {
            let (settings, problems) = settings(&source, &MeshConfigFile::default(), self.flag_policy, &self.namespace);
            return Look { settings: Some(settings), problems };
        };
        let Some(text) = object.pointer(&format!("/data/{KEY}")).and_then(Value::as_str) else {
            let mut d = Diagnostic::at_path(
                Severity::Error,
                std::path::Path::new(&source),
                format!(
                    "the ConfigMap has no key `{KEY}` (the MeshConfig YAML goes there, as in Istio's `istio` \
                     ConfigMap); the last good mesh config stays in force"
                ),
            );
            d.kind = Some("MeshConfig".to_owned());
            d.field = format!("data.{KEY}");
            return Look { settings: None, problems: vec![d] };
        };
        let outcome = super::parse::parse(&source, text);
        let mut problems = outcome.diagnostics;
        let settings = outcome.config.map(|config| {
            let (settings, conflicts) = settings(&source, &config, self.flag_policy, &self.namespace);
            problems.extend(conflicts);
            settings
        });
        if settings.is_none() {
            for p in problems.iter_mut().filter(|p| p.severity == Severity::Error) {
                p.message.push_str("; the last good mesh config stays in force");
            }
        }
        Look { settings, problems }
    }

    fn spec(&self) -> WatchSpec {
        WatchSpec {
            resource: ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                plural: "configmaps".into(),
            },
            config: watcher::Config::default().fields(&format!("metadata.name={}", self.name)),
            label: format!("ConfigMap/{}", self.name),
            metadata_only: false,
            namespace: Some(self.namespace.clone()),
        }
    }
}

/// Watches the ConfigMap and applies each version to `state`, until the task is dropped.
/// The first push waits for nothing here: `run`'s caller applies the ConfigMap read once at
/// startup ([`initial`]) before serving.
pub async fn run(client: kube::Client, mut map: MeshConfigMap, state: Arc<MeshState>, stats: Arc<KubeStats>) {
    let (tx, mut rx) = mpsc::channel(16);
    let origin = Origin::Crd(map.source());
    let watch = tokio::spawn(kube_watch::run(client, map.spec(), origin, tx, stats));
    let source = map.source();
    while let Some(Message { event, .. }) = rx.recv().await {
        if let Some(look) = map.event(event) {
            apply(&state, &source, look);
        }
    }
    watch.abort();
}

/// Reads the ConfigMap once (before meshd serves), so the first push already has its
/// settings. An API error is reported and leaves the defaults; the watch retries.
pub async fn initial(client: kube::Client, map: &MeshConfigMap, state: &MeshState) {
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client, &map.namespace);
    match api.get_opt(&map.name).await {
        Ok(found) => {
            let object = found.map(|cm| serde_json::to_value(cm).unwrap_or(Value::Null));
            apply(state, &map.source(), map.look(object.as_ref()));
        }
        Err(e) => tracing::warn!(
            configmap = %map.source(), error = %e,
            "cannot read the mesh config's ConfigMap yet; the defaults hold until its watch delivers it"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh_config::LogEncoding;
    use serde_json::json;

    fn cm(mesh: Option<&str>) -> Value {
        let data = mesh.map_or(json!({"other": "x"}), |m| json!({ "mesh": m }));
        json!({"metadata": {"name": "amime-mesh", "namespace": "amime-system"}, "data": data})
    }

    fn file_log(look: &Look) -> Option<(String, LogEncoding)> {
        let t = &look.settings.as_ref()?.telemetry;
        Some((t.access_log_file.clone()?, t.access_log_encoding))
    }

    #[test]
    fn versions_apply_a_bad_one_is_reported_and_deletion_means_defaults() {
        let mut map = MeshConfigMap::new("amime-system", "amime-mesh", None);
        assert_eq!(map.source(), "ConfigMap amime-system/amime-mesh key mesh");
        let good = map.event(WatchEvent::Apply(cm(Some("accessLogFile: /dev/stdout\n")))).unwrap();
        assert_eq!(file_log(&good), Some(("/dev/stdout".into(), LogEncoding::Text)));
        assert!(good.problems.is_empty(), "{:?}", good.problems);
        let json = map.event(WatchEvent::Apply(cm(Some("accessLogFile: /dev/stdout\naccessLogEncoding: JSON\n"))));
        assert_eq!(file_log(&json.unwrap()), Some(("/dev/stdout".into(), LogEncoding::Json)));

        // Invalid: no settings (the last good ones stay), the ConfigMap and field named.
        let bad = map.event(WatchEvent::Apply(cm(Some("accessLogEncoding: XML\n")))).unwrap();
        assert!(bad.settings.is_none());
        let text = bad.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        assert!(text.contains("ConfigMap amime-system/amime-mesh key mesh"), "{text}");
        assert!(text.contains("accessLogEncoding"), "{text}");
        assert!(text.contains("last good mesh config stays in force"), "{text}");
        let keyless = map.event(WatchEvent::Apply(cm(None))).unwrap();
        assert!(keyless.settings.is_none());
        assert_eq!(keyless.problems[0].field, "data.mesh");

        // Deleted: the defaults (no access log), no problem left.
        let gone = map.event(WatchEvent::Delete(cm(None))).unwrap();
        assert_eq!(gone.settings.as_ref().map(|s| s.telemetry.access_log_file.clone()), Some(None));
        assert!(gone.problems.is_empty());
        assert_eq!(gone.settings.unwrap().root_namespace, "amime-system");
        // Another ConfigMap's event (the field selector should keep them away) changes nothing.
        let mut other = cm(Some("accessLogFile: /tmp/x\n"));
        other["metadata"]["name"] = json!("istio");
        assert!(map.event(WatchEvent::Apply(other)).is_none());
    }

    #[test]
    fn a_relist_that_misses_the_configmap_means_defaults() {
        let mut map = MeshConfigMap::new("amime-system", "amime-mesh", None);
        assert!(map.event(WatchEvent::Init).is_none());
        assert!(map.event(WatchEvent::InitApply(cm(Some("accessLogFile: /dev/stdout\n")))).is_some());
        assert!(map.event(WatchEvent::InitDone).is_none(), "seen: the apply did it");
        assert!(map.event(WatchEvent::Init).is_none());
        let absent = map.event(WatchEvent::InitDone).expect("absent after a relist");
        assert_eq!(absent.settings.map(|s| s.telemetry.access_log_file), Some(None));
    }

    /// The shipped example ConfigMap is valid and says the defaults.
    #[test]
    fn the_example_configmap_holds_the_defaults() {
        let text = include_str!("../../../manifests/examples/telemetry/configmap-mesh.yaml");
        let object: Value = serde_yaml::from_str(text).unwrap();
        let map = MeshConfigMap::new("amime-system", "amime-mesh", None);
        let look = map.look(Some(&object));
        assert!(look.problems.is_empty(), "{:?}", look.problems);
        assert_eq!(look.settings, map.look(None).settings, "the example spells out the defaults");
    }

    #[test]
    fn the_flag_policy_wins_and_a_conflict_names_the_configmap() {
        let map = MeshConfigMap::new("amime-system", "amime-mesh", Some(OutboundTrafficPolicy::AllowAny));
        let look = map.look(Some(&cm(Some("outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"))));
        assert_eq!(look.settings.unwrap().outbound_traffic_policy, OutboundTrafficPolicy::AllowAny);
        assert!(look.problems[0].to_string().starts_with("ConfigMap amime-system/amime-mesh key mesh: "));
    }
}
