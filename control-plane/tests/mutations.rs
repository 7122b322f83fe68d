//! Mutation test of the promise "meshd never pushes config Envoy would reject":
//! take the fixtures' objects, damage them at random (wrong types, out-of-range
//! numbers, odd strings, missing fields), and check that whatever meshd accepts
//! translates into config real Envoy validates, and that nothing panics. Bad
//! objects must be rejected with a field named, never crash the translation.
//!
//! Deterministic: a fixed seed per round, printed on failure.

// Errors are rich on purpose (see the crate root).
#![allow(clippy::result_large_err)]

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use control_plane::model::index::Index;
use control_plane::model::parse::Parsed;
use control_plane::model::{parse_object, RawObject};
use control_plane::translate::{InterceptionMode, MeshConfig, MeshSettings, ProxyClass};
use serde::Deserialize;
use serde_json::{json, Value};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn fixture_documents() -> Vec<Value> {
    let mut docs = Vec::new();
    for fixture in ["rich", "adversarial"] {
        let mut paths: Vec<_> =
            std::fs::read_dir(common::fixture_dir(fixture)).unwrap().map(|e| e.unwrap().path()).collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let v = Value::deserialize(doc).unwrap();
                if !v.is_null() {
                    docs.push(v);
                }
            }
        }
    }
    docs
}

/// Every path to a value inside `v` (object keys and array indexes).
fn paths(v: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                prefix.push(json!(k));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(json!(i));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[Value]) -> &'a mut Value {
    path.iter().fold(v, |v, key| match key {
        Value::String(k) => &mut v[k.as_str()],
        Value::Number(i) => &mut v[i.as_u64().unwrap() as usize],
        _ => unreachable!(),
    })
}

fn odd_value(rng: &mut Rng) -> Value {
    let choices = [
        json!(null),
        json!(-1),
        json!(0),
        json!(1),
        json!(65535),
        json!(65536),
        json!(u32::MAX),
        json!(4294967296_u64),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1e300),
        json!(-0.5),
        json!(""),
        json!(" "),
        json!("a b"),
        json!("*"),
        json!("(("),
        json!("a{1000}{1000}"),
        json!("UPPER_case"),
        json!("ünïcödé"),
        json!("🚀"),
        json!("del\u{7f}bell\u{7}"),
        json!("nul\0byte"),
        json!("line\r\nbreak"),
        json!("tab\there"),
        json!("10.96.10.2"),
        json!("fd00::1"),
        json!("x".repeat(300)),
        json!("é".repeat(5000)),
        json!("x".repeat(10 * 1024)),
        json!(true),
        json!([]),
        json!({}),
        json!({"exact": "v", "prefix": "/"}),
        json!({"prefix": ""}),
        json!({"regex": ""}),
        json!({"exact": ""}),
        json!({"exact": "a\r\nb"}),
        json!({"regex": "^/[a-z]{1,9}$"}),
        json!({"regex": "(a{1000}){1000}"}),
        json!([{"destination": {"host": "reviews"}, "weight": 0}]),
        json!([
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": u32::MAX},
            {"destination": {"host": "reviews", "subset": "v2"}, "weight": 1}
        ]),
    ];
    choices[rng.below(choices.len())].clone()
}

#[test]
fn damaged_input_never_yields_config_envoy_rejects() {
    let docs = fixture_documents();
    let dir = std::env::temp_dir().join(format!("amime-mutations-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let classes = [
        ProxyClass {
            namespace: "bookinfo".into(),
            mode: InterceptionMode::None,
            ip: Some(ip("127.0.10.1")),
            labels: Default::default(),
            kind: Default::default(),
            locality: Default::default(),
        },
        ProxyClass {
            namespace: "bookinfo".into(),
            mode: InterceptionMode::Redirect,
            ip: None,
            labels: [("app".to_string(), "reviews".to_string())].into_iter().collect(),
            kind: Default::default(),
            locality: Default::default(),
        },
    ];
    let (mut accepted, mut rejected, mut contained) = (0, 0, 0);
    for round in 0..30u64 {
        let seed = 0x9E37_79B9_7F4A_7C15 ^ round;
        let mut rng = Rng(seed);
        let mut docs = docs.clone();
        for _ in 0..10 {
            let d = rng.below(docs.len());
            let mut all = Vec::new();
            paths(&docs[d], &mut Vec::new(), &mut all);
            // Keep apiVersion/kind/name mostly intact so the damage reaches specs.
            let mut candidates: Vec<_> = all.into_iter().filter(|p| p.len() >= 2).collect();
            // Mostly damage leaves (strings, numbers): that is where values pass the
            // parser's checks and still break Envoy's.
            if rng.below(4) > 0 {
                candidates.retain(|p| !matches!(at(&mut docs[d].clone(), p), Value::Object(_) | Value::Array(_)));
            }
            if candidates.is_empty() {
                continue;
            }
            let path = &candidates[rng.below(candidates.len())];
            *at(&mut docs[d], path) = odd_value(&mut rng);
        }
        let mut index = Index::new();
        for doc in docs {
            let parsed = RawObject::from_value(doc).and_then(|raw| parse_object(&raw));
            match parsed {
                Ok(Parsed::Object(object, _)) => {
                    accepted += 1;
                    index.apply(object);
                }
                Ok(Parsed::Skipped(_)) => {}
                Err(e) => {
                    rejected += 1;
                    assert!(!e.message.is_empty(), "round {round}: an error without a message: {e:?}");
                }
            }
        }
        let mesh = MeshConfig::build(Arc::new(index), &MeshSettings::default());
        contained += mesh.problems.iter().filter(|p| p.message.contains("Envoy would refuse")).count();
        for (i, class) in classes.iter().enumerate() {
            let bootstrap = common::envoy::static_bootstrap(&mesh, class);
            if let Err(output) = common::envoy::envoy_validate(&bootstrap, &dir.join(format!("round-{round}-{i}.pb"))) {
                panic!("round {round} (seed {seed:#x}): Envoy rejects what meshd made for {class:?}:\n{output}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    println!(
        "{accepted} objects accepted, {rejected} rejected with an error, \
         {contained} translated pieces left out because Envoy would refuse them"
    );
    assert!(rejected > 0 && accepted > 0, "the mutations should both damage and spare objects");
}

/// Edge values at the leaves of routing rules: each round puts one string (or
/// number) at a random leaf of every VirtualService and DestinationRule at once, so
/// every rule is damaged and each must be contained on its own.
#[test]
fn edge_values_in_every_rule_never_reach_envoy() {
    let strings = [
        json!(""),
        json!(" "),
        json!("🚀"),
        json!("nul\0byte"),
        json!("line\r\nbreak"),
        json!("del\u{7f}"),
        json!("x".repeat(10 * 1024)),
        json!("é".repeat(5000)),
        json!("(("),
        json!("(a{1000}){1000}"),
        json!("*"),
        json!("UPPER"),
    ];
    let numbers = [json!(0), json!(-1), json!(u32::MAX), json!(i64::MAX), json!(4294967296_u64), json!(i32::MAX)];
    let docs = fixture_documents();
    let dir = std::env::temp_dir().join(format!("amime-edge-values-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let class = ProxyClass {
        namespace: "bookinfo".into(),
        mode: InterceptionMode::Redirect,
        ip: None,
        labels: [("app".to_string(), "reviews".to_string())].into_iter().collect(),
        kind: Default::default(),
        locality: Default::default(),
    };
    let mut contained = 0;
    for round in 0..2 * strings.len() {
        let string = &strings[round % strings.len()];
        let seed = 0x5EED_0000 ^ round as u64;
        let mut rng = Rng(seed);
        let mut docs = docs.clone();
        for doc in docs.iter_mut().filter(|d| matches!(d["kind"].as_str(), Some("VirtualService" | "DestinationRule")))
        {
            let mut all = Vec::new();
            paths(&doc["spec"], &mut vec![json!("spec")], &mut all);
            let leaves: Vec<_> = all
                .into_iter()
                .filter(|p| matches!(at(&mut doc.clone(), p), Value::String(_) | Value::Number(_)))
                .collect();
            if leaves.is_empty() {
                continue;
            }
            let path = &leaves[rng.below(leaves.len())];
            let leaf = at(doc, path);
            *leaf = if leaf.is_string() { string.clone() } else { numbers[rng.below(numbers.len())].clone() };
        }
        let mut index = Index::new();
        for doc in docs {
            if let Ok(Parsed::Object(object, _)) = RawObject::from_value(doc).and_then(|raw| parse_object(&raw)) {
                index.apply(object);
            }
        }
        let mesh = MeshConfig::build(Arc::new(index), &MeshSettings::default());
        contained += mesh.problems.iter().filter(|p| p.message.contains("Envoy would refuse")).count();
        let bootstrap = common::envoy::static_bootstrap(&mesh, &class);
        if let Err(output) = common::envoy::envoy_validate(&bootstrap, &dir.join(format!("round-{round}.pb"))) {
            panic!("round {round} (seed {seed:#x}, value {string}): Envoy rejects what meshd made:\n{output}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    println!("{contained} translated pieces left out because Envoy would refuse them");
}
