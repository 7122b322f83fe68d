//! The CRD schemas and the parser's field tables (`model::parse::istio_api`) list the
//! same fields at the same paths, so neither can drift from the other: a field added
//! to one home only fails here, naming the path.

use std::collections::BTreeSet;

use serde_json::Value;

use super::crds;
use crate::model::parse::istio_field_tables;

/// The schema node at `path` under `root` (`http[]`: the list's items, `headers{}`:
/// the map's values).
fn node<'a>(root: &'a Value, path: &[String]) -> Result<&'a Value, String> {
    let mut here = root;
    for segment in path {
        let (name, suffix) = match segment.find(['[', '{']) {
            Some(i) => segment.split_at(i),
            None => (segment.as_str(), ""),
        };
        here = here.pointer(&format!("/properties/{name}")).ok_or_else(|| format!("no property `{name}`"))?;
        here = match suffix {
            "[]" => here.get("items").ok_or_else(|| format!("`{name}` is not a list"))?,
            "{}" => here.get("additionalProperties").ok_or_else(|| format!("`{name}` is not a map"))?,
            _ => here,
        };
    }
    Ok(here)
}

fn property_names(schema: &Value) -> BTreeSet<String> {
    schema.get("properties").and_then(Value::as_object).map(|p| p.keys().cloned().collect()).unwrap_or_default()
}

#[test]
fn crd_schemas_and_parser_field_tables_agree() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for crd in crds().into_iter().chain(super::telemetry_crds()) {
        let kind = crd.spec.names.kind.clone();
        let root = serde_json::to_value(&crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema).unwrap();
        let (top, messages) = istio_field_tables(&kind).unwrap_or_else(|| panic!("no field table for {kind}"));
        // apiVersion, kind and metadata are the API server's; the CRD schema has the rest.
        let top: BTreeSet<String> =
            top.into_iter().filter(|f| !["apiVersion", "kind", "metadata"].contains(f)).map(str::to_owned).collect();
        if top != property_names(&root) {
            problems.push(format!("{kind}: top level: table {top:?}, schema {:?}", property_names(&root)));
        }
        let spec = &root["properties"]["spec"];
        for message in messages {
            let at =
                if message.path.is_empty() { "spec".to_owned() } else { format!("spec.{}", message.path.join(".")) };
            let schema = match node(spec, &message.path) {
                Ok(schema) => schema,
                Err(e) => {
                    problems.push(format!("{kind} {at}: in the field table but not in the schema: {e}"));
                    continue;
                }
            };
            let table: BTreeSet<String> = message.fields.iter().map(|(f, _)| (*f).to_owned()).collect();
            let schema_fields = property_names(schema);
            for missing in table.difference(&schema_fields) {
                problems.push(format!("{kind} {at}.{missing}: in the field table, not in the CRD schema"));
            }
            for extra in schema_fields.difference(&table) {
                problems.push(format!("{kind} {at}.{extra}: in the CRD schema, not in the field table"));
            }
            for (name, table_descends) in &message.fields {
                let Some(field) = schema.pointer(&format!("/properties/{name}")) else { continue };
                let inner = [field, &field["items"], &field["additionalProperties"]];
                let schema_descends = inner.iter().any(|s| s.get("properties").is_some());
                if *table_descends != schema_descends {
                    problems.push(format!(
                        "{kind} {at}.{name}: the field table {} its fields, the CRD schema {}",
                        if *table_descends { "lists" } else { "does not list" },
                        if schema_descends { "does" } else { "does not" }
                    ));
                }
            }
            checked += table.len();
        }
    }
    assert!(problems.is_empty(), "CRD schemas and model::parse::istio_api disagree:\n{}", problems.join("\n"));
    assert!(checked > 300, "only {checked} fields compared");
}

#[test]
fn every_schema_field_is_described() {
    fn walk(schema: &Value, path: &str, out: &mut Vec<String>) {
        let Some(properties) = schema.get("properties").and_then(Value::as_object) else { return };
        for (name, field) in properties {
            let here = format!("{path}.{name}");
            if field.get("description").and_then(Value::as_str).is_none_or(str::is_empty) {
                out.push(here.clone());
            }
            walk(field, &here, out);
            for inner in ["items", "additionalProperties"] {
                if let Some(inner) = field.get(inner) {
                    walk(inner, &here, out);
                }
            }
        }
    }
    let mut missing = Vec::new();
    for crd in crds().into_iter().chain(super::telemetry_crds()) {
        let root = serde_json::to_value(&crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema).unwrap();
        walk(&root["properties"]["spec"], &crd.spec.names.kind, &mut missing);
    }
    assert!(missing.is_empty(), "fields without a description: {missing:#?}");
}

#[test]
fn amime_crds_have_status_columns_and_no_short_names_of_istio() {
    for crd in crds() {
        let kind = &crd.spec.names.kind;
        assert_eq!(crd.spec.group, super::GROUP);
        assert_eq!(crd.spec.scope, "Namespaced", "{kind}");
        assert_eq!(crd.spec.names.short_names, None, "{kind}: vs/dr/gw/se are Istio's; both may be installed");
        assert_eq!(crd.spec.names.categories, Some(vec!["amime".to_owned()]), "{kind}");
        let [version] = crd.spec.versions.as_slice() else { panic!("{kind}: one version") };
        assert!(version.served && version.storage, "{kind}");
        assert!(version.subresources.as_ref().is_some_and(|s| s.status.is_some()), "{kind}: status subresource");
        let columns: Vec<&str> = version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
        assert_eq!(columns.first(), Some(&"Accepted"), "{kind}");
        assert_eq!(columns.last(), Some(&"Age"), "{kind}");
    }
}

#[test]
fn telemetry_crds_are_in_the_telemetry_groups() {
    let [amime] = super::telemetry_crds().try_into().unwrap();
    assert_eq!(amime.metadata.name.as_deref(), Some("telemetries.telemetry.amime.dev"));
    assert_eq!((amime.spec.scope.as_str(), amime.spec.names.short_names.clone()), ("Namespaced", None));
    let [version] = amime.spec.versions.as_slice() else { panic!("one version") };
    assert!(version.subresources.as_ref().is_some_and(|s| s.status.is_some()), "status subresource");
    let [istio] = super::istio_telemetry_crds().try_into().unwrap();
    assert_eq!(istio.metadata.name.as_deref(), Some("telemetries.telemetry.istio.io"));
    let names: Vec<(&str, bool)> = istio.spec.versions.iter().map(|v| (v.name.as_str(), v.storage)).collect();
    assert_eq!(names, [("v1", true), ("v1alpha1", false)]);
}

#[test]
fn istio_stand_in_serves_three_versions_with_one_schema() {
    for crd in super::istio_crds() {
        let kind = &crd.spec.names.kind;
        assert_eq!(crd.spec.group, super::ISTIO_GROUP);
        assert_eq!(crd.metadata.name, Some(format!("{}.{}", crd.spec.names.plural, super::ISTIO_GROUP)));
        let names: Vec<(&str, bool)> = crd.spec.versions.iter().map(|v| (v.name.as_str(), v.storage)).collect();
        assert_eq!(names, [("v1", true), ("v1beta1", false), ("v1alpha3", false)], "{kind}");
        assert!(crd.spec.versions.iter().all(|v| v.served && v.schema == crd.spec.versions[0].schema), "{kind}");
    }
}

/// Leaves whose JSON type is easy to get wrong, with the type Istio's CRDs give them
/// (`istio.io/api` v1.32 `kubernetes/customresourcedefinitions.gen.yaml`): an object
/// copied from an Istio cluster must pass our schema.
#[test]
fn leaf_types_are_istios() {
    let cases = [
        ("Gateway", "servers[].tls.tlsCertificates[].caCertificates", "string"),
        ("Gateway", "servers[].tls.credentialNames", "array"),
        ("Gateway", "servers[].port.number", "integer"),
        ("VirtualService", "http[].route[].weight", "integer"),
        ("VirtualService", "http[].timeout", "string"),
        ("VirtualService", "http[].mirrorPercentage.value", "number"),
        ("VirtualService", "http[].match[].headers{}.exact", "string"),
        ("VirtualService", "http[].fault.abort.httpStatus", "integer"),
        ("VirtualService", "http[].corsPolicy.allowCredentials", "boolean"),
        ("DestinationRule", "trafficPolicy.connectionPool.tcp.maxConnections", "integer"),
        ("DestinationRule", "trafficPolicy.loadBalancer.warmup.aggression", "number"),
        ("ServiceEntry", "endpoints[].ports{}", "integer"),
        ("ServiceEntry", "endpoints[].weight", "integer"),
    ];
    let crds = crds();
    let mut wrong = Vec::new();
    for (kind, path, want) in cases {
        let crd = crds.iter().find(|c| c.spec.names.kind == kind).unwrap();
        let root = serde_json::to_value(&crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema).unwrap();
        let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
        match node(&root["properties"]["spec"], &segments) {
            Ok(schema) if schema["type"] == want => {}
            Ok(schema) => wrong.push(format!("{kind} spec.{path}: type {}, Istio's is {want}", schema["type"])),
            Err(e) => wrong.push(format!("{kind} spec.{path}: {e}")),
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Enumerations take every value Istio's CRDs take (values meshd does not implement are
/// refused by the parser, in the object's status, not by the API server).
#[test]
fn enums_take_istios_values() {
    let crds = crds();
    let crd = crds.iter().find(|c| c.spec.names.kind == "ServiceEntry").unwrap();
    let root = serde_json::to_value(&crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema).unwrap();
    let values = &root["properties"]["spec"]["properties"]["resolution"]["enum"];
    for istio in ["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"] {
        assert!(
            values.as_array().unwrap().contains(&istio.into()),
            "ServiceEntry spec.resolution lacks {istio}: {values}"
        );
    }
}

/// Lower bounds are no stricter than Istio's: `warmup.aggression` takes anything from 0
/// (Istio's `+kubebuilder:validation:Minimum=0`), e.g. 0.5.
#[test]
fn warmup_aggression_takes_istios_range() {
    let crds = crds();
    let crd = crds.iter().find(|c| c.spec.names.kind == "DestinationRule").unwrap();
    let root = serde_json::to_value(&crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema).unwrap();
    let path: Vec<String> = ["trafficPolicy", "loadBalancer", "warmup", "aggression"].map(str::to_owned).into();
    let aggression = node(&root["properties"]["spec"], &path).unwrap();
    assert_eq!(aggression["minimum"].as_f64(), Some(0.0), "{aggression}");
}
