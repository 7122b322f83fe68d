//! protoc-gen-validate `FieldRules`, applied to one field's value. The rules are read
//! as a [`DynamicMessage`] of `validate.FieldRules` by field name, so every rule kind
//! the annotation language has is handled here once, for every Envoy message.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Display;
use std::sync::{OnceLock, RwLock};

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, ReflectMessage, Value};

use super::{violation, with_segment, Violation};

/// Applies `rules` (a `validate.FieldRules`) to `value`, the content of `field`.
/// Returns true when the rules say not to look inside the value (`message.skip`).
pub(super) fn check_field(
    field: &FieldDescriptor,
    rules: &DynamicMessage,
    value: &Value,
    present: bool,
    path: &mut String,
    out: &mut Vec<Violation>,
) -> bool {
    if let Some(message_rules) = sub(rules, "message") {
        if flag(&message_rules, "skip") {
            return true;
        }
        if flag(&message_rules, "required") && !present {
            out.push(violation(path, "is required".to_owned()));
        }
    }
    let Some((kind, kind_rules)) = type_rules(rules) else { return false };
    match (kind, value) {
        ("repeated", Value::List(items)) => check_repeated(kind_rules, items, path, out),
        ("map", Value::Map(map)) => check_map(field, kind_rules, map, path, out),
        _ => {
            if let Some(message) = check_value(kind, kind_rules, value, present) {
                out.push(violation(path, message));
            }
        }
    }
    if let Some(message) = check_defined_enum(field, kind, kind_rules, value) {
        out.push(violation(path, message));
    }
    false
}

/// The set member of the `type` oneof of `validate.FieldRules`, e.g. `("string", StringRules)`.
fn type_rules(rules: &DynamicMessage) -> Option<(&'static str, &DynamicMessage)> {
    rules.fields().find_map(|(f, v)| {
        let name = f.containing_oneof()?.name().eq("type").then(|| kind_name(f.name()))??;
        Some((name, v.as_message()?))
    })
}

fn kind_name(name: &str) -> Option<&'static str> {
    const KINDS: &[&str] = &[
        "float",
        "double",
        "int32",
        "int64",
        "uint32",
        "uint64",
        "sint32",
        "sint64",
        "fixed32",
        "fixed64",
        "sfixed32",
        "sfixed64",
        "bool",
        "string",
        "bytes",
        "enum",
        "repeated",
        "map",
        "any",
        "duration",
        "timestamp",
    ];
    KINDS.iter().copied().find(|k| *k == name)
}

fn sub(m: &DynamicMessage, name: &str) -> Option<DynamicMessage> {
    if !m.has_field_by_name(name) {
        return None;
    }
    m.get_field_by_name(name)?.as_message().cloned()
}

fn flag(m: &DynamicMessage, name: &str) -> bool {
    m.has_field_by_name(name) && m.get_field_by_name(name).and_then(|v| v.as_bool()) == Some(true)
}

/// A rule that is set, as its value.
fn rule<'a>(m: &'a DynamicMessage, name: &str) -> Option<Cow<'a, Value>> {
    if m.has_field_by_name(name) {
        m.get_field_by_name(name)
    } else {
        None
    }
}

fn rule_u64(m: &DynamicMessage, name: &str) -> Option<u64> {
    rule(m, name).and_then(|v| v.as_u64())
}

fn rule_list(m: &DynamicMessage, name: &str) -> Vec<Value> {
    m.get_field_by_name(name).and_then(|v| v.as_list().map(<[Value]>::to_vec)).unwrap_or_default()
}

fn check_repeated(rules: &DynamicMessage, items: &[Value], path: &mut String, out: &mut Vec<Violation>) {
    if items.is_empty() && flag(rules, "ignore_empty") {
        return;
    }
    let n = items.len() as u64;
    if let Some(min) = rule_u64(rules, "min_items").filter(|&min| n < min) {
        out.push(violation(path, format!("has {n} items; at least {min} required")));
    }
    if let Some(max) = rule_u64(rules, "max_items").filter(|&max| n > max) {
        out.push(violation(path, format!("has {n} items; at most {max} allowed")));
    }
    if flag(rules, "unique") {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                out.push(violation(path, format!("item {i} repeats an earlier item; items must be unique")));
                break;
            }
        }
    }
    if let Some(item_rules) = sub(rules, "items") {
        for (i, item) in items.iter().enumerate() {
            with_segment(path, format_args!("[{i}]"), |path| check_item(&item_rules, item, path, out));
        }
    }
}

fn check_map(
    field: &FieldDescriptor,
    rules: &DynamicMessage,
    map: &HashMap<MapKey, Value>,
    path: &mut String,
    out: &mut Vec<Violation>,
) {
    if map.is_empty() && flag(rules, "ignore_empty") {
        return;
    }
    let n = map.len() as u64;
    if let Some(min) = rule_u64(rules, "min_pairs").filter(|&min| n < min) {
        out.push(violation(path, format!("has {n} entries; at least {min} required")));
    }
    if let Some(max) = rule_u64(rules, "max_pairs").filter(|&max| n > max) {
        out.push(violation(path, format!("has {n} entries; at most {max} allowed")));
    }
    let (key_rules, value_rules) = (sub(rules, "keys"), sub(rules, "values"));
    let value_is_message =
        matches!(field.kind(), Kind::Message(m) if matches!(m.map_entry_value_field().kind(), Kind::Message(_)));
    let mut keys: Vec<&MapKey> = map.keys().collect();
    keys.sort();
    for key in keys {
        with_segment(path, format_args!("{}", super::key_segment(key)), |path| {
            if let Some(key_rules) = &key_rules {
                check_item(key_rules, &Value::from(key.clone()), path, out);
            }
            if let Some(value_rules) = &value_rules {
                check_item(value_rules, &map[key], path, out);
            }
            if flag(rules, "no_sparse") && value_is_message && map[key].as_message().is_none() {
                out.push(violation(path, "map values must be set".to_owned()));
            }
        });
    }
}

/// Rules of one list item or map key/value: always present.
fn check_item(rules: &DynamicMessage, value: &Value, path: &str, out: &mut Vec<Violation>) {
    if let Some((kind, kind_rules)) = type_rules(rules) {
        if let Some(message) = check_value(kind, kind_rules, value, true) {
            out.push(violation(path, message));
        }
    }
}

/// Checks a single value against the rules of its kind. Message-typed values
/// (wrappers, `Duration`, `Timestamp`, `Any`) are checked only when present.
fn check_value(kind: &str, rules: &DynamicMessage, value: &Value, present: bool) -> Option<String> {
    match kind {
        "duration" | "timestamp" | "any" => {
            if !present {
                return flag(rules, "required").then(|| "is required".to_owned());
            }
            let m = value.as_message()?;
            match kind {
                "any" => check_any(rules, m),
                _ => check_time(rules, m),
            }
        }
        _ => {
            // A wrapper (`google.protobuf.UInt32Value`, ...) carries its rules for the inner value.
            if let Value::Message(m) = value {
                if !present {
                    return None;
                }
                let inner = m.get_field_by_name("value")?;
                return check_scalar(kind, rules, &inner);
            }
            check_scalar(kind, rules, value)
        }
    }
}

fn check_scalar(kind: &str, rules: &DynamicMessage, value: &Value) -> Option<String> {
    match (kind, value) {
        ("string", Value::String(s)) => check_string(rules, s),
        ("bytes", Value::Bytes(b)) => check_bytes(rules, b),
        ("bool", Value::Bool(b)) => {
            rule(rules, "const").and_then(|c| (c.as_bool() != Some(*b)).then(|| format!("must be {}", *c)))
        }
        ("enum", Value::EnumNumber(n)) => check_enum(rules, *n),
        ("float" | "double", _) => {
            let v = as_f64(value)?;
            if v == 0.0 && flag(rules, "ignore_empty") {
                return None;
            }
            check_number(v, rules, as_f64)
        }
        (_, _) => {
            let v = as_i128(value)?;
            if v == 0 && flag(rules, "ignore_empty") {
                return None;
            }
            check_number(v, rules, as_i128)
        }
    }
}

fn as_i128(v: &Value) -> Option<i128> {
    match v {
        Value::I32(n) => Some(i128::from(*n)),
        Value::I64(n) => Some(i128::from(*n)),
        Value::U32(n) => Some(i128::from(*n)),
        Value::U64(n) => Some(i128::from(*n)),
        Value::EnumNumber(n) => Some(i128::from(*n)),
        _ => None,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::F32(n) => Some(f64::from(*n)),
        Value::F64(n) => Some(*n),
        _ => None,
    }
}

/// `const`, `in`, `not_in` and the range rules (`lt`, `lte`, `gt`, `gte`) of a
/// numeric kind. As in protoc-gen-validate, a lower bound above the upper bound
/// means "outside the range".
fn check_number<T: PartialOrd + Copy + Display>(
    v: T,
    rules: &DynamicMessage,
    get: fn(&Value) -> Option<T>,
) -> Option<String> {
    let at = |name: &str| rule(rules, name).and_then(|r| get(&r));
    if let Some(c) = at("const") {
        if v != c {
            return Some(format!("is {v}; must be {c}"));
        }
    }
    let list = |name: &str| rule_list(rules, name).iter().filter_map(get).collect::<Vec<T>>();
    let allowed = list("in");
    if !allowed.is_empty() && !allowed.contains(&v) {
        return Some(format!("is {v}; must be one of {}", join(&allowed)));
    }
    if list("not_in").contains(&v) {
        return Some(format!("is {v}; must not be one of {}", join(&list("not_in"))));
    }
    range(v, at("lt"), at("lte"), at("gt"), at("gte"))
}

fn join<T: Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn range<T: PartialOrd + Display>(
    v: T,
    lt: Option<T>,
    lte: Option<T>,
    gt: Option<T>,
    gte: Option<T>,
) -> Option<String> {
    let (upper_ok, upper) = match (&lt, &lte) {
        (Some(b), _) => (Some(v < *b), Some((b, "less than"))),
        (None, Some(b)) => (Some(v <= *b), Some((b, "at most"))),
        _ => (None, None),
    };
    let (lower_ok, lower) = match (&gt, &gte) {
        (Some(b), _) => (Some(v > *b), Some((b, "greater than"))),
        (None, Some(b)) => (Some(v >= *b), Some((b, "at least"))),
        _ => (None, None),
    };
    match (upper_ok, lower_ok, upper, lower) {
        (Some(u), Some(l), Some((ub, uw)), Some((lb, lw))) => {
            if ub >= lb {
                (!(u && l)).then(|| format!("is {v}; must be {lw} {lb} and {uw} {ub}"))
            } else {
                (!(u || l)).then(|| format!("is {v}; must be {lw} {lb} or {uw} {ub}"))
            }
        }
        (Some(false), _, Some((b, w)), _) | (_, Some(false), _, Some((b, w))) => {
            Some(format!("is {v}; must be {w} {b}"))
        }
        _ => None,
    }
}

fn check_enum(rules: &DynamicMessage, n: i32) -> Option<String> {
    if let Some(c) = rule(rules, "const").and_then(|c| c.as_i32()) {
        if n != c {
            return Some(format!("is {n}; must be {c}"));
        }
    }
    let allowed: Vec<i32> = rule_list(rules, "in").iter().filter_map(Value::as_i32).collect();
    if !allowed.is_empty() && !allowed.contains(&n) {
        return Some(format!("is {n}; must be one of {}", join(&allowed)));
    }
    if rule_list(rules, "not_in").iter().filter_map(Value::as_i32).any(|x| x == n) {
        return Some(format!("must not be {n}"));
    }
    None
}

/// `defined_only`: needs the enum's descriptor, which only the field has.
fn check_defined_enum(
    field: &FieldDescriptor,
    kind: &str,
    kind_rules: &DynamicMessage,
    value: &Value,
) -> Option<String> {
    let enum_rules = match kind {
        "enum" => kind_rules.clone(),
        "repeated" => {
            let items = sub(kind_rules, "items")?;
            let (k, r) = type_rules(&items)?;
            (k == "enum").then(|| r.clone())?
        }
        _ => return None,
    };
    if !flag(&enum_rules, "defined_only") {
        return None;
    }
    let Kind::Enum(desc) = field.kind() else { return None };
    let numbers: Vec<i32> = match value {
        Value::EnumNumber(n) => vec![*n],
        Value::List(items) => items.iter().filter_map(Value::as_enum_number).collect(),
        _ => return None,
    };
    numbers
        .into_iter()
        .find(|n| desc.get_value(*n).is_none())
        .map(|n| format!("{n} is not a defined value of {}", desc.full_name()))
}

fn nanos(m: &DynamicMessage) -> Option<i128> {
    let seconds = m.get_field_by_name("seconds")?.as_i64()?;
    let nanos = m.get_field_by_name("nanos")?.as_i32()?;
    Some(i128::from(seconds) * 1_000_000_000 + i128::from(nanos))
}

/// Durations and timestamps, compared in nanoseconds.
fn check_time(rules: &DynamicMessage, m: &DynamicMessage) -> Option<String> {
    let v = nanos(m)?;
    let seconds = m.get_field_by_name("seconds")?.as_i64()?;
    let n = m.get_field_by_name("nanos")?.as_i32()?;
    // Envoy refuses out-of-range values of the well-known types themselves.
    if !(-315_576_000_000..=315_576_000_000).contains(&seconds) || !(-999_999_999..=999_999_999).contains(&n) {
        return Some(format!("{seconds}s {n}ns is out of range for {}", m.descriptor().full_name()));
    }
    let at = |name: &str| rule(rules, name).and_then(|r| r.as_message().and_then(nanos));
    let show = |x: i128| format!("{}s", x as f64 / 1e9);
    if let Some(c) = at("const") {
        if v != c {
            return Some(format!("is {}; must be {}", show(v), show(c)));
        }
    }
    let list =
        |name: &str| rule_list(rules, name).iter().filter_map(|x| x.as_message().and_then(nanos)).collect::<Vec<_>>();
    let allowed = list("in");
    if !allowed.is_empty() && !allowed.contains(&v) {
        return Some(format!("is {}; not an allowed value", show(v)));
    }
    if list("not_in").contains(&v) {
        return Some(format!("is {}; not an allowed value", show(v)));
    }
    range(v, at("lt"), at("lte"), at("gt"), at("gte")).map(|_| {
        let b = |name: &str| at(name).map(|x| format!(" {name} {}", show(x))).unwrap_or_default();
        format!("is {}; bounds:{}{}{}{}", show(v), b("gt"), b("gte"), b("lt"), b("lte"))
    })
}

fn check_any(rules: &DynamicMessage, m: &DynamicMessage) -> Option<String> {
    let url = m.get_field_by_name("type_url")?.as_str()?.to_owned();
    let allowed: Vec<String> = rule_list(rules, "in").iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    if !allowed.is_empty() && !allowed.contains(&url) {
        return Some(format!("type {url} is not one of {}", allowed.join(", ")));
    }
    rule_list(rules, "not_in").iter().any(|v| v.as_str() == Some(&url)).then(|| format!("type {url} is not allowed"))
}

/// A length rule: its name, the length it bounds, when it is broken, how to say so.
type LengthRule = (&'static str, u64, fn(u64, u64) -> bool, &'static str);
/// A substring rule: its name, when it holds, how to say it does not.
type TextRule = (&'static str, fn(&str, &str) -> bool, &'static str);

fn check_string(rules: &DynamicMessage, s: &str) -> Option<String> {
    if s.is_empty() && flag(rules, "ignore_empty") {
        return None;
    }
    let shown = shorten(s);
    let text = |name: &str| rule(rules, name).and_then(|v| v.as_str().map(str::to_owned));
    if let Some(c) = text("const").filter(|c| c != s) {
        return Some(format!("is {shown}; must be {c:?}"));
    }
    let runes = s.chars().count() as u64;
    let bytes = s.len() as u64;
    let limits: [LengthRule; 6] = [
        ("len", runes, |v, r| v != r, "characters long; must be exactly"),
        ("min_len", runes, |v, r| v < r, "characters long; must be at least"),
        ("max_len", runes, |v, r| v > r, "characters long; must be at most"),
        ("len_bytes", bytes, |v, r| v != r, "bytes long; must be exactly"),
        ("min_bytes", bytes, |v, r| v < r, "bytes long; must be at least"),
        ("max_bytes", bytes, |v, r| v > r, "bytes long; must be at most"),
    ];
    for (name, actual, broken, words) in limits {
        if let Some(limit) = rule_u64(rules, name).filter(|&limit| broken(actual, limit)) {
            return Some(format!("is {actual} {words} {limit}{}", if actual == 0 { " (it is empty)" } else { "" }));
        }
    }
    if let Some(p) = text("pattern") {
        if !pattern_matches(&p, s) {
            return Some(format!("{shown} does not match the pattern {p:?}"));
        }
    }
    let checks: [TextRule; 4] = [
        ("prefix", |s, r| s.starts_with(r), "must start with"),
        ("suffix", |s, r| s.ends_with(r), "must end with"),
        ("contains", |s, r| s.contains(r), "must contain"),
        ("not_contains", |s, r| !s.contains(r), "must not contain"),
    ];
    for (name, ok, words) in checks {
        if let Some(r) = text(name).filter(|r| !ok(s, r)) {
            return Some(format!("{shown} {words} {r:?}"));
        }
    }
    let list =
        |name: &str| rule_list(rules, name).iter().filter_map(|v| v.as_str().map(str::to_owned)).collect::<Vec<_>>();
    let allowed = list("in");
    if !allowed.is_empty() && !allowed.iter().any(|a| a == s) {
        return Some(format!("is {shown}; must be one of {allowed:?}"));
    }
    if list("not_in").iter().any(|a| a == s) {
        return Some(format!("must not be {shown}"));
    }
    well_known_string(rules, s).map(|what| format!("{shown} is not {what}"))
}

/// The value as shown in a message: quoted, cut after 60 characters.
fn shorten(s: &str) -> String {
    if s.chars().count() <= 60 {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(60).collect();
        format!("{head:?}… ({} bytes)", s.len())
    }
}

fn well_known_string(rules: &DynamicMessage, s: &str) -> Option<&'static str> {
    let set = |name: &str| flag(rules, name);
    let ip = s.parse::<std::net::IpAddr>();
    if set("ip") && ip.is_err() {
        return Some("an IP address");
    }
    if set("ipv4") && s.parse::<std::net::Ipv4Addr>().is_err() {
        return Some("an IPv4 address");
    }
    if set("ipv6") && s.parse::<std::net::Ipv6Addr>().is_err() {
        return Some("an IPv6 address");
    }
    if set("hostname") && !is_hostname(s) {
        return Some("a valid hostname");
    }
    if set("address") && ip.is_err() && !is_hostname(s) {
        return Some("a hostname or IP address");
    }
    if set("email") && !s.split_once('@').is_some_and(|(l, d)| !l.is_empty() && is_hostname(d)) {
        return Some("an email address");
    }
    if set("uri") && !is_absolute_uri(s) {
        return Some("an absolute URI");
    }
    if set("uuid") && !is_uuid(s) {
        return Some("a UUID");
    }
    if let Some(known) = rule(rules, "well_known_regex").and_then(|v| v.as_enum_number()) {
        // `strict` is a proto2 field defaulting to true.
        let strict = rule(rules, "strict").and_then(|v| v.as_bool()).unwrap_or(true);
        let loose_ok = !s.bytes().any(|b| matches!(b, 0 | b'\n' | b'\r'));
        match (known, strict) {
            (1 | 2, false) if !loose_ok => return Some("free of NUL, CR and LF characters"),
            (1, true) if !is_strict_header_name(s) => return Some("a valid HTTP header name (RFC 7230)"),
            (2, true) if s.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) => {
                return Some("a valid HTTP header value (RFC 7230)")
            }
            _ => {}
        }
    }
    None
}

fn is_strict_header_name(s: &str) -> bool {
    let name = s.strip_prefix(':').unwrap_or(s);
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_|~`".contains(&b))
}

fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_absolute_uri(s: &str) -> bool {
    s.split_once(':').is_some_and(|(scheme, _)| {
        scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    }) && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn pattern_matches(pattern: &str, s: &str) -> bool {
    static CACHE: OnceLock<RwLock<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(re) = crate::sync::read(cache).get(pattern) {
        return re.as_ref().is_none_or(|re| re.is_match(s));
    }
    let re = regex::Regex::new(pattern).ok();
    let ok = re.as_ref().is_none_or(|re| re.is_match(s));
    crate::sync::write(cache).insert(pattern.to_owned(), re);
    ok
}

fn check_bytes(rules: &DynamicMessage, b: &[u8]) -> Option<String> {
    if b.is_empty() && flag(rules, "ignore_empty") {
        return None;
    }
    let n = b.len() as u64;
    if let Some(c) = rule(rules, "const").and_then(|v| v.as_bytes().cloned()).filter(|c| c.as_ref() != b) {
        return Some(format!("must be {c:?}"));
    }
    if let Some(l) = rule_u64(rules, "len").filter(|&l| n != l) {
        return Some(format!("is {n} bytes long; must be exactly {l}"));
    }
    if let Some(l) = rule_u64(rules, "min_len").filter(|&l| n < l) {
        return Some(format!("is {n} bytes long; must be at least {l}"));
    }
    if let Some(l) = rule_u64(rules, "max_len").filter(|&l| n > l) {
        return Some(format!("is {n} bytes long; must be at most {l}"));
    }
    if (flag(rules, "ip") && n != 4 && n != 16) || (flag(rules, "ipv4") && n != 4) || (flag(rules, "ipv6") && n != 16) {
        return Some(format!("is {n} bytes long; not an IP address"));
    }
    None
}

#[cfg(test)]
pub(super) fn range_for_test(
    v: i64,
    lt: Option<i64>,
    lte: Option<i64>,
    gt: Option<i64>,
    gte: Option<i64>,
) -> Option<String> {
    range(v, lt, lte, gt, gte)
}
