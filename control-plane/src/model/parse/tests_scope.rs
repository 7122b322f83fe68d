//! Table tests of `exportTo` and the source conditions of HTTP matches.

use super::tests::{dr, parse_yaml, refused, rule, ROUTE, VS};
use super::*;

fn virtual_service(yaml: &str) -> (VirtualService, Vec<Diagnostic>) {
    match parse_yaml(yaml) {
        Ok(Parsed::Object(MeshObject::VirtualService(vs), warnings)) => (vs, warnings),
        other => panic!("{yaml}: {other:?}"),
    }
}

fn with_match(m: &str) -> String {
    rule(&format!("{{match: [{{{m}}}], {ROUTE}}}"))
}

#[test]
fn export_to_resolves_dot_and_defaults_to_every_namespace() {
    let names = |n: &[&str]| ExportTo::Namespaces(n.iter().map(|s| s.to_string()).collect());
    let cases = [
        ("", ExportTo::All),
        ("  exportTo: ['*']\n", ExportTo::All),
        ("  exportTo: ['.']\n", names(&["ns"])),
        ("  exportTo: ['.', other]\n", names(&["ns", "other"])),
        ("  exportTo: [other]\n", names(&["other"])),
    ];
    for (export, want) in cases {
        let (vs, warnings) = virtual_service(&format!("{VS}  hosts: [r]\n{export}  http: [{{{ROUTE}}}]\n"));
        assert_eq!(vs.export_to, want, "{export}");
        assert!(warnings.is_empty(), "{export}: {warnings:?}");
    }
}

#[test]
fn bad_export_to_names_the_entry() {
    let vs = |list: &str| format!("{VS}  hosts: [r]\n  exportTo: {list}\n  http: [{{{ROUTE}}}]\n");
    refused(&[
        (vs("['.', '*']"), "spec.exportTo[1]", "nothing else"),
        (vs("['.', ns]"), "spec.exportTo[1]", "listed twice"),
        (vs("[a, a]"), "spec.exportTo[1]", "listed twice"),
        (vs("['~']"), "spec.exportTo[0]", "only on a ServiceEntry"),
        (vs("[Bad_NS]"), "spec.exportTo[0]", "DNS label"),
        (dr("exportTo: [a, a]"), "spec.exportTo[1]", "listed twice"),
        (dr("exportTo: ['~']"), "spec.exportTo[0]", "only on a ServiceEntry"),
    ]);
}

fn destination_rule(yaml: &str) -> (DestinationRule, Vec<Diagnostic>) {
    match parse_yaml(yaml) {
        Ok(Parsed::Object(MeshObject::DestinationRule(dr), warnings)) => (dr, warnings),
        other => panic!("{yaml}: {other:?}"),
    }
}

#[test]
fn destination_rule_scope_is_read_as_istio_reads_it() {
    let names = |n: &[&str]| ExportTo::Namespaces(n.iter().map(|s| s.to_string()).collect());
    let app_a: Labels = [("app".to_owned(), "a".to_owned())].into();
    let cases = [
        ("exportTo: ['*']", ExportTo::All, None, 0),
        ("exportTo: ['.', other]", names(&["ns", "other"]), None, 0),
        ("workloadSelector: {matchLabels: {app: a}}", names(&["ns"]), Some(app_a.clone()), 0),
        ("workloadSelector: {matchLabels: {app: a}}, exportTo: ['.']", names(&["ns"]), Some(app_a.clone()), 0),
        ("workloadSelector: {matchLabels: {app: a}}, exportTo: [ns]", names(&["ns"]), Some(app_a), 0),
        // No labels: every workload of the namespace, with a warning (as in Istio).
        ("workloadSelector: {}", names(&["ns"]), Some(Labels::new()), 1),
    ];
    for (spec, export_to, selector, warning_count) in cases {
        let (rule, warnings) = destination_rule(&dr(spec));
        assert_eq!((rule.export_to, rule.workload_selector), (export_to, selector), "{spec}");
        assert_eq!(warnings.len(), warning_count, "{spec}: {warnings:?}");
    }
    refused(&[
        (dr("workloadSelector: {matchLabels: {app: a}}, exportTo: ['*']"), "spec.exportTo", "own namespace"),
        (dr("workloadSelector: {matchLabels: {app: a}}, exportTo: [other]"), "spec.exportTo", "own namespace"),
        (dr("workloadSelector: {matchLabels: {app: a}}, exportTo: ['.', b]"), "spec.exportTo", "own namespace"),
        (dr("workloadSelector: {matchLabels: {'a b': x}}"), "spec.workloadSelector.matchLabels.a b", "label key"),
        (dr("workloadSelector: {matchLabels: {app: '-x'}}"), "spec.workloadSelector.matchLabels.app", "label value"),
        (dr("workloadSelector: {matchLabels: {app: a}, labels: {b: c}}"), "spec.workloadSelector.labels", ""),
    ]);
}

#[test]
fn source_conditions_and_scheme_are_read() {
    let (vs, warnings) = virtual_service(&with_match(
        "sourceLabels: {app: productpage, version: v1}, sourceNamespace: front, scheme: {exact: http}",
    ));
    assert!(warnings.is_empty(), "{warnings:?}");
    let m = &vs.http[0].matches[0];
    assert_eq!(m.source_labels.get("app").map(String::as_str), Some("productpage"));
    assert_eq!(m.source_labels.len(), 2);
    assert_eq!(m.source_namespace.as_deref(), Some("front"));
    assert_eq!(m.scheme, Some(StringMatch::Exact("http".into())));
    let (vs, _) = virtual_service(&with_match("gateways: [mesh, ingress/gw]"));
    assert_eq!(vs.http[0].matches[0].gateways, ["mesh", "ingress/gw"]);
}

#[test]
fn bad_source_conditions_name_the_field() {
    refused(&[
        (with_match("sourceLabels: {'-app': a}"), "spec.http[0].match[0].sourceLabels.-app", "label key"),
        (with_match("sourceLabels: {app: 'a b'}"), "spec.http[0].match[0].sourceLabels.app", "label value"),
        (with_match("sourceLabels: {'Bad/app': a}"), "spec.http[0].match[0].sourceLabels.Bad/app", "label key"),
        (with_match("sourceNamespace: Front"), "spec.http[0].match[0].sourceNamespace", "DNS label"),
        (with_match("gateways: [mesh, 'a/b/c']"), "spec.http[0].match[0].gateways[1]", "not `mesh`"),
        (with_match("scheme: {exact: a, prefix: b}"), "spec.http[0].match[0].scheme", "only one"),
    ]);
}

#[test]
fn matches_that_sidecars_skip_are_warned_about() {
    let in_vs = |vs_gateways: &str, m: &str| {
        format!("{VS}  hosts: [r]\n{vs_gateways}  http: [{{match: [{{{m}}}], {ROUTE}}}]\n")
    };
    let cases = [
        (in_vs("  gateways: [ingress]\n", "gateways: [mesh]"), "has no effect"),
        (in_vs("", "gateways: [mesh], sourceLabels: {app: a}"), "not looked at"),
    ];
    for (yaml, want) in cases {
        let (_, warnings) = virtual_service(&yaml);
        assert!(
            warnings.iter().any(|w| w.message.contains(want) && w.field.ends_with("match[0].gateways")),
            "{yaml}: {warnings:?}"
        );
    }
    // A match for gateways only (sidecars skip it) or for every sidecar is plain Istio.
    for m in ["gateways: [mesh]", "gateways: [ingress]"] {
        let (_, warnings) = virtual_service(&in_vs("", m));
        assert!(warnings.is_empty(), "{m}: {warnings:?}");
    }
}
