//! Runs the built `meshctl install`: with the defaults its output is the committed files
//! (manifests/crds/ and every manifests/install/*.yaml, in name order), so what it embeds
//! never drifts from what is on disk; overrides are checked in control_plane::install.

use std::path::Path;
use std::process::{Command, Output};

fn meshctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshctl")).args(args).env_remove("RUST_BACKTRACE").output().expect("run meshctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn repo(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

#[test]
fn the_defaults_print_the_committed_manifests() {
    let crds: String = ["networking.amime.dev.yaml", "telemetry.amime.dev.yaml"]
        .map(|f| std::fs::read_to_string(repo(&format!("manifests/crds/{f}"))).unwrap())
        .concat();
    let mut files: Vec<_> = std::fs::read_dir(repo("manifests/install"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "{files:?}");
    let mut want = crds.clone();
    for file in &files {
        want.push_str("---\n");
        want.push_str(&std::fs::read_to_string(file).unwrap());
    }
    let out = meshctl(&["install"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let got = text(&out.stdout);
    assert!(
        got == want,
        "meshctl install differs from manifests/crds + manifests/install/*.yaml: a file was added, removed or \
         renamed there without updating control_plane::install::MANIFESTS"
    );
    let crds_only = meshctl(&["install", "--crds-only"]);
    assert_eq!(text(&crds_only.stdout), crds);
}

#[test]
fn overrides_and_bad_flags() {
    let out = meshctl(&["install", "-n", "mesh", "--image", "r.example/meshd:1", "--proxy-image", "r.example/p:1"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let got = text(&out.stdout);
    assert!(!got.contains("amime-system"), "{got}");
    for want in ["namespace: mesh\n", "image: r.example/meshd:1\n", "--proxy-image=r.example/p:1\n"] {
        assert!(got.contains(want), "{want:?} missing");
    }
    let bad = meshctl(&["install", "--namespace", "Bad_NS"]);
    assert_eq!(bad.status.code(), Some(2), "a bad flag value is a usage error, as clap's own");
    assert!(text(&bad.stderr).starts_with("error: --namespace \"Bad_NS\" is not a valid namespace name"));
    assert!(bad.stdout.is_empty());
}
