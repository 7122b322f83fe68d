//! The install manifests' RBAC as plain data: the rules flattened into grants (so a test can
//! compare them with what meshd's source uses) and [`Access`] rows of requests. Whether a
//! request is allowed is asked of the real API server (SubjectAccessReview, in
//! `tests/tests/kube_install.rs`), never decided here.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};

use crate::paths;

/// The namespace the install manifests put meshd in.
pub const MESHD_NAMESPACE: &str = "amime-system";
/// meshd's ServiceAccount.
pub const MESHD_SERVICE_ACCOUNT: &str = "meshd";
/// The Lease meshd's status writers elect their leader with.
pub const STATUS_LEASE: &str = "amime-meshd-status";

/// One request as an authorizer sees it. `namespace: None` is a cluster-wide request (a
/// list or watch across namespaces, or a cluster-scoped object); `name: None` is a request
/// that names no object (list, watch, create).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    pub namespace: Option<&'static str>,
    pub name: Option<&'static str>,
}

impl Access {
    /// `verb` on `resource` in `group`, cluster-wide, naming no object.
    pub const fn new(verb: &'static str, group: &'static str, resource: &'static str) -> Self {
        Self { verb, group, resource, subresource: "", namespace: None, name: None }
    }

    pub const fn status(self) -> Self {
        Self { subresource: "status", ..self }
    }

    pub const fn subresource(self, subresource: &'static str) -> Self {
        Self { subresource, ..self }
    }

    pub const fn namespace(self, namespace: &'static str) -> Self {
        Self { namespace: Some(namespace), ..self }
    }

    pub const fn name(self, name: &'static str) -> Self {
        Self { name: Some(name), ..self }
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() { String::new() } else { format!(".{}", self.group) };
        write!(f, "{} {}{group}", self.verb, self.resource)?;
        if !self.subresource.is_empty() {
            write!(f, "/{}", self.subresource)?;
        }
        if let Some(name) = self.name {
            write!(f, " {name}")?;
        }
        match self.namespace {
            Some(ns) => write!(f, " -n {ns}"),
            None => write!(f, " (cluster-wide)"),
        }
    }
}

fn list(items: &Option<Vec<String>>) -> &[String] {
    items.as_deref().unwrap_or_default()
}

/// Every (group, resource, verb) a rule set grants, with the resource names it is limited
/// to (empty: any), expanded from the rules' lists. Wildcards are returned as written.
pub fn grants(rules: &[PolicyRule]) -> Vec<(String, String, String, Vec<String>)> {
    let mut out = Vec::new();
    for rule in rules {
        for group in list(&rule.api_groups) {
            for resource in list(&rule.resources) {
                for verb in &rule.verbs {
                    out.push((group.clone(), resource.clone(), verb.clone(), list(&rule.resource_names).to_vec()));
                }
            }
        }
    }
    out
}

/// `manifests/install/` of the workspace.
pub fn install_dir() -> PathBuf {
    paths::workspace_root().join("manifests/install")
}

/// The one object of kind `T` in the YAML file `name` under `manifests/install/`.
fn load<T: serde::de::DeserializeOwned>(name: &str) -> Result<T> {
    let path = install_dir().join(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// meshd's cluster-wide rules: the ClusterRole of `manifests/install/20-clusterrole.yaml`.
pub fn meshd_cluster_role() -> Result<ClusterRole> {
    load("20-clusterrole.yaml")
}

/// meshd's rules in its own namespace: the Role of `manifests/install/30-role-leases.yaml`.
pub fn meshd_lease_role() -> Result<Role> {
    let role: Role = load("30-role-leases.yaml")?;
    if role.metadata.namespace.as_deref() != Some(MESHD_NAMESPACE) {
        bail!("30-role-leases.yaml: metadata.namespace is {:?}, not {MESHD_NAMESPACE}", role.metadata.namespace);
    }
    Ok(role)
}

/// meshd's rules for the webhook's certificate Secret: the Role of
/// `manifests/install/32-role-webhook.yaml`.
pub fn meshd_webhook_role() -> Result<Role> {
    let role: Role = load("32-role-webhook.yaml")?;
    if role.metadata.namespace.as_deref() != Some(MESHD_NAMESPACE) {
        bail!("32-role-webhook.yaml: metadata.namespace is {:?}, not {MESHD_NAMESPACE}", role.metadata.namespace);
    }
    Ok(role)
}

/// meshd's rules for the mesh config's ConfigMap: the Role of
/// `manifests/install/34-role-mesh-config.yaml`.
pub fn meshd_mesh_config_role() -> Result<Role> {
    let role: Role = load("34-role-mesh-config.yaml")?;
    if role.metadata.namespace.as_deref() != Some(MESHD_NAMESPACE) {
        bail!("34-role-mesh-config.yaml: metadata.namespace is {:?}, not {MESHD_NAMESPACE}", role.metadata.namespace);
    }
    Ok(role)
}

/// The install manifests' file names, in the order `kubectl apply -f` applies them.
pub fn install_files() -> Result<Vec<PathBuf>> {
    let dir = install_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("list {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_reads_like_kubectl() {
        let a = Access::new("patch", "networking.amime.dev", "virtualservices").status().namespace("b").name("r");
        assert_eq!(a.to_string(), "patch virtualservices.networking.amime.dev/status r -n b");
        assert_eq!(Access::new("list", "", "pods").to_string(), "list pods (cluster-wide)");
    }
}
