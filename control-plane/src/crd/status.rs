//! The `status` of every Amime CRD object: whether meshd accepted it, in the shape of
//! Kubernetes' `metav1.Condition`, so `kubectl wait --for=condition=Accepted` works.
//!
//! One type for writing and reading. Reading is lenient where Istio differs: on Istio-group
//! objects `observedGeneration` may be a string (Istio's `IntOrString`); the schema stays an
//! integer. A condition without `reason`, `message` or `lastTransitionTime` does not read
//! (meshd then writes its own, once).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What meshd last concluded about this object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshStatus {
    /// Conditions meshd reports. `Accepted` is `True` when the object is in effect
    /// (possibly with warnings in its message) and `False` when meshd refused it; the
    /// message then names the offending field. One entry per `type` (a map list, so
    /// server-side apply merges by `type`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` of the object when meshd last wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "int_or_string")]
    #[schemars(with = "Option<i64>")]
    pub observed_generation: Option<i64>,
}

/// One observation about the object (the fields of Kubernetes' `metav1.Condition`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The kind of condition, in CamelCase: `Accepted`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// Why the condition has this status, one CamelCase word (e.g. `Accepted`, `Invalid`,
    /// `Unsupported`).
    pub reason: String,
    /// What meshd found, for a person: the field at fault and what is wrong with it.
    pub message: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "int_or_string")]
    #[schemars(with = "Option<i64>")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed (RFC 3339, e.g. `2026-12-02T05:00:00Z`).
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
}

impl Condition {
    /// The type of the condition meshd writes.
    pub const ACCEPTED: &'static str = "Accepted";
}

/// An integer, also read from a string (`"3"`); anything else reads as absent.
fn int_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    })
}
