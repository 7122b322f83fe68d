//! Runs the built `meshctl` for the commands that talk to meshd's admin API, where no
//! meshd answers: every error names the address and says how to point meshctl at meshd,
//! usage errors exit 2, `version` still answers for the client. (Against a live meshd
//! and a real Envoy: tests/tests/meshctl_admin.rs.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// An address nothing listens on (a port just released).
fn nowhere() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    addr.to_string()
}

/// A home directory of its own (no `~/.kube/config` unless a test writes one).
fn home(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin_cli").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a home directory");
    dir
}

fn meshctl(args: &[&str], meshd_env: Option<&str>) -> Output {
    meshctl_in(&home("none"), args, meshd_env)
}

/// meshctl with `home` as HOME and no KUBECONFIG, outside any pod.
fn meshctl_in(home: &Path, args: &[&str], meshd_env: Option<&str>) -> Output {
    let env: Vec<(&str, &str)> = meshd_env.map(|addr| ("AMIME_MESHD", addr)).into_iter().collect();
    meshctl_env(home, args, &env)
}

/// meshctl with `home` as HOME, outside any pod, and only `env` of AMIME_MESHD and KUBECONFIG.
fn meshctl_env(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    command.args(args).env_remove("RUST_BACKTRACE").env_remove("AMIME_MESHD");
    command.env_remove("KUBECONFIG").env_remove("KUBERNETES_SERVICE_HOST").env("HOME", home);
    command.envs(env.iter().copied());
    command.output().expect("run meshctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn unreachable_meshd_is_named_with_how_to_point_meshctl_at_it() {
    let addr = nowhere();
    let cases: &[&[&str]] = &[
        &["proxy-status", "--meshd", &addr],
        &["proxy-status", "web.default", "-n", "default", "-o", "json", "--meshd", &addr],
        &["proxy-config", "clusters", "web.default", "--meshd", &addr],
        &["proxy-config", "routes", "web", "-n", "default", "-o", "yaml", "--meshd", &addr],
    ];
    for args in cases {
        let out = meshctl(args, None);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with(&format!("error: cannot reach meshd at {addr} (")), "{args:?}: {stderr}");
        assert!(stderr.contains("--meshd HOST:PORT or AMIME_MESHD"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn the_meshd_address_comes_from_amime_meshd_and_the_flag_wins() {
    let (env_addr, flag_addr) = (nowhere(), nowhere());
    let out = meshctl(&["proxy-status"], Some(&env_addr));
    assert!(text(&out.stderr).contains(&format!("cannot reach meshd at {env_addr}")), "{}", text(&out.stderr));
    let out = meshctl(&["proxy-status", "--meshd", &flag_addr], Some(&env_addr));
    assert!(text(&out.stderr).contains(&format!("cannot reach meshd at {flag_addr}")), "{}", text(&out.stderr));
    // Without either (and no kubeconfig): the default.
    let out = meshctl(&["proxy-status"], None);
    assert!(text(&out.stderr).contains("cannot reach meshd at 127.0.0.1:15010"), "{}", text(&out.stderr));
}

/// A kubeconfig whose only cluster is `server`, context `test`.
fn kubeconfig(path: &Path, server: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: c\n  cluster:\n    server: {server}\n\
contexts:\n- name: test\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: t\n"
    );
    std::fs::write(path, text).expect("write kubeconfig");
}

#[test]
fn a_kubeconfig_is_used_when_no_address_is_given_and_errors_name_the_cluster() {
    let home = home("kube");
    std::fs::create_dir_all(home.join(".kube")).unwrap();
    let server = format!("http://{}", nowhere());
    kubeconfig(&home.join(".kube/config"), &server);
    let listing = format!(
        "listing meshd's pods (app.kubernetes.io/name=meshd) in namespace amime-system of context test ({server}/)"
    );
    // ~/.kube/config: used when neither --meshd nor AMIME_MESHD is given.
    let out = meshctl_in(&home, &["proxy-status"], None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with(&format!("error: {listing}")), "{stderr}");
    // AMIME_MESHD beats ~/.kube/config; --kubeconfig beats AMIME_MESHD.
    let env_addr = nowhere();
    let out = meshctl_in(&home, &["proxy-status"], Some(&env_addr));
    assert!(text(&out.stderr).contains(&format!("cannot reach meshd at {env_addr}")), "{}", text(&out.stderr));
    let other = home.join("other-kubeconfig");
    kubeconfig(&other, &server);
    let out = meshctl_in(
        &home,
        &["proxy-status", "--kubeconfig", other.to_str().unwrap(), "--meshd-namespace", "mesh"],
        Some(&env_addr),
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("in namespace mesh of context test"), "{stderr}");
    // KUBECONFIG (here a list, the first file's current context wins) beats ~/.kube/config.
    let prod = home.join("prod-kubeconfig");
    kubeconfig(&prod, "http://127.0.0.1:1");
    let list = format!("{}:{}", prod.display(), other.display());
    let out = meshctl_env(&home, &["proxy-status"], &[("KUBECONFIG", &list)]);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("of context test (http://127.0.0.1:1/)"), "{stderr}");
    let out = meshctl_env(&home, &["proxy-status"], &[("KUBECONFIG", ":")]);
    let stderr = text(&out.stderr);
    assert_eq!((out.status.code(), stderr.as_str()), (Some(1), "error: KUBECONFIG=: names no file\n"));
    // version: the client answers, the lookup's error is the server's note.
    let out = meshctl_in(&home, &["version"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("meshd   unknown: {listing}")), "{}", text(&out.stdout));
}

#[test]
fn kubeconfig_errors_name_the_file_and_context() {
    let home = home("kube-errors");
    let missing = home.join("missing");
    let out = meshctl_in(&home, &["proxy-status", "--kubeconfig", missing.to_str().unwrap()], None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with(&format!("error: reading kubeconfig {}", missing.display())), "{stderr}");
    let file = home.join("config");
    kubeconfig(&file, "http://127.0.0.1:1");
    let out = meshctl_in(&home, &["proxy-status", "--kubeconfig", file.to_str().unwrap(), "--context", "prod"], None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with(&format!("error: kubeconfig {}, context prod", file.display())), "{stderr}");
    let out = meshctl_in(&home, &["proxy-status", "--context", "prod"], None);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--context prod: no kubeconfig to read it from"), "{stderr}");
}

/// A malformed address is a usage error (exit 2, as clap's own and analyze's); an
/// unreachable one is a failure (exit 1).
#[test]
fn a_malformed_meshd_address_is_an_error_naming_it() {
    for (addr, want) in [("", "--meshd is empty"), ("not an address", "--meshd \"not an address\" is not HOST:PORT")] {
        let out = meshctl(&["proxy-status", "--meshd", addr], None);
        assert_eq!(out.status.code(), Some(2), "{addr:?}: a bad flag value is a usage error");
        assert!(text(&out.stderr).contains(want), "{addr:?}: {}", text(&out.stderr));
    }
}

#[test]
fn usage_errors_exit_2_and_say_what_is_expected() {
    let cases: &[(&[&str], &str)] = &[
        (&["proxy-status", "-o", "xml"], "possible values: table, json, yaml"),
        (&["proxy-config", "clusters"], "<PROXY>"),
        (&["proxy-config", "widgets", "a.b"], "possible values: clusters, listeners, routes, endpoints, secrets"),
        (&["proxy-config"], "<KIND>"),
        (&["version", "-o", "toml"], "possible values"),
        (&["proxy-status", "a", "b"], "unexpected argument"),
        (&["proxy-status", "--meshd", "a:1", "--kubeconfig", "k"], "cannot be used with"),
        (&["version", "--context", "c", "--meshd", "a:1"], "cannot be used with"),
    ];
    for (args, want) in cases {
        let out = meshctl(args, None);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: missing {want:?} in {stderr}");
    }
}

#[test]
fn version_answers_for_the_client_when_meshd_does_not() {
    let addr = nowhere();
    let out = meshctl(&["version", "--meshd", &addr], None);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.starts_with(&format!("meshctl {}\n", env!("CARGO_PKG_VERSION"))), "{stdout}");
    assert!(stdout.contains(&format!("meshd   unknown: cannot reach meshd at {addr}")), "{stdout}");

    let out = meshctl(&["version", "--client"], None);
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), format!("meshctl {}\n", env!("CARGO_PKG_VERSION"))));

    let out = meshctl(&["version", "-o", "json", "--meshd", &addr], None);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("version -o json is JSON");
    assert_eq!(doc["client"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(doc["server_error"].as_str().is_some_and(|e| e.contains(&addr)), "{doc}");
    assert!(doc.get("server").is_none(), "{doc}");
}

#[test]
fn help_explains_states_and_kinds() {
    let out = meshctl(&["proxy-status", "--help"], None);
    let help = text(&out.stdout);
    for word in
        ["SYNCED", "STALE", "NACKED", "WARMING", "NOT SENT", "-n, --namespace", "-o, --output", "--kubeconfig <FILE>"]
    {
        assert!(help.contains(word), "proxy-status --help lacks {word:?}:\n{help}");
    }
    let out = meshctl(&["proxy-config", "--help"], None);
    let help = text(&out.stdout);
    for word in ["clusters", "listeners", "routes", "endpoints", "secrets", "<pod>.<namespace>"] {
        assert!(help.contains(word), "proxy-config --help lacks {word:?}:\n{help}");
    }
}
