//! `meshctl --kubeconfig`: meshctl finds meshd through a real kube-apiserver (the install
//! manifests applied, meshd's Deployment pod made Ready with a pod IP by the harness's
//! kubelet stand-in) and dials that pod IP on its gRPC port: `proxy-status` shows a real
//! Envoy, `version` names the pod. No Ready pod, or a pod IP this machine cannot reach,
//! is an exit-1 error naming the cluster, the namespace and the pod, with the
//! port-forward to use instead. (A real `kubectl port-forward` needs a kubelet on the
//! pod's node, which the test cluster does not run: meshctl never tries one.)
//!
//! Loopback block 239 belongs to this file (219 is reserved for it too).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use amime_e2e::kube::{KubeCluster, PodNetwork};
use amime_e2e::mesh::hosts;
use amime_e2e::rbac::MESHD_NAMESPACE;
use amime_e2e::{await_condition, paths, run_test, IpBlock, Meshd, Sidecar, SidecarSpec};
use anyhow::{ensure, Result};

/// What a meshctl run printed and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// meshctl with `args` and nothing else pointing it anywhere (no AMIME_MESHD, KUBECONFIG or
/// home kubeconfig), so only `--kubeconfig` leads to meshd.
async fn meshctl(home: &Path, args: &[&str]) -> Result<Run> {
    let program = paths::binary("meshctl")?;
    let mut command = tokio::process::Command::new(&program);
    command.args(args).env_remove("AMIME_MESHD").env_remove("KUBECONFIG").env_remove("KUBERNETES_SERVICE_HOST");
    command.env("HOME", home).stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), command.output()).await??;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshctl_finds_meshd_through_the_kubeconfig() {
    run_test("meshctl_finds_meshd_through_the_kubeconfig", |ctx| async move {
        let block = IpBlock(239);
        let cluster = KubeCluster::start(&ctx, block).await?;
        let network = PodNetwork::claim(block)?;
        let home = ctx.dir().join("home");
        std::fs::create_dir_all(&home)?;
        let install = paths::workspace_root().join("manifests");
        for dir in ["crds", "install"] {
            cluster.kubectl(&["apply", "-f", install.join(dir).to_str().unwrap()]).await?;
        }
        let kubeconfig = cluster.kubeconfig().to_str().unwrap().to_owned();
        let with_kubeconfig = |args: &[&str]| -> Vec<String> {
            args.iter().chain(&["--kubeconfig", kubeconfig.as_str()]).map(|s| s.to_string()).collect()
        };
        let server = cluster.server_url();

        // No meshd pod at all in a namespace without Amime.
        let args = with_kubeconfig(&["proxy-status", "--meshd-namespace", "default"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = meshctl(&home, &args).await?;
        ensure!(run.code == Some(1), "exit {:?}: {}", run.code, run.stderr);
        ensure!(
            run.stderr.starts_with("error: no meshd to talk to in namespace default of context ")
                && run.stderr.contains(&server)
                && run.stderr.contains(": no pod with label app.kubernetes.io/name=meshd; is Amime installed there"),
            "{}",
            run.stderr
        );

        // The Deployment's pods exist, but no kubelet made them Ready.
        let args = with_kubeconfig(&["proxy-status"]);
        let proxy_status: Vec<&str> = args.iter().map(String::as_str).collect();
        await_condition("meshctl to name meshd's pods that are not Ready", Duration::from_secs(30), || async {
            let run = meshctl(&home, &proxy_status).await?;
            ensure!(run.code == Some(1), "exit {:?}: {}", run.code, run.stderr);
            let want = format!("error: no meshd to talk to in namespace {MESHD_NAMESPACE} of context ");
            ensure!(run.stderr.starts_with(&want), "{}", run.stderr);
            let why = run.stderr.split(" with label ").next().unwrap_or_default();
            ensure!(why.matches(" not Ready").count() == 2, "two replicas, not Ready: {}", run.stderr);
            let hint = format!("`kubectl -n {MESHD_NAMESPACE} port-forward pod/meshd-");
            ensure!(
                run.stderr.contains(&hint) && run.stderr.contains(" 15010` and --meshd 127.0.0.1:15010"),
                "{}",
                run.stderr
            );
            Ok(())
        })
        .await?;
        eprintln!("meshctl proxy-status --kubeconfig, no Ready pod:\n{}", meshctl(&home, &proxy_status).await?.stderr);

        // One replica made Ready at a pod IP where meshd listens, a real Envoy connected.
        let meshd_ip = network.ip(hosts::MESHD);
        let pod = amime_e2e::webhook::meshd_pod_at(&cluster, IpAddr::V4(meshd_ip)).await?;
        let meshd = Meshd::start_kube(&ctx, cluster.kubeconfig(), meshd_ip, &[]).await?;
        let spec =
            SidecarSpec::new("productpage-v1", "bookinfo", block.ip(hosts::PRODUCTPAGE)).label("app", "productpage");
        let _envoy = Sidecar::start(&ctx, &spec, meshd.xds_addr()).await?;
        let at = format!("{}:15010 (pod {MESHD_NAMESPACE}/{pod})", meshd_ip);
        await_condition("proxy-status through the kubeconfig to list the Envoy", Duration::from_secs(20), || async {
            let run = meshctl(&home, &proxy_status).await?;
            ensure!(run.code == Some(0), "exit {:?}: {}", run.code, run.stderr);
            let rows: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("productpage-v1.bookinfo ")).collect();
            ensure!(!rows.is_empty() && rows.iter().all(|r| r.contains(" SYNCED ")), "{}", run.stdout);
            Ok(())
        })
        .await?;
        let args = with_kubeconfig(&["version"]);
        let run = meshctl(&home, &args.iter().map(String::as_str).collect::<Vec<_>>()).await?;
        ensure!(run.code == Some(0), "{}", run.stderr);
        ensure!(
            run.stdout.lines().nth(1).is_some_and(|l| l.starts_with("meshd ") && l.contains(&at)),
            "{}",
            run.stdout
        );
        ensure!(run.stdout.contains("1 proxy"), "{}", run.stdout);
        eprintln!("meshctl version --kubeconfig:\n{}", run.stdout);

        // The same pod at an address this machine cannot reach (TEST-NET-1): connect timeout.
        let unreachable = Ipv4Addr::new(192, 0, 2, 10);
        cluster.make_pod_ready(MESHD_NAMESPACE, &pod, IpAddr::V4(unreachable)).await?;
        let run = meshctl(&home, &proxy_status).await?;
        ensure!(run.code == Some(1), "exit {:?}: {}", run.code, run.stderr);
        let want = format!("error: cannot reach meshd pod {MESHD_NAMESPACE}/{pod} at {unreachable}:15010 in context ");
        ensure!(run.stderr.starts_with(&want) && run.stderr.contains(&server), "{}", run.stderr);
        ensure!(run.stderr.contains("(no connection within 3s)"), "{}", run.stderr);
        let hint = format!(
            "kubectl -n {MESHD_NAMESPACE} port-forward deploy/meshd 15010` and give meshctl --meshd 127.0.0.1:15010"
        );
        ensure!(run.stderr.contains(&hint), "{}", run.stderr);
        ensure!(run.stdout.is_empty(), "{}", run.stdout);
        eprintln!("meshctl proxy-status --kubeconfig, pod IP unreachable:\n{}", run.stderr);
        Ok(())
    })
    .await;
}
