//! From one file's text to validated objects: YAML documents (a `kind: List` expanded
//! into its items), each object through the one validation path ([`parse_object`]).
//! Pure; the config-directory source does the I/O.
//!
//! YAML is read as other conforming parsers read it: see [`yaml`].

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::parse::Parsed;
use crate::model::{parse_object, Diagnostic, Kind, MeshObject, ObjectKey, RawObject, Severity};

mod yaml;

pub use yaml::{yaml_documents, Document, YamlError};

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
    let (parsed, problems) = parse_file_documents(display, text, previous);
    (parsed.map(|p| p.objects), problems)
}

/// What a file holds: its objects and the document each was defined in.
#[derive(Debug, Default)]
pub struct FileObjects {
    pub objects: BTreeMap<ObjectKey, MeshObject>,
    pub documents: BTreeMap<ObjectKey, usize>,
    /// How many objects the documents held (valid or not, of any kind; a `List`'s items
    /// each count).
    pub read: usize,
}

/// [`parse_file`], also saying which document defines each object.
pub fn parse_file_documents(
    display: &str,
    text: &str,
    previous: &BTreeMap<ObjectKey, MeshObject>,
) -> (Option<FileObjects>, Vec<Diagnostic>) {
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
            let kept = if previous.is_empty() { "" } else { "; the objects this file held before stay in force" };
            let message = format!("not valid YAML ({}){kept}", e.message);
            return (None, vec![file_error(Some(e.document), "", message)]);
        }
    };
    let mut out = Collected::default();
    for (i, Document { value: doc, duplicate_keys }) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let items = match objects_of(doc) {
            Ok(items) => items,
            Err(message) => {
                out.problems.push(file_error(Some(i), "items", message));
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
            // Keys set twice within this object, relative to it.
            let prefix = item.map(|j| format!("items[{j}]."));
            let duplicates: Vec<&str> = duplicate_keys
                .iter()
                .filter_map(|path| match &prefix {
                    Some(p) => path.strip_prefix(p.as_str()),
                    None => Some(path.as_str()),
                })
                .collect();
            let place = match item {
                Some(j) => format!("document {i}, items[{j}]"),
                None => format!("document {i}"),
            };
            out.parse_one(value, &duplicates, previous, (i, place), with_place);
        }
    }
    (Some(FileObjects { objects: out.objects, documents: out.documents, read: out.read }), out.problems)
}

/// What one file gave so far.
#[derive(Default)]
struct Collected {
    objects: BTreeMap<ObjectKey, MeshObject>,
    /// Where in the file each object was defined (`document 2`), for objects defined twice.
    defined_at: BTreeMap<ObjectKey, String>,
    /// The document each object (or its kept last good state) stands for.
    documents: BTreeMap<ObjectKey, usize>,
    problems: Vec<Diagnostic>,
    read: usize,
}

impl Collected {
    fn parse_one(
        &mut self,
        value: Value,
        duplicate_keys: &[&str],
        previous: &BTreeMap<ObjectKey, MeshObject>,
        (document, place): (usize, String),
        with_place: impl Fn(Diagnostic) -> Diagnostic,
    ) {
        self.read += 1;
        let raw = match RawObject::from_value(value) {
            Ok(raw) => raw,
            Err(e) => {
                self.problems.push(with_place(e));
                return;
            }
        };
        let parsed = match duplicate_keys.first() {
            // YAML allows each key once in a mapping, and kubectl refuses a repeated one;
            // keeping either value could route by the one the user did not mean.
            Some(path) => Err(Diagnostic {
                severity: Severity::Error,
                file: None,
                document: None,
                kind: Some(raw.kind.clone()),
                namespace: Some(raw.namespace.clone().unwrap_or_else(|| "default".into())),
                name: Some(raw.name.clone()),
                field: (*path).to_owned(),
                message: "this key is set twice in one mapping; YAML allows it once".to_owned(),
            }),
            None => parse_object(&raw),
        };
        match parsed {
            Ok(Parsed::Object(object, warnings)) => {
                self.problems.extend(warnings.into_iter().map(&with_place));
                let key = object.key();
                // As `kubectl apply -f` applies a file's documents in order, a later
                // definition of the same object wins.
                if let Some(earlier) = self.defined_at.insert(key.clone(), place) {
                    self.problems.push(with_place(Diagnostic {
                        severity: Severity::Warning,
                        file: None,
                        document: None,
                        kind: Some(raw.kind.clone()),
                        namespace: Some(key.namespace.clone()),
                        name: Some(key.name.clone()),
                        field: "metadata.name".into(),
                        message: format!(
                            "{key} is also defined earlier in this file ({earlier}); this later definition is used, \
                             as kubectl apply would"
                        ),
                    }));
                }
                self.documents.insert(key.clone(), document);
                self.objects.insert(key, object);
            }
            Ok(Parsed::Skipped(note)) => self.problems.push(with_place(note)),
            Err(e) => {
                // Keep the last good state of this object, if we can tell which it is:
                // an earlier definition in this file, else what the file held before.
                let mut e = with_place(e);
                if let Some(kind) = Kind::from_name(&raw.kind) {
                    let namespace = if kind.is_cluster_scoped() {
                        String::new()
                    } else {
                        raw.namespace.clone().unwrap_or_else(|| "default".into())
                    };
                    let key = ObjectKey { kind, namespace, name: raw.name.clone() };
                    let kept = self.objects.contains_key(&key)
                        || previous.get(&key).is_some_and(|old| {
                            self.documents.insert(key.clone(), document);
                            self.objects.insert(key, old.clone()).is_none()
                        });
                    if kept {
                        let joined = if e.message.ends_with('?') { " Its" } else { "; its" };
                        e.message.push_str(&format!("{joined} last good state stays in force"));
                    }
                }
                self.problems.push(e);
            }
        }
    }
}

#[cfg(test)]
mod tests;
