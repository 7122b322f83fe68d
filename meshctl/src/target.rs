//! Where meshctl looks for meshd: an address given directly, or a cluster whose meshd pods
//! are found through the Kubernetes API. The choice is a pure function of what the command
//! line and the environment say ([`Sources`] → [`Target`]), so its precedence is tested as
//! a table:
//!
//! 1. `--meshd HOST:PORT`;
//! 2. `--kubeconfig FILE` or `--context NAME` (flags; not allowed with `--meshd`);
//! 3. `AMIME_MESHD=HOST:PORT`;
//! 4. a kubeconfig: `KUBECONFIG` (a list of files, merged as kubectl does), else `~/.kube/config`
//!    when it exists;
//! 5. in a pod (`KUBERNETES_SERVICE_HOST` set): its ServiceAccount;
//! 6. `127.0.0.1:15010`.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::bail;

/// The default admin address: meshd's gRPC port on this machine.
pub const DEFAULT_MESHD: &str = "127.0.0.1:15010";

/// What the command line and the environment say about where meshd is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// `--meshd`.
    pub meshd_flag: Option<String>,
    /// `--kubeconfig`.
    pub kubeconfig_flag: Option<PathBuf>,
    /// `--context`.
    pub context_flag: Option<String>,
    /// `AMIME_MESHD` (empty counts as unset).
    pub meshd_env: Option<String>,
    /// `KUBECONFIG` (empty counts as unset).
    pub kubeconfig_env: Option<OsString>,
    /// `~/.kube/config` when that file exists.
    pub home_kubeconfig: Option<PathBuf>,
    /// `KUBERNETES_SERVICE_HOST` is set: meshctl runs in a pod.
    pub in_cluster: bool,
}

impl Sources {
    /// The flags plus what this process's environment and home directory hold.
    pub fn from_env(meshd: Option<String>, kubeconfig: Option<PathBuf>, context: Option<String>) -> Sources {
        let non_empty = |v: Option<OsString>| v.filter(|v| !v.is_empty());
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".kube/config"));
        Sources {
            meshd_flag: meshd,
            kubeconfig_flag: kubeconfig,
            context_flag: context,
            meshd_env: non_empty(std::env::var_os("AMIME_MESHD")).map(|v| v.to_string_lossy().into_owned()),
            kubeconfig_env: non_empty(std::env::var_os("KUBECONFIG")),
            home_kubeconfig: home.filter(|p| p.is_file()),
            in_cluster: non_empty(std::env::var_os("KUBERNETES_SERVICE_HOST")).is_some(),
        }
    }
}

/// Where meshctl dials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// meshd at this address; `from` says which setting named it (for messages).
    Direct { addr: String, from: &'static str },
    /// meshd's pods in the cluster of this kubeconfig, with this context (`None`: current).
    Cluster { kubeconfig: Kubeconfig, context: Option<String> },
}

/// The kubeconfig a cluster target reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kubeconfig {
    /// `--kubeconfig FILE`.
    Flag(PathBuf),
    /// `KUBECONFIG` (one or more files).
    Env(OsString),
    /// `~/.kube/config`.
    Home(PathBuf),
    /// The pod's ServiceAccount.
    InCluster,
}

impl Kubeconfig {
    /// How a message names it.
    pub fn describe(&self) -> String {
        match self {
            Kubeconfig::Flag(path) => format!("kubeconfig {}", path.display()),
            Kubeconfig::Env(value) => format!("KUBECONFIG={}", value.to_string_lossy()),
            Kubeconfig::Home(path) => format!("kubeconfig {}", path.display()),
            Kubeconfig::InCluster => "the in-cluster ServiceAccount".to_owned(),
        }
    }
}

/// The target the settings choose (see the module docs for the order).
pub fn choose(s: &Sources) -> anyhow::Result<Target> {
    let context = s.context_flag.clone();
    if let Some(addr) = &s.meshd_flag {
        if s.kubeconfig_flag.is_some() || context.is_some() {
            bail!(
                "--meshd names meshd directly: give it, or --kubeconfig/--context to find meshd in a cluster, not both"
            );
        }
        return Ok(Target::Direct { addr: addr.clone(), from: "--meshd" });
    }
    if let Some(path) = &s.kubeconfig_flag {
        return Ok(Target::Cluster { kubeconfig: Kubeconfig::Flag(path.clone()), context });
    }
    if context.is_none() {
        if let Some(addr) = &s.meshd_env {
            return Ok(Target::Direct { addr: addr.clone(), from: "AMIME_MESHD" });
        }
    }
    let kubeconfig = if let Some(value) = &s.kubeconfig_env {
        Kubeconfig::Env(value.clone())
    } else if let Some(path) = &s.home_kubeconfig {
        Kubeconfig::Home(path.clone())
    } else if s.in_cluster && context.is_none() {
        Kubeconfig::InCluster
    } else if let Some(context) = context {
        bail!("--context {context}: no kubeconfig to read it from (give --kubeconfig FILE or set KUBECONFIG)");
    } else {
        return Ok(Target::Direct { addr: DEFAULT_MESHD.to_owned(), from: "the default" });
    };
    Ok(Target::Cluster { kubeconfig, context })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(addr: &str, from: &'static str) -> Target {
        Target::Direct { addr: addr.into(), from }
    }

    fn cluster(kubeconfig: Kubeconfig, context: Option<&str>) -> Target {
        Target::Cluster { kubeconfig, context: context.map(Into::into) }
    }

    #[test]
    fn precedence_flags_then_amime_meshd_then_kubeconfig_then_in_cluster_then_local() {
        let all = Sources {
            meshd_flag: Some("10.0.0.1:15010".into()),
            kubeconfig_flag: None,
            context_flag: None,
            meshd_env: Some("10.0.0.2:15010".into()),
            kubeconfig_env: Some("/k/env:/k/env2".into()),
            home_kubeconfig: Some("/home/u/.kube/config".into()),
            in_cluster: true,
        };
        let flag = Kubeconfig::Flag("/k/flag".into());
        let env = Kubeconfig::Env("/k/env:/k/env2".into());
        let home = Kubeconfig::Home("/home/u/.kube/config".into());
        let cases: Vec<(&str, Sources, Target)> = vec![
            ("--meshd beats everything", all.clone(), direct("10.0.0.1:15010", "--meshd")),
            (
                "--kubeconfig beats AMIME_MESHD",
                Sources { meshd_flag: None, kubeconfig_flag: Some("/k/flag".into()), ..all.clone() },
                cluster(flag.clone(), None),
            ),
            (
                "--kubeconfig with --context",
                Sources {
                    meshd_flag: None,
                    kubeconfig_flag: Some("/k/flag".into()),
                    context_flag: Some("prod".into()),
                    ..all.clone()
                },
                cluster(flag, Some("prod")),
            ),
            (
                "--context alone beats AMIME_MESHD, reads KUBECONFIG",
                Sources { meshd_flag: None, context_flag: Some("prod".into()), ..all.clone() },
                cluster(env.clone(), Some("prod")),
            ),
            (
                "AMIME_MESHD beats a kubeconfig",
                Sources { meshd_flag: None, ..all.clone() },
                direct("10.0.0.2:15010", "AMIME_MESHD"),
            ),
            (
                "KUBECONFIG beats ~/.kube/config",
                Sources { meshd_flag: None, meshd_env: None, ..all.clone() },
                cluster(env, None),
            ),
            (
                "~/.kube/config beats in-cluster",
                Sources { meshd_flag: None, meshd_env: None, kubeconfig_env: None, ..all.clone() },
                cluster(home.clone(), None),
            ),
            (
                "--context with ~/.kube/config",
                Sources {
                    meshd_flag: None,
                    meshd_env: None,
                    kubeconfig_env: None,
                    context_flag: Some("dev".into()),
                    ..all.clone()
                },
                cluster(home, Some("dev")),
            ),
            ("in a pod", Sources { in_cluster: true, ..Sources::default() }, cluster(Kubeconfig::InCluster, None)),
            ("nothing: this machine", Sources::default(), direct(DEFAULT_MESHD, "the default")),
        ];
        for (name, sources, want) in cases {
            assert_eq!(choose(&sources).unwrap(), want, "{name}");
        }
    }

    #[test]
    fn contradictions_are_refused_with_what_to_do() {
        let err = |s: Sources| choose(&s).unwrap_err().to_string();
        let both = Sources { meshd_flag: Some("a:1".into()), kubeconfig_flag: Some("/k".into()), ..Sources::default() };
        assert_eq!(
            err(both),
            "--meshd names meshd directly: give it, or --kubeconfig/--context to find meshd in a cluster, not both"
        );
        let context = Sources { meshd_flag: Some("a:1".into()), context_flag: Some("c".into()), ..Sources::default() };
        assert!(err(context).starts_with("--meshd names meshd directly"));
        let nowhere = Sources { context_flag: Some("prod".into()), in_cluster: true, ..Sources::default() };
        assert_eq!(
            err(nowhere),
            "--context prod: no kubeconfig to read it from (give --kubeconfig FILE or set KUBECONFIG)"
        );
    }
}
