//! Table tests of Istio's DestinationRule lookup.

use super::*;

const ROOT: &str = "amime-system";

/// A rule of `namespace` exported as `export` (`*`, or namespaces; `.` is its own),
/// with `selector` (`key=value`) when not empty.
fn rule(namespace: &str, export: &[&str], selector: &str) -> RuleScope {
    let export_to = if export == ["*"] {
        ExportTo::All
    } else {
        ExportTo::Namespaces(export.iter().map(|n| if *n == "." { namespace } else { n }.to_string()).collect())
    };
    let selector = (!selector.is_empty()).then(|| {
        let (k, v) = selector.split_once('=').expect("key=value");
        [(k.to_owned(), v.to_owned())].into()
    });
    RuleScope { namespace: namespace.to_owned(), export_to, selector }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// What a case says, the rules (by namespace/name), the proxy's namespace and labels, the
/// host's namespace, and the rule it should use.
type Case<'a> = (&'a str, Vec<RuleScope>, &'a str, &'a Labels, &'a str, Option<usize>);

#[test]
fn the_lookup_follows_istio() {
    let app_a = labels(&[("app", "a"), ("version", "v1")]);
    let app_b = labels(&[("app", "b")]);
    let cases: Vec<Case<'_>> = vec![
        ("no rule", vec![], "front", &app_a, "back", None),
        ("the host's namespace, exported everywhere", vec![rule("back", &["*"], "")], "front", &app_a, "back", Some(0)),
        (
            "the host's namespace, private: its own proxies",
            vec![rule("back", &["."], "")],
            "back",
            &app_a,
            "back",
            Some(0),
        ),
        ("the host's namespace, private: not others", vec![rule("back", &["."], "")], "front", &app_a, "back", None),
        ("exported to the caller by name", vec![rule("back", &["front"], "")], "front", &app_a, "back", Some(0)),
        ("exported elsewhere only, not to its own", vec![rule("back", &["front"], "")], "back", &app_a, "back", None),
        (
            "the caller's namespace before the host's",
            vec![rule("back", &["*"], ""), rule("front", &["."], "")],
            "front",
            &app_a,
            "back",
            Some(1),
        ),
        (
            "a third namespace's rule is for its own proxies only",
            vec![rule("other", &["*"], "")],
            "front",
            &app_a,
            "back",
            None,
        ),
        ("the root's, exported", vec![rule(ROOT, &["*"], "")], "front", &app_a, "back", Some(0)),
        ("the root's, private", vec![rule(ROOT, &["."], "")], "front", &app_a, "back", None),
        (
            "the host's namespace before the root",
            vec![rule(ROOT, &["*"], ""), rule("back", &["*"], "")],
            "front",
            &app_a,
            "back",
            Some(1),
        ),
        (
            "a root proxy: the root's private rule first",
            vec![rule(ROOT, &["."], ""), rule("back", &["*"], "")],
            ROOT,
            &app_a,
            "back",
            Some(0),
        ),
        (
            "a root proxy: the host's namespace before the root's exported rule",
            vec![rule(ROOT, &["*"], ""), rule("back", &["*"], "")],
            ROOT,
            &app_a,
            "back",
            Some(1),
        ),
        (
            "a matching selector wins over the catch-all",
            vec![rule("front", &["."], ""), rule("front", &["."], "app=a")],
            "front",
            &app_a,
            "back",
            Some(1),
        ),
        (
            "no matching selector: the catch-all",
            vec![rule("front", &["."], ""), rule("front", &["."], "app=a")],
            "front",
            &app_b,
            "back",
            Some(0),
        ),
        (
            "a selector of the caller's namespace that does not match stops the lookup (as in Istio)",
            vec![rule("back", &["*"], ""), rule("front", &["."], "app=a")],
            "front",
            &app_b,
            "back",
            None,
        ),
        (
            "a selector rule of the host's namespace is never used by other namespaces",
            vec![rule("back", &["."], "app=a")],
            "front",
            &app_a,
            "back",
            None,
        ),
        (
            "the first catch-all by name",
            vec![rule("back", &["*"], ""), rule("back", &["*"], "")],
            "back",
            &app_a,
            "back",
            Some(0),
        ),
    ];
    for (what, rules, namespace, proxy_labels, host_namespace, want) in cases {
        assert_eq!(choose(&rules, namespace, proxy_labels, host_namespace, ROOT), want, "{what}");
    }
}

#[test]
fn only_rules_that_differ_by_proxy_make_a_host_scoped() {
    let cases: Vec<(Vec<RuleScope>, Option<Option<usize>>)> = vec![
        (vec![], Some(None)),
        (vec![rule("back", &["*"], "")], Some(Some(0))),
        (vec![rule(ROOT, &["*"], "")], Some(Some(0))),
        (vec![rule("back", &["*"], ""), rule("back", &["*"], "")], Some(Some(0))),
        (vec![rule("back", &["."], "")], None),
        (vec![rule("other", &["*"], "")], None),
        (vec![rule("back", &["*"], ""), rule(ROOT, &["*"], "")], None),
        (vec![rule("back", &["."], "app=a")], None),
    ];
    for (rules, want) in cases {
        assert_eq!(same_for_every_proxy(&rules, "back", ROOT), want, "{rules:?}");
        // Whenever the host is not scoped, every proxy's lookup agrees.
        if let Some(fixed) = want {
            for ns in ["back", "front", ROOT] {
                assert_eq!(choose(&rules, ns, &Labels::new(), "back", ROOT), fixed, "{ns}: {rules:?}");
            }
        }
    }
}
