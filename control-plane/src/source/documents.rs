//! From one file's text to validated objects: YAML documents (a `kind: List` expanded
//! into its items), each object through the one validation path ([`parse_object`]).
//! Pure; the config-directory source does the I/O.
//!
//! YAML is read as other conforming parsers (Go's, PyYAML) read it, where the parser
//! underneath (libyaml, through serde_yaml_ng) differs:
//! - libyaml refuses a plain scalar in a flow collection that ends in `:` before a
//!   flow indicator (`addresses: [2001:db8::]`); YAML reads the last `:` as a value
//!   indicator, making the entry a one-pair mapping `{"2001:db8:": null}`. Here the
//!   key is quoted and the text read again, so the document loads and only the object
//!   holding it is refused for the type of that field, not the whole file.
//! - merge keys (`<<: *defaults`) are applied as YAML 1.1 parsers apply them, instead
//!   of being kept as a field named `<<`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::model::parse::Parsed;
use crate::model::{parse_object, Diagnostic, Kind, MeshObject, ObjectKey, RawObject, Severity};

/// How many libyaml flow-colon refusals one file may need rewritten.
const MAX_REWRITES: usize = 64;

/// A YAML syntax error: the document it is in (from 0) and the parser's message.
#[derive(Debug, PartialEq)]
pub struct YamlError {
    pub document: usize,
    pub message: String,
}

/// Reads every document of `text` into a JSON value (null for an empty document).
pub fn yaml_documents(text: &str) -> Result<Vec<Value>, YamlError> {
    let mut text = std::borrow::Cow::Borrowed(text);
    for _ in 0..MAX_REWRITES {
        match read_documents(&text) {
            Ok(mut docs) => {
                docs.iter_mut().for_each(apply_merges);
                return Ok(docs);
            }
            Err((document, e)) => match quote_flow_key(&text, &e) {
                Some(rewritten) => text = std::borrow::Cow::Owned(rewritten),
                None => return Err(YamlError { document, message: e.to_string() }),
            },
        }
    }
    read_documents(&text).map_err(|(document, e)| YamlError { document, message: e.to_string() })
}

fn read_documents(text: &str) -> Result<Vec<Value>, (usize, serde_yaml::Error)> {
    let mut docs = Vec::new();
    // After a syntax error the deserializer repeats it for ever: stop at the first.
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        docs.push(Value::deserialize(doc).map_err(|e| (i, e))?);
    }
    Ok(docs)
}

/// For libyaml's "found unexpected ':'" inside a flow collection: the text with the
/// plain scalar before that `:` quoted, so the `:` reads as the value indicator YAML
/// says it is. None for any other error.
fn quote_flow_key(text: &str, error: &serde_yaml::Error) -> Option<String> {
    let message = error.to_string();
    if !message.starts_with("found unexpected ':'") {
        return None;
    }
    let colon = error.location()?;
    let (_, start) = message.split_once("while scanning a plain scalar at line ")?;
    let (line, column) = start.split_once(" column ")?;
    let (line, column): (usize, usize) = (line.trim().parse().ok()?, column.trim().parse().ok()?);
    if line != colon.line() || column >= colon.column() {
        return None;
    }
    // Lines and columns count characters from 1.
    let line_start: usize = text.split_inclusive('\n').take(line - 1).map(str::len).sum();
    let line_text = text[line_start..].split('\n').next()?;
    let byte = |col: usize| line_text.char_indices().nth(col - 1).map(|(b, _)| line_start + b);
    let (from, to) = (byte(column)?, byte(colon.column())?);
    let key = &text[from..to];
    Some(format!("{}{}{}", &text[..from], serde_json::to_string(key).ok()?, &text[to..]))
}

/// Applies YAML merge keys: `<<` holding a mapping (or a list of them) adds their
/// entries that the mapping does not set itself.
fn apply_merges(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(apply_merges),
        Value::Object(map) => {
            map.values_mut().for_each(apply_merges);
            let sources = match map.remove("<<") {
                None => return,
                Some(Value::Object(m)) => vec![m],
                Some(Value::Array(list)) if list.iter().all(Value::is_object) => list
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::Object(m) => Some(m),
                        _ => None,
                    })
                    .collect(),
                Some(other) => {
                    map.insert("<<".to_owned(), other);
                    return;
                }
            };
            for source in sources {
                for (k, v) in source {
                    map.entry(k).or_insert(v);
                }
            }
        }
        _ => {}
    }
}

/// The objects of one document: itself, or the items of a `kind: List`.
fn objects_of(doc: Value) -> Result<Vec<(Option<usize>, Value)>, String> {
    let is_list = doc.get("kind").and_then(Value::as_str).is_some_and(|k| k == "List" || k.ends_with("List"))
        && doc.get("items").is_some();
    if !is_list {
        return Ok(vec![(None, doc)]);
    }
    match doc.get("items") {
        Some(Value::Array(items)) => Ok(items.iter().cloned().enumerate().map(|(j, v)| (Some(j), v)).collect()),
        Some(Value::Null) => Ok(Vec::new()),
        _ => Err("the items of a List must be a sequence of objects".to_owned()),
    }
}

/// Parses one file's text into objects, given what the file held before.
pub fn parse_file(
    display: &str,
    text: &str,
    previous: &BTreeMap<ObjectKey, MeshObject>,
) -> (Option<BTreeMap<ObjectKey, MeshObject>>, Vec<Diagnostic>) {
    let file_error = |document: Option<usize>, field: &str, message: String| Diagnostic {
        severity: Severity::Error,
        file: Some(display.to_owned()),
        document,
        kind: None,
        namespace: None,
        name: None,
        field: field.to_owned(),
        message,
    };
    // Split and parse all documents first: a syntax error anywhere keeps the whole file.
    let docs = match yaml_documents(text) {
        Ok(docs) => docs,
        Err(e) => {
            let message = format!("not valid YAML ({}); the objects this file held before stay in force", e.message);
            return (None, vec![file_error(Some(e.document), "", message)]);
        }
    };
    let mut objects = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let items = match objects_of(doc) {
            Ok(items) => items,
            Err(message) => {
                problems.push(file_error(Some(i), "items", message));
                continue;
            }
        };
        for (item, value) in items {
            // Where the object is: file, document, and for a List's item its index,
            // as the first step of the field path.
            let with_place = |mut e: Diagnostic| {
                e.file = Some(display.to_owned());
                e.document = Some(i);
                if let Some(j) = item {
                    e.field =
                        if e.field.is_empty() { format!("items[{j}]") } else { format!("items[{j}].{}", e.field) };
                }
                e
            };
            parse_one(value, previous, &mut objects, &mut problems, with_place);
        }
    }
    (Some(objects), problems)
}

fn parse_one(
    value: Value,
    previous: &BTreeMap<ObjectKey, MeshObject>,
    objects: &mut BTreeMap<ObjectKey, MeshObject>,
    problems: &mut Vec<Diagnostic>,
    with_place: impl Fn(Diagnostic) -> Diagnostic,
) {
    let raw = match RawObject::from_value(value) {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(with_place(e));
            return;
        }
    };
    match parse_object(&raw) {
        Ok(Parsed::Object(object, warnings)) => {
            problems.extend(warnings.into_iter().map(&with_place));
            let key = object.key();
            if objects.contains_key(&key) {
                problems.push(with_place(Diagnostic {
                    severity: Severity::Error,
                    file: None,
                    document: None,
                    kind: Some(raw.kind.clone()),
                    namespace: Some(key.namespace.clone()),
                    name: Some(key.name.clone()),
                    field: "metadata.name".into(),
                    message: format!("{key} is defined twice in this file; the first definition is used"),
                }));
                return;
            }
            objects.insert(key, object);
        }
        Ok(Parsed::Skipped(note)) => problems.push(with_place(note)),
        Err(e) => {
            // Keep the last good state of this object, if we can tell which it is.
            let mut e = with_place(e);
            if let Some(kind) = Kind::from_name(&raw.kind) {
                let namespace = if kind == Kind::Namespace {
                    String::new()
                } else {
                    raw.namespace.clone().unwrap_or_else(|| "default".into())
                };
                let key = ObjectKey { kind, namespace, name: raw.name.clone() };
                if let Some(old) = previous.get(&key) {
                    objects.insert(key, old.clone());
                    let joined = if e.message.ends_with('?') { " Its" } else { "; its" };
                    e.message.push_str(&format!("{joined} last good state stays in force"));
                }
            }
            problems.push(e);
        }
    }
}

#[cfg(test)]
#[path = "documents_tests.rs"]
mod tests;
