//! Runs the built `meshctl analyze` on fixture directories: the exact findings (golden
//! output), the exit codes and the usage errors.
//!
//! Regenerate the golden output after an intended change with:
//!   UPDATE_GOLDEN=1 cargo test -p meshctl --test analyze
//! and review the diff.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Where the fixtures are; meshctl runs there, so findings name `mesh/...`.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analyze")
}

fn meshctl(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .current_dir(fixtures())
        .env_remove("RUST_BACKTRACE")
        .env_remove("KUBECONFIG")
        .env("HOME", fixtures().join("no-home"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meshctl");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().expect("wait for meshctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Compares `got` with the golden file `name`, or writes it with UPDATE_GOLDEN.
fn golden(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        want == got,
        "meshctl output differs from {}:\n--- want\n{want}--- got\n{got}\nIf intended: UPDATE_GOLDEN=1 cargo test -p meshctl --test analyze",
        path.display()
    );
}

#[test]
fn a_directory_with_known_errors_prints_exactly_those_findings() {
    let out = meshctl(&["analyze", "-f", "mesh"], "");
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    golden("analyze-mesh.txt", &text(&out.stdout));
    // The same set given file by file (a trailing slash, a file twice) reads the same.
    let files = ["mesh/", "mesh/services.yaml", "mesh/rules/reviews.yaml"];
    let again = meshctl(&[&["analyze", "-f"][..], &files].concat(), "");
    assert_eq!(text(&again.stdout), text(&out.stdout));
}

#[test]
fn a_file_named_two_ways_is_read_once() {
    let once = meshctl(&["analyze", "-f", "mesh"], "");
    let absolute = fixtures().join("mesh/services.yaml");
    for other in ["./mesh/services.yaml", "./mesh", absolute.to_str().unwrap()] {
        let twice = meshctl(&["analyze", "-f", "mesh", "-f", other], "");
        assert_eq!(text(&twice.stdout), text(&once.stdout), "-f mesh -f {other}");
        assert_eq!(twice.status.code(), Some(1));
    }
}

#[test]
fn json_and_yaml_carry_every_finding_and_the_summary() {
    let out = meshctl(&["analyze", "-f", "mesh", "-o", "json"], "");
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let summary = &json["summary"];
    assert_eq!((summary["errors"].as_u64(), summary["warnings"].as_u64()), (Some(5), Some(3)), "{json}");
    assert_eq!((summary["files"].as_u64(), summary["objects"].as_u64()), (Some(6), Some(11)), "{json}");
    let first = &json["diagnostics"][0];
    assert_eq!(first["severity"], "error");
    assert_eq!(first["file"], "mesh/broken.yaml");
    assert_eq!(first["document"], 0);
    let weight = json["diagnostics"].as_array().unwrap().iter().find(|d| d["name"] == "reviews-to-v2").unwrap();
    assert_eq!(weight["field"], "spec.http[0].route[0].weight");
    assert_eq!(weight["kind"], "VirtualService");
    assert_eq!(weight["namespace"], "bookinfo");
    let yaml = meshctl(&["analyze", "-f", "mesh", "-o", "yaml"], "");
    let yaml: serde_json::Value = serde_yaml::from_slice(&yaml.stdout).expect("YAML");
    assert_eq!(yaml, json);
}

#[test]
fn exit_codes() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples/bookinfo");
    // (args, stdin, exit code, stdout contains, stderr contains)
    let cases: &[(&[&str], &str, i32, &str, &str)] = &[
        (&["analyze", "-f", examples.to_str().unwrap()], "", 0, "0 errors, 0 warnings in 2 files (9 objects)\n", ""),
        // Warnings alone do not fail.
        (&["analyze", "-f", "mesh/rules/productpage.yaml"], "", 0, "0 errors, 1 warning in 1 file (1 object)\n", ""),
        (&["analyze", "-f", "mesh/services.yaml"], "", 1, "1 error, 0 warnings in 1 file (4 objects)\n", ""),
        // Standard input.
        (&["analyze", "-f", "-"], "kind: Service\n", 1, "<stdin>  0    Service  apiVersion  required", ""),
        // Unreadable input: 2, after the findings of what could be read.
        (
            &["analyze", "-f", "missing.yaml", "mesh/rules/productpage.yaml"],
            "",
            2,
            "1 warning",
            "error: missing.yaml: does not exist",
        ),
        (&["analyze", "-f", "mesh", "--kubeconfig", "k"], "", 2, "", "cannot be used with"),
        (&["analyze", "-f", "mesh", "-o", "wide"], "", 2, "", "invalid value 'wide'"),
        (&["analyze", "-f"], "", 2, "", "a value is required"),
        (&["analyze", "--kubeconfig", "missing-kubeconfig"], "", 2, "", "error: --kubeconfig missing-kubeconfig: "),
        (&["analyze"], "", 2, "", "no Kubernetes API configured"),
    ];
    for (args, stdin, code, stdout, stderr) in cases {
        let out = meshctl(args, stdin);
        let (got_out, got_err) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(*code), "{args:?}: stdout {got_out} stderr {got_err}");
        assert!(got_out.contains(stdout), "{args:?}: stdout {got_out:?} lacks {stdout:?}");
        assert!(got_err.contains(stderr), "{args:?}: stderr {got_err:?} lacks {stderr:?}");
    }
}

#[test]
fn namespace_and_notes() {
    let info = meshctl(&["analyze", "-f", "mesh/services.yaml", "--show-info"], "");
    let info = text(&info.stdout);
    let note = info.lines().find(|l| l.starts_with("info ")).unwrap_or_else(|| panic!("no note in {info}"));
    assert!(note.contains("mesh/services.yaml  3    Deployment bookinfo/reviews-v1  -"), "{info}");
    let other = meshctl(&["analyze", "-f", "mesh", "-n", "other"], "");
    assert_eq!(other.status.code(), Some(1), "a file that is no YAML belongs to every namespace");
    assert_eq!(text(&other.stdout).lines().count(), 3, "{}", text(&other.stdout));
}

#[test]
fn an_unreadable_entry_in_a_directory_is_exit_2_after_the_findings_of_the_rest() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("meshctl-analyze-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixtures().join("mesh/rules/productpage.yaml"), dir.join("productpage.yaml")).unwrap();
    std::os::unix::fs::symlink(dir.join("gone.yaml"), dir.join("dangling.yaml")).unwrap();
    let out = meshctl(&["analyze", "-f", dir.to_str().unwrap()], "");
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).ends_with("0 errors, 1 warning in 1 file (1 object)\n"), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("dangling.yaml: dangling symlink (to "), "{stderr}");
}
