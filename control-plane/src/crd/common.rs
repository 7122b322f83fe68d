//! Types shared by several kinds (Istio's `StringMatch`, `Destination`,
//! `PortSelector`, `Percent`, `Headers`), and the schema helper for Istio's
//! one-of fields.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Adds Istio's one-of rule to an object schema: at most one of `fields` is set
/// (as in Istio's CRDs: none, or exactly one).
pub(super) fn at_most_one_of(schema: &mut schemars::Schema, fields: &[&str]) {
    let required: Vec<Value> = fields.iter().map(|f| json!({ "required": [f] })).collect();
    let mut one_of = vec![json!({ "not": { "anyOf": required.clone() } })];
    one_of.extend(required);
    schema.insert("oneOf".to_owned(), Value::Array(one_of));
}

/// How a string is matched: set one of `exact`, `prefix` or `regex`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = string_match_one_of)]
pub struct StringMatch {
    /// The value must equal this string exactly.
    pub exact: Option<String>,
    /// The value must start with this string.
    pub prefix: Option<String>,
    /// The value must match this RE2 regular expression as a whole
    /// (https://github.com/google/re2/wiki/Syntax).
    pub regex: Option<String>,
}

fn string_match_one_of(schema: &mut schemars::Schema) {
    at_most_one_of(schema, &["exact", "prefix", "regex"]);
}

/// Where traffic goes: a service in the mesh (or a ServiceEntry host), optionally one
/// subset of its endpoints and one of its ports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Destination {
    /// The destination service, as a Kubernetes Service name (`reviews`, resolved in the
    /// rule's namespace), its full name (`reviews.default.svc.cluster.local`) or a
    /// ServiceEntry host. Required.
    pub host: String,
    /// A subset of the service's endpoints, by name, as defined in a DestinationRule for
    /// this host (e.g. `v2`).
    pub subset: Option<String>,
    /// The port of the destination service. May be left out when the service has one
    /// port.
    pub port: Option<PortSelector>,
}

/// A port of a service, by number.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PortSelector {
    /// The port number (1-65535).
    #[schemars(range(max = 65535))]
    pub number: Option<u32>,
}

/// A percentage, as a double between 0.0 and 100.0 (e.g. `0.1` is one request in
/// a thousand).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Percent {
    /// The percentage, between 0.0 and 100.0.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub value: Option<f64>,
}

/// Edits to request and response headers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Headers {
    /// Edits to the request headers, before the request is forwarded to the destination.
    pub request: Option<HeaderOperations>,
    /// Edits to the response headers, before the response is returned to the caller.
    pub response: Option<HeaderOperations>,
}

/// Header edits, applied in the order set, add, remove.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HeaderOperations {
    /// Headers to set, replacing any existing value (header name to value).
    pub set: Option<BTreeMap<String, String>>,
    /// Headers to append to (header name to value).
    pub add: Option<BTreeMap<String, String>>,
    /// Names of headers to remove.
    pub remove: Option<Vec<String>>,
}
