//! CRD status, computed: the `Accepted` condition each of our (and Istio's) CRD objects
//! should carry, and the merge patch for `/status` when it does not carry it yet. Pure;
//! [`super::status_writer`] sends the patches.
//!
//! Verdict per object (first match wins):
//! - shadowed by the same object in the other group → `Accepted=False`, reason `Conflict`;
//! - a parse error (the object failed validation; its last good version, if any, stays
//!   in force) → `False`, `Invalid`, naming the field;
//! - a translation error (e.g. a rule the Envoy-constraint checker refused) → `False`,
//!   `Refused`, naming the field;
//! - warnings only → `True`, `Accepted`, the warnings in the message;
//! - nothing → `True`, `Accepted`.
//!
//! A message names the first error's field and says how many more there are.
//! `lastTransitionTime` changes only when the condition's status flips.

use serde_json::Value;

use crate::model::{Diagnostic, MeshObject, Severity};

use super::feed::{FeedId, StatusTarget, Tracked};

/// Longest condition message written (the rest is cut, saying so).
const MAX_MESSAGE: usize = 1024;

/// A status condition, read (leniently) and written: the CRDs' type.
pub use crate::crd::status::Condition;

/// The `Accepted` condition in a `status` value, if it has one.
pub fn accepted_condition(status: Option<&Value>) -> Option<Condition> {
    let conditions = status?.get("conditions")?.as_array()?;
    conditions
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(Condition::ACCEPTED))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
}

/// What meshd thinks of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub accepted: bool,
    pub reason: &'static str,
    pub message: String,
}

fn describe(d: &Diagnostic) -> String {
    if d.field.is_empty() {
        d.message.clone()
    } else {
        format!("{}: {}", d.field, d.message)
    }
}

fn more(n: usize, what: &str) -> String {
    match n {
        0 => String::new(),
        1 => format!(" (and 1 more {what})"),
        n => format!(" (and {n} more {what}s)"),
    }
}

/// The verdict on an object from its parse diagnostics (`source`), the translation's
/// problems for it (`translation`) and whether a rival object shadows it (the API group of
/// the one that wins).
pub fn verdict(source: &[Diagnostic], translation: &[&Diagnostic], shadowed_by: Option<&str>) -> Verdict {
    if let Some(group) = shadowed_by {
        return Verdict {
            accepted: false,
            reason: "Conflict",
            message: format!(
                "metadata.name: an object of the same kind and name exists in {}, which takes precedence; this one is \
                 ignored",
                group
            ),
        };
    }
    let errors = |list: &mut dyn Iterator<Item = &Diagnostic>| -> Vec<String> {
        list.filter(|d| d.severity == Severity::Error).map(describe).collect()
    };
    let source_errors = errors(&mut source.iter());
    let translation_errors = errors(&mut translation.iter().copied());
    let total = source_errors.len() + translation_errors.len();
    if let Some(first) = source_errors.first() {
        let message = format!("{first}{}", more(total - 1, "error"));
        return Verdict { accepted: false, reason: "Invalid", message: cut(message) };
    }
    if let Some(first) = translation_errors.first() {
        let message = format!("{first}{}", more(total - 1, "error"));
        return Verdict { accepted: false, reason: "Refused", message: cut(message) };
    }
    let warnings: Vec<String> = source
        .iter()
        .chain(translation.iter().copied())
        .filter(|d| d.severity == Severity::Warning)
        .map(describe)
        .collect();
    let message = match warnings.len() {
        0 => "accepted".to_owned(),
        n => format!("accepted with {n} warning{}: {}", if n == 1 { "" } else { "s" }, warnings.join("; ")),
    };
    Verdict { accepted: true, reason: "Accepted", message: cut(message) }
}

fn cut(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(" …(cut; see meshd's /debug/config_errors)");
    }
    message
}

/// The condition `verdict` means for an object at `generation`, keeping the current
/// condition's transition time unless the status flips (then `now`).
pub fn condition(verdict: &Verdict, generation: i64, current: Option<&Condition>, now: &str) -> Condition {
    let status = if verdict.accepted { "True" } else { "False" };
    let last_transition_time = match current {
        Some(c) if c.status == status && !c.last_transition_time.is_empty() => c.last_transition_time.clone(),
        _ => now.to_owned(),
    };
    Condition {
        type_: Condition::ACCEPTED.to_owned(),
        status: status.to_owned(),
        reason: verdict.reason.to_owned(),
        message: verdict.message.clone(),
        observed_generation: Some(generation),
        last_transition_time,
    }
}

/// Whether `tracked` already says what `wanted` does (transition time aside).
pub fn carries(tracked: &Tracked, wanted: &Condition) -> bool {
    let same = |c: &Condition| {
        c.status == wanted.status
            && c.reason == wanted.reason
            && c.message == wanted.message
            && c.observed_generation == wanted.observed_generation
    };
    tracked.accepted.as_ref().is_some_and(same) && tracked.observed_generation == wanted.observed_generation
}

/// The merge patch for `/status` setting `condition`, in the shape of the CRDs' status
/// ([`crate::crd::status::MeshStatus`]).
pub fn patch_body(condition: &Condition) -> Value {
    use crate::crd::status as crd;
    let status =
        crd::MeshStatus { conditions: vec![condition.clone()], observed_generation: condition.observed_generation };
    serde_json::json!({ "status": status })
}

/// One status write to make.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusWrite {
    pub target: StatusTarget,
    pub condition: Condition,
}

/// The writes that make every target carry its verdict. `translation` gives the
/// translation problems of an object (kind, namespace, name); `recent` the condition
/// meshd wrote on it lately that the watch has not delivered back yet, if any (it, not
/// the stale watched one, decides whether the status flips and so the transition time).
///
/// `translated` says whether the published translation was built from this version of an
/// object: until it was, its translation problems are the previous version's, so a target
/// that has no parse error and is not shadowed waits (the next publish wakes the writer).
/// Otherwise a fixed rule was marked `Refused` at its new generation (or a refused one
/// `Accepted`, so `kubectl wait --for=condition=Accepted` passed) before the push caught up.
pub fn writes<'a>(
    recent: &dyn Fn(&StatusTarget) -> Option<Condition>,
    translated: &dyn Fn(&MeshObject) -> bool,
    targets: Vec<StatusTarget>,
    translation: impl Fn(&StatusTarget) -> Vec<&'a Diagnostic>,
    now: &str,
) -> Vec<StatusWrite> {
    targets
        .into_iter()
        .filter_map(|target| {
            let invalid = target.problems.iter().any(|d| d.severity == Severity::Error);
            if target.shadowed_by.is_none() && !invalid && target.good.as_ref().is_some_and(|g| !translated(g)) {
                return None;
            }
            let problems = if target.shadowed_by.is_some() { Vec::new() } else { translation(&target) };
            let winner = target.shadowed_by.map(|g| FeedId::new(target.feed.kind, g).api_group());
            let verdict = verdict(&target.problems, &problems, winner);
            let current = recent(&target).or_else(|| target.tracked.accepted.clone());
            let condition = condition(&verdict, target.tracked.generation, current.as_ref(), now);
            (!carries(&target.tracked, &condition)).then_some(StatusWrite { target, condition })
        })
        .collect()
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
