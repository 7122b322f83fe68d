//! Where the Kubernetes control-plane binaries are (built and cached by `scripts/k8s-binaries.sh`).

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::paths::workspace_root;

/// The Kubernetes version the harness runs (the cache directory is keyed by it).
pub const KUBERNETES_VERSION: &str = "v1.37.2";

/// The binaries a control plane needs.
pub const BINARIES: [&str; 4] = ["etcd", "kube-apiserver", "kube-controller-manager", "kubectl"];

/// The directory holding etcd, kube-apiserver, kube-controller-manager and kubectl:
/// `$AMIME_K8S_BIN` if set, else `<workspace>/.k8s/<version>/bin`.
pub fn bin_dir() -> Result<PathBuf> {
    let (dir, source) = match std::env::var_os("AMIME_K8S_BIN") {
        Some(dir) => (PathBuf::from(dir), "AMIME_K8S_BIN"),
        None => (workspace_root().join(".k8s").join(KUBERNETES_VERSION).join("bin"), "the project cache"),
    };
    let missing: Vec<&str> = BINARIES.iter().copied().filter(|b| !dir.join(b).is_file()).collect();
    if !missing.is_empty() {
        bail!(
            "Kubernetes binaries {} missing in {} ({source}); run scripts/k8s-binaries.sh",
            missing.join(", "),
            dir.display()
        );
    }
    Ok(dir)
}
