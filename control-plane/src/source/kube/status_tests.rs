//! Table tests of the status verdict and of when a write is needed.

use serde_json::json;

use super::*;
use crate::model::Kind;
use crate::source::kube::feed::{FeedId, Group};

fn d(severity: Severity, field: &str, message: &str) -> Diagnostic {
    Diagnostic::at_object(severity, "VirtualService", "ns", "r", field, message)
}

#[test]
fn verdicts() {
    let err = d(Severity::Error, "spec.http[0].route[0].weight", "must be at least 0");
    let err2 = d(Severity::Error, "spec.hosts", "required");
    let warn = d(Severity::Warning, "spec.http[0].retries", "not implemented yet; ignored");
    let refused = d(Severity::Error, "spec.http[0].match[0].uri.regex", "Envoy refuses this regex");
    type Case<'a> = (Vec<Diagnostic>, Vec<&'a Diagnostic>, Option<&'a str>, (bool, &'a str, &'a str));
    let cases: Vec<Case> = vec![
        (vec![], vec![], None, (true, "Accepted", "accepted")),
        (
            vec![warn.clone()],
            vec![],
            None,
            (true, "Accepted", "accepted with 1 warning: spec.http[0].retries: not implemented yet; ignored"),
        ),
        (
            vec![err.clone(), err2.clone()],
            vec![],
            None,
            (false, "Invalid", "spec.http[0].route[0].weight: must be at least 0 (and 1 more error)"),
        ),
        (
            vec![warn.clone()],
            vec![&refused],
            None,
            (false, "Refused", "spec.http[0].match[0].uri.regex: Envoy refuses this regex"),
        ),
        (vec![err.clone()], vec![&refused, &refused], None, (false, "Invalid", "(and 2 more errors)")),
        (vec![], vec![], Some("networking.amime.dev"), (false, "Conflict", "networking.amime.dev")),
    ];
    for (source, translation, shadowed, (accepted, reason, message)) in cases {
        let v = verdict(&source, &translation, shadowed);
        assert_eq!((v.accepted, v.reason), (accepted, reason), "{source:?} {translation:?}");
        assert!(v.message.contains(message), "{:?} does not contain {message:?}", v.message);
    }
    let long = d(Severity::Error, "spec", &"x".repeat(5000));
    assert!(verdict(&[long], &[], None).message.len() < 1200);
}

fn target(tracked: Tracked) -> StatusTarget {
    StatusTarget {
        feed: FeedId::new(Kind::VirtualService, Group::Amime),
        version: "v1".into(),
        plural: "virtualservices".into(),
        namespace: "ns".into(),
        name: "r".into(),
        tracked,
        problems: vec![],
        shadowed_by: None,
        good: None,
    }
}

#[test]
fn a_write_happens_only_when_the_object_does_not_carry_the_verdict() {
    let carried = accepted_condition(Some(&json!({"conditions": [
        {"type": "Other", "status": "True"},
        {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "accepted",
         "observedGeneration": "3", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})));
    assert_eq!(carried.as_ref().unwrap().observed_generation, Some(3), "int-or-string, as Istio writes it");
    let bare = accepted_condition(Some(&json!({"conditions": [{"type": "Accepted", "status": "True"}]})));
    assert_eq!(bare, None, "not metav1.Condition: meshd writes its own");
    let now = "2026-12-02T05:00:00Z";
    let none = |_: &StatusTarget| Vec::new();
    // Already carried: nothing to write (a restart writes nothing).
    let same = Tracked { generation: 3, accepted: carried.clone(), observed_generation: Some(3), ..Tracked::default() };
    assert!(writes(&|_| None, &|_| true, vec![target(same)], none, now).is_empty());
    // A new generation: written, transition time kept (status did not flip).
    let newer =
        Tracked { generation: 4, accepted: carried.clone(), observed_generation: Some(3), ..Tracked::default() };
    let w = writes(&|_| None, &|_| true, vec![target(newer)], none, now);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].condition.observed_generation, Some(4));
    assert_eq!(w[0].condition.last_transition_time, "2026-01-01T00:00:00Z");
    // Flipping to False: a new transition time; the patch names both generations.
    let mut broken =
        target(Tracked { generation: 4, accepted: carried, observed_generation: Some(4), ..Tracked::default() });
    broken.problems = vec![d(Severity::Error, "spec.hosts", "required")];
    let w = writes(&|_| None, &|_| true, vec![broken], none, now);
    assert_eq!(w[0].condition.status, "False");
    assert_eq!(w[0].condition.last_transition_time, now);
    let body = patch_body(&w[0].condition);
    assert_eq!(body["status"]["observedGeneration"], 4);
    assert_eq!(body["status"]["conditions"][0]["type"], "Accepted");
    assert_eq!(body["status"]["conditions"][0]["message"], "spec.hosts: required");
    // Never written before: written.
    assert_eq!(
        writes(&|_| None, &|_| true, vec![target(Tracked { generation: 1, ..Tracked::default() })], none, now).len(),
        1
    );
}

/// A write the watch has not delivered back yet is what the object carries: a second
/// change before the echo keeps its transition time when the status does not flip, and
/// takes a new one when it does.
#[test]
fn a_recent_write_not_yet_seen_is_the_current_condition() {
    let none = |_: &StatusTarget| Vec::new();
    let written = Condition {
        type_: "Accepted".into(),
        status: "True".into(),
        reason: "Accepted".into(),
        message: "accepted".into(),
        observed_generation: Some(1),
        last_transition_time: "2026-12-02T05:00:00Z".into(),
    };
    let recent = |_: &StatusTarget| Some(written.clone());
    let later = "2026-12-02T05:00:01Z";
    let mut warned = target(Tracked { generation: 1, ..Tracked::default() });
    warned.problems = vec![d(Severity::Warning, "spec.http[0].retries", "ignored")];
    let w = writes(&recent, &|_| true, vec![warned], none, later);
    assert_eq!(
        (w[0].condition.status.as_str(), w[0].condition.last_transition_time.as_str()),
        ("True", "2026-12-02T05:00:00Z")
    );
    let mut broken = target(Tracked { generation: 1, ..Tracked::default() });
    broken.problems = vec![d(Severity::Error, "spec.hosts", "required")];
    let w = writes(&recent, &|_| true, vec![broken], none, later);
    assert_eq!((w[0].condition.status.as_str(), w[0].condition.last_transition_time.as_str()), ("False", later));
}

/// Until the published translation was built from an object's current version, its
/// translation verdict is unknown: no write (a parse error or a shadowing rival decide
/// without the translation).
#[test]
fn no_verdict_from_a_translation_of_an_older_version() {
    let vs = |weight: u32| {
        let body = json!({"apiVersion": "networking.amime.dev/v1", "kind": "VirtualService",
            "metadata": {"name": "r", "namespace": "ns"}, "spec": {"hosts": ["r"], "http": [{"route": [
            {"destination": {"host": "r"}, "weight": weight}, {"destination": {"host": "s"}, "weight": 100 - weight}]}]}});
        let raw = crate::model::RawObject::from_value(body).unwrap();
        let crate::model::parse::Parsed::Object(o, _) = crate::model::parse_object(&raw).unwrap() else { panic!() };
        o
    };
    let (old, new) = (vs(10), vs(90));
    let published = |o: &MeshObject| *o == old;
    let none = |_: &StatusTarget| Vec::new();
    let now = "2026-12-02T05:00:00Z";
    let current = || {
        let mut t = target(Tracked { generation: 2, ..Tracked::default() });
        t.good = Some(new.clone());
        t
    };
    assert!(writes(&|_| None, &published, vec![current()], none, now).is_empty(), "translation not caught up");
    let mut invalid = current();
    invalid.problems = vec![d(Severity::Error, "spec.hosts", "required")];
    assert_eq!(writes(&|_| None, &published, vec![invalid], none, now).len(), 1, "a parse error decides alone");
    let mut shadowed = current();
    shadowed.shadowed_by = Some(Group::Amime);
    assert_eq!(writes(&|_| None, &published, vec![shadowed], none, now).len(), 1, "shadowed decides alone");
    let caught_up = |o: &MeshObject| *o == new;
    assert_eq!(writes(&|_| None, &caught_up, vec![current()], none, now).len(), 1, "caught up: written");
}
