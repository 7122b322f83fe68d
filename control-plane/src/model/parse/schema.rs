//! The field lists of the APIs meshd reads, and one walker that checks an object's
//! JSON against them before it is deserialized.
//!
//! Every field is one of three things:
//! - read: meshd implements it (its value is then checked by the kind's parser);
//! - ignored: a real field meshd does not implement yet, where ignoring it cannot
//!   change who is routed where (a warning);
//! - unsupported: a real field meshd does not implement yet, where ignoring it would
//!   widen or shift routing (the object is refused, saying so).
//!
//! A field in none of the lists is a typo or not part of the API: an error naming it,
//! with the closest real field as a suggestion.

use serde_json::Value;

use super::{Context, Diagnostic};

/// One message (object type) of an API: the fields it may hold.
pub(super) struct Message {
    pub fields: &'static [Field],
}

pub(super) struct Field {
    pub name: &'static str,
    pub shape: Shape,
    pub treatment: Treatment,
}

/// What a field holds, as far as the walker descends.
#[derive(Clone, Copy)]
pub(super) enum Shape {
    /// A scalar, or a list or map of scalars, or anything not checked field by field.
    Leaf,
    Message(&'static Message),
    List(&'static Message),
    /// A map from free-form keys (header names, ...) to messages.
    Map(&'static Message),
}

#[derive(Clone, Copy)]
pub(super) enum Treatment {
    Read,
    /// Accepted with a warning; says what meshd does instead.
    Ignored(&'static str),
    /// Refused; says what ignoring it would do.
    Unsupported(&'static str),
}

pub(super) const fn read(name: &'static str, shape: Shape) -> Field {
    Field { name, shape, treatment: Treatment::Read }
}

pub(super) const fn leaf(name: &'static str) -> Field {
    read(name, Shape::Leaf)
}

pub(super) const fn ignored(name: &'static str, shape: Shape, effect: &'static str) -> Field {
    Field { name, shape, treatment: Treatment::Ignored(effect) }
}

pub(super) const fn unsupported(name: &'static str, shape: Shape, effect: &'static str) -> Field {
    Field { name, shape, treatment: Treatment::Unsupported(effect) }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Checks `value` (found at `path`) against `message`: unknown fields and unsupported
/// ones are errors, ignored ones become warnings in `cx`. Values of the wrong type are
/// left for the deserializer to report.
pub(super) fn check(cx: &mut Context<'_>, value: &Value, message: &Message, path: &str) -> Result<(), Diagnostic> {
    let Value::Object(map) = value else { return Ok(()) };
    for (key, v) in map {
        let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        let Some(field) = message.fields.iter().find(|f| f.name == key) else {
            let names = message.fields.iter().map(|f| f.name);
            let message = match suggest(key, names) {
                Some(s) => format!("unknown field `{key}`; did you mean `{s}`?"),
                None => format!("unknown field `{key}`"),
            };
            return Err(cx.error(&here, message));
        };
        match field.shape {
            Shape::Leaf => {}
            Shape::Message(m) => check(cx, v, m, &here)?,
            Shape::List(m) => {
                if let Value::Array(items) = v {
                    for (i, item) in items.iter().enumerate() {
                        check(cx, item, m, &format!("{here}[{i}]"))?;
                    }
                }
            }
            Shape::Map(m) => {
                if let Value::Object(entries) = v {
                    for (k, item) in entries {
                        check(cx, item, m, &format!("{here}.{k}"))?;
                    }
                }
            }
        }
        if is_empty(v) {
            continue;
        }
        match field.treatment {
            Treatment::Read => {}
            Treatment::Ignored(effect) => cx.warn(&here, format!("`{key}` is not implemented by meshd yet; {effect}")),
            Treatment::Unsupported(effect) => {
                return Err(cx.error(
                    &here,
                    format!("`{key}` is not supported by meshd yet, and ignoring it {effect}; the object is refused"),
                ))
            }
        }
    }
    Ok(())
}

/// One message of a field table and where it sits under its root: `http[]` is an
/// item of the list `http`, `headers{}` a value of the map `headers`.
#[cfg(test)]
pub(crate) struct MessageAt {
    pub path: Vec<String>,
    /// Each field's name, and whether the table lists its own fields (not a leaf).
    pub fields: Vec<(&'static str, bool)>,
}

/// Every message reachable from `root`, depth first, `root` itself first (path empty).
#[cfg(test)]
pub(crate) fn messages(root: &'static Message) -> Vec<MessageAt> {
    fn walk(message: &'static Message, path: Vec<String>, out: &mut Vec<MessageAt>) {
        let fields = message.fields.iter().map(|f| (f.name, !matches!(f.shape, Shape::Leaf))).collect();
        out.push(MessageAt { path: path.clone(), fields });
        for field in message.fields {
            let (inner, segment) = match field.shape {
                Shape::Leaf => continue,
                Shape::Message(m) => (m, field.name.to_owned()),
                Shape::List(m) => (m, format!("{}[]", field.name)),
                Shape::Map(m) => (m, format!("{}{{}}", field.name)),
            };
            let mut here = path.clone();
            here.push(segment);
            walk(inner, here, out);
        }
    }
    let mut out = Vec::new();
    walk(root, Vec::new(), &mut out);
    out
}

/// The candidate closest to `word` if it is close enough to be a likely typo: same
/// letters ignoring case and `_`, or at most two edits (a swap of neighbours counts one).
pub(crate) fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let norm = |s: &str| s.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect::<String>();
    let w = norm(word);
    let limit = if w.chars().count() <= 3 { 1 } else { 2 };
    candidates
        .into_iter()
        .map(|c| (edit_distance(&w, &norm(c)), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and
/// swaps of adjacent characters each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_the_closest_field() {
        let fields = ["weight", "destination", "headers", "match", "route", "labels", "namespace", "name"];
        let cases = [
            ("wieght", Some("weight")),
            ("mach", Some("match")),
            ("lables", Some("labels")),
            ("Weight", Some("weight")),
            ("dest", None),
            ("nmae", Some("name")),
            ("routes", Some("route")),
            ("timeout", None),
            ("x", None),
        ];
        for (word, want) in cases {
            assert_eq!(suggest(word, fields), want, "{word}");
        }
    }
}
