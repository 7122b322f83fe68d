//! Offline injection of YAML streams (`meshctl inject`): which documents change, where the
//! pod template is, what stays byte for byte, and errors naming the document and field.

use injector::inject::SkipReason;
use injector::settings::InjectionSettings;
use injector::workload::{inject_stream, InjectedStream, WorkloadError, WorkloadOutcome};
use serde_json::Value;

fn run(input: &str) -> InjectedStream {
    inject_stream(input, None, &InjectionSettings::default()).unwrap_or_else(|e| panic!("{e:?}"))
}

fn errors(input: &str) -> Vec<String> {
    inject_stream(input, Some("shop"), &InjectionSettings::default())
        .map(|s| panic!("should fail, got:\n{}", s.output))
        .unwrap_or_else(|errors: Vec<WorkloadError>| errors.iter().map(ToString::to_string).collect())
}

fn docs(output: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(output)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn init_names(template: &Value) -> Vec<String> {
    template["spec"]["initContainers"]
        .as_array()
        .map(|l| l.iter().map(|c| c["name"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

const POD_SPEC: &str = "    spec:\n      containers:\n      - name: app\n        image: web:1\n";

#[test]
fn every_workload_kind() {
    let pod_spec = POD_SPEC.replace("\n    ", "\n").trim_start().to_string();
    let with_template = |kind: &str, api: &str| {
        format!("apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: web\nspec:\n  template:\n    metadata:\n      labels:\n        app: web\n{POD_SPEC}")
    };
    let cron = format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: web\nspec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n{}",
        POD_SPEC.lines().map(|l| format!("    {l}\n")).collect::<String>()
    );
    let cases = [
        (format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n{pod_spec}"), "/"),
        (with_template("Deployment", "apps/v1"), "/spec/template"),
        (with_template("StatefulSet", "apps/v1"), "/spec/template"),
        (with_template("DaemonSet", "apps/v1"), "/spec/template"),
        (with_template("ReplicaSet", "apps/v1"), "/spec/template"),
        (with_template("Job", "batch/v1"), "/spec/template"),
        (cron, "/spec/jobTemplate/spec/template"),
    ];
    for (input, template) in cases {
        let out = run(&input);
        let doc = &docs(&out.output)[0];
        let pointer = if template == "/" { "" } else { template };
        let template = doc.pointer(pointer).unwrap_or_else(|| panic!("{pointer} in {doc}"));
        assert_eq!(init_names(template), ["amime-init", "amime-proxy"], "{input}");
        assert!(template["metadata"]["annotations"]["sidecar.amime.dev/status"].is_string(), "{input}");
        assert_eq!(out.workloads.len(), 1);
        assert_eq!(out.workloads[0].outcome, WorkloadOutcome::Injected);
        assert!(out.output.starts_with(&input[..input.find('\n').unwrap()]), "key order kept:\n{}", out.output);
        // Injecting the output again changes nothing, byte for byte.
        let again = run(&out.output);
        assert_eq!(again.output, out.output, "{input}");
        assert_eq!(again.workloads[0].outcome, WorkloadOutcome::Skipped(SkipReason::AlreadyInjected));
    }
}

#[test]
fn other_documents_stay_as_written() {
    let input = "\
# bookinfo, trimmed
---
apiVersion: v1   # a comment that stays
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80}]
---
# only a comment
---
---
# The web app.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: web:1
...
---
apiVersion: v1
kind: Pod
metadata:
  name: host
  annotations:
    sidecar.amime.dev/inject: \"false\"
spec:
  containers: [{name: a, image: a}]
";
    let out = run(input);
    let (before, after) = input.split_at(input.find("# The web app.").unwrap());
    assert!(out.output.starts_with(before), "the documents before the Deployment are untouched:\n{}", out.output);
    let rest = &out.output[before.len()..];
    assert!(
        rest.starts_with("# The web app.\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"),
        "{rest}"
    );
    assert!(out.output.ends_with(&after[after.find("---\napiVersion: v1\nkind: Pod").unwrap()..]), "{}", out.output);
    let docs = docs(&out.output);
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[1]["spec"]["replicas"], 2);
    assert_eq!(init_names(&docs[1]["spec"]["template"]), ["amime-init", "amime-proxy"]);
    let outcomes: Vec<_> = out.workloads.iter().map(|w| (w.object.to_string(), w.outcome.clone())).collect();
    assert_eq!(
        outcomes,
        [
            ("document 4 (Deployment shop/web)".to_string(), WorkloadOutcome::Injected),
            ("document 5 (Pod host)".to_string(), WorkloadOutcome::Skipped(SkipReason::DisabledByPod)),
        ]
    );
}

#[test]
fn lists_are_injected_item_by_item() {
    let input = format!(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {{name: c}}\n\
         - apiVersion: apps/v1\n  kind: Deployment\n  metadata: {{name: web}}\n  spec:\n    template:\n{}",
        POD_SPEC.lines().map(|l| format!("    {l}\n")).collect::<String>()
    );
    let out = inject_stream(&input, Some("shop"), &InjectionSettings::default()).unwrap();
    let doc = &docs(&out.output)[0];
    assert_eq!(
        doc["items"][0],
        serde_json::json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "c" } })
    );
    assert_eq!(init_names(&doc["items"][1]["spec"]["template"]), ["amime-init", "amime-proxy"]);
    assert_eq!(out.workloads[0].object.to_string(), "document 1 item 1 (Deployment shop/web)");
}

#[test]
fn bad_documents_name_the_document_and_field() {
    let input = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    metadata:
      annotations: {sidecar.amime.dev/inject: \"yes\"}
    spec:
      containers: [{name: a}]
---
kind: Pod
metadata: {name: p, namespace: other, annotations: {traffic.amime.dev/excludeOutboundPorts: http}}
spec:
  containers: [{name: a}]
---
kind: Job
metadata: {name: j}
spec: {}
---
kind: Pod
metadata: {name: [unclosed
---
kind: CronJob
metadata: {name: c}
spec: {jobTemplate: {spec: {template: {spec: {containers: []}}}}}
---
kind: ConfigMap
metadata: {name: fine}
";
    assert_eq!(
        errors(input),
        [
            r#"document 1 (Deployment shop/web): spec.template.metadata.annotations["sidecar.amime.dev/inject"]: expected "true" or "false", got "yes""#,
            r#"document 2 (Pod other/p): metadata.annotations["traffic.amime.dev/excludeOutboundPorts"]: "http" is not a valid port: expected a number from 1 to 65535"#,
            "document 3 (Job shop/j): spec.template: missing (the pod template)",
            "document 4: <document>: not valid YAML: did not find expected ',' or ']' at line 22 column 1, while parsing a flow sequence at line 21 column 18",
            "document 5 (CronJob shop/c): spec.jobTemplate.spec.template.spec.containers: the pod has no containers",
        ]
    );
}

/// kubectl reads YAML as YAML 1.1 (sigs.k8s.io/yaml): a plain `0644` is the octal number
/// 420 and a plain `yes`/`on`/`y`/`off` is a bool, where the YAML 1.2 library reads
/// strings. An injected document must mean to kubectl what its input meant to kubectl.
#[test]
fn changed_documents_mean_to_kubectl_what_they_meant_before() {
    let input = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {enabled: \"on\", tier: \"y\", count: \"1_000\", mode: \"0644\"}
spec:
  containers:
  - name: app
    image: web:1
    args: [\"--verbose\", \"yes\", \"Off\", \"NO\", \"0b101\", \"010\"]
    env:
    - {name: FEATURE, value: \"yes\"}
    - {name: PLAIN_STRING, value: hello}
  volumes:
  - name: secret
    secret:
      secretName: web
      defaultMode: 0644
      items: [{key: k, path: k, mode: 0400}]
  - name: config
    configMap: {name: web, defaultMode: 0o600}
";
    let out = run(input).output;
    // What kubectl (YAML 1.1) reads: the numbers as numbers, the strings as strings.
    for want in [
        "defaultMode: 420\n",
        "mode: 256\n",
        "defaultMode: 384\n",
        "enabled: 'on'\n",
        "tier: 'y'\n",
        "count: '1_000'\n",
        "mode: '0644'\n",
        "- 'yes'\n",
        "- 'Off'\n",
        "- 'NO'\n",
        "- '0b101'\n",
        "- '010'\n",
        "value: 'yes'\n",
        "value: hello\n",
    ] {
        assert!(out.contains(want), "no {want:?} in\n{out}");
    }
}

/// kubectl applies YAML merge keys (`<<: *anchor`); an injected document must not carry a
/// literal `<<` field the API server rejects.
#[test]
fn merge_keys_are_merged_as_kubectl_does() {
    let input = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: &labels {app: web, tier: \"on\"}
spec:
  selector: {matchLabels: *labels}
  template:
    metadata:
      labels:
        <<: *labels
        version: v1
    spec:
      containers: [{name: app, image: web:1}]
";
    let out = run(input).output;
    assert!(!out.contains("<<"), "{out}");
    let doc = &docs(&out)[0];
    assert_eq!(
        doc["spec"]["template"]["metadata"]["labels"],
        serde_json::json!({"app": "web", "tier": "on", "version": "v1"})
    );
    assert_eq!(init_names(&doc["spec"]["template"]), ["amime-init", "amime-proxy"]);
}

/// Files saved by Windows editors start with a UTF-8 byte order mark, which kubectl accepts.
#[test]
fn a_byte_order_mark_is_not_a_document() {
    let out = run("\u{feff}apiVersion: v1\r\nkind: Pod\r\nmetadata: {name: web}\r\nspec:\r\n  containers: [{name: app, image: web:1}]\r\n");
    assert_eq!(out.workloads.len(), 1, "{out:?}");
    assert_eq!(out.workloads[0].outcome, WorkloadOutcome::Injected);
}
