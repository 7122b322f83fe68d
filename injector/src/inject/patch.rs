//! The JSON patch that injects the sidecar: the containers, volumes and annotations
//! injection adds, as plain JSON, and the RFC 6902 operations that add them.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use serde_json::{json, Map, Value};

use super::{InjectError, InjectionStatus};
use crate::bootstrap::{HEALTH_PORT, PROMETHEUS_PORT, READY_PATH};
use crate::capture::{parse_ipv4_cidrs_of_dual_stack, parse_ports, CaptureError, CaptureSpec};
use crate::conventions::{
    env, AGENT_BINARY, EXCLUDE_INBOUND_PORTS_ANNOTATION, EXCLUDE_OUTBOUND_IP_RANGES_ANNOTATION,
    EXCLUDE_OUTBOUND_PORTS_ANNOTATION, INIT_CONTAINER, POD_ANNOTATIONS_FILE, POD_INFO_DIR, POD_INFO_VOLUME,
    POD_LABELS_FILE, PROXY_CONFIG_DIR, PROXY_CONFIG_VOLUME, PROXY_CONTAINER, STATUS_ANNOTATION,
};
use crate::probes::{rewrite_probes, AppProbes};
use crate::settings::InjectionSettings;

/// The patch for a pod the decision says to inject.
pub(super) fn patch(pod: &Value, settings: &InjectionSettings) -> Result<Patch, InjectError> {
    check_shape(pod)?;
    let capture = capture_spec(pod, settings)?;
    let probes = rewrite_probes(pod);
    let app_probes: AppProbes = probes.iter().map(|p| (p.sidecar_path.clone(), p.original.clone())).collect();
    let app_probes = serde_json::to_string(&app_probes).unwrap_or_else(|_| "{}".into());
    let init = init_container(&capture, settings);
    let proxy = proxy_container(settings, &app_probes);
    let volumes = [
        json!({ "name": PROXY_CONFIG_VOLUME, "emptyDir": { "medium": "Memory" } }),
        json!({
            "name": POD_INFO_VOLUME,
            "downwardAPI": { "items": [
                { "path": POD_LABELS_FILE, "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.labels" } },
                { "path": POD_ANNOTATIONS_FILE, "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.annotations" } },
            ]},
        }),
    ];
    let status = InjectionStatus {
        init_containers: vec![INIT_CONTAINER.into(), PROXY_CONTAINER.into()],
        volumes: vec![PROXY_CONFIG_VOLUME.into(), POD_INFO_VOLUME.into()],
        image: settings.image.clone(),
        rewritten_probes: probes.iter().map(|p| p.sidecar_path.clone()).collect(),
    };
    let status = serde_json::to_string(&status).unwrap_or_default();

    let mut ops = Vec::new();
    append(&mut ops, pod, &["spec", "initContainers"], vec![init, proxy]);
    append(&mut ops, pod, &["spec", "volumes"], volumes.into());
    for probe in &probes {
        ops.push(PatchOperation::Replace(ReplaceOperation {
            path: PointerBuf::from_tokens(&probe.http_get_path),
            value: probe.http_get.clone(),
        }));
    }
    insert(&mut ops, pod, &["metadata", "annotations"], STATUS_ANNOTATION, Value::String(status));
    Ok(Patch(ops))
}

/// The fields the patch relies on have the expected types.
fn check_shape(pod: &Value) -> Result<(), InjectError> {
    let fields: [(&Value, &str, bool); 5] = [
        (&pod["metadata"], "metadata", true),
        (&pod["metadata"]["annotations"], "metadata.annotations", true),
        (&pod["spec"], "spec", true),
        (&pod["spec"]["initContainers"], "spec.initContainers", false),
        (&pod["spec"]["volumes"], "spec.volumes", false),
    ];
    for (value, field, object) in fields {
        if !(value.is_null() || if object { value.is_object() } else { value.is_array() }) {
            return Err(InjectError::new(field, if object { "expected an object" } else { "expected a list" }));
        }
    }
    match pod["spec"]["containers"].as_array() {
        Some(containers) if !containers.is_empty() => Ok(()),
        _ => Err(InjectError::new("spec.containers", "the pod has no containers")),
    }
}

/// What the init container captures: the proxy uid and the pod's exclusion annotations.
fn capture_spec(pod: &Value, settings: &InjectionSettings) -> Result<CaptureSpec, InjectError> {
    Ok(CaptureSpec {
        proxy_uid: settings.proxy_uid,
        exclude_inbound_ports: annotation_list(pod, EXCLUDE_INBOUND_PORTS_ANNOTATION, parse_ports)?,
        exclude_outbound_ports: annotation_list(pod, EXCLUDE_OUTBOUND_PORTS_ANNOTATION, parse_ports)?,
        exclude_outbound_cidrs: annotation_list(
            pod,
            EXCLUDE_OUTBOUND_IP_RANGES_ANNOTATION,
            parse_ipv4_cidrs_of_dual_stack,
        )?,
        ..CaptureSpec::default()
    })
}

/// A comma-separated list annotation, parsed (absent: empty).
fn annotation_list<T>(pod: &Value, name: &str, parse: fn(&str) -> Result<T, CaptureError>) -> Result<T, InjectError> {
    let field = || format!("metadata.annotations[{name:?}]");
    let text = match pod["metadata"]["annotations"].get(name) {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s,
        Some(other) => return Err(InjectError::new(field(), format!("expected a string, got {other}"))),
    };
    parse(text).map_err(|e| InjectError::new(field(), e.to_string()))
}

/// `amime-init`: installs the capture rules, as root with only NET_ADMIN and NET_RAW.
fn init_container(capture: &CaptureSpec, settings: &InjectionSettings) -> Value {
    let mut args = vec!["init".to_string()];
    args.extend(capture.to_args());
    json!({
        "name": INIT_CONTAINER,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [AGENT_BINARY],
        "args": args,
        "resources": settings.init_resources.to_json(),
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            // iptables takes its lock in /run.
            "readOnlyRootFilesystem": false,
            "capabilities": { "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] },
        },
    })
}

fn field_env(name: &str, path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "apiVersion": "v1", "fieldPath": path } } })
}

/// `amime-proxy`: the native sidecar (`restartPolicy: Always`) running `amime-agent proxy`;
/// its startup probe holds the app containers back until Envoy has its config.
fn proxy_container(settings: &InjectionSettings, app_probes: &str) -> Value {
    let probe = |period: u32, failures: u32| {
        json!({
            "httpGet": { "path": READY_PATH, "port": HEALTH_PORT, "scheme": "HTTP" },
            "periodSeconds": period,
            "timeoutSeconds": 3,
            "failureThreshold": failures,
        })
    };
    json!({
        "name": PROXY_CONTAINER,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [AGENT_BINARY],
        "args": ["proxy"],
        "restartPolicy": "Always",
        "ports": [
            { "name": "http-envoy-prom", "containerPort": PROMETHEUS_PORT, "protocol": "TCP" },
            { "name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP" },
        ],
        "env": [
            field_env(env::POD_NAME, "metadata.name"),
            field_env(env::POD_NAMESPACE, "metadata.namespace"),
            field_env(env::INSTANCE_IPS, "status.podIPs"),
            field_env(env::SERVICE_ACCOUNT, "spec.serviceAccountName"),
            { "name": env::XDS_ADDRESS, "value": settings.xds_address },
            { "name": env::XDS_API, "value": settings.xds_api.name() },
            { "name": env::APP_PROBES, "value": app_probes },
        ],
        "volumeMounts": [
            { "name": PROXY_CONFIG_VOLUME, "mountPath": PROXY_CONFIG_DIR },
            { "name": POD_INFO_VOLUME, "mountPath": POD_INFO_DIR, "readOnly": true },
        ],
        // Up to 10 minutes for Envoy's first config; the app containers start after it.
        "startupProbe": probe(1, 600),
        "readinessProbe": probe(15, 4),
        "resources": settings.proxy_resources.to_json(),
        "securityContext": {
            "runAsUser": settings.proxy_uid,
            "runAsGroup": settings.proxy_uid,
            "runAsNonRoot": true,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] },
        },
    })
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

/// Adds `items` to the list at `path`: one `add` creating the list when the pod has none
/// (or `null`), else one `/-` append per item.
fn append(ops: &mut Vec<PatchOperation>, pod: &Value, path: &[&str], items: Vec<Value>) {
    if lookup(pod, path).is_some_and(Value::is_array) {
        for item in items {
            let mut tokens = path.to_vec();
            tokens.push("-");
            ops.push(PatchOperation::Add(AddOperation { path: pointer(&tokens), value: item }));
        }
    } else {
        add_missing(ops, pod, path, Value::Array(items));
    }
}

/// Sets `key` in the map at `path`, creating the map (and its parents) when absent.
fn insert(ops: &mut Vec<PatchOperation>, pod: &Value, path: &[&str], key: &str, value: Value) {
    if lookup(pod, path).is_some_and(Value::is_object) {
        let mut tokens = path.to_vec();
        tokens.push(key);
        ops.push(PatchOperation::Add(AddOperation { path: pointer(&tokens), value }));
    } else {
        add_missing(ops, pod, path, Value::Object(Map::from_iter([(key.to_string(), value)])));
    }
}

/// Adds `value` at `path`, wrapping it in objects for the parents the pod lacks.
fn add_missing(ops: &mut Vec<PatchOperation>, pod: &Value, path: &[&str], mut value: Value) {
    let mut depth = path.len();
    while depth > 1 && !lookup(pod, &path[..depth - 1]).is_some_and(Value::is_object) {
        value = Value::Object(Map::from_iter([(path[depth - 1].to_string(), value)]));
        depth -= 1;
    }
    ops.push(PatchOperation::Add(AddOperation { path: pointer(&path[..depth]), value }));
}

fn lookup<'a>(pod: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(pod, |v, key| v.get(key))
}
