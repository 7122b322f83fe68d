//! The committed CRD YAML is what the Rust types generate: manifests/crds/ (Amime's
//! groups) and tests/fixtures/istio-{networking,telemetry}-crds.yaml (the same schemas under
//! Istio's groups, the stand-ins for Istio's CRDs in cluster tests).
//!
//! Regenerate after an intended change to the types with:
//!   UPDATE_GOLDEN=1 cargo test -p amime-control-plane --test crds
//! and review the diff.

use std::path::PathBuf;

const HOW: &str = "UPDATE_GOLDEN=1 cargo test -p amime-control-plane --test crds";

fn header() -> String {
    format!("# Generated from the types in control-plane/src/crd/; do not edit.\n# Regenerate with: {HOW}\n")
}

/// Compares `text` with the file at `relative` (from the repository root), or writes
/// it with UPDATE_GOLDEN.
fn compare(relative: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(relative);
    let text = header() + text;
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{relative} is missing; run {HOW}"));
    if want != text {
        let first = want.lines().zip(text.lines()).position(|(a, b)| a != b);
        let line = first.unwrap_or_else(|| want.lines().count().min(text.lines().count()));
        panic!(
            "{relative} differs from what the types in control-plane/src/crd/ generate, at line {}:\n  \
             committed: {}\n  generated: {}\nIf the change is intended: {HOW}",
            line + 1,
            want.lines().nth(line).unwrap_or("<end of file>"),
            text.lines().nth(line).unwrap_or("<end of file>"),
        );
    }
}

#[test]
fn committed_crds_match_the_types() {
    compare("manifests/crds/networking.amime.dev.yaml", &control_plane::crd::render_crds());
}

#[test]
fn committed_istio_stand_in_crds_match_the_types() {
    compare("tests/fixtures/istio-networking-crds.yaml", &control_plane::crd::render_istio_crds());
}

#[test]
fn committed_telemetry_crds_match_the_types() {
    compare("manifests/crds/telemetry.amime.dev.yaml", &control_plane::crd::render_telemetry_crds());
}

#[test]
fn committed_istio_stand_in_telemetry_crds_match_the_types() {
    compare("tests/fixtures/istio-telemetry-crds.yaml", &control_plane::crd::render_istio_telemetry_crds());
}
