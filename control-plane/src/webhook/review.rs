//! The admission decision as plain functions: an `admission.k8s.io/v1` AdmissionReview body
//! in, an [`Answer`] out (the HTTP status and body to send, and what happened, for logs and
//! metrics). No I/O: the namespace's labels are looked up between [`parse`] and [`decide`].
//!
//! Policy: a request we cannot read at all (not JSON, not an AdmissionReview, no request uid)
//! gets an HTTP 400 saying why. A readable request we were not meant to get (another kind,
//! another operation, no object) is *allowed* with a warning: the webhook never blocks a pod
//! because of its own configuration. The one refusal is a pod injection cannot handle
//! ([`injector::inject::InjectError`], naming the field): it would not run meshed.

use injector::inject::{inject, Outcome, SkipReason};
use injector::settings::InjectionSettings;
use kube::core::admission::AdmissionResponse;
use serde_json::Value;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// What became of one request (the `result` label of `amime_webhook_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Injected,
    Skipped,
    Denied,
    /// Malformed or unexpected input (answered 400, or allowed with a warning).
    Error,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [Verdict::Injected, Verdict::Skipped, Verdict::Denied, Verdict::Error];

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Injected => "injected",
            Verdict::Skipped => "skipped",
            Verdict::Denied => "denied",
            Verdict::Error => "error",
        }
    }
}

/// The body of an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// An AdmissionReview with a response (HTTP 200).
    Review(Value),
    /// Plain text (HTTP 400: the request could not be read).
    Text(String),
}

/// What to send back, and why (for logs and metrics).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Body,
    pub verdict: Verdict,
    /// One line for the log: what was decided and why.
    pub detail: String,
}

impl Answer {
    /// An HTTP error with `detail` as its text.
    pub fn text(status: u16, detail: String) -> Answer {
        Answer { status, body: Body::Text(format!("{detail}\n")), verdict: Verdict::Error, detail }
    }

    fn bad_request(detail: String) -> Answer {
        Answer::text(400, detail)
    }
}

/// A Pod CREATE review, read far enough to decide.
#[derive(Debug, Clone, PartialEq)]
pub struct PodReview {
    pub uid: String,
    /// `request.namespace` (else the object's `metadata.namespace`).
    pub namespace: String,
    /// The pod's name, or `generateName` + `*` when the API server has not named it yet.
    pub pod: String,
    pub object: Value,
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

/// Reads `body` as an AdmissionReview for a Pod CREATE; anything else is answered now.
pub fn parse(body: &[u8]) -> Result<PodReview, Answer> {
    let (uid, request) = envelope(body)?;
    pod_create(uid, &request).map_err(|detail| allow_with_warning(&review_uid(&request), detail))
}

fn review_uid(request: &Value) -> String {
    text(request.get("uid")).unwrap_or_default()
}

/// The request's uid and the request itself; an HTTP 400 when there is no uid to answer
/// to, an allowing answer with a warning for a review that is not admission.k8s.io/v1.
fn envelope(body: &[u8]) -> Result<(String, Value), Answer> {
    let mut review: Value =
        serde_json::from_slice(body).map_err(|e| Answer::bad_request(format!("request body is not JSON: {e}")))?;
    let Some(fields) = review.as_object_mut() else {
        let detail = format!("request body is not an {KIND} object (a JSON {})", type_name(&review));
        return Err(Answer::bad_request(detail));
    };
    let mismatch = match (text(fields.get("apiVersion")), text(fields.get("kind"))) {
        (Some(v), Some(k)) if v == API_VERSION && k == KIND => None,
        (v, k) => Some(format!(
            "apiVersion/kind: expected {API_VERSION} {KIND}, got {} {}",
            v.as_deref().unwrap_or("(none)"),
            k.as_deref().unwrap_or("(none)")
        )),
    };
    let request = fields.remove("request");
    let uid = text(request.as_ref().and_then(|r| r.get("uid"))).filter(|u| !u.is_empty());
    match (uid, request, mismatch) {
        (Some(uid), _, Some(m)) => Err(allow_with_warning(&uid, m)),
        (Some(uid), Some(request), None) => Ok((uid, request)),
        (None, _, Some(m)) => Err(Answer::bad_request(m)),
        (None, None, None) | (Some(_), None, None) => {
            Err(Answer::bad_request(format!("request: missing (an {KIND} from the API server carries one)")))
        }
        (None, Some(_), None) => Err(Answer::bad_request("request.uid: missing or not a non-empty string".to_owned())),
    }
}

/// The Pod CREATE in `request`, or why this is not one (answered allowed, with a warning).
fn pod_create(uid: String, request: &Value) -> Result<PodReview, String> {
    let kind = request.get("kind").cloned().unwrap_or(Value::Null);
    let (group, version, kind_name) = (text(kind.get("group")), text(kind.get("version")), text(kind.get("kind")));
    if (group.as_deref(), version.as_deref(), kind_name.as_deref()) != (Some(""), Some("v1"), Some("Pod")) {
        return Err(format!("request.kind: this webhook injects core/v1 Pods, got {kind}"));
    }
    if let Some(sub) = text(request.get("subResource")).filter(|s| !s.is_empty()) {
        return Err(format!("request.subResource: this webhook injects Pods, not pods/{sub}"));
    }
    match text(request.get("operation")).as_deref() {
        Some("CREATE") => {}
        other => {
            return Err(format!("request.operation: this webhook acts on CREATE, got {}", other.unwrap_or("(none)")))
        }
    }
    let object = match request.get("object") {
        Some(o @ Value::Object(_)) => o.clone(),
        Some(Value::Null) | None => return Err("request.object: missing".to_owned()),
        Some(other) => return Err(format!("request.object: expected a Pod object, got a JSON {}", type_name(other))),
    };
    let namespace = text(request.get("namespace"))
        .or_else(|| text(object.pointer("/metadata/namespace")))
        .filter(|n| !n.is_empty())
        .ok_or("request.namespace: missing (a Pod is namespaced)")?;
    let pod = match (text(object.pointer("/metadata/name")), text(object.pointer("/metadata/generateName"))) {
        (Some(name), _) if !name.is_empty() => name,
        (_, Some(prefix)) => format!("{prefix}*"),
        _ => text(request.get("name")).unwrap_or_default(),
    };
    Ok(PodReview { uid, namespace, pod, object })
}

/// Whether a namespace with `labels` enables injection (`amime-injection=enabled`).
pub fn namespace_enabled<'a>(mut labels: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
    use injector::conventions::{NAMESPACE_INJECTION_ENABLED, NAMESPACE_INJECTION_LABEL};
    labels.any(|(k, v)| k == NAMESPACE_INJECTION_LABEL && v == NAMESPACE_INJECTION_ENABLED)
}

/// The answer for a pod whose namespace's injection setting is known.
pub fn decide(review: &PodReview, namespace_enabled: bool, settings: &InjectionSettings) -> Answer {
    let base = response(&review.uid);
    match inject(&review.object, namespace_enabled, settings) {
        Ok(Outcome::Injected(patch)) => {
            let operations = patch.0.len();
            match base.with_patch(patch) {
                Ok(r) => reviewed(r, Verdict::Injected, format!("injected ({operations} patch operations)")),
                Err(e) => allow_with_warning(&review.uid, format!("internal error: cannot serialize the patch: {e}")),
            }
        }
        Ok(Outcome::Skipped(reason)) => reviewed(base, Verdict::Skipped, format!("skipped: {}", skip_text(&reason))),
        Err(e) => {
            let mut denied = base.deny(format!("amime sidecar injection: {e}"));
            denied.result.code = 400;
            denied.result.reason = "BadRequest".to_owned();
            reviewed(denied, Verdict::Denied, format!("denied: {e}"))
        }
    }
}

/// The answer when the namespace's setting cannot be learned (the API server did not
/// answer): refused, as the webhook being down would be (`failurePolicy: Fail`), since
/// admitting it might start a meshed namespace's pod without its sidecar.
pub fn namespace_unknown(review: &PodReview, why: &str) -> Answer {
    let message = format!(
        "amime sidecar injection: cannot tell whether namespace {} enables injection: {why}; retry shortly",
        review.namespace
    );
    let mut denied = response(&review.uid).deny(&message);
    denied.result.code = 503;
    denied.result.reason = "ServiceUnavailable".to_owned();
    reviewed(denied, Verdict::Error, message)
}

/// The answer when the namespace's setting cannot be learned: the pod's own say decides
/// when the namespace does not matter (it opts in or out, or is already injected);
/// otherwise refused for now, as [`namespace_unknown`].
pub fn decide_unknown(review: &PodReview, why: &str, settings: &InjectionSettings) -> Answer {
    let unlabelled = decide(review, false, settings);
    if unlabelled == decide(review, true, settings) {
        return unlabelled;
    }
    namespace_unknown(review, why)
}

pub fn skip_text(reason: &SkipReason) -> &'static str {
    match reason {
        SkipReason::NotEnabled => "injection not enabled for the namespace or the pod",
        SkipReason::DisabledByPod => "the pod turns injection off (sidecar.amime.dev/inject: \"false\")",
        SkipReason::HostNetwork => "host-network pod",
        SkipReason::AlreadyInjected => "already injected",
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// An allowing response for request `uid` (AdmissionReview v1).
fn response(uid: &str) -> AdmissionResponse {
    let mut r = AdmissionResponse::invalid("");
    r.uid = uid.to_owned();
    r.allowed = true;
    r.result = Default::default();
    r
}

fn allow_with_warning(uid: &str, detail: String) -> Answer {
    let mut r = response(uid);
    r.warnings = Some(vec![format!("amime sidecar injection skipped: {detail}")]);
    reviewed(r, Verdict::Error, format!("allowed unchanged: {detail}"))
}

fn reviewed(r: AdmissionResponse, verdict: Verdict, detail: String) -> Answer {
    // kube serializes the patch bytes as a JSON array of numbers; the API's `[]byte` is
    // base64, the form every client reads.
    let patch = r.patch.clone().map(|bytes| serde_json::to_value(k8s_openapi::ByteString(bytes)));
    let mut body = serde_json::to_value(r.into_review()).unwrap_or_else(|e| {
        serde_json::json!({"apiVersion": API_VERSION, "kind": KIND, "response": {"allowed": true, "warnings": [e.to_string()]}})
    });
    if let (Some(Ok(patch)), Some(response)) = (patch, body.get_mut("response")) {
        response["patch"] = patch;
    }
    Answer { status: 200, body: Body::Review(body), verdict, detail }
}

#[cfg(test)]
#[path = "review_tests.rs"]
mod tests;
