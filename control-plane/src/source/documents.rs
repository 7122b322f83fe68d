//! From one file's text to validated objects: YAML documents, each through the one
//! validation path ([`parse_object`]). Pure; the config-directory source does the I/O.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::parse::Parsed;
use crate::model::{parse_object, Kind, MeshObject, ObjectError, ObjectKey, RawObject, Severity};

pub(crate) fn kind_of(raw_kind: &str) -> Option<Kind> {
    Some(match raw_kind {
        "Namespace" => Kind::Namespace,
        "Service" => Kind::Service,
        "Pod" => Kind::Pod,
        "EndpointSlice" => Kind::EndpointSlice,
        "VirtualService" => Kind::VirtualService,
        "DestinationRule" => Kind::DestinationRule,
        _ => return None,
    })
}

/// Parses one file's text into objects, given what the file held before.
pub fn parse_file(
    display: &str,
    text: &str,
    previous: &BTreeMap<ObjectKey, MeshObject>,
) -> (Option<BTreeMap<ObjectKey, MeshObject>>, Vec<ObjectError>) {
    let file_error = |document: Option<usize>, message: String| ObjectError {
        severity: Severity::Error,
        file: Some(display.to_owned()),
        document,
        kind: None,
        namespace: None,
        name: None,
        field: String::new(),
        message,
    };
    // Split and parse all documents first: a syntax error anywhere keeps the whole file.
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match serde_json::Value::deserialize(doc) {
            Ok(v) => docs.push(v),
            Err(e) => {
                let message = format!("not valid YAML ({e}); the objects this file held before stay in force");
                return (None, vec![file_error(Some(i), message)]);
            }
        }
    }
    let mut objects = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let with_place = |mut e: ObjectError| {
            e.file = Some(display.to_owned());
            e.document = Some(i);
            e
        };
        let raw = match RawObject::from_value(doc) {
            Ok(raw) => raw,
            Err(e) => {
                problems.push(with_place(e));
                continue;
            }
        };
        match parse_object(&raw) {
            Ok(Parsed::Object(object, warnings)) => {
                problems.extend(warnings.into_iter().map(with_place));
                let key = object.key();
                if objects.contains_key(&key) {
                    problems.push(with_place(ObjectError {
                        severity: Severity::Error,
                        file: None,
                        document: None,
                        kind: Some(raw.kind.clone()),
                        namespace: Some(key.namespace.clone()),
                        name: Some(key.name.clone()),
                        field: "metadata.name".into(),
                        message: format!("{key} is defined twice in this file; the first definition is used"),
                    }));
                    continue;
                }
                objects.insert(key, object);
            }
            Ok(Parsed::Ignored) => {}
            Err(e) => {
                // Keep the last good state of this object, if we can tell which it is.
                let mut e = with_place(e);
                if let Some(kind) = kind_of(&raw.kind) {
                    let namespace = if kind == Kind::Namespace {
                        String::new()
                    } else {
                        raw.namespace.clone().unwrap_or_else(|| "default".into())
                    };
                    let key = ObjectKey { kind, namespace, name: raw.name.clone() };
                    if let Some(old) = previous.get(&key) {
                        objects.insert(key, old.clone());
                        e.message.push_str("; its last good state stays in force");
                    }
                }
                problems.push(e);
            }
        }
    }
    (Some(objects), problems)
}
