use serde_json::json;

use super::*;

fn pod(labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "reviews-v1-", "namespace": "bookinfo", "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "reviews:1", "ports": [{"containerPort": 9080}]}]}
    })
}

fn review_of(request: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": API_VERSION, "kind": KIND, "request": request})).unwrap()
}

fn pod_request(object: Value) -> Value {
    json!({
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "bookinfo",
        "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": object,
    })
}

/// `request` with the field at `pointer` set (its parent must exist).
fn with(mut request: Value, pointer: &str, value: Value) -> Value {
    let (parent, field) = pointer.rsplit_once('/').unwrap();
    request.pointer_mut(parent).unwrap()[field] = value;
    request
}

fn set(mut request: Value, field: &str, value: Value) -> Value {
    request[field] = value;
    request
}

fn without(mut request: Value, field: &str) -> Value {
    request.as_object_mut().unwrap().remove(field);
    request
}

fn response_of(answer: &Answer) -> &Value {
    match &answer.body {
        Body::Review(review) => {
            assert_eq!((review["apiVersion"].as_str(), review["kind"].as_str()), (Some(API_VERSION), Some(KIND)));
            &review["response"]
        }
        Body::Text(text) => panic!("expected a review, got text {text:?}"),
    }
}

#[test]
fn unreadable_requests_get_400_saying_why() {
    let cases: [(&[u8], &str); 7] = [
        (b"{not json", "request body is not JSON: key must be a string at line 1 column 2"),
        (b"[1,2]", "request body is not an AdmissionReview object (a JSON array)"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#,
            "apiVersion/kind: expected admission.k8s.io/v1 AdmissionReview, got admission.k8s.io/v1beta1 AdmissionReview",
        ),
        (br#"{"kind":"Pod"}"#, "apiVersion/kind: expected admission.k8s.io/v1 AdmissionReview, got (none) Pod"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            "request: missing (an AdmissionReview from the API server carries one)",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}"#,
            "request.uid: missing or not a non-empty string",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#,
            "request.uid: missing or not a non-empty string",
        ),
    ];
    for (body, want) in cases {
        let answer = parse(body).unwrap_err();
        assert_eq!(answer.status, 400, "{want}");
        assert_eq!(answer.body, Body::Text(format!("{want}\n")));
        assert_eq!(answer.verdict, Verdict::Error);
    }
}

#[test]
fn unexpected_but_readable_requests_are_allowed_with_a_warning() {
    let ok = pod_request(pod(json!({})));
    let deployment = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let wrong_version =
        serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": KIND, "request": ok})).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            wrong_version,
            "apiVersion/kind: expected admission.k8s.io/v1 AdmissionReview, got admission.k8s.io/v1beta1 AdmissionReview",
        ),
        (
            review_of(with(ok.clone(), "/kind", deployment)),
            r#"request.kind: this webhook injects core/v1 Pods, got {"group":"apps","kind":"Deployment","version":"v1"}"#,
        ),
        (
            review_of(with(ok.clone(), "/operation", json!("UPDATE"))),
            "request.operation: this webhook acts on CREATE, got UPDATE",
        ),
        (review_of(without(ok.clone(), "operation")), "request.operation: this webhook acts on CREATE, got (none)"),
        (
            review_of(with(ok.clone(), "/object", json!(null))),
            "request.object: missing",
        ),
        (review_of(without(ok.clone(), "object")), "request.object: missing"),
        (
            review_of(with(ok.clone(), "/object", json!("pod"))),
            "request.object: expected a Pod object, got a JSON string",
        ),
        (
            review_of(without(with(ok.clone(), "/object/metadata/namespace", json!(null)), "namespace")),
            "request.namespace: missing (a Pod is namespaced)",
        ),
        (
            review_of(set(ok.clone(), "subResource", json!("ephemeralcontainers"))),
            "request.subResource: this webhook injects Pods, not pods/ephemeralcontainers",
        ),
    ];
    for (body, want) in cases {
        let answer = parse(&body).unwrap_err();
        assert_eq!((answer.status, answer.verdict), (200, Verdict::Error), "{want}");
        let response = response_of(&answer);
        assert_eq!(response["uid"], "u-1");
        assert_eq!(response["allowed"], true);
        assert!(response.get("patch").is_none());
        assert_eq!(response["warnings"], json!([format!("amime sidecar injection skipped: {want}")]));
    }
}

#[test]
fn a_pod_create_is_read() {
    let review = parse(&review_of(pod_request(pod(json!({"app": "reviews"}))))).unwrap();
    assert_eq!(
        (review.uid.as_str(), review.namespace.as_str(), review.pod.as_str()),
        ("u-1", "bookinfo", "reviews-v1-*")
    );
    assert_eq!(review.object["metadata"]["labels"]["app"], "reviews");
    // The namespace from the object when the request has none; the name when there is one.
    let named = with(pod(json!({})), "/metadata/name", json!("reviews-v1-abc"));
    let review = parse(&review_of(without(pod_request(named), "namespace"))).unwrap();
    assert_eq!((review.namespace.as_str(), review.pod.as_str()), ("bookinfo", "reviews-v1-abc"));
}

#[test]
fn namespace_label_decides() {
    let enabled = |pairs: &[(&'static str, &'static str)]| namespace_enabled(pairs.iter().copied());
    assert!(enabled(&[("team", "a"), ("amime-injection", "enabled")]));
    assert!(!enabled(&[("amime-injection", "disabled")]));
    assert!(!enabled(&[("amime-injection", "Enabled")]));
    assert!(!enabled(&[]));
}

#[test]
fn decisions_are_admission_responses() {
    let settings = InjectionSettings::default();
    let review = parse(&review_of(pod_request(pod(json!({"app": "reviews"}))))).unwrap();

    let injected = decide(&review, true, &settings);
    assert_eq!((injected.status, injected.verdict), (200, Verdict::Injected), "{}", injected.detail);
    let response = response_of(&injected);
    assert_eq!((response["uid"].as_str(), response["allowed"].as_bool()), (Some("u-1"), Some(true)));
    assert_eq!(response["patchType"], "JSONPatch");
    let patch: k8s_openapi::ByteString = serde_json::from_value(response["patch"].clone()).expect("a base64 patch");
    let patch: json_patch::Patch = serde_json::from_slice(&patch.0).expect("a JSON patch");
    let mut patched = review.object.clone();
    json_patch::patch(&mut patched, &patch).expect("the patch applies");
    let init: Vec<&str> =
        patched["spec"]["initContainers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(init, ["amime-init", "amime-proxy"]);

    let skipped = decide(&review, false, &settings);
    assert_eq!((skipped.status, skipped.verdict), (200, Verdict::Skipped));
    let response = response_of(&skipped);
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none() && response.get("patchType").is_none());
    assert_eq!(skipped.detail, "skipped: injection not enabled for the namespace or the pod");

    // A pod injection cannot handle is refused, naming the field.
    let bad_port = json!({"traffic.amime.dev/excludeInboundPorts": "http"});
    let bad = parse(&review_of(pod_request(with(pod(json!({})), "/metadata/annotations", bad_port)))).unwrap();
    let denied = decide(&bad, true, &settings);
    assert_eq!((denied.status, denied.verdict), (200, Verdict::Denied), "{}", denied.detail);
    let response = response_of(&denied);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 400);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("traffic.amime.dev/excludeInboundPorts"), "{message}");
}

#[test]
fn an_unknown_namespace_refuses_for_now() {
    let review = parse(&review_of(pod_request(pod(json!({}))))).unwrap();
    let answer = namespace_unknown(&review, "GET namespaces/bookinfo: timed out after 2s");
    assert_eq!(answer.verdict, Verdict::Error);
    let response = response_of(&answer);
    assert_eq!((response["allowed"].as_bool(), response["status"]["code"].as_i64()), (Some(false), Some(503)));
    assert_eq!(
        response["status"]["message"],
        "amime sidecar injection: cannot tell whether namespace bookinfo enables injection: \
         GET namespaces/bookinfo: timed out after 2s; retry shortly"
    );
}

#[test]
fn an_unknown_namespace_decides_only_what_it_must() {
    let settings = InjectionSettings::default();
    let why = "GET namespaces/bookinfo: no answer within 3s";
    let answer = |labels: Value| decide_unknown(&parse(&review_of(pod_request(pod(labels)))).unwrap(), why, &settings);
    // The pod says nothing: the namespace decides, and cannot be learned now.
    let unknown = answer(json!({}));
    assert_eq!(response_of(&unknown)["status"]["code"], 503, "{unknown:?}");
    // The pod's own label decides, whatever the namespace says.
    assert_eq!(answer(json!({"sidecar.amime.dev/inject": "true"})).verdict, Verdict::Injected);
    assert_eq!(answer(json!({"sidecar.amime.dev/inject": "false"})).verdict, Verdict::Skipped);
}
