//! Realistic Istio YAML (in the style of Istio's samples and reference pages) loads as
//! Istio reads it: tests/fixtures/istio-accepted/ with no error (warnings only where a
//! field or kind is honestly not in effect), tests/fixtures/istio-unsupported/ refused
//! object by object as "not supported yet", never as unknown fields.

mod common;

use std::collections::BTreeMap;

use control_plane::model::{Diagnostic, Severity};
use control_plane::source::documents::parse_file;

fn load(fixture: &str) -> Vec<(String, usize, Vec<Diagnostic>)> {
    let dir = common::fixture_dir(fixture);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let (objects, problems) = parse_file(&name, &text, &BTreeMap::new());
            (name, objects.map_or(0, |o| o.len()), problems)
        })
        .collect()
}

#[test]
fn istio_samples_load_without_errors() {
    let mut objects = 0;
    let mut by_severity: BTreeMap<Severity, usize> = BTreeMap::new();
    for (file, count, problems) in load("istio-accepted") {
        objects += count;
        for p in &problems {
            assert_ne!(p.severity, Severity::Error, "{file}: {p}");
            assert_eq!(p.file.as_deref(), Some(file.as_str()), "{p}");
            assert!(p.document.is_some(), "{p}");
            *by_severity.entry(p.severity).or_default() += 1;
        }
    }
    // 21 VirtualServices, 10 DestinationRules, 3 Gateways, 5 ServiceEntries, 2 Services, 1 Telemetry.
    assert_eq!(objects, 42);
    assert_eq!(by_severity.get(&Severity::Info), Some(&2), "ServiceAccount and Deployment noted");
    assert!(by_severity.get(&Severity::Warning).is_some_and(|w| *w >= 5 + 5), "{by_severity:?}");
}

#[test]
fn istio_samples_meshd_cannot_honour_are_refused_as_unsupported() {
    let mut refused = 0;
    for (file, count, problems) in load("istio-unsupported") {
        assert_eq!(count, 0, "{file}: {problems:#?}");
        for p in &problems {
            assert_eq!(p.severity, Severity::Error, "{p}");
            assert!(p.message.contains("not supported by meshd yet"), "{p}");
            assert!(!p.message.contains("unknown field"), "{p}");
            refused += 1;
        }
    }
    assert_eq!(refused, 4);
}

#[test]
fn the_shipped_examples_load_without_errors() {
    let examples = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples");
    let files = ["bookinfo", "traffic-policies", "traffic", "rate-limit", "gateway"]
        .into_iter()
        .flat_map(|d| std::fs::read_dir(examples.join(d)).unwrap());
    for entry in files {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let (objects, problems) = parse_file(&path.display().to_string(), &text, &BTreeMap::new());
        assert!(objects.is_some_and(|o| !o.is_empty()), "{}", path.display());
        assert!(problems.is_empty(), "{}: {problems:#?}", path.display());
    }
}
