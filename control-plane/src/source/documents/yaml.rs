//! A file's YAML documents as JSON values, read as other conforming parsers (Go's,
//! PyYAML) read them where libyaml (under serde_yaml_ng) differs:
//! - libyaml refuses a plain scalar in a flow collection that ends in `:` before a
//!   flow indicator (`addresses: [2001:db8::]`); YAML reads the last `:` as a value
//!   indicator, making the entry a one-pair mapping `{"2001:db8:": null}`. Here that
//!   key is quoted and the text read again, so the file loads and only the object
//!   holding it is refused, for the type of that field.
//! - merge keys (`<<: *defaults`) are applied as YAML 1.1 parsers apply them, instead
//!   of being kept as a field named `<<`;
//! - integers too large for JSON become floats, as in Go's parser, instead of failing
//!   the file; a value with an unknown tag (`!custom 5`) is read as its untagged value.
//!
//! A key set twice in one mapping is invalid YAML and `kubectl apply` refuses it; it
//! is recorded (the later value is kept) so the object holding it can be refused
//! alone.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde_json::{Map, Number, Value};

/// How many libyaml flow-colon refusals one file may need rewritten.
const MAX_REWRITES: usize = 64;

/// A YAML syntax error: the document it is in (from 0) and the parser's message.
#[derive(Debug, PartialEq)]
pub struct YamlError {
    pub document: usize,
    pub message: String,
}

/// One document: its value, and the paths of keys set twice in one mapping.
#[derive(Debug, PartialEq)]
pub struct Document {
    pub value: Value,
    pub duplicate_keys: Vec<String>,
}

/// Reads every document of `text` (null for an empty document).
pub fn yaml_documents(text: &str) -> Result<Vec<Document>, YamlError> {
    let mut text = std::borrow::Cow::Borrowed(text);
    for _ in 0..MAX_REWRITES {
        match read_documents(&text) {
            Ok(mut docs) => {
                docs.iter_mut().for_each(|d| apply_merges(&mut d.value));
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

fn read_documents(text: &str) -> Result<Vec<Document>, (usize, serde_yaml::Error)> {
    let mut docs = Vec::new();
    // After a syntax error the deserializer repeats it for ever: stop at the first.
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let duplicates = RefCell::new(Vec::new());
        let value = Strict { path: String::new(), duplicates: &duplicates }.deserialize(doc).map_err(|e| (i, e))?;
        docs.push(Document { value, duplicate_keys: duplicates.into_inner() });
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
                Some(Value::Array(list)) if list.iter().all(Value::is_object) => {
                    list.into_iter().filter_map(|v| if let Value::Object(m) = v { Some(m) } else { None }).collect()
                }
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

/// Builds a JSON value, recording keys set twice (with their path) instead of
/// silently keeping one.
struct Strict<'a> {
    path: String,
    duplicates: &'a RefCell<Vec<String>>,
}

impl Strict<'_> {
    fn at(&self, step: String) -> Self {
        Strict { path: step, duplicates: self.duplicates }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Number::from_f64(v as f64).map_or(Value::Null, Value::Number))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(Number::from_f64(v as f64).map_or(Value::Null, Value::Number))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON has no infinities or NaN; they read as null, as serde_json does.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self.at(format!("{}[{}]", self.path, items.len())))? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() { key.clone() } else { format!("{}.{key}", self.path) };
            let value = map.next_value_seed(self.at(path.clone()))?;
            if out.insert(key, value).is_some() {
                self.duplicates.borrow_mut().push(path);
            }
        }
        Ok(Value::Object(out))
    }

    /// A tagged value (`!custom 5`): its value, without the tag.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (_tag, variant): (String, _) = data.variant()?;
        variant.newtype_variant_seed(self)
    }
}
