//! The demo's mesh as processes: meshd on a temporary copy of the example, productpage's
//! Envoy sidecar, and the rules file both steps and people edit.
//!
//! Rules it keeps: every child is registered in [`Children`] the moment it is spawned and is
//! killed on drop as well as by [`Children::shutdown`] (which also waits for it), so no exit
//! path — error, Ctrl-C, SIGTERM, panic — leaves a process running.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;
use tokio::process::{Child, Command};

use super::steps::Step;
use super::traffic::http_get;

/// The example mesh, built into meshctl so the demo runs from any directory.
pub const EXAMPLE_MESH: &str = include_str!("../../../manifests/examples/bookinfo/mesh.yaml");
pub const EXAMPLE_RULES: &str = include_str!("../../../manifests/examples/bookinfo/reviews-rules.yaml");
pub const RULES_FILE: &str = "reviews-rules.yaml";
/// productpage's proxy identity (Envoy's node.id).
pub const NODE_ID: &str = "productpage-v1.bookinfo";

/// Host numbers in the block (those of the example): 127.0.N.<host>.
pub mod hosts {
    pub const PRODUCTPAGE: u8 = 1;
    pub const MESHD: u8 = 2;
    pub const REVIEWS: [(u8, &str); 3] = [(11, "v1"), (12, "v2"), (13, "v3")];
}
pub const APP_PORT: u16 = 9080;

/// A loopback block 127.0.N.0/24.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block(pub u8);

impl Block {
    pub fn ip(self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, self.0, host)
    }

    pub fn addr(self, host: u8, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip(host), port))
    }

    /// The example's YAML (block 10) moved into this block.
    pub fn render(self, yaml: &str) -> String {
        yaml.replace("127.0.10.", &format!("127.0.{}.", self.0)).replace("10.96.10.", &format!("10.96.{}.", self.0))
    }

    /// Every address the demo listens on, with what listens there.
    pub fn addresses(self) -> Vec<(SocketAddr, String)> {
        let mut out = vec![
            (self.addr(hosts::MESHD, 15010), "meshd xDS".to_string()),
            (self.addr(hosts::MESHD, 15014), "meshd monitoring".to_string()),
            (self.addr(hosts::PRODUCTPAGE, 15000), "Envoy admin".to_string()),
            (self.addr(hosts::PRODUCTPAGE, 15001), "Envoy outbound proxy".to_string()),
            (self.addr(hosts::PRODUCTPAGE, 15021), "Envoy health".to_string()),
            (self.addr(hosts::PRODUCTPAGE, 15090), "Envoy stats".to_string()),
        ];
        out.extend(hosts::REVIEWS.iter().map(|(h, v)| (self.addr(*h, APP_PORT), format!("reviews {v}"))));
        out
    }
}

/// Fails with one clear message naming every busy address.
pub fn check_ports_free(block: Block) -> Result<()> {
    let busy: Vec<String> = block
        .addresses()
        .into_iter()
        .filter_map(|(addr, what)| match std::net::TcpListener::bind(addr) {
            Ok(_) => None,
            Err(e) => Some(format!("{addr} ({what}): {e}")),
        })
        .collect();
    if !busy.is_empty() {
        bail!(
            "the demo's addresses on 127.0.{}.x are not free:\n  {}\nIs another demo running? Stop it, or use another \
             block with --block N (127.0.N.x)",
            block.0,
            busy.join("\n  ")
        );
    }
    Ok(())
}

/// Where meshd and Envoy come from.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub meshd: PathBuf,
    pub envoy: PathBuf,
}

impl Binaries {
    /// meshd: `--meshd`, next to this meshctl, or PATH. Envoy: `--envoy`, `$AMIME_ENVOY`,
    /// `.venv/bin/envoy` of the repository meshctl was built in (or the current directory
    /// is in), or PATH.
    pub fn find(meshd: Option<PathBuf>, envoy: Option<PathBuf>) -> Result<Binaries> {
        let exe = std::env::current_exe().ok();
        let meshd = match meshd {
            Some(path) => existing(path, "--meshd")?,
            None => exe
                .as_ref()
                .and_then(|e| e.parent())
                .map(|dir| dir.join("meshd"))
                .filter(|p| p.is_file())
                .or_else(|| on_path("meshd"))
                .ok_or_else(|| {
                    anyhow!("meshd not found next to meshctl or on PATH; build it (cargo build --bins) or pass --meshd PATH")
                })?,
        };
        let envoy = match envoy.or_else(|| std::env::var_os("AMIME_ENVOY").map(PathBuf::from)) {
            Some(path) => existing(path, "--envoy / AMIME_ENVOY")?,
            None => {
                let roots = exe
                    .iter()
                    .chain(std::env::current_dir().ok().iter())
                    .flat_map(|p| p.ancestors())
                    .map(Path::to_path_buf)
                    .collect::<Vec<_>>();
                roots.iter().map(|r| r.join(".venv/bin/envoy")).find(|p| p.is_file()).or_else(|| on_path("envoy")).ok_or_else(
                    || anyhow!("Envoy not found (.venv/bin/envoy of the repository, PATH); run scripts/install-envoy.sh or pass --envoy PATH"),
                )?
            }
        };
        Ok(Binaries { meshd, envoy })
    }
}

fn existing(path: PathBuf, flag: &str) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        bail!("{flag}: {} does not exist", path.display())
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The demo's scratch directory (`$TMPDIR/amime-demo-b<N>-<pid>`): the config directory meshd
/// watches, the bootstrap, the logs. Removed on drop.
pub struct Workdir {
    pub path: PathBuf,
}

impl Workdir {
    pub fn create(block: Block) -> Result<Workdir> {
        let path = std::env::temp_dir().join(format!("amime-demo-b{}-{}", block.0, std::process::id()));
        std::fs::create_dir_all(path.join("config")).with_context(|| format!("create {}", path.display()))?;
        let dir = Workdir { path };
        dir.write_config("mesh.yaml", &block.render(EXAMPLE_MESH))?;
        dir.write_config(RULES_FILE, &block.render(EXAMPLE_RULES))?;
        Ok(dir)
    }

    pub fn config_dir(&self) -> PathBuf {
        self.path.join("config")
    }

    pub fn rules_path(&self) -> PathBuf {
        self.config_dir().join(RULES_FILE)
    }

    /// Replace a config file atomically (a temporary file renamed into place, as editors do).
    pub fn write_config(&self, name: &str, text: &str) -> Result<()> {
        let target = self.config_dir().join(name);
        let temp = self.config_dir().join(format!(".{name}.tmp~"));
        std::fs::write(&temp, text).with_context(|| format!("write {}", temp.display()))?;
        std::fs::rename(&temp, &target).with_context(|| format!("rename {} to {}", temp.display(), target.display()))
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}.log"))
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every child process of the demo.
#[derive(Default)]
pub struct Children {
    list: Mutex<Vec<(String, PathBuf, Child)>>,
}

impl Children {
    fn lock(&self) -> MutexGuard<'_, Vec<(String, PathBuf, Child)>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start `program` with stdout and stderr to `log`; returns its pid.
    pub fn spawn(&self, label: &str, program: &Path, args: &[String], log: PathBuf) -> Result<u32> {
        let out = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone().with_context(|| format!("open {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {label} ({})", program.display()))?;
        let pid = child.id().unwrap_or_default();
        self.lock().push((label.to_string(), log, child));
        Ok(pid)
    }

    /// An error naming the first child that has exited, with the end of its log.
    pub fn ensure_running(&self) -> Result<()> {
        for (label, log, child) in self.lock().iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{label} exited ({status}); the end of its log ({}):\n{}", log.display(), tail(log, 15));
            }
        }
        Ok(())
    }

    /// Kill every child and wait until each has exited.
    pub async fn shutdown(&self) {
        let children = std::mem::take(&mut *self.lock());
        for (label, _, mut child) in children {
            let _ = child.start_kill();
            if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                eprintln!("meshctl demo: {label} (pid {:?}) did not exit within 5 s of SIGKILL", child.id());
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, _, child) in self.lock().iter_mut() {
            let _ = child.start_kill();
        }
    }
}

/// Start meshd on the work directory's config.
pub fn start_meshd(children: &Children, bin: &Binaries, dir: &Workdir, block: Block) -> Result<u32> {
    let args = vec![
        "--config-dir".to_string(),
        dir.config_dir().display().to_string(),
        "--xds-addr".into(),
        block.addr(hosts::MESHD, 15010).to_string(),
        "--monitoring-addr".into(),
        block.addr(hosts::MESHD, 15014).to_string(),
        // No pods to inject here; the default 0.0.0.0:15017 would also collide with any other
        // meshd on the machine (another demo, a local cluster's).
        "--webhook-addr".into(),
        "off".into(),
    ];
    children.spawn("meshd", &bin.meshd, &args, dir.log("meshd"))
}

/// Write productpage's bootstrap (explicit mode, the `meshctl bootstrap` renderer) and start Envoy.
pub fn start_envoy(children: &Children, bin: &Binaries, dir: &Workdir, block: Block) -> Result<u32> {
    use injector::bootstrap::{render_yaml, BootstrapConfig, InterceptionMode, ProxyIdentity};
    let config = BootstrapConfig::builder(ProxyIdentity::parse(NODE_ID)?)
        .ip(block.ip(hosts::PRODUCTPAGE).into())
        .xds_address(block.addr(hosts::MESHD, 15010).to_string())
        .mode(InterceptionMode::None)
        .label("app", "productpage")
        .label("version", "v1")
        .service_account("bookinfo-productpage")
        .admin_address(block.addr(hosts::PRODUCTPAGE, 15000))
        .build()?;
    let bootstrap = dir.path.join("productpage-envoy.yaml");
    std::fs::write(&bootstrap, render_yaml(&config)?).with_context(|| format!("write {}", bootstrap.display()))?;
    let args: Vec<String> =
        ["--use-dynamic-base-id", "-c", &bootstrap.display().to_string(), "--log-level", "warn", "--concurrency", "1"]
            .map(String::from)
            .to_vec();
    children.spawn("envoy (productpage sidecar)", &bin.envoy, &args, dir.log("envoy"))
}

/// Poll `probe` every 50 ms until it succeeds, a child exits, or `limit` passes.
pub async fn wait_for<T, F, Fut>(children: &Children, what: &str, limit: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        children.ensure_running()?;
        let last = match probe().await {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            bail!("{what}: not within {limit:?} ({last:#})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET `path` on `addr`, wanting 200; the body.
pub async fn get_ok(addr: SocketAddr, path: &str) -> Result<String> {
    let (status, body) = http_get(addr, path, &addr.to_string(), &[]).await.with_context(|| format!("GET {path}"))?;
    if status != 200 {
        bail!("GET http://{addr}{path}: HTTP {status} {}", body.trim());
    }
    Ok(body)
}

/// Every route name in an Envoy config dump of route configurations.
pub fn route_names(dump: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Array(routes)) = map.get("routes") {
                    out.extend(routes.iter().filter_map(|r| r.get("name")?.as_str().map(str::to_string)));
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dump, &mut out);
    out
}

/// meshd's `/debug/proxies` state of `node` (`SYNCED`, `STALE`, ...).
pub fn proxy_state(proxies: &Value, node: &str) -> Option<String> {
    proxies.as_array()?.iter().find(|p| p["node_id"] == node).and_then(|p| p["state"].as_str()).map(str::to_string)
}

/// meshd's `/debug/config_errors` entries about the reviews rules, as `field: message`.
pub fn rule_notes(errors: &Value) -> Vec<String> {
    let Some(errors) = errors.as_array() else { return Vec::new() };
    errors
        .iter()
        .filter(|e| e["name"] == "reviews")
        .map(|e| format!("{}: {}", e["field"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or("?")))
        .collect()
}

/// Once the sidecar has a step's rule: how long it took, meshd's word on the proxy, and
/// meshd's notes on the rule.
#[derive(Clone, Debug)]
pub struct Applied {
    pub took: Duration,
    pub state: String,
    pub notes: Vec<String>,
    /// The sidecar's route configuration carries Envoy's fault filter config.
    pub has_fault: bool,
}

/// Wait until the sidecar's routes carry `step`'s route names (Envoy applied the update) and
/// meshd reports the proxy SYNCED (every type ACKed at its latest version).
pub async fn wait_applied(children: &Children, block: Block, step: &Step, saved: Instant) -> Result<Applied> {
    let admin = block.addr(hosts::PRODUCTPAGE, 15000);
    let monitoring = block.addr(hosts::MESHD, 15014);
    let what = format!("the sidecar to have the rule of step \"{}\" (routes {:?}), ACKed", step.title, step.routes);
    let (state, has_fault) = wait_for(children, &what, Duration::from_secs(15), || async {
        let dump: Value = serde_json::from_str(&get_ok(admin, "/config_dump?resource=dynamic_route_configs").await?)?;
        let names = route_names(&dump);
        if let Some(missing) = step.routes.iter().find(|r| !names.iter().any(|n| n == *r)) {
            bail!("route {missing} not in the sidecar yet (it has {names:?})");
        }
        let has_fault = dump.to_string().contains("envoy.filters.http.fault");
        let proxies: Value = serde_json::from_str(&get_ok(monitoring, "/debug/proxies").await?)?;
        match proxy_state(&proxies, NODE_ID) {
            Some(state) if state == "SYNCED" => Ok((state, has_fault)),
            other => bail!("meshd says {NODE_ID} is {other:?}"),
        }
    })
    .await?;
    let took = saved.elapsed();
    let errors: Value = serde_json::from_str(&get_ok(monitoring, "/debug/config_errors").await?)?;
    Ok(Applied { took, state, notes: rule_notes(&errors), has_fault })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_moves_the_example() {
        let b = Block(212);
        let mesh = b.render(EXAMPLE_MESH);
        assert!(mesh.contains("podIP: 127.0.212.11") && mesh.contains("clusterIP: 10.96.212.2"));
        assert!(!mesh.contains("127.0.10.") && !mesh.contains("10.96.10."));
        assert_eq!(b.addresses().len(), 9);
        assert_eq!(b.addresses()[0].0.to_string(), "127.0.212.2:15010");
    }

    #[test]
    fn reads_route_names_state_and_notes() {
        let dump = serde_json::json!({"configs": [{"dynamic_route_configs": [{"route_config": {"virtual_hosts": [
            {"routes": [{"name": "jason-to-v2"}, {"name": "others-to-v1"}]}, {"routes": [{"match": {}}]}]}}]}]});
        assert_eq!(route_names(&dump), ["jason-to-v2", "others-to-v1"]);
        let proxies =
            serde_json::json!([{"node_id": "a.b", "state": "STALE"}, {"node_id": NODE_ID, "state": "SYNCED"}]);
        assert_eq!(proxy_state(&proxies, NODE_ID).as_deref(), Some("SYNCED"));
        assert_eq!(proxy_state(&proxies, "x.y"), None);
        let errors = serde_json::json!([
            {"name": "reviews", "field": "spec.http[0].fault", "message": "ignored"},
            {"name": "ratings", "field": "spec", "message": "other"}]);
        assert_eq!(rule_notes(&errors), ["spec.http[0].fault: ignored"]);
    }

    #[test]
    fn busy_ports_are_named() {
        let block = Block(219);
        let taken = std::net::TcpListener::bind(block.addr(hosts::MESHD, 15014));
        if taken.is_ok() {
            let error = check_ports_free(block).unwrap_err().to_string();
            assert!(error.contains("127.0.219.2:15014 (meshd monitoring)") && error.contains("--block N"), "{error}");
        }
    }
}
