//! Runs the built `meshctl inject` (and `bootstrap --app-probes`) end to end.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn meshctl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meshctl");
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    drop(pipe);
    child.wait_with_output().expect("wait for meshctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn temp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("meshctl-inject-{}-{name}", std::process::id()))
}

const INPUT: &str = "\
# The web tier.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: web:1
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {port: http, path: /ready}}
---
apiVersion: example.com/v1
kind: Widget   # not a workload: kept as written
metadata: {name: w}
spec: {size: 3}
";

#[test]
fn injects_stdin_and_keeps_other_kinds() {
    let out = meshctl(&["inject", "-f", "-", "--proxy-image", "registry.local/proxy:dev"], Some(INPUT));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(stdout.starts_with("# The web tier.\napiVersion: apps/v1\nkind: Deployment\n"), "{stdout}");
    assert!(
        stdout.ends_with("---\napiVersion: example.com/v1\nkind: Widget   # not a workload: kept as written\nmetadata: {name: w}\nspec: {size: 3}\n"),
        "{stdout}"
    );
    for want in [
        "name: amime-init",
        "name: amime-proxy",
        "image: registry.local/proxy:dev",
        "path: /app-health/app/readyz",
        "sidecar.amime.dev/status:",
        "restartPolicy: Always",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn file_in_file_out_and_already_injected_is_unchanged() {
    let input = temp("in.yaml");
    let first = temp("first.yaml");
    let second = temp("second.yaml");
    std::fs::write(&input, INPUT).unwrap();
    let out = meshctl(&["inject", "-f", input.to_str().unwrap(), "-o", first.to_str().unwrap()], None);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let injected = std::fs::read_to_string(&first).unwrap();
    assert!(injected.contains("name: amime-proxy"), "{injected}");

    let out = meshctl(&["inject", "-f", first.to_str().unwrap(), "-o", second.to_str().unwrap(), "-n", "shop"], None);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&second).unwrap(), injected, "injecting twice changes nothing");
    assert_eq!(
        text(&out.stderr),
        format!("{}: document 1 (Deployment shop/web): not injected: the pod is already injected\n", first.display())
    );
    for path in [input, first, second] {
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn bad_input_fails_and_writes_nothing() {
    let bad = INPUT
        .replace("labels: {app: web}", "labels: {app: web}\n      annotations: {sidecar.amime.dev/inject: \"yes\"}");
    let output = temp("never.yaml");
    let cases = [
        (
            vec!["inject", "-f", "-", "-n", "shop", "-o", output.to_str().unwrap()],
            bad.as_str(),
            r#"error: -: document 1 (Deployment shop/web): spec.template.metadata.annotations["sidecar.amime.dev/inject"]: expected "true" or "false", got "yes""#,
        ),
        (vec!["inject", "-f", "-"], "kind: Pod\nspec: [", "error: -: document 1: <document>: not valid YAML"),
        (vec!["inject", "-f", "/nonexistent/x.yaml"], "", "error: cannot read /nonexistent/x.yaml"),
        (vec!["inject", "-f", "-", "--proxy-cpu-limit", "2 cores"], "", "\"2 cores\" is not a Kubernetes quantity"),
    ];
    for (args, stdin, want) in cases {
        let out = meshctl(&args, Some(stdin));
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(out.stdout.is_empty(), "{args:?} printed {}", text(&out.stdout));
        assert!(stderr.contains(want), "{args:?}: stderr {stderr:?} should contain {want:?}");
    }
    assert!(!output.exists(), "nothing is written when a document is bad");
}

#[test]
fn bootstrap_replays_app_probes() {
    let probes = r#"{"/app-health/app/readyz":{"port":8080,"path":"/ready","scheme":"HTTPS"}}"#;
    let out = meshctl(&["bootstrap", "--node", "a.b", "--ip", "127.0.0.5", "--app-probes", probes], None);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    for want in ["path: /app-health/app/readyz", "prefix_rewrite: /ready", "name: app-probe-8080-https"] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    let out = meshctl(&["bootstrap", "--node", "a.b", "--ip", "127.0.0.5", "--app-probes", "{\"/x\":{}}"], None);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not app probes JSON"), "{}", text(&out.stderr));
}
