//! Canonical, content-derived versions of encoded protobuf messages.
//!
//! prost encodes a proto `map` from a `HashMap`, in that map's iteration order, and two
//! maps with equal content iterate differently: a resource holding a map with two or
//! more entries (a `Struct` in metadata, `typed_per_filter_config`, ...) can encode to
//! different bytes on every translation. Hashing the bytes would then give it a new
//! version each time, and every proxy would be sent it again.
//!
//! The hash here reads the wire format with the message's schema: map entries are
//! hashed as a sorted multiset, messages nested in `google.protobuf.Any` are read with
//! their own schema, everything else is hashed as encoded (prost writes fields in a
//! fixed order, so only maps vary). Without a schema for a message, its bytes are
//! hashed as they are.
//!
//! The schemas come from a [`DescriptorPool`] the control plane sets once
//! ([`set_descriptor_pool`]); by default only Google's well-known types are known.

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

static SCHEMAS: OnceLock<Schemas> = OnceLock::new();

/// The pool, and the messages that can hold a map somewhere inside (directly, through
/// nested messages or through an `Any`): only those need reading field by field, any
/// other message is hashed as its bytes.
struct Schemas {
    pool: DescriptorPool,
    may_hold_map: HashSet<String>,
}

impl Schemas {
    fn new(pool: DescriptorPool) -> Schemas {
        let mut may_hold_map: HashSet<String> = HashSet::new();
        // Fixpoint: a message may hold a map if a field is one, or is an Any, or is a
        // message that may.
        loop {
            let mut changed = false;
            for message in pool.all_messages() {
                if may_hold_map.contains(message.full_name()) {
                    continue;
                }
                let holds = message.full_name() == ANY
                    || message.fields().any(|f| {
                        f.is_map()
                            || matches!(f.kind(), Kind::Message(m) if m.full_name() == ANY || may_hold_map.contains(m.full_name()))
                    });
                if holds {
                    may_hold_map.insert(message.full_name().to_owned());
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        Schemas { pool, may_hold_map }
    }
}

/// Nesting deeper than this is hashed as bytes (resources are ours, but stay safe).
const MAX_DEPTH: usize = 64;

const ANY: &str = "google.protobuf.Any";

/// Sets the schemas used for canonical versions (the Envoy API, compiled by the control
/// plane). Only the first call has an effect; returns whether it was this one. Call it
/// before building resources: versions computed before differ.
pub fn set_descriptor_pool(pool: DescriptorPool) -> bool {
    let mut fresh = false;
    SCHEMAS.get_or_init(|| {
        fresh = true;
        Schemas::new(pool)
    });
    fresh
}

fn schemas() -> &'static Schemas {
    SCHEMAS.get_or_init(|| Schemas::new(DescriptorPool::global()))
}

/// The canonical hash of a message packed in an `Any` (type URL and encoded value).
pub fn any_hash(type_url: &str, value: &[u8]) -> u64 {
    hash_any(schemas(), type_url, value, 0)
}

fn hash_any(schemas: &Schemas, type_url: &str, value: &[u8], depth: usize) -> u64 {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    let body = match schemas.pool.get_message_by_name(name) {
        Some(descriptor) if depth < MAX_DEPTH && schemas.may_hold_map.contains(name) => {
            message_hash(schemas, &descriptor, value, depth + 1).unwrap_or_else(|| xxh3_64(value))
        }
        _ => xxh3_64(value),
    };
    let mut hasher = Xxh3::new();
    hasher.update(type_url.as_bytes());
    hasher.update(&[0]);
    hasher.update(&body.to_le_bytes());
    hasher.digest()
}

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    prost::encoding::decode_varint(buf).ok()
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Some(head)
}

/// The canonical hash of `bytes`, a message of type `descriptor`; `None` if the bytes
/// are not well-formed protobuf. Runs of fields that need no reading (scalars, strings,
/// messages that cannot hold a map) are hashed as encoded, one run at a time.
fn message_hash(schemas: &Schemas, descriptor: &MessageDescriptor, bytes: &[u8], depth: usize) -> Option<u64> {
    if descriptor.full_name() == ANY {
        let (type_url, value) = any_parts(bytes)?;
        return Some(hash_any(schemas, type_url, value, depth));
    }
    let mut hasher = Xxh3::new();
    // Map fields, by number: the entries' hashes, sorted at the end.
    let mut maps: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    // Start of the current run of fields hashed as encoded.
    let mut run_start = 0;
    let mut buf = bytes;
    while !buf.is_empty() {
        let field_start = bytes.len() - buf.len();
        let key = read_varint(&mut buf)?;
        let number = u32::try_from(key >> 3).ok()?;
        match key & 7 {
            0 => {
                read_varint(&mut buf)?;
            }
            1 => {
                take(&mut buf, 8)?;
            }
            5 => {
                take(&mut buf, 4)?;
            }
            2 => {
                let len = usize::try_from(read_varint(&mut buf)?).ok()?;
                let payload = take(&mut buf, len)?;
                let Some(field) = descriptor.get_field(number) else { continue };
                let Kind::Message(nested) = field.kind() else { continue };
                let read =
                    field.is_map() || nested.full_name() == ANY || schemas.may_hold_map.contains(nested.full_name());
                if !read || depth >= MAX_DEPTH {
                    continue;
                }
                let hash = memoized(&nested, payload, || message_hash(schemas, &nested, payload, depth + 1))?;
                hasher.update(&bytes[run_start..field_start]);
                run_start = bytes.len() - buf.len();
                if field.is_map() {
                    maps.entry(number).or_default().push(hash);
                } else {
                    hasher.update(&[0xfe]);
                    hasher.update(&key.to_le_bytes());
                    hasher.update(&hash.to_le_bytes());
                }
            }
            // Groups (deprecated) and invalid wire types: not canonicalized.
            _ => return None,
        }
    }
    hasher.update(&bytes[run_start..]);
    for (number, mut entries) in maps {
        entries.sort_unstable();
        hasher.update(&[0xff]);
        hasher.update(&number.to_le_bytes());
        hasher.update(&(entries.len() as u64).to_le_bytes());
        for entry in entries {
            hasher.update(&entry.to_le_bytes());
        }
    }
    Some(hasher.digest())
}

/// Nested messages at least this large are remembered by content: the same virtual
/// host or route, encoded once, recurs in many resources of one translation.
const MEMO_MIN_BYTES: usize = 64;
const MEMO_MAX_ENTRIES: usize = 1 << 16;

thread_local! {
    /// (type, 128-bit hash of the bytes) -> canonical hash. Equal bytes of one type have
    /// the same canonical hash, so a hit is exact (up to a 128-bit collision).
    static MEMO: std::cell::RefCell<std::collections::HashMap<u128, u64>> = Default::default();
}

fn memoized(descriptor: &MessageDescriptor, bytes: &[u8], compute: impl FnOnce() -> Option<u64>) -> Option<u64> {
    if bytes.len() < MEMO_MIN_BYTES {
        return compute();
    }
    let mut key = xxhash_rust::xxh3::Xxh3::new();
    key.update(descriptor.full_name().as_bytes());
    key.update(&[0]);
    key.update(bytes);
    let key = key.digest128();
    if let Some(hash) = MEMO.with(|m| m.borrow().get(&key).copied()) {
        return Some(hash);
    }
    let hash = compute()?;
    MEMO.with(|m| {
        let mut memo = m.borrow_mut();
        if memo.len() >= MEMO_MAX_ENTRIES {
            memo.clear();
        }
        memo.insert(key, hash);
    });
    Some(hash)
}

/// `type_url` (field 1) and `value` (field 2) of an encoded `Any`.
fn any_parts(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (mut type_url, mut value) = ("", &[][..]);
    let mut buf = bytes;
    while !buf.is_empty() {
        let key = read_varint(&mut buf)?;
        if key & 7 != 2 {
            return None;
        }
        let len = usize::try_from(read_varint(&mut buf)?).ok()?;
        let payload = take(&mut buf, len)?;
        match key >> 3 {
            1 => type_url = std::str::from_utf8(payload).ok()?,
            2 => value = payload,
            _ => {}
        }
    }
    Some((type_url, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{value::Kind as ValueKind, Any, ListValue, Struct, Value};
    use prost::Message;

    /// `google.protobuf.Option` (a well-known type holding an `Any`), written out here as
    /// envoy-types does not generate it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct ProtoOption {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(message, optional, tag = "2")]
        value: Option<Any>,
    }

    impl prost::Name for ProtoOption {
        const NAME: &'static str = "Option";
        const PACKAGE: &'static str = "google.protobuf";
    }

    fn string(s: &str) -> Value {
        Value { kind: Some(ValueKind::StringValue(s.into())) }
    }

    /// A Struct with `n` fields, one of them a nested Struct with `n` fields and a list;
    /// every call builds fresh `HashMap`s, so entry order varies between calls.
    fn metadata(n: usize) -> Struct {
        let nested = Struct { fields: (0..n).map(|i| (format!("inner-{i}"), string(&i.to_string()))).collect() };
        let mut fields: std::collections::HashMap<String, Value> =
            (0..n).map(|i| (format!("key-{i}"), string(&format!("value-{i}")))).collect();
        fields.insert("nested".into(), Value { kind: Some(ValueKind::StructValue(nested)) });
        fields.insert(
            "list".into(),
            Value { kind: Some(ValueKind::ListValue(ListValue { values: vec![string("b"), string("a")] })) },
        );
        Struct { fields }
    }

    fn any_of<M: Message + prost::Name>(m: &M) -> Any {
        Any { type_url: M::type_url(), value: m.encode_to_vec() }
    }

    /// `google.protobuf.Option` holds an `Any`: a map inside a message inside an Any.
    fn option_holding(n: usize) -> ProtoOption {
        ProtoOption { name: "typed".into(), value: Some(any_of(&metadata(n))) }
    }

    #[test]
    fn multi_entry_maps_get_one_version_however_they_encode() {
        let encodings: std::collections::BTreeSet<Vec<u8>> =
            (0..200).map(|_| option_holding(8).encode_to_vec()).collect();
        assert!(encodings.len() > 1, "the maps should encode in more than one order for this test to mean anything");
        let versions: std::collections::BTreeSet<u64> = (0..200)
            .map(|_| {
                let any = any_of(&option_holding(8));
                any_hash(&any.type_url, &any.value)
            })
            .collect();
        assert_eq!(versions.len(), 1, "one content, one version");
    }

    #[test]
    fn different_content_gets_a_different_version() {
        let hash = |o: &ProtoOption| {
            let any = any_of(o);
            any_hash(&any.type_url, &any.value)
        };
        let base = hash(&option_holding(3));
        assert_ne!(base, hash(&option_holding(4)), "one more entry");
        let mut changed = option_holding(3);
        let mut inner = metadata(3);
        inner.fields.insert("key-1".into(), string("other"));
        changed.value = Some(any_of(&inner));
        assert_ne!(base, hash(&changed), "one value changed");
        // Order of a repeated field is content: a list in another order differs.
        let mut reordered = metadata(3);
        reordered.fields.insert(
            "list".into(),
            Value { kind: Some(ValueKind::ListValue(ListValue { values: vec![string("a"), string("b")] })) },
        );
        assert_ne!(
            hash(&option_holding(3)),
            hash(&ProtoOption { name: "typed".into(), value: Some(any_of(&reordered)) })
        );
    }

    #[test]
    fn unknown_types_and_malformed_bytes_hash_as_bytes() {
        assert_eq!(
            any_hash("type.googleapis.com/not.Known", b"xyz"),
            any_hash("type.googleapis.com/not.Known", b"xyz")
        );
        assert_ne!(
            any_hash("type.googleapis.com/not.Known", b"xyz"),
            any_hash("type.googleapis.com/not.Known", b"xyw")
        );
        let malformed = [0x0a, 0xff];
        let url = "type.googleapis.com/google.protobuf.Struct";
        assert_eq!(any_hash(url, &malformed), any_hash(url, &malformed));
    }
}
