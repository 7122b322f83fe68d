//! The `amime-agent` binary from the outside: what a container's logs would show. The
//! root-only part (rules really installed in a network namespace) is in
//! tests/tests/agent_init.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const AGENT: &str = env!("CARGO_BIN_EXE_amime-agent");

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(AGENT).args(args).env_clear().envs(env.iter().copied()).output().expect("run amime-agent")
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("amime-agent-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| p.is_file())
}

#[test]
fn dry_run_prints_the_restore_input_and_touches_nothing() {
    // No PATH at all: a dry run needs no iptables.
    let out = agent(
        &["init", "--dry-run", "--exclude-outbound-ports", "5432", "--exclude-outbound-ip-ranges", "10.9.0.0/16"],
        &[],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("nothing is changed"), "{stdout}");
    assert!(stdout.contains("iptables-save/iptables-restore, iptables-legacy-save/iptables-legacy-restore"));
    for rule in [
        "*nat\n:AMIME_INBOUND - [0:0]\n",
        "-A AMIME_OUTPUT -m owner --uid-owner 1337 -j RETURN\n",
        "-A AMIME_OUTPUT -d 10.9.0.0/16 -j RETURN\n",
        "-A AMIME_OUTPUT -p tcp --dport 5432 -j RETURN\n",
        "-A PREROUTING -p tcp -j AMIME_INBOUND\n-A OUTPUT -p tcp -j AMIME_OUTPUT\nCOMMIT\n",
    ] {
        assert!(stdout.contains(rule), "no {rule:?} in\n{stdout}");
    }
    let cleanup = agent(&["init", "--dry-run", "--cleanup"], &[]);
    assert!(cleanup.status.success());
    assert!(text(&cleanup.stdout).contains("-X AMIME_INBOUND\n"), "{}", text(&cleanup.stdout));
}

#[test]
fn without_iptables_the_error_names_the_programs_and_the_package() {
    let empty = scratch("empty-path");
    let out = agent(&["init"], &[("PATH", empty.to_str().unwrap())]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.starts_with("amime-agent: error: no iptables found"), "{stderr}");
    assert!(stderr.contains("iptables-save and iptables-restore, iptables-legacy-save and iptables-legacy-restore"));
    assert!(stderr.contains("the image needs the iptables package"), "{stderr}");
    assert!(stderr.contains(empty.to_str().unwrap()), "{stderr}");
    let explicit = agent(&["init", "--iptables-restore", "/nonexistent/iptables-restore"], &[]);
    assert!(text(&explicit.stderr).contains("/nonexistent/iptables-save and /nonexistent/iptables-restore"));
}

#[test]
fn without_privileges_the_error_names_root_and_the_capabilities() {
    let Some(restore) = find_on_path("iptables-restore") else {
        eprintln!("SKIPPED: iptables is not installed here, so its refusal cannot be shown");
        return;
    };
    let path = restore.parent().unwrap().to_str().unwrap().to_string() + ":/usr/sbin:/usr/bin:/sbin:/bin";
    // As root, drop to nobody first (nobody can change nothing, so this never touches the
    // host's rules); as anyone else, the agent already lacks the privilege.
    let out = if uid() == 0 {
        let Some(setpriv) = find_on_path("setpriv") else {
            eprintln!("SKIPPED: running as root and setpriv (util-linux) is missing to drop to nobody");
            return;
        };
        Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", AGENT, "init"])
            .env_clear()
            .env("PATH", &path)
            .output()
            .unwrap()
    } else {
        agent(&["init"], &[("PATH", &path)])
    };
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for want in ["was refused", "must run as root with the NET_ADMIN and NET_RAW", "securityContext", "uid "] {
        assert!(stderr.contains(want), "no {want:?} in {stderr}");
    }
}

fn pod_files(name: &str, labels: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let pod = dir.join("pod");
    std::fs::create_dir_all(&pod).unwrap();
    std::fs::write(pod.join("labels"), labels).unwrap();
    (pod, dir.join("proxy"))
}

fn proxy_env<'a>(pod: &'a Path, proxy: &'a Path) -> Vec<(&'a str, &'a str)> {
    vec![
        ("POD_NAME", "reviews-v2-5c8f"),
        ("POD_NAMESPACE", "bookinfo"),
        ("INSTANCE_IPS", "10.251.1.12"),
        ("SERVICE_ACCOUNT", "bookinfo-reviews"),
        ("AMIME_XDS_ADDRESS", "10.251.1.254:15010"),
        ("AMIME_XDS_API", "sotw"),
        ("AMIME_POD_INFO_DIR", pod.to_str().unwrap()),
        ("AMIME_PROXY_CONFIG_DIR", proxy.to_str().unwrap()),
    ]
}

#[test]
fn proxy_writes_the_bootstrap_from_the_pod_and_runs_envoy_with_it() {
    let (pod, proxy) = pod_files("proxy-ok", "app=\"reviews\"\nversion=\"v2\"");
    let mut env = proxy_env(&pod, &proxy);
    env.push(("AMIME_APP_PROBES", r#"{"/app-health/reviews/readyz":{"port":9080,"path":"/health"}}"#));
    let out = agent(&["proxy", "--dry-run", "--envoy", "/opt/envoy", "--", "--base-id", "7"], &env);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bootstrap = proxy.join("envoy.yaml");
    let want = format!("/opt/envoy -c {} --disable-hot-restart", bootstrap.display());
    assert!(stdout.starts_with(&want), "{stdout}");
    assert!(stdout.trim_end().ends_with("--base-id 7"), "{stdout}");
    let yaml = std::fs::read_to_string(&bootstrap).unwrap();
    for want in [
        "id: reviews-v2-5c8f.bookinfo",
        "INTERCEPTION_MODE: REDIRECT",
        "SERVICE_ACCOUNT: bookinfo-reviews",
        "version: v2",
        "api_type: GRPC",
        "address: 10.251.1.254",
        "/app-health/reviews/readyz",
    ] {
        assert!(yaml.contains(want), "no {want:?} in\n{yaml}");
    }
}

#[test]
fn proxy_errors_name_the_variable_or_the_file_line() {
    let (pod, proxy) = pod_files("proxy-bad", "app=\"reviews\"\nversion=v2\n");
    let env = proxy_env(&pod, &proxy);
    let out = agent(&["proxy", "--dry-run"], &env);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    let labels = pod.join("labels");
    assert!(stderr.contains(&format!("{}: labels file, line 2", labels.display())), "{stderr}");

    std::fs::write(&labels, "app=\"reviews\"").unwrap();
    let without_ips: Vec<_> = env.iter().copied().filter(|(k, _)| *k != "INSTANCE_IPS").collect();
    let stderr = text(&agent(&["proxy", "--dry-run"], &without_ips).stderr);
    assert!(stderr.contains("environment variable INSTANCE_IPS is not set"), "{stderr}");

    std::fs::remove_file(&labels).unwrap();
    let stderr = text(&agent(&["proxy", "--dry-run"], &env).stderr);
    assert!(stderr.contains(&labels.display().to_string()) && stderr.contains("amime-podinfo"), "{stderr}");

    std::fs::write(&labels, "app=\"reviews\"").unwrap();
    let stderr = text(&agent(&["proxy", "--envoy", "/nonexistent/envoy"], &env).stderr);
    assert!(stderr.contains("cannot start Envoy: /nonexistent/envoy not found"), "{stderr}");
    assert!(!proxy.join(".envoy.yaml.tmp").exists());
}
