//! The synthetic mesh: N services × M pods in a few namespaces, written as YAML.

use super::*;

pub(crate) const SERVICE_PORT: u16 = 8080;

/// A 10.0.0.0/8 address from an index (data only).
pub(crate) fn ten_net(base: u32, i: usize) -> String {
    let v = (10u32 << 24) | ((base << 16) + i as u32);
    format!("{}.{}.{}.{}", v >> 24, (v >> 16) & 255, (v >> 8) & 255, v & 255)
}

pub(crate) struct SyntheticMesh {
    pub(crate) dir: PathBuf,
    pub(crate) namespaces: Vec<String>,
    pub(crate) services: usize,
    pub(crate) endpoints: usize,
    pub(crate) with_rules: usize,
}

impl SyntheticMesh {
    pub(crate) fn namespace_of(&self, service: usize) -> &str {
        &self.namespaces[service % self.namespaces.len()]
    }

    pub(crate) fn service_name(service: usize) -> String {
        format!("svc-{service:05}")
    }

    pub(crate) fn generate(dir: &Path, args: &Args) -> Result<SyntheticMesh> {
        ensure!(args.services * args.endpoints < (127 - 64) << 16, "too many pods for the address plan");
        let mut mesh = SyntheticMesh {
            dir: dir.to_path_buf(),
            namespaces: (0..args.namespaces).map(|n| format!("bench-{n:02}")).collect(),
            services: args.services,
            endpoints: args.endpoints,
            with_rules: 0,
        };
        let mut ns_yaml = String::new();
        for ns in &mesh.namespaces {
            ns_yaml.push_str(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    amime-injection: enabled\n---\n"
            ));
            std::fs::create_dir_all(dir.join(ns))?;
        }
        write_file(&dir.join("namespaces.yaml"), &ns_yaml)?;
        for s in 0..args.services {
            write_file(&mesh.service_path(s), &mesh.service_yaml(s, None))?;
            if s % args.rules_every == 0 {
                write_file(&mesh.rules_path(s), &mesh.rules_yaml(s, 90))?;
                mesh.with_rules += 1;
            }
        }
        Ok(mesh)
    }

    /// Writes back the two files the push phases change.
    pub(crate) fn restore(&self) -> Result<()> {
        replace_file(&self.rules_path(0), &self.rules_yaml(0, 90))?;
        let s = 1 % self.services;
        replace_file(&self.service_path(s), &self.service_yaml(s, None))
    }

    pub(crate) fn service_path(&self, s: usize) -> PathBuf {
        self.dir.join(self.namespace_of(s)).join(format!("{}.yaml", Self::service_name(s)))
    }

    pub(crate) fn rules_path(&self, s: usize) -> PathBuf {
        self.dir.join(self.namespace_of(s)).join(format!("{}-rules.yaml", Self::service_name(s)))
    }

    /// The Service and its pods; `moved_pod` gives pod 0 a different IP.
    pub(crate) fn service_yaml(&self, s: usize, moved_pod: Option<&str>) -> String {
        let name = Self::service_name(s);
        let ns = self.namespace_of(s);
        let cluster_ip = ten_net(96, s);
        let mut y = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  clusterIP: {cluster_ip}\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    port: {SERVICE_PORT}\n    targetPort: http-web\n"
        );
        for p in 0..self.endpoints {
            let ip = match (p, moved_pod) {
                (0, Some(ip)) => ip.to_owned(),
                _ => ten_net(128, s * self.endpoints + p),
            };
            let version = p % 2 + 1;
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}-{p}\n  namespace: {ns}\n  labels:\n    app: {name}\n    version: v{version}\nspec:\n  containers:\n  - name: app\n    image: example/app:v{version}\n    ports:\n    - name: http-web\n      containerPort: {SERVICE_PORT}\nstatus:\n  podIP: {ip}\n"
            ));
        }
        y
    }

    /// A DestinationRule with subsets v1/v2 and a VirtualService with a header match to
    /// v2 and a v1/v2 split of `v1_weight`/100-`v1_weight`.
    pub(crate) fn rules_yaml(&self, s: usize, v1_weight: u32) -> String {
        let name = Self::service_name(s);
        let ns = self.namespace_of(s);
        let v2_weight = 100 - v1_weight;
        format!(
            "apiVersion: networking.amime.dev/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  host: {name}\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n  - name: v2\n    labels:\n      version: v2\n---\napiVersion: networking.amime.dev/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  hosts:\n  - {name}\n  http:\n  - name: canary\n    match:\n    - headers:\n        x-canary:\n          exact: \"true\"\n    route:\n    - destination:\n        host: {name}\n        subset: v2\n  - name: split\n    route:\n    - destination:\n        host: {name}\n        subset: v1\n      weight: {v1_weight}\n    - destination:\n        host: {name}\n        subset: v2\n      weight: {v2_weight}\n"
        )
    }
}

pub(crate) fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Replaces `path` atomically (the temp file is hidden, so meshd never reads it).
pub(crate) fn replace_file(path: &Path, text: &str) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).context("file name")?;
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    write_file(&tmp, text)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))
}
