//! Checks Envoy resources against the constraints Envoy itself declares.
//!
//! Envoy's `.proto` files carry protoc-gen-validate annotations (`validate.rules` on
//! fields, `validate.required` on oneofs, `validate.disabled` on messages), and Envoy
//! refuses a whole resource when one of them fails. The build script compiles those
//! files, annotations included, into the descriptor pool of [`crate::envoy_json`];
//! this module walks any message of that pool as a [`DynamicMessage`] and applies
//! whatever rules its descriptors name: one generic checker, no copy of a rule.
//! `Any`s are opened and their content checked the same way; a packed type the pool
//! lacks is left unchecked and listed by [`unchecked_types`] (Envoy may well know it).
//!
//! [`semantic`] adds what the annotations cannot say but Envoy still refuses at
//! load time (the weight sum of a weighted cluster, RE2 program size, a domain twice
//! in one route configuration).
//!
//! A [`Violation`] names the Envoy field path (`virtual_hosts[0].routes[1].match
//! .headers[0].string_match.prefix`), so callers can trace it back to what made it.

mod rules;
pub mod semantic;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock, RwLock};

use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, MapKey, MessageDescriptor, OneofDescriptor,
    ReflectMessage, Value,
};

use crate::envoy_json::descriptor_pool;

/// One constraint a resource breaks.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Violation {
    /// Envoy field path inside the checked message, e.g. `routes[0].match.safe_regex.regex`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Checks an encoded message of type `message_name` (a full proto name).
pub fn check_encoded(message_name: &str, bytes: &[u8]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut path = String::new();
    open(message_name, bytes, &mut path, &mut out);
    out
}

/// Checks a prost message.
pub fn check_message<M: prost::Message + prost::Name>(m: &M) -> Vec<Violation> {
    check_encoded(&M::full_name(), &m.encode_to_vec())
}

/// Checks the message packed in an `Any`.
pub fn check_any(any: &envoy_types::pb::google::protobuf::Any) -> Vec<Violation> {
    match any.type_url.rsplit_once('/') {
        Some((_, name)) => check_encoded(name, &any.value),
        None => vec![Violation { path: String::new(), message: format!("invalid type URL {:?}", any.type_url) }],
    }
}

/// Types met inside an `Any` that the descriptor pool lacks, so their content went
/// unchecked. Add their `.proto` to `build.rs`; a test keeps this list empty.
pub fn unchecked_types() -> Vec<String> {
    crate::sync::lock(unchecked_set()).iter().cloned().collect()
}

fn unchecked_set() -> &'static std::sync::Mutex<std::collections::BTreeSet<String>> {
    static UNCHECKED: OnceLock<std::sync::Mutex<std::collections::BTreeSet<String>>> = OnceLock::new();
    UNCHECKED.get_or_init(Default::default)
}

fn unchecked(name: &str) {
    if crate::sync::lock(unchecked_set()).insert(name.to_owned()) {
        tracing::warn!(
            type_name = name,
            "an Envoy type meshd makes is not in its descriptor pool; its content is not checked"
        );
    }
}

fn open(message_name: &str, bytes: &[u8], path: &mut String, out: &mut Vec<Violation>) {
    let Some(desc) = descriptor_pool().get_message_by_name(message_name) else {
        out.push(violation(path, format!("type {message_name} is not in meshd's Envoy descriptor pool")));
        return;
    };
    match DynamicMessage::decode(desc, bytes) {
        Ok(msg) => walk(&msg, path, out),
        Err(e) => out.push(violation(path, format!("does not decode as {message_name}: {e}"))),
    }
}

fn violation(path: &str, message: String) -> Violation {
    Violation { path: path.to_owned(), message }
}

/// The rules of one message type, read from its descriptors once.
struct Plan {
    /// `validate.disabled`: no rule of this message (nor below it) applies.
    disabled: bool,
    /// Fields with rules or that can hold messages; plain fields without rules are
    /// left out, as nothing would be checked in them.
    fields: Vec<(FieldDescriptor, Option<DynamicMessage>)>,
    required_oneofs: Vec<OneofDescriptor>,
}

struct Extensions {
    field_rules: ExtensionDescriptor,
    oneof_required: ExtensionDescriptor,
    message_disabled: ExtensionDescriptor,
    message_ignored: ExtensionDescriptor,
}

fn extensions() -> &'static Extensions {
    static EXT: OnceLock<Extensions> = OnceLock::new();
    EXT.get_or_init(|| {
        let pool: &DescriptorPool = descriptor_pool();
        let get = |name: &str| {
            pool.get_extension_by_name(name).unwrap_or_else(|| {
                panic!("{name} is in the pool: build.rs puts protoc-gen-validate on the include path")
            })
        };
        Extensions {
            field_rules: get("validate.rules"),
            oneof_required: get("validate.required"),
            message_disabled: get("validate.disabled"),
            message_ignored: get("validate.ignored"),
        }
    })
}

fn plan(desc: &MessageDescriptor) -> Arc<Plan> {
    static PLANS: OnceLock<RwLock<HashMap<String, Arc<Plan>>>> = OnceLock::new();
    let plans = PLANS.get_or_init(Default::default);
    if let Some(p) = crate::sync::read(plans).get(desc.full_name()) {
        return p.clone();
    }
    let ext = extensions();
    let options = desc.options();
    let flag =
        |m: &DynamicMessage, e: &ExtensionDescriptor| m.has_extension(e) && m.get_extension(e).as_bool() == Some(true);
    let plan = Arc::new(Plan {
        disabled: flag(&options, &ext.message_disabled) || flag(&options, &ext.message_ignored),
        fields: desc
            .fields()
            .map(|f| {
                let options = f.options();
                let rules = options
                    .has_extension(&ext.field_rules)
                    .then(|| options.get_extension(&ext.field_rules).as_message().cloned())
                    .flatten();
                (f, rules)
            })
            .filter(|(f, rules)| rules.is_some() || holds_messages(f))
            .collect(),
        required_oneofs: desc.oneofs().filter(|o| flag(&o.options(), &ext.oneof_required)).collect(),
    });
    crate::sync::write(plans).insert(desc.full_name().to_owned(), plan.clone());
    plan
}

/// Whether a field's values can be messages (a message field, a list of them, or a
/// map with message values).
fn holds_messages(field: &FieldDescriptor) -> bool {
    match field.kind() {
        prost_reflect::Kind::Message(m) if field.is_map() => {
            matches!(m.map_entry_value_field().kind(), prost_reflect::Kind::Message(_))
        }
        prost_reflect::Kind::Message(_) => true,
        _ => false,
    }
}

/// Appends `.name` (or `name` at the root) to `path`, runs `f`, restores `path`.
fn with_segment<R>(path: &mut String, segment: std::fmt::Arguments<'_>, f: impl FnOnce(&mut String) -> R) -> R {
    let len = path.len();
    let _ = path.write_fmt(segment);
    let r = f(path);
    path.truncate(len);
    r
}

fn field_segment(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!(".{name}")
    }
}

fn key_segment(key: &MapKey) -> String {
    match key {
        MapKey::String(s) => format!("[{s:?}]"),
        MapKey::Bool(b) => format!("[{b}]"),
        MapKey::I32(n) => format!("[{n}]"),
        MapKey::I64(n) => format!("[{n}]"),
        MapKey::U32(n) => format!("[{n}]"),
        MapKey::U64(n) => format!("[{n}]"),
    }
}

fn walk(msg: &DynamicMessage, path: &mut String, out: &mut Vec<Violation>) {
    let desc = msg.descriptor();
    if desc.full_name() == "google.protobuf.Any" {
        let type_url =
            msg.get_field_by_name("type_url").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let bytes = msg.get_field_by_name("value").and_then(|v| v.as_bytes().cloned()).unwrap_or_default();
        match type_url.rsplit_once('/') {
            // Envoy knows more types than meshd's pool: a gap in the pool is ours, not
            // a reason to refuse. The content goes unchecked, and is listed.
            Some((_, name)) if descriptor_pool().get_message_by_name(name).is_none() => unchecked(name),
            Some((_, name)) => open(name, &bytes, path, out),
            None => out.push(violation(path, format!("invalid type URL {type_url:?}"))),
        }
        return;
    }
    let plan = plan(&desc);
    if plan.disabled {
        return;
    }
    for oneof in &plan.required_oneofs {
        if !oneof.fields().any(|f| msg.has_field(&f)) {
            let names: Vec<_> = oneof.fields().map(|f| f.name().to_owned()).collect();
            let seg = field_segment(path, oneof.name());
            out.push(violation(&format!("{path}{seg}"), format!("one of {} is required", names.join(", "))));
        }
    }
    for (field, rules) in &plan.fields {
        let present = msg.has_field(field);
        if field.containing_oneof().is_some() && !present {
            continue;
        }
        let value = msg.get_field(field);
        let seg = field_segment(path, field.name());
        with_segment(path, format_args!("{seg}"), |path| {
            let mut skip = false;
            if let Some(rules) = rules {
                skip = rules::check_field(field, rules, &value, present, path, out);
            }
            if !skip {
                walk_children(field, &value, present, path, out);
            }
        });
    }
    semantic::check(msg, path, out);
}

fn walk_children(field: &FieldDescriptor, value: &Value, present: bool, path: &mut String, out: &mut Vec<Violation>) {
    match value {
        Value::Message(m) if present => walk(m, path, out),
        Value::List(items) => {
            for (i, item) in items.iter().enumerate() {
                if let Value::Message(m) = item {
                    with_segment(path, format_args!("[{i}]"), |path| walk(m, path, out));
                }
            }
        }
        Value::Map(map) if field.is_map() => {
            let mut keys: Vec<&MapKey> = map.keys().collect();
            keys.sort();
            for key in keys {
                if let Value::Message(m) = &map[key] {
                    with_segment(path, format_args!("{}", key_segment(key)), |path| walk(m, path, out));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
