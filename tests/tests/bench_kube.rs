//! The Kubernetes scale benchmark, small: `amime-bench --source kube` end to end (cluster,
//! objects through kube-apiserver, EndpointSlices from kube-controller-manager, meshd with
//! `--kubeconfig`, simulated proxies, report) on 20 Services × 3 pods and 20 proxies. The
//! figures are not checked here (the full run is a program, see the README's Benchmark).
//!
//! Loopback block 232 belongs to this file.

use std::process::Command;

use amime_e2e::paths;

#[test]
fn kube_benchmark_smoke_run() {
    let meshd = paths::binary("meshd").expect("meshd is built");
    let out = Command::new(env!("CARGO_BIN_EXE_amime-bench"))
        .args(["--source", "kube", "--block", "232", "--mode", "transparent", "--timeout", "60"])
        .args(["--services", "20", "--endpoints", "3", "--proxies", "20", "--namespaces", "2", "--idle-window", "1"])
        .arg("--meshd")
        .arg(&meshd)
        .output()
        .expect("amime-bench runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "amime-bench failed:\n{stdout}\n{stderr}");
    for line in
        ["initial sync: meshd start -> /readyz 200", "rule change (VirtualService PATCH -> all 20 ACKed)", "meshd RSS:"]
    {
        assert!(stdout.contains(line), "no `{line}` in the report:\n{stdout}\n{stderr}");
    }
}
