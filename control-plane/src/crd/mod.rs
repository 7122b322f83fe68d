//! The CRDs of Amime's networking API (`networking.amime.dev/v1`: VirtualService,
//! DestinationRule, Gateway, ServiceEntry, and Amime's own RateLimit), as Rust types that derive their OpenAPI
//! schemas. Field names and meanings are Istio's (`networking.istio.io/v1`), so a
//! user's Istio YAML is accepted after changing `apiVersion`.
//!
//! The schema accepts every Istio field, including those meshd does not implement
//! yet: refusing those is the parser's job ([`crate::model::parse_object`]), reported
//! in the object's status with a message naming the field. The field lists of
//! `model::parse::istio_api` and these types are checked against each other by a
//! test, so the two cannot drift apart.
//!
//! These types describe the API (schema, `kubectl explain`); meshd reads objects as
//! JSON through the one validation path, not through these types. Optional fields
//! serialize as `null` when unset, which the schemas allow.
//!
//! `manifests/crds/` holds [`render_crds`]'s output; `tests/fixtures/istio-networking-crds.yaml`
//! holds [`render_istio_crds`]'s (a stand-in for Istio's own CRDs in tests). The Telemetry
//! kind has its own group (`telemetry.amime.dev`, Istio's `telemetry.istio.io`):
//! [`render_telemetry_crds`] and [`render_istio_telemetry_crds`].

mod common;
mod destination_rule;
mod gateway;
mod http_actions;
mod rate_limit;
mod service_entry;
pub mod status;
mod telemetry;
#[cfg(test)]
mod tests;
mod traffic_policy;
mod virtual_service;

pub use common::{Destination, HeaderOperations, Headers, Percent, PortSelector, StringMatch};
pub use destination_rule::*;
pub use gateway::*;
pub use http_actions::*;
pub use rate_limit::*;
pub use service_entry::*;
pub use status::{Condition, MeshStatus};
pub use telemetry::*;
pub use traffic_policy::*;
pub use virtual_service::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion, JSONSchemaProps,
};
use kube::CustomResourceExt;
use serde_json::Value;

/// Amime's API group for the networking kinds.
pub const GROUP: &str = "networking.amime.dev";
/// Istio's API group for the same kinds.
pub const ISTIO_GROUP: &str = "networking.istio.io";

/// Amime's API group for the Telemetry kind.
pub const TELEMETRY_GROUP: &str = "telemetry.amime.dev";
/// Istio's API group for the same kind.
pub const ISTIO_TELEMETRY_GROUP: &str = "telemetry.istio.io";

/// Kinds of our group that Istio has no counterpart of.
pub const AMIME_ONLY_KINDS: &[&str] = &["RateLimit"];

/// The CRDs of the networking kinds, in a fixed order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [VirtualService::crd(), DestinationRule::crd(), Gateway::crd(), ServiceEntry::crd(), RateLimit::crd()]
        .into_iter()
        .map(api_formats)
        .collect()
}

/// Replaces the integer formats schemars writes for unsigned types (`uint32`,
/// `uint64`), which the API server does not know (it warns "unrecognized format"), by
/// bounds, as Istio's CRDs do.
fn api_formats(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                match map.get("format").and_then(Value::as_str) {
                    Some("uint32") => {
                        map.remove("format");
                        map.entry("maximum").or_insert(Value::from(u32::MAX));
                    }
                    Some("uint64") => {
                        map.remove("format");
                    }
                    _ => {}
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(crd).expect("a CRD serializes as JSON");
    walk(&mut value);
    serde_json::from_value(value).expect("a CRD with bounds instead of formats is still a CRD")
}

/// The same CRDs under Istio's group, serving `v1` (stored), `v1beta1` and
/// `v1alpha3` with one schema, as Istio does; with Istio's short names and
/// categories. A stand-in for Istio's CRDs in tests (Istio's own are not vendored).
pub fn istio_crds() -> Vec<CustomResourceDefinition> {
    crds().into_iter().filter(|c| !AMIME_ONLY_KINDS.contains(&c.spec.names.kind.as_str())).map(to_istio).collect()
}

fn to_istio(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let short = match crd.spec.names.kind.as_str() {
        "VirtualService" => "vs",
        "DestinationRule" => "dr",
        "Gateway" => "gw",
        _ => "se",
    };
    as_istio(crd, ISTIO_GROUP, short, &["v1", "v1beta1", "v1alpha3"])
}

/// The Telemetry CRD (`telemetry.amime.dev/v1`), in a list like [`crds`].
pub fn telemetry_crds() -> Vec<CustomResourceDefinition> {
    vec![api_formats(Telemetry::crd())]
}

/// The Telemetry CRD under Istio's group, serving `v1` (stored) and `v1alpha1` with one
/// schema, as Istio does: a stand-in for Istio's CRD in tests.
pub fn istio_telemetry_crds() -> Vec<CustomResourceDefinition> {
    telemetry_crds().into_iter().map(|c| as_istio(c, ISTIO_TELEMETRY_GROUP, "telemetry", &["v1", "v1alpha1"])).collect()
}

/// `crd` moved to Istio's `group` with Istio's short name, categories and `versions` (the
/// first stored).
fn as_istio(
    mut crd: CustomResourceDefinition,
    group: &str,
    short: &str,
    versions: &[&str],
) -> CustomResourceDefinition {
    let plural = crd.spec.names.plural.clone();
    crd.metadata.name = Some(format!("{plural}.{group}"));
    crd.spec.group = group.to_owned();
    let category = group.replace('.', "-");
    crd.spec.names.categories = Some(vec!["istio-io".to_owned(), category]);
    crd.spec.names.short_names = Some(vec![short.to_owned()]);
    let mut v1 = crd.spec.versions.remove(0);
    if let Some(schema) = v1.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
        let kind = &crd.spec.names.kind;
        schema.description =
            Some(format!("{kind} of {group}, generated from Amime's types: a stand-in for Istio's CRD in tests."));
        // Istio's own CRDs leave `status` free-form (istiod writes `validationMessages`
        // and more there); so does the stand-in, so that objects copied from a cluster
        // with Istio apply as they would there.
        if let Some(status) = schema.properties.as_mut().and_then(|p| p.get_mut("status")) {
            *status = JSONSchemaProps {
                type_: Some("object".to_owned()),
                x_kubernetes_preserve_unknown_fields: Some(true),
                ..JSONSchemaProps::default()
            };
        }
    }
    let version =
        |name: &str, storage: bool| CustomResourceDefinitionVersion { name: name.to_owned(), storage, ..v1.clone() };
    crd.spec.versions = versions.iter().enumerate().map(|(i, name)| version(name, i == 0)).collect();
    crd
}

/// [`crds`] as multi-document YAML (what `manifests/crds/networking.amime.dev.yaml` holds).
pub fn render_crds() -> String {
    render(&crds())
}

/// [`istio_crds`] as multi-document YAML.
pub fn render_istio_crds() -> String {
    render(&istio_crds())
}

/// [`telemetry_crds`] as YAML (what `manifests/crds/telemetry.amime.dev.yaml` holds).
pub fn render_telemetry_crds() -> String {
    render(&telemetry_crds())
}

/// [`istio_telemetry_crds`] as YAML.
pub fn render_istio_telemetry_crds() -> String {
    render(&istio_telemetry_crds())
}

fn render(crds: &[CustomResourceDefinition]) -> String {
    let mut out = String::new();
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(crd).expect("a CRD serializes as YAML"));
    }
    out
}
