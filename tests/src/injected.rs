//! Injected pods in network namespaces: the harness takes a Pod as a user writes it, injects
//! it with the product's own `injector::inject::inject` (as meshd's webhook does), and then
//! plays kubelet with the result, inside the pod's [`Netns`]:
//!
//! - init containers run in order; the injected `amime-init` runs its own command line (with
//!   `amime-agent` resolved to the built binary) as root, so the capture rules are exactly
//!   what injection asked for;
//! - the native sidecar `amime-proxy` (`restartPolicy: Always`) starts with its own command
//!   line as its `securityContext.runAsUser`, with only the container's environment
//!   (downward-API `fieldRef`s filled from the pod) and the downwardAPI volume's files written
//!   to a test directory (`AMIME_POD_INFO_DIR`, and `AMIME_PROXY_CONFIG_DIR` for the
//!   bootstrap, stand in for the volume mounts); the next container waits for its
//!   `startupProbe`, asked from the node namespace as kubelet asks;
//! - the app containers are the test's business (ordinary root sockets in the namespace).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use injector::conventions::{self, env};
use injector::inject::{inject, Outcome};
use injector::settings::InjectionSettings;
use serde_json::Value;

use crate::context::TestContext;
use crate::http::Response;
use crate::netns::Netns;
use crate::paths;
use crate::process::ManagedProcess;
use crate::sidecar::{ensure_no_rejected_updates, parse_stats};
use crate::wait::await_condition;

/// Envoy's admin endpoint inside a pod (the bootstrap's default).
pub const ENVOY_ADMIN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 15000);
/// How long a sidecar may take to pass its startup probe.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Injects `pod` as meshd's webhook would in a namespace labelled for injection, and returns
/// the patched pod. Fails if injection skips the pod.
pub fn inject_pod(pod: &Value, settings: &InjectionSettings) -> Result<Value> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("(unnamed)");
    match inject(pod, true, settings).with_context(|| format!("inject pod {name}"))? {
        Outcome::Injected(patch) => {
            let mut injected = pod.clone();
            json_patch::patch(&mut injected, &patch).with_context(|| format!("apply the patch to pod {name}"))?;
            Ok(injected)
        }
        Outcome::Skipped(reason) => bail!("injection skipped pod {name}: {reason:?}"),
    }
}

/// The container (init or app) called `name`.
pub fn container<'a>(pod: &'a Value, name: &str) -> Result<&'a Value> {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|list| pod["spec"][*list].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .ok_or_else(|| anyhow!("pod {} has no container {name}", pod["metadata"]["name"]))
}

/// `command` + `args` of a container, with `amime-agent` resolved to the built binary.
pub fn command_line(container: &Value) -> Result<Vec<String>> {
    let strings = |field: &str| -> Vec<String> {
        container[field].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect()
    };
    let mut argv = strings("command");
    argv.extend(strings("args"));
    let first = argv.first().ok_or_else(|| anyhow!("container {} has no command", container["name"]))?;
    if Path::new(first).file_name().is_some_and(|n| n == conventions::AGENT_BINARY) {
        argv[0] = paths::binary(conventions::AGENT_BINARY)?.display().to_string();
    }
    Ok(argv)
}

/// The value of a downward-API `fieldPath` for `pod`, as kubelet renders it.
pub fn field_value(pod: &Value, path: &str) -> Result<String> {
    let text = |v: &Value| v.as_str().map(String::from);
    let value = match path {
        "metadata.name" => text(&pod["metadata"]["name"]),
        "metadata.namespace" => text(&pod["metadata"]["namespace"]),
        "metadata.uid" => text(&pod["metadata"]["uid"]),
        "spec.serviceAccountName" => text(&pod["spec"]["serviceAccountName"]).or(Some("default".into())),
        "spec.nodeName" => text(&pod["spec"]["nodeName"]),
        "status.podIP" => text(&pod["status"]["podIP"]),
        "status.hostIP" => text(&pod["status"]["hostIP"]),
        "status.podIPs" => pod["status"]["podIPs"]
            .as_array()
            .map(|ips| ips.iter().filter_map(|ip| ip["ip"].as_str()).collect::<Vec<_>>().join(",")),
        "metadata.labels" => Some(format_map(&pod["metadata"]["labels"])),
        "metadata.annotations" => Some(format_map(&pod["metadata"]["annotations"])),
        _ => bail!("downward-API fieldPath {path:?} is not played by this harness"),
    };
    value.ok_or_else(|| anyhow!("downward-API field {path} is not set on pod {}", pod["metadata"]["name"]))
}

/// A map as kubelet's downward API writes it: sorted `key="value"` lines, values quoted as
/// Go's `%q`.
pub fn format_map(map: &Value) -> String {
    let map: BTreeMap<&str, &str> =
        map.as_object().into_iter().flatten().filter_map(|(k, v)| Some((k.as_str(), v.as_str()?))).collect();
    map.iter().map(|(k, v)| format!("{k}={}", go_quote(v))).collect::<Vec<_>>().join("\n")
}

/// Go's `strconv.Quote` for the characters labels and annotations hold in practice.
pub fn go_quote(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A container's environment with `fieldRef`s resolved (kubelet's job).
pub fn container_env(pod: &Value, container: &Value) -> Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    for entry in container["env"].as_array().into_iter().flatten() {
        let name = entry["name"].as_str().ok_or_else(|| anyhow!("env entry without a name: {entry}"))?;
        let value = if let Some(value) = entry["value"].as_str() {
            value.to_string()
        } else if let Some(path) = entry["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            field_value(pod, path).with_context(|| format!("env {name}"))?
        } else if entry.get("valueFrom").is_some() {
            bail!("env {name}: only value and valueFrom.fieldRef are played by this harness: {entry}");
        } else {
            String::new()
        };
        vars.push((name.to_string(), value));
    }
    Ok(vars)
}

/// The files of the pod's downwardAPI volume `volume`: (relative path, contents).
pub fn downward_files(pod: &Value, volume: &str) -> Result<Vec<(String, String)>> {
    let spec = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == volume)
        .ok_or_else(|| anyhow!("pod {} has no volume {volume}", pod["metadata"]["name"]))?;
    let items = spec["downwardAPI"]["items"].as_array().ok_or_else(|| anyhow!("volume {volume} is not downwardAPI"))?;
    items
        .iter()
        .map(|item| {
            let path = item["path"].as_str().ok_or_else(|| anyhow!("downwardAPI item without a path: {item}"))?;
            let field = item["fieldRef"]["fieldPath"].as_str().ok_or_else(|| anyhow!("item {path}: no fieldRef"))?;
            Ok((path.to_string(), field_value(pod, field)?))
        })
        .collect()
}

/// `GET http://<pod ip>:<port><path>` of a container's `startupProbe.httpGet` (integer port).
fn startup_probe(container: &Value) -> Option<(u16, String)> {
    let get = &container["startupProbe"]["httpGet"];
    let port = u16::try_from(get["port"].as_u64()?).ok()?;
    Some((port, get["path"].as_str().unwrap_or("/").to_string()))
}

/// An injected pod, started: its init containers ran and its sidecar is up.
///
/// Fields drop in order: the sidecar is killed, then the namespace deleted.
pub struct RunningPod {
    sidecar: Option<ManagedProcess>,
    pub name: String,
    pub ip: Ipv4Addr,
    pub netns: Netns,
    /// The injected pod (with its status).
    pub pod: Value,
    /// What each init container that ran to completion printed, by container name.
    pub init_output: BTreeMap<String, String>,
    /// Where the sidecar's bootstrap was written.
    pub proxy_config_dir: PathBuf,
}

impl RunningPod {
    /// Runs the pod's init containers in `netns` (its network is set up, `ip` is its address)
    /// and starts its native sidecars; `prober` is where kubelet probes from (the node).
    pub async fn start(ctx: &TestContext, netns: Netns, ip: Ipv4Addr, pod: Value, prober: &Netns) -> Result<Self> {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let dir = ctx.dir().join(format!("pod-{name}"));
        let info_dir = dir.join("podinfo");
        let proxy_config_dir = dir.join("proxy");
        std::fs::create_dir_all(&info_dir)?;
        std::fs::create_dir_all(&proxy_config_dir)?;
        let mut running =
            Self { sidecar: None, name: name.clone(), ip, netns, pod, init_output: BTreeMap::new(), proxy_config_dir };
        let inits = running.pod["spec"]["initContainers"].as_array().cloned().unwrap_or_default();
        for container in &inits {
            let cname = container["name"].as_str().unwrap_or_default().to_string();
            if container["restartPolicy"] == "Always" {
                running.start_sidecar(ctx, container, &info_dir, prober).await?;
            } else {
                let argv = command_line(container)?;
                let output = running
                    .netns
                    .exec(&argv[0], &argv[1..])
                    .await
                    .with_context(|| format!("init container {cname} of pod {name}"))?;
                running.init_output.insert(cname, output);
            }
        }
        Ok(running)
    }

    async fn start_sidecar(
        &mut self,
        ctx: &TestContext,
        container: &Value,
        info_dir: &Path,
        prober: &Netns,
    ) -> Result<()> {
        let cname = container["name"].as_str().unwrap_or_default();
        ensure!(self.sidecar.is_none(), "pod {}: this harness runs one native sidecar", self.name);
        for (path, contents) in downward_files(&self.pod, conventions::POD_INFO_VOLUME)? {
            std::fs::write(info_dir.join(&path), contents)?;
        }
        // The capture skips exactly this uid: a sidecar without it would capture its own traffic.
        let uid = container["securityContext"]["runAsUser"]
            .as_u64()
            .and_then(|u| u32::try_from(u).ok())
            .ok_or_else(|| anyhow!("pod {}: sidecar {cname} has no securityContext.runAsUser", self.name))?;
        std::os::unix::fs::chown(&self.proxy_config_dir, Some(uid), Some(uid))
            .with_context(|| format!("chown {} to {uid}", self.proxy_config_dir.display()))?;
        let mut argv = command_line(container)?;
        // The image's Envoy is the test's Envoy.
        let envoy = paths::envoy_executable()?.display().to_string();
        let at = argv.iter().position(|a| a == "proxy").map_or(argv.len(), |i| i + 1);
        argv.splice(at..at, ["--envoy".to_string(), envoy]);
        let mut command: Vec<String> = vec!["-i".into()];
        for (key, value) in container_env(&self.pod, container)? {
            command.push(format!("{key}={value}"));
        }
        command.push(format!("{}={}", env::POD_INFO_DIR, info_dir.display()));
        command.push(format!("{}={}", env::PROXY_CONFIG_DIR, self.proxy_config_dir.display()));
        command.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        command.extend(argv);
        let label = format!("{}-{cname}", self.name);
        let process = self.netns.spawn_as(ctx, &label, uid, Path::new("/usr/bin/env"), &command)?;
        // A container's stdout is its own (the runtime's pipe): a process of the container's
        // uid can reopen it as `/dev/stdout`, as Envoy's access log does. Done before Envoy
        // can hear of an access log, which comes with its first listeners over xDS.
        let stdout = process.stdout_log();
        std::os::unix::fs::chown(stdout, Some(uid), Some(uid))
            .with_context(|| format!("chown {} to {uid}", stdout.display()))?;
        self.sidecar = Some(process);
        let (port, path) =
            startup_probe(container).unwrap_or((injector::bootstrap::HEALTH_PORT, "/healthz/ready".into()));
        let addr = SocketAddr::from((self.ip, port));
        await_condition(
            &format!("pod {}: {cname}'s startup probe GET {addr}{path}", self.name),
            STARTUP_TIMEOUT,
            || async {
                self.ensure_running()?;
                let response = prober.get(addr, &path).await?;
                ensure!(response.status == 200, "{}", response.summary());
                Ok(())
            },
        )
        .await
    }

    /// Fails if the sidecar exited.
    pub fn ensure_running(&self) -> Result<()> {
        match &self.sidecar {
            Some(process) => process.ensure_running(),
            None => Ok(()),
        }
    }

    /// Where the sidecar's stdout goes (Envoy's access log at `/dev/stdout`).
    pub fn sidecar_stdout(&self) -> Option<&Path> {
        self.sidecar.as_ref().map(ManagedProcess::stdout_log)
    }

    /// `GET path` on the sidecar's Envoy admin (inside the pod).
    pub async fn admin_get(&self, path: &str) -> Result<Response> {
        self.netns.get(ENVOY_ADMIN, path).await.with_context(|| format!("pod {}: Envoy admin GET {path}", self.name))
    }

    /// The sidecar's Envoy stats.
    pub async fn stats(&self) -> Result<BTreeMap<String, u64>> {
        let response = self.admin_get("/stats").await?;
        ensure!(response.status == 200, "pod {}: Envoy /stats: {}", self.name, response.summary());
        Ok(parse_stats(&response.body))
    }

    /// The sidecar's Envoy accepted listeners and clusters at least once and rejected no update.
    pub async fn ensure_updates_accepted(&self) -> Result<()> {
        let stats = self.stats().await?;
        ensure_no_rejected_updates(&stats).with_context(|| format!("pod {}", self.name))?;
        for name in ["listener_manager.lds.update_success", "cluster_manager.cds.update_success"] {
            let n = stats.get(name).copied().unwrap_or(0);
            ensure!(n >= 1, "pod {}: {name} = {n}: its Envoy never accepted an update", self.name);
        }
        Ok(())
    }

    /// One stat (0 when Envoy has not created it yet).
    pub async fn stat(&self, name: &str) -> Result<u64> {
        Ok(self.stats().await?.get(name).copied().unwrap_or(0))
    }

    /// Packets (= connections: the nat table sees a connection's first packet only) that
    /// went through the REDIRECT rule of a capture chain.
    pub async fn redirected(&self, chain: &str) -> Result<u64> {
        self.netns.nat_packets(chain, "REDIRECT").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn downward_api_values_are_rendered_as_kubelet_does() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"version": "v1", "app": "a\"b"}},
            "spec": {"volumes": [{"name": "info", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]},
            "status": {"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]},
        });
        assert_eq!(format_map(&pod["metadata"]["labels"]), "app=\"a\\\"b\"\nversion=\"v1\"");
        assert_eq!(field_value(&pod, "status.podIPs").unwrap(), "10.0.0.1,fd00::1");
        assert_eq!(field_value(&pod, "spec.serviceAccountName").unwrap(), "default");
        assert!(field_value(&pod, "metadata.generateName").is_err());
        assert_eq!(
            downward_files(&pod, "info").unwrap(),
            vec![("labels".to_string(), format_map(&pod["metadata"]["labels"]))]
        );
        let c = json!({"env": [{"name": "A", "value": "1"}, {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]});
        assert_eq!(container_env(&pod, &c).unwrap(), vec![("A".into(), "1".into()), ("N".into(), "p".into())]);
        // What the agent parses back is what the pod holds.
        let parsed = injector::pod_env::parse_labels_file(&format_map(&pod["metadata"]["labels"])).unwrap();
        assert_eq!(parsed["app"], "a\"b");
    }
}
