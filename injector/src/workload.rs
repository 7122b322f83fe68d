//! Offline injection of a multi-document YAML stream (`meshctl inject -f`): Pods and the pod
//! templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs (and
//! of the items of a `List`) get the same patch the webhook would give their pods.
//!
//! Documents that are not changed (other kinds, workloads left alone, empty or comment-only
//! documents) are written back as their original text. A changed document keeps the
//! comments at its top and the order of its keys; comments inside it are lost (the YAML
//! library does not keep them). Injecting offline is what the user asked for, so the
//! namespace counts as enabled; `sidecar.amime.dev/inject: "false"` still opts a pod out.

use std::fmt;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use crate::inject::{inject, InjectError, Outcome, SkipReason};
use crate::settings::InjectionSettings;
use crate::yaml11;

/// Where the pod template is in each workload kind (`None` for a Pod: the object itself).
pub const WORKLOAD_KINDS: [(&str, Option<&[&str]>); 7] = [
    ("Pod", None),
    ("Deployment", Some(&["spec", "template"])),
    ("StatefulSet", Some(&["spec", "template"])),
    ("DaemonSet", Some(&["spec", "template"])),
    ("ReplicaSet", Some(&["spec", "template"])),
    ("Job", Some(&["spec", "template"])),
    ("CronJob", Some(&["spec", "jobTemplate", "spec", "template"])),
];

/// What happened to one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadOutcome {
    Injected,
    Skipped(SkipReason),
}

/// One workload found in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadReport {
    pub object: ObjectRef,
    pub outcome: WorkloadOutcome,
}

/// A document (1-based, as split on `---`) and, when known, the object in it
/// (`item` for the items of a `List`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectRef {
    pub document: usize,
    pub item: Option<usize>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(item) = self.item {
            write!(f, " item {item}")?;
        }
        if let Some(kind) = &self.kind {
            write!(f, " ({kind} ")?;
            if let Some(ns) = &self.namespace {
                write!(f, "{ns}/")?;
            }
            write!(f, "{})", self.name.as_deref().unwrap_or("<no name>"))?;
        }
        Ok(())
    }
}

/// A document that cannot be injected: the object and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {message}")]
pub struct WorkloadError {
    pub object: Box<ObjectRef>,
    /// Path of the field in the object (`spec.template.metadata.annotations["…"]`), or
    /// `<document>` for a document that is not valid YAML.
    pub field: String,
    pub message: String,
}

/// The injected stream and what was done to each workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedStream {
    pub output: String,
    pub workloads: Vec<WorkloadReport>,
}

/// Injects every workload in `input` (multi-document YAML). `namespace`: the namespace of
/// objects that name none (for reports). Every bad document is reported; the output is
/// only given when there are none.
pub fn inject_stream(
    input: &str,
    namespace: Option<&str>,
    settings: &InjectionSettings,
) -> Result<InjectedStream, Vec<WorkloadError>> {
    // kubectl reads files that start with a UTF-8 byte order mark; the YAML library does not.
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    let mut output = String::with_capacity(input.len() * 2);
    let mut workloads = Vec::new();
    let mut errors = Vec::new();
    let mut first_line = 1;
    for (index, doc) in split_documents(input).into_iter().enumerate() {
        first_line += doc.separator.matches('\n').count();
        let object = ObjectRef { document: index + 1, ..ObjectRef::default() };
        let mut ctx = Ctx { object, first_line, namespace, settings };
        first_line += doc.body.matches('\n').count();
        match inject_document(doc.body, &mut ctx, &mut workloads) {
            Ok(None) => output.push_str(doc.text),
            Ok(Some(yaml)) => {
                output.push_str(doc.separator);
                output.push_str(leading_comments(doc.body));
                output.push_str(&yaml);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(InjectedStream { output, workloads })
    } else {
        Err(errors)
    }
}

struct Ctx<'a> {
    object: ObjectRef,
    /// The input line (1-based) where the document's body starts.
    first_line: usize,
    namespace: Option<&'a str>,
    settings: &'a InjectionSettings,
}

impl Ctx<'_> {
    fn error(&self, field: impl Into<String>, message: impl Into<String>) -> WorkloadError {
        WorkloadError { object: Box::new(self.object.clone()), field: field.into(), message: message.into() }
    }
}

/// One document of the stream: its whole text, its `---` line (empty for a first document
/// without one) and the text after that line.
struct Document<'a> {
    text: &'a str,
    separator: &'a str,
    body: &'a str,
}

/// Splits on `---` lines; a leading part with nothing but blank lines and comments before
/// the first `---` is kept as part of the first document.
fn split_documents(input: &str) -> Vec<Document<'_>> {
    let mut starts = vec![0];
    let mut offset = 0;
    for line in input.split_inclusive('\n') {
        let is_separator = line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_separator && offset > 0 {
            starts.push(offset);
        }
        offset += line.len();
    }
    starts.push(input.len());
    let mut docs: Vec<Document> = starts
        .windows(2)
        .map(|w| {
            let text = &input[w[0]..w[1]];
            let separator_len = if text.starts_with("---") { text.find('\n').map_or(text.len(), |i| i + 1) } else { 0 };
            Document { text, separator: &text[..separator_len], body: &text[separator_len..] }
        })
        .collect();
    // A comment-only preamble before the first `---` joins the first real document.
    if docs.len() > 1 && docs[0].separator.is_empty() && !has_content(docs[0].body) {
        let preamble = docs.remove(0);
        let first = &mut docs[0];
        let len = preamble.text.len() + first.text.len();
        first.text = &input[..len];
        first.separator = &input[..preamble.text.len() + first.separator.len()];
    }
    docs
}

fn has_content(body: &str) -> bool {
    body.lines().any(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with('#') && l != "..."
    })
}

/// The comment and blank lines at the top of a document body.
fn leading_comments(body: &str) -> &str {
    let mut end = 0;
    for line in body.split_inclusive('\n') {
        let trimmed = line.trim();
        if !(trimmed.is_empty() || trimmed.starts_with('#')) {
            break;
        }
        end += line.len();
    }
    &body[..end]
}

/// The injected document as YAML, or `None` when it stays as written.
fn inject_document(
    body: &str,
    ctx: &mut Ctx,
    workloads: &mut Vec<WorkloadReport>,
) -> Result<Option<String>, WorkloadError> {
    if !has_content(body) {
        return Ok(None);
    }
    let mut yaml: Yaml = serde_yaml::from_str(body).map_err(|_| {
        // Parse again with the lines before the document blanked so that the error's line
        // numbers are the input's.
        let padded = format!("{}{body}", "\n".repeat(ctx.first_line - 1));
        let e = serde_yaml::from_str::<Yaml>(&padded).err().map(|e| e.to_string()).unwrap_or_default();
        ctx.error("<document>", format!("not valid YAML: {e}"))
    })?;
    // kubectl reads YAML 1.1: a plain `0644` is a number and a plain `yes` a bool.
    yaml11::read_as_kubectl(body, &mut yaml)
        .map_err(|e| ctx.error("<document>", format!("cannot read it as kubectl does: {e}")))?;
    // and merges `<<: *anchor` keys.
    yaml.apply_merge().map_err(|e| ctx.error("<document>", format!("cannot merge its `<<` keys: {e}")))?;
    let json: Json =
        serde_json::to_value(&yaml).map_err(|e| ctx.error("<document>", format!("not a Kubernetes object: {e}")))?;
    let changed = match inject_object(json, ctx, workloads)? {
        Some(json) => json,
        None => return Ok(None),
    };
    let mut quoted = Quoted::new(body);
    let ordered = ordered_like(&changed, Some(&yaml), &mut quoted);
    let text =
        serde_yaml::to_string(&ordered).map_err(|e| ctx.error("<document>", format!("cannot write YAML: {e}")))?;
    Ok(Some(quoted.restore(text)))
}

/// Strings kubectl would read as a bool or number if written plain (`yes`, `on`, `0644`,
/// `1_000`), which the YAML library writes plain: they go into the document as unique
/// placeholders and come out single-quoted.
struct Quoted {
    prefix: String,
    strings: Vec<String>,
}

impl Quoted {
    /// Placeholders that do not occur in `body` (nor in what injection adds).
    fn new(body: &str) -> Self {
        let prefix = (0..).map(|n| format!("amimeQuoted{n}x")).find(|p| !body.contains(p.as_str())).unwrap_or_default();
        Self { prefix, strings: Vec::new() }
    }

    fn placeholder(&mut self, s: &str) -> Yaml {
        self.strings.push(s.to_string());
        Yaml::String(format!("{}{}z", self.prefix, self.strings.len() - 1))
    }

    fn restore(&self, mut text: String) -> String {
        for (i, s) in self.strings.iter().enumerate() {
            text = text.replace(&format!("{}{i}z", self.prefix), &format!("'{}'", s.replace('\'', "''")));
        }
        text
    }
}

/// The object with its pod template injected, `None` when unchanged.
fn inject_object(
    mut object: Json,
    ctx: &mut Ctx,
    workloads: &mut Vec<WorkloadReport>,
) -> Result<Option<Json>, WorkloadError> {
    let Some(kind) = object.get("kind").and_then(Json::as_str).map(str::to_string) else { return Ok(None) };
    if kind.ends_with("List") {
        return inject_list(object, ctx, workloads);
    }
    let Some((_, template)) = WORKLOAD_KINDS.iter().find(|(k, _)| *k == kind) else { return Ok(None) };
    let metadata = &object["metadata"];
    ctx.object.kind = Some(kind.clone());
    ctx.object.name = metadata["name"].as_str().or(metadata["generateName"].as_str()).map(str::to_string);
    ctx.object.namespace = metadata["namespace"].as_str().or(ctx.namespace).map(str::to_string);
    let Some(template_path) = template else {
        let pod = inject_pod(&object, ctx, "")?;
        return Ok(record(workloads, ctx, pod));
    };
    let prefix = template_path.join(".");
    let template = match object.pointer_mut(&format!("/{}", template_path.join("/"))) {
        Some(Json::Object(template)) => template,
        Some(_) => return Err(ctx.error(prefix, "expected an object (the pod template)")),
        None => return Err(ctx.error(prefix, "missing (the pod template)")),
    };
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or(Json::Null),
        "spec": template.get("spec").cloned().unwrap_or(Json::Null),
    });
    let Some(mut injected) = record(workloads, ctx, inject_pod(&pod, ctx, &format!("{prefix}."))?) else {
        return Ok(None);
    };
    template.insert("metadata".into(), injected["metadata"].take());
    template.insert("spec".into(), injected["spec"].take());
    Ok(Some(object))
}

/// Reports what happened to the workload in `ctx`; the injected pod, if it was.
fn record(workloads: &mut Vec<WorkloadReport>, ctx: &Ctx, pod: Result<Json, SkipReason>) -> Option<Json> {
    let (outcome, pod) = match pod {
        Ok(pod) => (WorkloadOutcome::Injected, Some(pod)),
        Err(reason) => (WorkloadOutcome::Skipped(reason), None),
    };
    workloads.push(WorkloadReport { object: ctx.object.clone(), outcome });
    pod
}

/// Injects `pod`: the injected pod, or why it was left alone. `prefix` goes before field
/// names in errors (`spec.template.`).
fn inject_pod(pod: &Json, ctx: &Ctx, prefix: &str) -> Result<Result<Json, SkipReason>, WorkloadError> {
    if !pod["spec"].is_object() {
        return Err(ctx.error(format!("{prefix}spec"), "expected an object (the pod spec)"));
    }
    let wrap = |e: InjectError| ctx.error(format!("{prefix}{}", e.field), e.message);
    match inject(pod, true, ctx.settings).map_err(wrap)? {
        Outcome::Skipped(reason) => Ok(Err(reason)),
        Outcome::Injected(patch) => {
            let mut pod = pod.clone();
            json_patch::patch(&mut pod, &patch).map_err(|e| ctx.error(format!("{prefix}spec"), e.to_string()))?;
            Ok(Ok(pod))
        }
    }
}

/// A `List`'s items, each injected; `None` when none changed.
fn inject_list(
    mut list: Json,
    ctx: &mut Ctx,
    workloads: &mut Vec<WorkloadReport>,
) -> Result<Option<Json>, WorkloadError> {
    let Some(items) = list.get_mut("items").and_then(Json::as_array_mut) else { return Ok(None) };
    let mut changed = false;
    for (i, item) in items.iter_mut().enumerate() {
        let mut item_ctx = Ctx {
            object: ObjectRef { document: ctx.object.document, item: Some(i), ..ObjectRef::default() },
            first_line: ctx.first_line,
            namespace: ctx.namespace,
            settings: ctx.settings,
        };
        if let Some(injected) = inject_object(item.clone(), &mut item_ctx, workloads)? {
            *item = injected;
            changed = true;
        }
    }
    Ok(changed.then_some(list))
}

/// `value` as YAML with the keys of `original` in their original order first, then the
/// new keys (sorted).
fn ordered_like(value: &Json, original: Option<&Yaml>, quoted: &mut Quoted) -> Yaml {
    match value {
        Json::Object(map) => {
            let original = original.and_then(Yaml::as_mapping);
            let mut out = serde_yaml::Mapping::new();
            if let Some(original) = original {
                for (key, old) in original {
                    if let Some(new) = key.as_str().and_then(|k| map.get(k)) {
                        out.insert(key.clone(), ordered_like(new, Some(old), quoted));
                    }
                }
            }
            let mut rest: Vec<_> = map.iter().filter(|(k, _)| !out.contains_key(k.as_str())).collect();
            rest.sort_by(|a, b| a.0.cmp(b.0));
            for (key, new) in rest {
                out.insert(Yaml::String(key.clone()), ordered_like(new, None, quoted));
            }
            Yaml::Mapping(out)
        }
        Json::Array(items) => {
            let original = original.and_then(Yaml::as_sequence);
            Yaml::Sequence(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| ordered_like(item, original.and_then(|o| o.get(i)), quoted))
                    .collect(),
            )
        }
        Json::String(s) if yaml11::kubectl_plain_scalar(s).is_some() => quoted.placeholder(s),
        // Numbers, strings, booleans, null: the value itself.
        other => serde_yaml::to_value(other).unwrap_or(Yaml::Null),
    }
}
