//! Runs the built `meshctl` binary end to end.

use std::process::{Command, Output};

fn meshctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshctl")).args(args).env_remove("RUST_BACKTRACE").output().expect("run meshctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn bootstrap_prints_yaml() {
    let out = meshctl(&[
        "bootstrap",
        "--node",
        "reviews-v1.bookinfo",
        "--ip",
        "127.0.0.3",
        "--admin-addr",
        "127.0.0.3:15000",
        "--label",
        "app=reviews",
        "--mode",
        "transparent",
        "--xds-api",
        "sotw",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    for want in [
        "id: reviews-v1.bookinfo",
        "cluster: reviews.bookinfo",
        "INTERCEPTION_MODE: REDIRECT",
        "api_type: GRPC",
        "INSTANCE_IPS: 127.0.0.3",
        "port_value: 15021",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
}

#[test]
fn bootstrap_writes_file() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("meshctl-bootstrap-{}.yaml", std::process::id()));
    let out = meshctl(&["bootstrap", "--node", "a.b", "--ip", "127.0.0.4", "-o", path.to_str().unwrap()]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let written = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(written.contains("INTERCEPTION_MODE: NONE"), "{written}");
    assert!(written.contains("api_type: DELTA_GRPC"), "{written}");
}

#[test]
fn bootstrap_rejects_bad_input() {
    // (args, text stderr must contain)
    let cases: &[(&[&str], &str)] = &[
        (&["--node", "a.b", "--ip", "127.0.0.2", "--label", "foo"], "expected KEY=VALUE, got \"foo\""),
        (&["--node", "nodots", "--ip", "127.0.0.2"], "invalid node id \"nodots\""),
        (&["--node", "a.B", "--ip", "127.0.0.2"], "namespace \"B\" is not a valid DNS label"),
        (&["--node", "a.b"], "--ip"),
        (&["--node", "a.b", "--ip", "127.0.0.2", "--xds", "meshd"], "invalid xDS address \"meshd\""),
        (&["--node", "a.b", "--ip", "127.0.0.2", "--label", "a=1", "--label", "a=2"], "given twice"),
    ];
    for (args, want) in cases {
        let mut all = vec!["bootstrap"];
        all.extend_from_slice(args);
        let out = meshctl(&all);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
        assert!(stderr.contains(want), "{args:?}: stderr {stderr:?} should contain {want:?}");
        assert!(!stderr.contains("backtrace"), "{args:?}: {stderr}");
    }
}

#[test]
fn version_prints_version() {
    let out = meshctl(&["version", "--client"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), format!("meshctl {}", env!("CARGO_PKG_VERSION")));
}
