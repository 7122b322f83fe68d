//! The demo's use cases as data: the rule each step applies, and the effect it must show.

use std::time::Duration;

use super::stats::{percent, Summary, User, ERRORS};

/// The fault step's injected delay and abort (Istio's `HTTPFaultInjection`).
pub const FAULT_DELAY: Duration = Duration::from_millis(400);
pub const FAULT_DELAY_PERCENT: f64 = 30.0;
pub const FAULT_ABORT_PERCENT: f64 = 10.0;
pub const FAULT_ABORT_STATUS: u16 = 503;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    AllToV1,
    HeaderRouting,
    Split,
    Fault,
}

/// One use case.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub kind: Kind,
    pub title: &'static str,
    /// What the rule does, in one sentence (fits 76 columns).
    pub explain: &'static str,
    /// What must be seen, in one line.
    pub expect: &'static str,
    /// The names of the VirtualService's HTTP routes: Envoy's route names, so the sidecar's
    /// config dump shows when it has this step's rule.
    pub routes: &'static [&'static str],
}

pub const STEPS: [Step; 4] = [
    Step {
        kind: Kind::AllToV1,
        title: "All traffic to v1",
        explain: "One route for every request: reviews subset v1.",
        expect: "every request answered by v1",
        routes: &["all-to-v1"],
    },
    Step {
        kind: Kind::HeaderRouting,
        title: "Header-based routing",
        explain: "Requests with `end-user: jason` go to v2; everyone else stays on v1.",
        expect: "jason 100% v2, others 100% v1",
        routes: &["jason-to-v2", "others-to-v1"],
    },
    Step {
        kind: Kind::Split,
        title: "A 50:50 split between v1 and v3",
        explain: "Weighted route: 50% to v1, 50% to v3 (a canary, halfway).",
        expect: "v1 and v3 each 35-65%, nothing on v2",
        routes: &["split-v1-v3"],
    },
    Step {
        kind: Kind::Fault,
        title: "Fault injection",
        explain: "Every request to v1; 30% delayed 400 ms, 10% aborted with HTTP 503.",
        expect: "~10% HTTP 503, ~30% of requests >= 400 ms, the rest on v1",
        routes: &["faults-to-v1"],
    },
];

/// The VirtualService `reviews` of a step.
pub fn virtual_service(step: &Step) -> String {
    let route = |name: &str, subset: &str| {
        format!("  - name: {name}\n    route:\n    - destination:\n        host: reviews\n        subset: {subset}\n")
    };
    let http = match step.kind {
        Kind::AllToV1 => route("all-to-v1", "v1"),
        Kind::HeaderRouting => format!(
            "  - name: jason-to-v2\n    match:\n    - headers:\n        end-user:\n          exact: jason\n    route:\n    \
             - destination:\n        host: reviews\n        subset: v2\n{}",
            route("others-to-v1", "v1")
        ),
        Kind::Split => "  - name: split-v1-v3\n    route:\n    - destination:\n        host: reviews\n        subset: v1\n      \
             weight: 50\n    - destination:\n        host: reviews\n        subset: v3\n      weight: 50\n"
            .to_string(),
        Kind::Fault => format!(
            "  - name: faults-to-v1\n    fault:\n      delay:\n        percentage:\n          value: {FAULT_DELAY_PERCENT}\n        \
             fixedDelay: {}s\n      abort:\n        percentage:\n          value: {FAULT_ABORT_PERCENT}\n        \
             httpStatus: {FAULT_ABORT_STATUS}\n    route:\n    - destination:\n        host: reviews\n        subset: v1\n",
            FAULT_DELAY.as_secs_f64()
        ),
    };
    format!(
        "# Step: {}. Written by `meshctl demo`.\napiVersion: networking.amime.dev/v1\nkind: VirtualService\nmetadata:\n  \
         name: reviews\n  namespace: bookinfo\nspec:\n  hosts:\n  - reviews\n  http:\n{http}",
        step.title
    )
}

/// The rules file of a step: the example's DestinationRule (its subsets) and the step's
/// VirtualService. `example_rules` is the example's `reviews-rules.yaml`.
pub fn rules_file(example_rules: &str, step: &Step) -> Option<String> {
    let destination_rule = example_rules.split("\n---\n").find(|d| d.contains("kind: DestinationRule"))?;
    Some(format!("{}\n---\n{}", destination_rule.trim_end(), virtual_service(step)))
}

/// What a step's traffic showed against what it should show.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub passed: bool,
    /// What was measured, in one line.
    pub seen: String,
}

/// The fewest requests a check needs before it says anything.
pub const MIN_SAMPLES: usize = 40;

/// Check a step's effect on its traffic.
pub fn check(step: &Step, s: &Summary) -> Check {
    if s.total < MIN_SAMPLES {
        return Check { passed: false, seen: format!("only {} requests so far", s.total) };
    }
    let share = |label: &str| format!("{label} {:.0}%", s.share(label));
    let errors = if s.count(ERRORS) > 0 { format!(", errors: {}", s.failure_line()) } else { String::new() };
    match step.kind {
        Kind::AllToV1 => {
            let seen = format!(
                "{} of {} on v1 ({}, {}, {}{errors})",
                s.count("v1"),
                s.total,
                share("v1"),
                share("v2"),
                share("v3")
            );
            Check { passed: s.count("v1") == s.total, seen }
        }
        Kind::HeaderRouting => {
            let (jason_v2, jason) = s.user_count(User::Jason, "v2");
            let (others_v1, others) = s.user_count(User::Other, "v1");
            let seen = format!("jason: {} · others: {}{errors}", s.user_line(User::Jason), s.user_line(User::Other));
            Check { passed: jason > 0 && others > 0 && jason_v2 == jason && others_v1 == others, seen }
        }
        Kind::Split => {
            let (v1, v3) = (s.share("v1"), s.share("v3"));
            let even = |p: f64| (35.0..=65.0).contains(&p);
            let seen = format!("{}, {}, {} of {}{errors}", share("v1"), share("v3"), share("v2"), s.total);
            Check { passed: even(v1) && even(v3) && s.count("v1") + s.count("v3") == s.total, seen }
        }
        Kind::Fault => check_fault(s),
    }
}

fn check_fault(s: &Summary) -> Check {
    let aborted = s.failures.get(&format!("HTTP {FAULT_ABORT_STATUS}")).copied().unwrap_or(0);
    let abort_share = percent(aborted, s.total);
    let slow_share = percent(s.slow, s.total);
    // Both faults must show at all, and at about their rate.
    let abort_ok = aborted > 0 && within_tolerance(aborted, s.total, FAULT_ABORT_PERCENT);
    let delay_ok = s.slow > 0 && within_tolerance(s.slow, s.total, FAULT_DELAY_PERCENT);
    let rest_on_v1 = s.count("v1") + aborted == s.total;
    let seen = format!(
        "HTTP {FAULT_ABORT_STATUS} {abort_share:.0}% ({aborted} of {}), >= {} ms {slow_share:.0}%, p50 {} p99 {}, \
         v1 {}{}",
        s.total,
        FAULT_DELAY.as_millis(),
        super::stats::format_latency(s.p50),
        super::stats::format_latency(s.p99),
        s.count("v1"),
        if rest_on_v1 { String::new() } else { format!(", other answers: {}", other_answers(s)) },
    );
    Check { passed: abort_ok && delay_ok && rest_on_v1, seen }
}

fn other_answers(s: &Summary) -> String {
    let mut others: Vec<String> = s
        .rows
        .iter()
        .filter(|r| r.label != "v1" && r.label != ERRORS && r.count > 0)
        .map(|r| format!("{} {}", r.label, r.count))
        .collect();
    others.extend(
        s.failures
            .iter()
            .filter(|(k, _)| **k != format!("HTTP {FAULT_ABORT_STATUS}"))
            .map(|(k, v)| format!("{k} ×{v}")),
    );
    others.join(", ")
}

/// `part` of `n` is a plausible draw of a `percent`% chance: within 4.5 standard deviations
/// of a binomial (a false failure about once in 150,000 checks), and never tighter than ±5 points.
pub fn within_tolerance(part: usize, n: usize, percent: f64) -> bool {
    if n == 0 {
        return false;
    }
    let p = percent / 100.0;
    let sigma = (p * (1.0 - p) / n as f64).sqrt();
    let tolerance = (4.5 * sigma).max(0.05);
    ((part as f64 / n as f64) - p).abs() <= tolerance
}

#[cfg(test)]
mod tests {
    use super::super::stats::{Answer, Sample};
    use super::*;

    /// Requests: who, answered by (a version or a failure), latency in ms, how many.
    type Spec<'a> = (User, &'a str, u64, usize);

    fn samples(spec: &[Spec<'_>]) -> Vec<Sample> {
        let mut out = Vec::new();
        for (user, answer, ms, n) in spec {
            for _ in 0..*n {
                let answer = if answer.starts_with('v') {
                    Answer::Version(answer.to_string())
                } else {
                    Answer::Failed(answer.to_string())
                };
                out.push(Sample { user: *user, answer, latency: Duration::from_millis(*ms) });
            }
        }
        out
    }

    fn run(kind: Kind, spec: &[Spec<'_>]) -> Check {
        let step = STEPS.iter().find(|s| s.kind == kind).unwrap();
        check(step, &Summary::of(&samples(spec), Some(FAULT_DELAY)))
    }

    use User::{Jason, Other};

    #[test]
    fn table_of_effects() {
        let cases: Vec<(Kind, Vec<Spec<'_>>, bool)> = vec![
            (Kind::AllToV1, vec![(Jason, "v1", 5, 50), (Other, "v1", 5, 50)], true),
            (Kind::AllToV1, vec![(Jason, "v1", 5, 50), (Other, "v3", 5, 1)], false),
            (Kind::AllToV1, vec![(Other, "v1", 5, 10)], false), // too few requests
            (Kind::HeaderRouting, vec![(Jason, "v2", 5, 50), (Other, "v1", 5, 50)], true),
            (Kind::HeaderRouting, vec![(Jason, "v2", 5, 49), (Jason, "v1", 5, 1), (Other, "v1", 5, 50)], false),
            (Kind::HeaderRouting, vec![(Jason, "v2", 5, 50), (Other, "v2", 5, 50)], false),
            (Kind::HeaderRouting, vec![(Other, "v1", 5, 100)], false), // no jason traffic seen
            (Kind::Split, vec![(Other, "v1", 5, 35), (Other, "v3", 5, 65)], true),
            (Kind::Split, vec![(Other, "v1", 5, 34), (Other, "v3", 5, 66)], false),
            (Kind::Split, vec![(Other, "v1", 5, 50), (Other, "v3", 5, 49), (Other, "v2", 5, 1)], false),
            (Kind::Split, vec![(Other, "v1", 5, 100)], false),
            (Kind::Fault, vec![(Other, "v1", 5, 60), (Other, "v1", 405, 30), (Other, "HTTP 503", 5, 10)], true),
            // Aborted requests may be delayed too.
            (Kind::Fault, vec![(Other, "v1", 5, 63), (Other, "v1", 405, 27), (Other, "HTTP 503", 405, 10)], true),
            // No fault at all (meshd ignoring the field).
            (Kind::Fault, vec![(Other, "v1", 5, 100)], false),
            // Abort without delay.
            (Kind::Fault, vec![(Other, "v1", 5, 90), (Other, "HTTP 503", 5, 10)], false),
            // Delay without abort.
            (Kind::Fault, vec![(Other, "v1", 5, 70), (Other, "v1", 405, 30)], false),
            // Another version answering.
            (
                Kind::Fault,
                vec![(Other, "v1", 5, 50), (Other, "v3", 5, 10), (Other, "v1", 405, 30), (Other, "HTTP 503", 5, 10)],
                false,
            ),
        ];
        for (kind, spec, want) in cases {
            let got = run(kind, &spec);
            assert_eq!(got.passed, want, "{kind:?} {spec:?}: {}", got.seen);
        }
    }

    #[test]
    fn says_what_was_seen() {
        let c = run(Kind::AllToV1, &[(Jason, "v1", 5, 50), (Other, "v3", 5, 50)]);
        assert_eq!(c.seen, "50 of 100 on v1 (v1 50%, v2 0%, v3 50%)");
        let c = run(Kind::HeaderRouting, &[(Jason, "v1", 5, 25), (Jason, "v3", 5, 25), (Other, "v1", 5, 50)]);
        assert_eq!(c.seen, "jason: v1 50% · v3 50% · others: v1 100%");
        let c = run(Kind::Fault, &[(Other, "v1", 5, 100)]);
        assert_eq!(c.seen, "HTTP 503 0% (0 of 100), >= 400 ms 0%, p50 5 ms p99 5 ms, v1 100");
    }

    #[test]
    fn tolerance() {
        assert!(within_tolerance(24, 240, 10.0) && within_tolerance(12, 240, 10.0) && within_tolerance(40, 240, 10.0));
        assert!(!within_tolerance(0, 240, 10.0) && !within_tolerance(60, 240, 10.0));
        assert!(within_tolerance(72, 240, 30.0) && !within_tolerance(0, 240, 30.0));
        assert!(!within_tolerance(0, 0, 10.0));
    }

    #[test]
    fn rules_files_keep_the_destination_rule_and_name_the_routes() {
        let example = include_str!("../../../manifests/examples/bookinfo/reviews-rules.yaml");
        for step in &STEPS {
            let rules = rules_file(example, step).unwrap();
            assert!(rules.contains("kind: DestinationRule") && rules.contains("subsets:"), "{rules}");
            let docs: Vec<serde_json::Value> =
                rules.split("\n---\n").map(|d| serde_json::to_value(serde_yaml_doc(d)).unwrap()).collect();
            let vs = &docs[1];
            assert_eq!(vs["kind"], "VirtualService");
            let names: Vec<&str> =
                vs["spec"]["http"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
            assert_eq!(names, step.routes, "{}", step.title);
            assert!(step.explain.chars().count() <= 76 && step.expect.chars().count() <= 60, "{}", step.title);
        }
        let fault = virtual_service(&STEPS[3]);
        assert!(fault.contains("fixedDelay: 0.4s") && fault.contains("value: 30") && fault.contains("httpStatus: 503"));
    }

    fn serde_yaml_doc(doc: &str) -> serde_json::Value {
        serde_yaml::from_str(doc).unwrap()
    }
}
