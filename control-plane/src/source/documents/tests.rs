//! Tests of one file's text → objects and diagnostics.

use super::*;
use serde_json::json;

fn parse(text: &str) -> (Option<BTreeMap<ObjectKey, MeshObject>>, Vec<Diagnostic>) {
    parse_file("f.yaml", text, &BTreeMap::new())
}

/// YAML that Go's and Python's YAML parsers read (checked against PyYAML 6) reads the
/// same here; what they refuse is refused too.
#[test]
fn yaml_reads_as_conforming_parsers_read_it() {
    let cases: &[(&str, Option<Value>)] = &[
        // libyaml refuses these; YAML reads a one-pair mapping.
        ("a: [2001:db8::]\n", Some(json!({"a": [{"2001:db8:": null}]}))),
        ("a: [fe80::, 2001:db8::]\n", Some(json!({"a": [{"fe80:": null}, {"2001:db8:": null}]}))),
        ("a: [x, 'y', 2001:db8::]\n", Some(json!({"a": ["x", "y", {"2001:db8:": null}]}))),
        ("a: [2001:db8::1]\n", Some(json!({"a": ["2001:db8::1"]}))),
        ("a: [2001:db8::/32]\n", Some(json!({"a": ["2001:db8::/32"]}))),
        ("a:\n- 2001:db8::\n", Some(json!({"a": [{"2001:db8:": null}]}))),
        ("a: 001:db8::1\n", Some(json!({"a": "001:db8::1"}))),
        // Merge keys, as YAML 1.1 parsers (Go's, PyYAML) apply them.
        ("a: &x {b: 1, c: 1}\nd:\n  <<: *x\n  c: 2\n", Some(json!({"a": {"b": 1, "c": 1}, "d": {"b": 1, "c": 2}}))),
        (
            "a: &x {b: 1}\ne: &y {f: 1}\nd:\n  <<: [*x, *y]\n",
            Some(json!({"a": {"b": 1}, "e": {"f": 1}, "d": {"b": 1, "f": 1}})),
        ),
        // Go's parser reads these too.
        ("a: 123456789012345678901234567890\n", Some(json!({"a": 1.2345678901234568e29}))),
        ("a: !custom 5\nb: !!str 1\n", Some(json!({"a": 5, "b": "1"}))),
        // Refused by every conforming parser.
        ("a: 2001:db8::\n", None),
        ("a: [::1]\n", None),
        ("a: {b: 2001:db8::}\n", None),
    ];
    for (text, want) in cases {
        let got = yaml_documents(text);
        match want {
            Some(want) => {
                assert_eq!(got.as_ref().ok().and_then(|d| d.first()).map(|d| &d.value), Some(want), "{text:?}: {got:?}")
            }
            None => assert!(got.is_err(), "{text:?} accepted: {got:?}"),
        }
    }
}

#[test]
fn an_ipv6_range_written_bare_refuses_only_its_object() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n\
        apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: e}\n\
        spec: {hosts: [x.example.com], addresses: [2001:db8::], ports: [{number: 80, name: http, protocol: HTTP}]}\n";
    let (objects, problems) = parse(text);
    let objects = objects.expect("the file is read");
    assert_eq!(objects.len(), 1, "the Service stays: {problems:?}");
    let errors: Vec<_> = problems.iter().filter(|p| p.severity == Severity::Error).collect();
    assert_eq!(errors.len(), 1, "{problems:?}");
    assert_eq!(errors[0].document, Some(1));
    assert_eq!(errors[0].field, "spec.addresses[0]");
    assert!(errors[0].message.contains("quote it: \"2001:db8::\""), "{}", errors[0]);
}

#[test]
fn a_list_is_expanded_into_its_items() {
    let text = "apiVersion: v1\nkind: List\nitems:\n\
        - {apiVersion: v1, kind: Service, metadata: {name: a}}\n\
        - {apiVersion: v1, kind: Servcie, metadata: {name: b}}\n\
        - {apiVersion: apps/v1, kind: Deployment, metadata: {name: c}}\n\
        - {apiVersion: v1, kind: Service, metadata: {name: d}}\n";
    let (objects, problems) = parse(text);
    let names: Vec<_> = objects.unwrap().into_keys().map(|k| k.name).collect();
    assert_eq!(names, ["a", "d"]);
    let got: Vec<_> = problems.iter().map(|p| (p.severity, p.document, p.field.as_str())).collect();
    assert_eq!(got, [(Severity::Error, Some(0), "items[1].kind"), (Severity::Info, Some(0), "items[2]")]);
    assert!(problems[0].message.contains("did you mean `Service`?"), "{}", problems[0]);
}

#[test]
fn every_diagnostic_names_file_and_document() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n\
        apiVersion: v1\nkind: Servcie\nmetadata: {name: s}\n---\n\
        apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny}\nspec: {action: DENY}\n---\n\
        apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\n\
        spec: {hosts: [r], http: [{match: [{statPrefix: s}], route: [{destination: {host: r}}]}]}\n---\n\
        apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\n\
        spec: {servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], defaultEndpoint: '127.0.0.1:80'}]}\n---\n\
        [not, an, object]\n";
    let (_, problems) = parse(text);
    let got: Vec<_> = problems.iter().map(|p| (p.document, p.severity)).collect();
    use Severity::*;
    assert_eq!(
        got,
        [
            (Some(0), Info),
            (Some(1), Error),
            (Some(2), Warning),
            (Some(3), Warning),
            (Some(4), Warning),
            (Some(5), Error)
        ]
    );
    assert!(problems.iter().all(|p| p.file.as_deref() == Some("f.yaml")), "{problems:?}");
    assert!(problems[2].message.contains("NOT enforced"), "{}", problems[2]);
}

#[test]
fn a_refused_object_keeps_its_last_good_state() {
    let good = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\n\
        spec: {hosts: [r], http: [{route: [{destination: {host: r}}]}]}\n";
    let (before, _) = parse(good);
    let before = before.unwrap();
    let typo = good.replace("route:", "rout:");
    let (after, problems) = parse_file("f.yaml", &typo, &before);
    assert_eq!(after.unwrap(), before);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "spec.http[0].rout");
    assert!(problems[0].message.contains("did you mean `route`?"), "{}", problems[0]);
    assert!(problems[0].message.contains("last good state"), "{}", problems[0]);
}

#[test]
fn a_key_set_twice_refuses_its_object_only() {
    let good = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\n\
        spec:\n  hosts: [r]\n  http:\n  - route:\n    - destination: {host: r, subset: v1}\n";
    let (before, _) = parse(good);
    let before = before.unwrap();
    let twice = format!("{good}    route:\n    - destination: {{host: r, subset: v2}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: s}}\n");
    let (after, problems) = parse_file("f.yaml", &twice, &before);
    let after = after.unwrap();
    assert_eq!(after.len(), 2, "the Service applies, the rule keeps its last good state");
    let (key, rule) = before.iter().next().unwrap();
    assert_eq!(after.get(key), Some(rule));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!((problems[0].document, problems[0].field.as_str()), (Some(0), "spec.http[0].route"));
    assert!(problems[0].message.contains("twice"), "{}", problems[0]);
    let list = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: a}}\n\
        - {apiVersion: v1, kind: Service, metadata: {name: b, name: c}}\n";
    let (objects, problems) = parse(list);
    assert_eq!(objects.unwrap().len(), 1);
    assert_eq!(problems[0].field, "items[1].metadata.name", "{problems:?}");
}

#[test]
fn an_object_defined_twice_in_a_file_takes_the_later_definition() {
    let svc = |port: u16| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec: {{ports: [{{port: {port}}}]}}\n")
    };
    let text = format!("{}---\n{}", svc(80), svc(81));
    let (objects, problems) = parse(&text);
    let port = |objects: &BTreeMap<ObjectKey, MeshObject>| match objects.values().next() {
        Some(MeshObject::Service(s)) => s.ports[0].port,
        other => panic!("{other:?}"),
    };
    assert_eq!(port(&objects.unwrap()), 81);
    assert_eq!(problems.len(), 1);
    assert_eq!((problems[0].severity, problems[0].document), (Severity::Warning, Some(1)));
    assert!(problems[0].message.contains("document 0"), "{}", problems[0]);
    // A later definition that is refused leaves the earlier one of this file in force.
    let text = format!("{}---\n{}", svc(80), svc(0));
    let (objects, problems) = parse(&text);
    assert_eq!(port(&objects.unwrap()), 80);
    assert_eq!(problems[0].severity, Severity::Error);
    assert!(problems[0].message.contains("last good state"), "{}", problems[0]);
}
