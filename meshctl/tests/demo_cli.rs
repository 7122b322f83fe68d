//! `meshctl demo`'s flag errors, before anything starts (the demo itself runs in
//! tests/tests/demo.rs, with Envoy).

use std::process::{Command, Output};

fn demo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshctl")).arg("demo").args(args).output().expect("run meshctl")
}

#[test]
fn bad_flags_are_refused_with_their_name() {
    let cases: &[(&[&str], i32, &str)] = &[
        (&["--block", "0"], 2, "invalid value '0' for '--block <N>': 0 is not in 1..=254"),
        (&["--auto", "0"], 2, "'--auto <SECONDS>'"),
        (&["--requests", "10"], 2, "'--requests <N>'"),
        (&["--app-latency-ms", "5,10"], 1, "--app-latency-ms wants three values (v1,v2,v3), got [5, 10]"),
        (&["--meshd", "/nonexistent/meshd"], 1, "error: --meshd: /nonexistent/meshd does not exist"),
        (
            &["--envoy", "/nonexistent/envoy", "--meshd", env!("CARGO_BIN_EXE_meshctl")],
            1,
            "/nonexistent/envoy does not exist",
        ),
    ];
    for (args, code, want) in cases {
        let out = demo(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn help_names_the_modes() {
    let out = demo(&["--help"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for flag in
        ["--auto <SECONDS>", "--non-interactive", "--block <N>", "--meshd <PATH>", "--envoy <PATH>", "--keep-running"]
    {
        assert!(stdout.contains(flag), "{flag}: {stdout}");
    }
    assert!(!stdout.contains("skip-apply"), "the test flag stays hidden: {stdout}");
}
