//! Table tests of the injection rules: every patch is applied to its pod with a JSON-patch
//! library and the resulting pod is checked (not the operations).
//!
//! The golden file `tests/golden/inject-reviews-v1.yaml` is the full injected bookinfo
//! reviews-v1 pod; after an intended change regenerate it and review the diff:
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test -p amime-injector --test inject
//! git diff injector/tests/golden
//! ```

use std::path::PathBuf;

use injector::conventions::{INIT_CONTAINER, POD_INFO_VOLUME, PROXY_CONFIG_VOLUME, PROXY_CONTAINER, STATUS_ANNOTATION};
use injector::inject::{inject, InjectError, InjectionStatus, Outcome, SkipReason};
use injector::probes::{AppProbe, AppProbes, ProbeHeader, ProbeScheme};
use injector::settings::{InjectionSettings, Resources};
use serde_json::{json, Value};

/// Injects and applies the patch; `Err` for an InjectError, `Ok(None)` for a skip.
fn run(pod: &Value, namespace_enabled: bool) -> Result<Result<Value, SkipReason>, InjectError> {
    run_with(pod, namespace_enabled, &InjectionSettings::default())
}

fn run_with(
    pod: &Value,
    namespace_enabled: bool,
    settings: &InjectionSettings,
) -> Result<Result<Value, SkipReason>, InjectError> {
    match inject(pod, namespace_enabled, settings)? {
        Outcome::Skipped(reason) => Ok(Err(reason)),
        Outcome::Injected(patch) => {
            let mut out = pod.clone();
            json_patch::patch(&mut out, &patch).unwrap_or_else(|e| panic!("patch does not apply: {e}\n{patch:#?}"));
            Ok(Ok(out))
        }
    }
}

fn injected(pod: &Value) -> Value {
    run(pod, true).expect("no error").expect("injected")
}

fn pod(spec: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "web-1", "namespace": "shop", "labels": { "app": "web" } },
        "spec": spec,
    })
}

fn app() -> Value {
    json!({ "name": "app", "image": "web:1" })
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array().map(|l| l.iter().map(|c| c["name"].as_str().unwrap()).collect()).unwrap_or_default()
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap()
}

fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap()
}

fn status(pod: &Value) -> InjectionStatus {
    serde_json::from_str(pod["metadata"]["annotations"][STATUS_ANNOTATION].as_str().unwrap()).unwrap()
}

#[test]
fn shapes_that_break_clusters_in_practice() {
    let ours = [INIT_CONTAINER, PROXY_CONTAINER];
    // (case, pod, want init containers, want volumes)
    let cases = [
        ("no ports, no init containers, no volumes", pod(json!({ "containers": [app()] })), vec![], vec![]),
        (
            "own init containers (ours come after)",
            pod(json!({ "initContainers": [{ "name": "migrate", "image": "m" }], "containers": [app()] })),
            vec!["migrate"],
            vec![],
        ),
        (
            "existing volumes",
            pod(json!({ "containers": [app()], "volumes": [{ "name": "data", "emptyDir": {} }] })),
            vec![],
            vec!["data"],
        ),
        ("null lists", pod(json!({ "containers": [app()], "initContainers": null, "volumes": null })), vec![], vec![]),
    ];
    for (case, pod, init, volumes) in cases {
        let out = injected(&pod);
        let want_init: Vec<&str> = init.iter().copied().chain(ours).collect();
        let want_volumes: Vec<&str> = volumes.iter().copied().chain([PROXY_CONFIG_VOLUME, POD_INFO_VOLUME]).collect();
        assert_eq!(names(&out["spec"]["initContainers"]), want_init, "{case}");
        assert_eq!(names(&out["spec"]["volumes"]), want_volumes, "{case}");
        assert_eq!(out["spec"]["containers"], pod["spec"]["containers"], "{case}: app containers unchanged");
        assert_eq!(status(&out).init_containers, ours, "{case}");
        assert_eq!(out["metadata"]["labels"], pod["metadata"]["labels"], "{case}");
        assert_eq!(run(&out, true).unwrap(), Err(SkipReason::AlreadyInjected), "{case}: re-injecting is a no-op");
    }
}

#[test]
fn decisions() {
    let with = |annotations: Value, labels: Value, spec: Value| {
        let mut p = pod(spec);
        p["metadata"]["annotations"] = annotations;
        p["metadata"]["labels"] = labels;
        p
    };
    let spec = json!({ "containers": [app()] });
    let on = json!({ "sidecar.amime.dev/inject": "true" });
    let off = json!({ "sidecar.amime.dev/inject": "false" });
    let none = json!({});
    let host = json!({ "hostNetwork": true, "containers": [app()] });
    let injected_pod = injected(&pod(spec.clone()));
    let hand_made = pod(json!({ "containers": [app(), { "name": "amime-proxy", "image": "x" }] }));
    let hand_made_init = pod(json!({ "initContainers": [{ "name": "amime-init" }], "containers": [app()] }));
    let status_only = with(json!({ STATUS_ANNOTATION: "{}" }), none.clone(), spec.clone());
    // (case, pod, namespace enabled, want: None = injected, Some(reason) = skipped)
    let cases = [
        ("labelled namespace", with(none.clone(), none.clone(), spec.clone()), true, None),
        ("unlabelled namespace", with(none.clone(), none.clone(), spec.clone()), false, Some(SkipReason::NotEnabled)),
        (
            "annotation off in labelled ns",
            with(off.clone(), none.clone(), spec.clone()),
            true,
            Some(SkipReason::DisabledByPod),
        ),
        ("annotation on in unlabelled ns", with(on.clone(), none.clone(), spec.clone()), false, None),
        ("label on in unlabelled ns", with(none.clone(), on.clone(), spec.clone()), false, None),
        (
            "label off in labelled ns",
            with(none.clone(), off.clone(), spec.clone()),
            true,
            Some(SkipReason::DisabledByPod),
        ),
        (
            "annotation wins over label (off)",
            with(off.clone(), on.clone(), spec.clone()),
            false,
            Some(SkipReason::DisabledByPod),
        ),
        ("annotation wins over label (on)", with(on.clone(), off.clone(), spec.clone()), false, None),
        ("hostNetwork", with(none.clone(), none.clone(), host.clone()), true, Some(SkipReason::HostNetwork)),
        ("hostNetwork with annotation on", with(on.clone(), none.clone(), host), false, Some(SkipReason::HostNetwork)),
        ("already injected", injected_pod.clone(), true, Some(SkipReason::AlreadyInjected)),
        ("already injected, annotation now off", injected_pod, false, Some(SkipReason::AlreadyInjected)),
        ("container named amime-proxy", hand_made, true, Some(SkipReason::AlreadyInjected)),
        ("init container named amime-init", hand_made_init, true, Some(SkipReason::AlreadyInjected)),
        ("status annotation only", status_only, true, Some(SkipReason::AlreadyInjected)),
    ];
    for (case, pod, namespace_enabled, want) in cases {
        let got = run(&pod, namespace_enabled).unwrap_or_else(|e| panic!("{case}: {e}"));
        match (got, want) {
            (Ok(out), None) => assert_eq!(names(&out["spec"]["initContainers"]), [INIT_CONTAINER, PROXY_CONTAINER]),
            (Err(got), Some(want)) => assert_eq!(got, want, "{case}"),
            (got, want) => panic!("{case}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn bad_values_name_the_field() {
    let annotated = |key: &str, value: Value| {
        let mut p = pod(json!({ "containers": [app()] }));
        p["metadata"]["annotations"] = json!({ key: value });
        p
    };
    let mut labelled = pod(json!({ "containers": [app()] }));
    labelled["metadata"]["labels"]["sidecar.amime.dev/inject"] = json!("on");
    let volume = pod(json!({ "containers": [app()], "volumes": [{ "name": "data" }, { "name": "amime-podinfo" }] }));
    let config_volume = pod(json!({ "containers": [app()], "volumes": [{ "name": "amime-proxy-config" }] }));
    let cases = [
        (
            annotated("sidecar.amime.dev/inject", json!("yes")),
            r#"metadata.annotations["sidecar.amime.dev/inject"]: expected "true" or "false", got "yes""#,
        ),
        (
            annotated("sidecar.amime.dev/inject", json!(true)),
            r#"metadata.annotations["sidecar.amime.dev/inject"]: expected the string "true" or "false", got true"#,
        ),
        (labelled, r#"metadata.labels["sidecar.amime.dev/inject"]: expected "true" or "false", got "on""#),
        (
            annotated("traffic.amime.dev/excludeOutboundPorts", json!("5432,http")),
            r#"metadata.annotations["traffic.amime.dev/excludeOutboundPorts"]: "http" is not a valid port"#,
        ),
        (
            annotated("traffic.amime.dev/excludeInboundPorts", json!("0")),
            r#"metadata.annotations["traffic.amime.dev/excludeInboundPorts"]: "0" is not a valid port"#,
        ),
        (
            annotated("traffic.amime.dev/excludeOutboundIPRanges", json!("10.0.0.0/33")),
            r#"metadata.annotations["traffic.amime.dev/excludeOutboundIPRanges"]: "10.0.0.0/33" is not a valid IP range"#,
        ),
        (
            annotated("traffic.amime.dev/excludeOutboundPorts", json!(5432)),
            r#"metadata.annotations["traffic.amime.dev/excludeOutboundPorts"]: expected a string, got 5432"#,
        ),
        (volume, r#"spec.volumes[1].name: the volume name "amime-podinfo" is reserved"#),
        (config_volume, r#"spec.volumes[0].name: the volume name "amime-proxy-config" is reserved"#),
        (pod(json!({ "containers": [] })), "spec.containers: the pod has no containers"),
        (pod(json!({ "containers": [app()], "volumes": {} })), "spec.volumes: expected a list"),
        (json!({ "kind": "Pod", "metadata": [] , "spec": { "containers": [app()] } }), "metadata: expected an object"),
    ];
    for (pod, want) in cases {
        let err = run(&pod, true).expect_err(want).to_string();
        assert!(err.starts_with(want), "got {err:?}, want {want:?}");
    }
    // Exclusion annotations only matter when injecting.
    let off = annotated("traffic.amime.dev/excludeOutboundPorts", json!("http"));
    assert_eq!(run(&off, false).unwrap(), Err(SkipReason::NotEnabled));
}

#[test]
fn status_annotation_key_is_escaped() {
    // No annotations at all, no metadata at all (a template), annotations with keys needing
    // escaping of their own, annotations null.
    let mut tilde = pod(json!({ "containers": [app()] }));
    tilde["metadata"]["annotations"] = json!({ "example.com/a~b": "1" });
    let mut null = pod(json!({ "containers": [app()] }));
    null["metadata"]["annotations"] = Value::Null;
    let bare = json!({ "spec": { "containers": [app()] } });
    for pod in [pod(json!({ "containers": [app()] })), tilde.clone(), null, bare] {
        let out = injected(&pod);
        assert_eq!(status(&out).image, InjectionSettings::default().image, "{pod}");
    }
    assert_eq!(injected(&tilde)["metadata"]["annotations"]["example.com/a~b"], "1");
    let Outcome::Injected(patch) = inject(&tilde, true, &InjectionSettings::default()).unwrap() else { panic!() };
    let paths: Vec<String> = patch.0.iter().map(|op| op.path().to_string()).collect();
    assert!(paths.contains(&"/metadata/annotations/sidecar.amime.dev~1status".to_string()), "{paths:?}");
}

#[test]
fn sidecar_and_init_container() {
    let mut p = pod(json!({ "containers": [app()] }));
    p["metadata"]["annotations"] = json!({
        "traffic.amime.dev/excludeOutboundPorts": "6379, 5432",
        "traffic.amime.dev/excludeInboundPorts": "8081",
        "traffic.amime.dev/excludeOutboundIPRanges": "10.96.0.0/12",
    });
    let settings = InjectionSettings {
        image: "registry.local/proxy:dev".into(),
        proxy_uid: 2000,
        proxy_resources: Resources::new(["200m", "", "1", ""]),
        ..InjectionSettings::default()
    };
    let out = run_with(&p, true, &settings).unwrap().unwrap();
    let init = container(&out, "initContainers", INIT_CONTAINER);
    assert_eq!(
        init["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect::<Vec<_>>().join(" "),
        "init --proxy-uid 2000 --outbound-port 15001 --inbound-port 15006 --exclude-inbound-ports 8081 \
         --exclude-outbound-ports 5432,6379 --exclude-outbound-ip-ranges 10.96.0.0/12"
    );
    assert_eq!(init["securityContext"]["runAsUser"], 0);
    assert_eq!(init["securityContext"]["capabilities"], json!({ "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] }));
    assert_eq!(
        init["resources"],
        json!({ "requests": { "cpu": "10m", "memory": "10Mi" }, "limits": { "cpu": "100m", "memory": "50Mi" } })
    );
    let proxy = container(&out, "initContainers", PROXY_CONTAINER);
    assert_eq!(proxy["image"], "registry.local/proxy:dev");
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["securityContext"]["runAsUser"], 2000);
    assert_eq!(proxy["securityContext"]["runAsGroup"], 2000);
    assert_eq!(proxy["securityContext"]["runAsNonRoot"], true);
    assert_eq!(proxy["resources"], json!({ "requests": { "cpu": "200m" }, "limits": { "cpu": "1" } }));
    assert_eq!(proxy["startupProbe"]["httpGet"], json!({ "path": "/healthz/ready", "port": 15021, "scheme": "HTTP" }));
    assert_eq!(env(proxy, "INSTANCE_IPS")["valueFrom"]["fieldRef"]["fieldPath"], "status.podIPs");
    assert_eq!(env(proxy, "AMIME_XDS_API")["value"], "delta");
    assert_eq!(env(proxy, "AMIME_APP_PROBES")["value"], "{}");
}

#[test]
fn http_probes_go_through_the_sidecar() {
    let p = pod(json!({
        "initContainers": [
            { "name": "setup", "image": "s", "readinessProbe": { "httpGet": { "port": 1 } } },
            { "name": "cache", "image": "c", "restartPolicy": "Always",
              "startupProbe": { "httpGet": { "port": 6380, "path": "/started" } },
              "readinessProbe": { "httpGet": { "port": 6380, "path": "/up" }, "periodSeconds": 2 } },
        ],
        "containers": [
            {
                "name": "app",
                "image": "web:1",
                "ports": [{ "name": "http", "containerPort": 8080 }, { "name": "admin", "containerPort": 8443 }],
                "livenessProbe": { "httpGet": { "port": "http", "path": "/live" }, "initialDelaySeconds": 5, "periodSeconds": 7 },
                "readinessProbe": {
                    "httpGet": { "port": "admin", "path": "/ready", "scheme": "HTTPS",
                                 "httpHeaders": [{ "name": "X-Probe", "value": "kubelet" }] },
                    "failureThreshold": 9,
                },
                "startupProbe": { "httpGet": { "port": "nope", "path": "/s" } },
            },
            {
                "name": "worker",
                "image": "w",
                "livenessProbe": { "tcpSocket": { "port": 9000 } },
                "readinessProbe": { "exec": { "command": ["true"] } },
                "startupProbe": { "grpc": { "port": 9001 } },
            },
        ],
    }));
    let out = injected(&p);
    let app = container(&out, "containers", "app");
    assert_eq!(
        app["livenessProbe"],
        json!({ "httpGet": { "port": 15021, "path": "/app-health/app/livez", "scheme": "HTTP" },
                "initialDelaySeconds": 5, "periodSeconds": 7 })
    );
    assert_eq!(
        app["readinessProbe"],
        json!({ "httpGet": { "port": 15021, "path": "/app-health/app/readyz", "scheme": "HTTP" }, "failureThreshold": 9 })
    );
    assert_eq!(app["startupProbe"], p["spec"]["containers"][0]["startupProbe"], "unresolvable named port: as is");
    assert_eq!(container(&out, "containers", "worker"), &p["spec"]["containers"][1], "non-HTTP probes: as is");
    assert_eq!(container(&out, "initContainers", "setup"), &p["spec"]["initContainers"][0], "plain init container");
    // The pod's own native sidecar: readiness through ours, but not its startup probe (it
    // must pass before ours starts).
    let cache = container(&out, "initContainers", "cache");
    assert_eq!(
        cache["readinessProbe"],
        json!({ "httpGet": { "port": 15021, "path": "/app-health/cache/readyz", "scheme": "HTTP" }, "periodSeconds": 2 })
    );
    assert_eq!(cache["startupProbe"], p["spec"]["initContainers"][1]["startupProbe"]);

    let proxy = container(&out, "initContainers", PROXY_CONTAINER);
    let probes: AppProbes = serde_json::from_str(env(proxy, "AMIME_APP_PROBES")["value"].as_str().unwrap()).unwrap();
    let want: AppProbes = [
        (
            "/app-health/app/livez",
            AppProbe { port: 8080, path: "/live".into(), scheme: ProbeScheme::Http, host: None, headers: vec![] },
        ),
        (
            "/app-health/app/readyz",
            AppProbe {
                port: 8443,
                path: "/ready".into(),
                scheme: ProbeScheme::Https,
                host: None,
                headers: vec![ProbeHeader { name: "X-Probe".into(), value: "kubelet".into() }],
            },
        ),
        (
            "/app-health/cache/readyz",
            AppProbe { port: 6380, path: "/up".into(), scheme: ProbeScheme::Http, host: None, headers: vec![] },
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(probes, want);
    assert_eq!(
        status(&out).rewritten_probes,
        ["/app-health/app/livez", "/app-health/app/readyz", "/app-health/cache/readyz"]
    );
}

/// Serializes with object keys sorted whatever serde_json's map features are.
fn sorted_yaml(value: &Value) -> serde_yaml::Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            serde_yaml::Value::Mapping(entries.into_iter().map(|(k, v)| (k.clone().into(), sorted_yaml(v))).collect())
        }
        Value::Array(items) => serde_yaml::Value::Sequence(items.iter().map(sorted_yaml).collect()),
        other => serde_yaml::to_value(other).unwrap(),
    }
}

fn reviews_v1() -> Value {
    serde_yaml::from_str(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1-5b5d6494f4-x7k2p
  namespace: bookinfo
  labels:
    app: reviews
    version: v1
    pod-template-hash: 5b5d6494f4
spec:
  serviceAccountName: bookinfo-reviews
  containers:
  - name: reviews
    image: docker.io/istio/examples-bookinfo-reviews-v1:1.20.2
    imagePullPolicy: IfNotPresent
    env:
    - name: LOG_DIR
      value: /tmp/logs
    ports:
    - containerPort: 9080
      name: http
    readinessProbe:
      httpGet:
        path: /health
        port: http
      periodSeconds: 5
    volumeMounts:
    - name: tmp
      mountPath: /tmp
    - name: wlp-output
      mountPath: /opt/ibm/wlp/output
    securityContext:
      runAsUser: 1000
  volumes:
  - name: wlp-output
    emptyDir: {}
  - name: tmp
    emptyDir: {}
"#,
    )
    .unwrap()
}

#[test]
fn golden_reviews_v1() {
    let settings = InjectionSettings { image: "ghcr.io/amime/proxy:golden".into(), ..InjectionSettings::default() };
    let out = run_with(&reviews_v1(), true, &settings).unwrap().unwrap();
    let got = serde_yaml::to_string(&sorted_yaml(&out)).unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/inject-reviews-v1.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
    assert!(got == want, "{} differs (run with UPDATE_GOLDEN=1 to update):\n{got}", path.display());
}

/// Dual-stack users list both families in `excludeOutboundIPRanges`. The capture is IPv4
/// only, so IPv6 traffic is never captured and an IPv6 range is excluded already: the pod is
/// injected with its IPv4 ranges (a malformed IPv6 range is still an error).
#[test]
fn ipv6_exclusion_ranges_are_excluded_already() {
    let annotated = |ranges: &str| {
        let mut p = pod(json!({ "containers": [app()] }));
        p["metadata"]["annotations"] = json!({ "traffic.amime.dev/excludeOutboundIPRanges": ranges });
        p
    };
    let out = injected(&annotated("10.0.0.0/8, fd00::/8, 2001:db8::1"));
    let args = container(&out, "initContainers", INIT_CONTAINER)["args"].clone();
    let args: Vec<&str> = args.as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.windows(2).any(|w| w == ["--exclude-outbound-ip-ranges", "10.0.0.0/8"]), "{args:?}");
    assert!(!args.iter().any(|a| a.contains(':')), "{args:?}");
    let only_v6 = injected(&annotated("fd00::/8"));
    let args = container(&only_v6, "initContainers", INIT_CONTAINER)["args"].to_string();
    assert!(!args.contains("--exclude-outbound-ip-ranges"), "{args}");
    for bad in ["fd00::zz/8", "fd00::/129", "fd00::/x"] {
        let err = run(&annotated(bad), true).expect_err(bad).to_string();
        assert!(err.contains("excludeOutboundIPRanges") && err.contains(bad), "{err}");
    }
}

/// Every probe injection rewrites, the sidecar can replay: probes the API server accepts but
/// the sidecar's bootstrap would refuse (a path with a space, a header value with a control
/// character) are left as they are, instead of a sidecar that never starts.
#[test]
fn the_sidecar_accepts_every_rewritten_probe() {
    let mut app = app();
    app["readinessProbe"] = json!({ "httpGet": { "port": 8080, "path": "/ready now" } });
    app["livenessProbe"] = json!({ "httpGet": { "port": 8080, "path": "/live",
        "httpHeaders": [{ "name": "X-Probe", "value": "a\u{7}b" }] } });
    app["startupProbe"] = json!({ "httpGet": { "port": 8080, "path": "/started" } });
    let original = pod(json!({ "containers": [app.clone()] }));
    let out = injected(&original);
    let proxy = container(&out, "initContainers", PROXY_CONTAINER);
    let probes = env(proxy, "AMIME_APP_PROBES")["value"].as_str().unwrap().to_string();
    let vars: std::collections::BTreeMap<String, String> = [
        ("POD_NAME", "web-1"),
        ("POD_NAMESPACE", "shop"),
        ("INSTANCE_IPS", "10.1.2.3"),
        ("AMIME_XDS_ADDRESS", "meshd:15010"),
        ("AMIME_APP_PROBES", probes.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = injector::pod_env::bootstrap_config_from_pod(&vars, "")
        .unwrap_or_else(|e| panic!("the sidecar would not start: {e}"));
    assert_eq!(config.app_probes().keys().collect::<Vec<_>>(), ["/app-health/app/startupz"]);
    let app_out = container(&out, "containers", "app");
    assert_eq!(app_out["readinessProbe"], app["readinessProbe"], "left alone");
    assert_eq!(app_out["livenessProbe"], app["livenessProbe"], "left alone");
    assert_eq!(app_out["startupProbe"]["httpGet"]["port"], 15021);
}
