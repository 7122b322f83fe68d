//! A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) on loopback,
//! for tests ([`KubeCluster::start`]) and for a person (`amime-cluster up`, `scripts/cluster.sh`).
//!
//! No kubelet runs: [`kubelet`] plays it (binds pods to a Node object and sets their status), so
//! that kube-controller-manager's EndpointSlice controller publishes Ready endpoints.

pub mod certs;
pub mod etcd;
pub mod kubelet;
pub mod pod_network;
pub mod processes;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ::kube::api::{Api, PostParams};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use anyhow::{Context as _, Result};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};

use crate::context::TestContext;
use crate::mesh::{hosts, IpBlock};
use crate::process::run_to_completion;
use crate::wait::await_condition;
pub use certs::Pki;
pub use kubelet::{AutoKubelet, NODE_NAME};
pub use pod_network::PodNetwork;
pub use processes::{Launcher, Layout, Proc};

const ETCD_TIMEOUT: Duration = Duration::from_secs(30);
const APISERVER_TIMEOUT: Duration = Duration::from_secs(60);
const KCM_TIMEOUT: Duration = Duration::from_secs(30);
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

/// A running control plane. Processes started for a test are killed when this is dropped;
/// detached ones (`amime-cluster up`) keep running.
pub struct KubeCluster {
    layout: Layout,
    bin: PathBuf,
    pki: Pki,
    launcher: Launcher,
    etcd: Proc,
    apiserver: Option<Proc>,
    controller_manager: Proc,
    client: ::kube::Client,
    files: AtomicU32,
}

impl KubeCluster {
    /// Start a control plane for a test on `block` (etcd on host [`hosts::ETCD`], kube-apiserver on
    /// [`hosts::KUBE_APISERVER`]:6443, kube-controller-manager on [`hosts::KUBE_CONTROLLER_MANAGER`])
    /// with its data under the test's directory.
    pub async fn start(ctx: &TestContext, block: IpBlock) -> Result<KubeCluster> {
        Self::start_with_apiserver_args(ctx, block, &[]).await
    }

    /// [`start`](Self::start) with extra kube-apiserver flags, e.g. `--watch-cache=false` so that
    /// watches read etcd directly and [`compact_etcd`](Self::compact_etcd) alone expires them.
    pub async fn start_with_apiserver_args(ctx: &TestContext, block: IpBlock, args: &[&str]) -> Result<KubeCluster> {
        let layout = Layout {
            dir: ctx.dir().join("kube"),
            etcd_client: block.addr(hosts::ETCD, 2379),
            etcd_peer: block.addr(hosts::ETCD, 2380),
            apiserver: block.addr(hosts::KUBE_APISERVER, 6443),
            controller_manager: block.addr(hosts::KUBE_CONTROLLER_MANAGER, 10257),
            extra_apiserver_args: args.iter().map(ToString::to_string).collect(),
        };
        Self::start_with(Launcher::Test(ctx.clone()), layout).await
    }

    /// Start a control plane at `layout` (certificates and kubeconfig are generated unless
    /// `layout.dir` already has them, so a restarted local cluster keeps its kubeconfig).
    pub async fn start_with(launcher: Launcher, layout: Layout) -> Result<KubeCluster> {
        let started = Instant::now();
        let bin = crate::paths::kubernetes_bin_dir()?;
        std::fs::create_dir_all(&layout.dir).with_context(|| format!("create {}", layout.dir.display()))?;
        let pki = Pki::at(&layout.dir);
        let pki = if pki.exists() {
            pki
        } else {
            certs::write_all(&layout.dir, layout.apiserver_ip(), &layout.server_url())?
        };
        let etcd = launcher.spawn(&layout, "etcd", &bin.join("etcd"), &layout.etcd_args())?;
        // kube-apiserver retries etcd by itself: start both at once.
        let apiserver =
            launcher.spawn(&layout, "kube-apiserver", &bin.join("kube-apiserver"), &layout.apiserver_args(&pki))?;
        let client = client_for(&pki.kubeconfig).await?;
        processes::wait_etcd(&layout, &etcd, ETCD_TIMEOUT).await?;
        processes::wait_apiserver(&client, &apiserver, APISERVER_TIMEOUT).await?;
        let apiserver_ready = started.elapsed();
        let kcm_args = layout.controller_manager_args(&pki);
        let controller_manager =
            launcher.spawn(&layout, "kube-controller-manager", &bin.join("kube-controller-manager"), &kcm_args)?;
        processes::wait_controller_manager(&layout, &controller_manager, KCM_TIMEOUT).await?;
        ensure_default_service_account(&client, "default").await?;
        eprintln!(
            "[kube] control plane at {} ready in {:.2?} (kube-apiserver ready after {apiserver_ready:.2?})",
            layout.server_url(),
            started.elapsed()
        );
        Ok(KubeCluster {
            layout,
            bin,
            pki,
            launcher,
            etcd,
            apiserver: Some(apiserver),
            controller_manager,
            client,
            files: AtomicU32::new(0),
        })
    }

    /// The admin kubeconfig (token user in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.pki.kubeconfig
    }

    /// A client authenticated as the admin.
    pub fn client(&self) -> ::kube::Client {
        self.client.clone()
    }

    /// `https://<ip>:<port>` of kube-apiserver.
    pub fn server_url(&self) -> String {
        self.layout.server_url()
    }

    pub fn apiserver_addr(&self) -> SocketAddr {
        self.layout.apiserver
    }

    /// The CA certificate that signed kube-apiserver's serving certificate.
    pub fn ca_cert(&self) -> &Path {
        &self.pki.ca_cert
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Pids of etcd, kube-apiserver (if running) and kube-controller-manager.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        let mut pids = vec![("etcd", self.etcd.pid())];
        pids.extend(self.apiserver.as_ref().map(|p| ("kube-apiserver", p.pid())));
        pids.push(("kube-controller-manager", self.controller_manager.pid()));
        pids
    }

    /// Run kubectl with the admin kubeconfig; the error carries stderr.
    pub async fn kubectl(&self, args: &[&str]) -> Result<Output> {
        let kubeconfig = self.pki.kubeconfig.to_string_lossy().into_owned();
        let all = ["--kubeconfig", kubeconfig.as_str()].into_iter().chain(args.iter().copied());
        run_to_completion(&self.bin.join("kubectl"), all, KUBECTL_TIMEOUT).await
    }

    /// [`Self::kubectl`], failing with its output when it fails; its standard output.
    pub async fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl(args).await?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl apply -f` of `yaml` (written to a file in the cluster's directory).
    pub async fn apply(&self, yaml: &str) -> Result<Output> {
        let file = self.write_manifest("apply", yaml)?;
        self.kubectl(&["apply", "-f", &file.to_string_lossy()]).await
    }

    /// `kubectl delete -f` of `yaml` (`--ignore-not-found`, does not wait for finalizers).
    pub async fn delete_yaml(&self, yaml: &str) -> Result<Output> {
        let file = self.write_manifest("delete", yaml)?;
        self.kubectl(&["delete", "--ignore-not-found", "--wait=false", "-f", &file.to_string_lossy()]).await
    }

    /// `kubectl delete <args>` (e.g. `["-n", "ns", "pod", "a"]`), not waiting for finalizers.
    pub async fn delete(&self, args: &[&str]) -> Result<Output> {
        let all: Vec<&str> = ["delete", "--wait=false"].into_iter().chain(args.iter().copied()).collect();
        self.kubectl(&all).await
    }

    fn write_manifest(&self, verb: &str, yaml: &str) -> Result<PathBuf> {
        let n = self.files.fetch_add(1, Ordering::SeqCst);
        let dir = self.layout.dir.join("manifests");
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let file = dir.join(format!("{n:04}-{verb}.yaml"));
        std::fs::write(&file, yaml).with_context(|| format!("write {}", file.display()))?;
        Ok(file)
    }

    /// Create namespace `name` and its `default` ServiceAccount (pods are rejected until it exists).
    pub async fn create_namespace(&self, name: &str) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client());
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        namespaces.create(&PostParams::default(), &ns).await.with_context(|| format!("create namespace {name}"))?;
        ensure_default_service_account(&self.client, name).await
    }

    /// Play kubelet for pod `namespace/name`: bind it to the Node [`NODE_NAME`] and make it
    /// Running and Ready with address `ip`.
    pub async fn make_pod_ready(&self, namespace: &str, name: &str, ip: IpAddr) -> Result<()> {
        kubelet::make_pod_ready(&self.client, namespace, name, ip).await
    }

    /// Play kubelet for every new pod of `namespace` in the background (next address of `ips`
    /// each); stops when the returned value is dropped.
    pub fn auto_kubelet(&self, namespace: &str, ips: Vec<IpAddr>) -> AutoKubelet {
        AutoKubelet::start(self.client(), namespace, ips)
    }

    /// kube-apiserver's Prometheus metrics (`/metrics`).
    pub async fn apiserver_metrics(&self) -> Result<String> {
        let request = http::Request::get("/metrics").body(Vec::new())?;
        self.client.request_text(request).await.context("GET kube-apiserver /metrics")
    }

    /// A token for ServiceAccount `namespace/name` (TokenRequest API, 1 hour).
    pub async fn token_for_service_account(&self, namespace: &str, name: &str) -> Result<String> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }),
            ..Default::default()
        };
        let response = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("TokenRequest for ServiceAccount {namespace}/{name}"))?;
        response
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| anyhow::anyhow!("TokenRequest for ServiceAccount {namespace}/{name}: no status.token"))
    }

    /// A kubeconfig (written next to the admin one) authenticating with `token`.
    pub fn kubeconfig_for_token(&self, label: &str, token: &str) -> Result<PathBuf> {
        let path = self.layout.dir.join(format!("kubeconfig-{label}"));
        let contents = certs::kubeconfig(&self.server_url(), &self.pki.ca_cert, token);
        std::fs::write(&path, contents).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    /// Stop kube-apiserver (etcd and kube-controller-manager keep running) and wait until its
    /// port is closed.
    pub async fn stop_apiserver(&mut self) -> Result<()> {
        let Some(apiserver) = self.apiserver.take() else { return Ok(()) };
        let pid = apiserver.pid();
        processes::stop(apiserver)?;
        let addr = self.layout.apiserver;
        await_condition(&format!("kube-apiserver (pid {pid}) to stop"), APISERVER_TIMEOUT, || async move {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => anyhow::bail!("{addr} still accepts connections"),
                Err(_) => Ok(()),
            }
        })
        .await
    }

    /// Start kube-apiserver again (same address, certificates and etcd) and wait for `/readyz`.
    pub async fn start_apiserver(&mut self) -> Result<()> {
        if self.apiserver.is_some() {
            return Ok(());
        }
        let args = self.layout.apiserver_args(&self.pki);
        let apiserver = self.launcher.spawn(&self.layout, "kube-apiserver", &self.bin.join("kube-apiserver"), &args)?;
        processes::wait_apiserver(&self.client, &apiserver, APISERVER_TIMEOUT).await?;
        self.apiserver = Some(apiserver);
        Ok(())
    }

    /// Compact etcd to its current revision (physically). Returns the revision compacted to.
    ///
    /// Watches and lists from older resource versions that reach etcd then get `410 Gone`. By
    /// default kube-apiserver serves watches from its watch cache (its own window, unaffected by
    /// compaction; a kube-apiserver restart starts a fresh cache, so a watch resuming from a
    /// version before the restart gets 410 anyway). Start the cluster with `--watch-cache=false`
    /// ([`start_with_apiserver_args`](Self::start_with_apiserver_args)) for watches to hit etcd.
    pub async fn compact_etcd(&self) -> Result<i64> {
        etcd::compact(self.layout.etcd_client).await
    }

    /// `Ok` while every started process runs.
    pub fn ensure_running(&self) -> Result<()> {
        self.etcd.ensure_running()?;
        if let Some(apiserver) = &self.apiserver {
            apiserver.ensure_running()?;
        }
        self.controller_manager.ensure_running()
    }
}

/// Create ServiceAccount `namespace/default` unless it exists (kube-controller-manager would make it
/// too, but only seconds after start; pods are rejected until it exists).
async fn ensure_default_service_account(client: &::kube::Client, namespace: &str) -> Result<()> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account: ServiceAccount = serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}}))?;
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => Ok(()),
        Err(::kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("create ServiceAccount {namespace}/default")),
    }
}

/// A client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<::kube::Client> {
    let config = Kubeconfig::read_from(kubeconfig).with_context(|| format!("read {}", kubeconfig.display()))?;
    let config = ::kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("load {}", kubeconfig.display()))?;
    ::kube::Client::try_from(config).with_context(|| format!("client for {}", kubeconfig.display()))
}
