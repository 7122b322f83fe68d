//! Loopback IP blocks, the YAML config directory meshd reads, and the bookinfo fixture.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};

use crate::context::TestContext;
use crate::meshd::{self, Meshd};
use crate::paths;
use crate::sidecar::{self, Sidecar, SidecarSpec, XdsApi};
use crate::upstream::Upstream;
use crate::wait::await_condition;

/// A loopback block `127.0.N.0/24` owned by one test (N unique per test), so that tests
/// running in parallel never share an address or port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpBlock(pub u8);

impl IpBlock {
    /// The block used by `manifests/examples/bookinfo` and the demo.
    pub const EXAMPLE: IpBlock = IpBlock(10);

    /// `127.0.N.host`.
    pub fn ip(self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, self.0, host)
    }

    pub fn addr(self, host: u8, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip(host), port))
    }

    /// Move YAML written for the example block (`127.0.10.x`, cluster IPs `10.96.10.x`) into
    /// this block.
    pub fn render(self, yaml: &str) -> String {
        yaml.replace("127.0.10.", &format!("127.0.{}.", self.0)).replace("10.96.10.", &format!("10.96.{}.", self.0))
    }
}

/// Host numbers inside an [`IpBlock`] (the pod IPs match `manifests/examples/bookinfo`).
pub mod hosts {
    /// productpage-v1 pod and its sidecar.
    pub const PRODUCTPAGE: u8 = 1;
    /// meshd (xDS `:15010`, monitoring `:15014`).
    pub const MESHD: u8 = 2;
    /// etcd of a [`KubeCluster`](crate::kube::KubeCluster) (client :2379, peer :2380).
    pub const ETCD: u8 = 3;
    /// kube-apiserver of a [`KubeCluster`](crate::kube::KubeCluster) (:6443).
    pub const KUBE_APISERVER: u8 = 4;
    /// kube-controller-manager of a [`KubeCluster`](crate::kube::KubeCluster) (:10257).
    pub const KUBE_CONTROLLER_MANAGER: u8 = 5;
    pub const REVIEWS_V1: u8 = 11;
    pub const REVIEWS_V2: u8 = 12;
    pub const REVIEWS_V3: u8 = 13;
    /// Free for extra services a test adds.
    pub const EXTRA_1: u8 = 21;
    pub const EXTRA_2: u8 = 22;
    /// Not a mesh workload (for passthrough tests).
    pub const OUTSIDE: u8 = 99;
}

/// Port of every bookinfo workload.
pub const APP_PORT: u16 = 9080;

/// The file of `manifests/examples/bookinfo` holding the reviews DestinationRule and
/// VirtualService.
pub const EXAMPLE_RULES_FILE: &str = "reviews-rules.yaml";

/// A `ratings` Service (cluster IP `10.96.10.3`, port 9080, no rules) for the example
/// block; add its pods with [`example_pod`] and move both with [`IpBlock::render`].
pub const RATINGS_SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: ratings
  namespace: bookinfo
spec:
  clusterIP: 10.96.10.3
  selector:
    app: ratings
  ports:
  - name: http
    port: 9080
    targetPort: 9080
"#;

/// A Pod `<app>-<version>` of namespace bookinfo on `127.0.10.<host>` (example block),
/// serving [`APP_PORT`].
pub fn example_pod(app: &str, version: &str, host: u8) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {app}-{version}\n  namespace: bookinfo\n  labels:\n    app: {app}\n    version: {version}\nspec:\n  containers:\n  - name: {app}\n    image: example/{app}:{version}\n    ports:\n    - containerPort: {APP_PORT}\nstatus:\n  podIP: 127.0.10.{host}\n"
    )
}

/// The example's mesh (Namespace, Services, Pods), moved into `block`.
pub fn bookinfo_mesh_yaml(block: IpBlock) -> Result<String> {
    let path = paths::bookinfo_example_dir().join("mesh.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    Ok(block.render(&text))
}

/// The YAML directory given to `meshd --config-dir` (inside the test's scratch directory).
pub struct MeshDir {
    path: PathBuf,
}

impl MeshDir {
    pub fn new(ctx: &TestContext) -> Result<Self> {
        let path = ctx.unique_path("config", "");
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write (or replace) `name` atomically: write a hidden temp file, then rename it into
    /// place. Returns the instant right after the rename (for convergence timing).
    pub fn write(&self, name: &str, contents: &str) -> Result<Instant> {
        let target = self.path.join(name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        }
        let file_name = target.file_name().context("file name")?.to_string_lossy().into_owned();
        let temp = target.with_file_name(format!(".{file_name}.tmp~"));
        std::fs::write(&temp, contents).with_context(|| format!("write {}", temp.display()))?;
        std::fs::rename(&temp, &target)
            .with_context(|| format!("rename {} to {}", temp.display(), target.display()))?;
        Ok(Instant::now())
    }

    /// Remove `name`; returns the instant right after.
    pub fn remove(&self, name: &str) -> Result<Instant> {
        let target = self.path.join(name);
        std::fs::remove_file(&target).with_context(|| format!("remove {}", target.display()))?;
        Ok(Instant::now())
    }

    pub fn read(&self, name: &str) -> Result<String> {
        let target = self.path.join(name);
        std::fs::read_to_string(&target).with_context(|| format!("read {}", target.display()))
    }

    /// Rewrite `name` (a file holding a DestinationRule and a VirtualService, such as
    /// [`EXAMPLE_RULES_FILE`]) as its DestinationRule followed by `virtual_service`. Returns the
    /// instant right after the rename.
    pub fn replace_virtual_service(&self, name: &str, virtual_service: &str) -> Result<Instant> {
        let rules = self.read(name)?;
        let destination_rule = rules
            .split("\n---\n")
            .find(|d| d.contains("kind: DestinationRule"))
            .with_context(|| format!("no DestinationRule in {name}"))?;
        self.write(name, &format!("{}\n---\n{virtual_service}", destination_rule.trim_end()))
    }

    /// Copy every file of `manifests/examples/bookinfo`, moved into `block`.
    pub fn copy_bookinfo_example(&self, block: IpBlock) -> Result<()> {
        let dir = paths::bookinfo_example_dir();
        let entries = std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                let text = std::fs::read_to_string(entry.path())
                    .with_context(|| format!("read {}", entry.path().display()))?;
                self.write(&entry.file_name().to_string_lossy(), &block.render(&text))?;
            }
        }
        Ok(())
    }
}

/// Options of the [`Bookinfo`] fixture.
#[derive(Clone, Debug)]
pub struct BookinfoOptions {
    pub xds_api: XdsApi,
    /// Extra `meshd` arguments.
    pub meshd_args: Vec<String>,
}

impl Default for BookinfoOptions {
    fn default() -> Self {
        Self { xds_api: XdsApi::Delta, meshd_args: Vec::new() }
    }
}

/// The bookinfo mesh in one [`IpBlock`]: meshd on the given config directory, the reviews
/// v1/v2/v3 upstreams and the productpage sidecar (explicit mode).
///
/// Fields drop in order: sidecar first, then meshd, then the upstreams.
pub struct Bookinfo {
    pub productpage: Sidecar,
    pub meshd: Meshd,
    pub reviews: Vec<Upstream>,
    pub dir: MeshDir,
    pub block: IpBlock,
}

impl Bookinfo {
    /// The URL productpage uses for reviews.
    pub const REVIEWS_URL: &'static str = "http://reviews:9080/";

    /// Start everything on the YAML already in `dir` and wait until reviews answer through
    /// the sidecar.
    pub async fn start(ctx: &TestContext, block: IpBlock, dir: MeshDir, options: BookinfoOptions) -> Result<Self> {
        let meshd_args: Vec<&str> = options.meshd_args.iter().map(String::as_str).collect();
        let meshd = Meshd::start(ctx, dir.path(), block.ip(hosts::MESHD), &meshd_args).await?;
        let mut reviews = Vec::new();
        for (host, version) in [(hosts::REVIEWS_V1, "v1"), (hosts::REVIEWS_V2, "v2"), (hosts::REVIEWS_V3, "v3")] {
            reviews.push(
                Upstream::start(block.addr(host, APP_PORT), "reviews", version, &format!("reviews-{version}")).await?,
            );
        }
        let spec = SidecarSpec::new("productpage-v1", "bookinfo", block.ip(hosts::PRODUCTPAGE))
            .label("app", "productpage")
            .label("version", "v1")
            .xds_api(options.xds_api);
        let productpage = Sidecar::start(ctx, &spec, meshd.xds_addr()).await?;
        let bookinfo = Self { productpage, meshd, reviews, dir, block };
        bookinfo.await_answer(Self::REVIEWS_URL, Duration::from_secs(10)).await?;
        Ok(bookinfo)
    }

    /// Wait until `url` answers 200 through the productpage sidecar.
    pub async fn await_answer(&self, url: &str, timeout: Duration) -> Result<()> {
        await_condition(&format!("GET {url} through the productpage sidecar to answer 200"), timeout, || async {
            self.productpage.process().ensure_running()?;
            self.meshd.process().ensure_running()?;
            let response = self.productpage.request(url, &[]).await?;
            ensure!(response.status == 200, "{}", response.summary());
            Ok(())
        })
        .await
    }

    /// Wait (at most `limit` from `since`) until 20 requests in a row to reviews with `headers`
    /// reach only `version`, then check 50 more. Returns the convergence time.
    pub async fn await_all_to(
        &self,
        version: &str,
        headers: &[(&str, &str)],
        since: Instant,
        limit: Duration,
    ) -> Result<Duration> {
        let url = Self::REVIEWS_URL;
        await_condition(
            &format!("every request to {url} (headers {headers:?}) to reach {version}"),
            limit.saturating_sub(since.elapsed()),
            || async {
                let tally = self.productpage.tally(20, url, headers).await;
                ensure!(tally.all(version), "{tally}");
                Ok(())
            },
        )
        .await?;
        let took = since.elapsed();
        ensure!(took <= limit, "the change took {took:?} to apply (limit {limit:?})");
        let tally = self.productpage.tally(50, url, headers).await;
        ensure!(tally.all(version), "after converging, every request should reach {version}; got {tally}");
        Ok(took)
    }

    /// Envoy rejected no xDS update and meshd counted no NACK.
    pub async fn check_no_nacks(&self) -> Result<()> {
        sidecar::ensure_no_rejected_updates(&self.productpage.stats().await?)?;
        meshd::ensure_no_nacks(self.meshd.metric(meshd::NACKS_METRIC).await?)
    }

    /// [`Bookinfo::check_no_nacks`], and none of `others` rejected an xDS update either.
    pub async fn check_no_nacks_with(&self, others: &[&Sidecar]) -> Result<()> {
        for s in others {
            sidecar::ensure_no_rejected_updates(&s.stats().await?)?;
        }
        self.check_no_nacks().await
    }
}
