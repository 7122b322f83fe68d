//! Table tests of the Telemetry kind.

use super::*;

fn parse_yaml(yaml: &str) -> Result<Parsed, Diagnostic> {
    let value: Value = serde_yaml::from_str(yaml).expect("test YAML parses");
    parse_object(&RawObject::from_value(value)?)
}

const HEAD: &str = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: ns}\nspec:\n";

fn telemetry(spec: &str) -> Telemetry {
    match parse_yaml(&format!("{HEAD}{spec}")) {
        Ok(Parsed::Object(MeshObject::Telemetry(t), warnings)) => {
            assert!(warnings.is_empty(), "{warnings:?}");
            t
        }
        other => panic!("{spec}: {other:?}"),
    }
}

#[test]
fn every_field_meshd_reads() {
    let t = telemetry(
        "  selector: {matchLabels: {app: reviews}}\n  accessLogging:\n  - providers: [{name: envoy}]\n    disabled: false\n    filter: {expression: 'response.code >= 400'}\n  tracing:\n  - providers: [{name: jaeger}]\n    randomSamplingPercentage: 50.5\n    disableSpanReporting: false\n    customTags:\n      team: {literal: {value: books}}\n      user: {header: {name: X-User, defaultValue: anon}}\n      pod: {environment: {name: POD_NAME}}\n",
    );
    assert_eq!(t.selector, Some([("app".to_owned(), "reviews".to_owned())].into()));
    let a = t.access_logging.expect("accessLogging");
    assert_eq!(a.providers, Some(vec!["envoy".to_owned()]));
    assert_eq!(a.filter, Some(ResponseCodeFilter { op: CodeComparison::Ge, code: 400 }));
    let tr = t.tracing.expect("tracing");
    assert_eq!(tr.sampling_millionths, Some(505_000));
    let tags = tr.custom_tags.expect("tags");
    assert_eq!(tags["team"], CustomTag::Literal("books".into()));
    assert_eq!(tags["user"], CustomTag::Header { name: "x-user".into(), default_value: Some("anon".into()) });
    assert_eq!(tags["pod"], CustomTag::Environment { name: "POD_NAME".into(), default_value: None });
    let amime = "apiVersion: telemetry.amime.dev/v1\nkind: Telemetry\nmetadata: {name: t}\nspec: {accessLogging: [{disabled: true}]}\n";
    assert!(matches!(parse_yaml(amime), Ok(Parsed::Object(MeshObject::Telemetry(t), _)) if t.selector.is_none()));
}

#[test]
fn problems_name_the_field() {
    let cases = [
        (
            "  accessLogging: [{filter: {expression: 'response.duration > 10'}}]\n",
            "spec.accessLogging[0].filter.expression",
            "only a response-code comparison",
        ),
        (
            "  accessLogging: [{filter: {expression: 'response.code >= 400 && x'}}]\n",
            "spec.accessLogging[0].filter.expression",
            "other CEL",
        ),
        (
            "  accessLogging: [{disabled: true}, {disabled: false}]\n",
            "spec.accessLogging[1]",
            "one accessLogging entry",
        ),
        ("  accessLogging: [{match: {mode: CLIENT}}]\n", "spec.accessLogging[0].match", "not supported"),
        (
            "  tracing: [{randomSamplingPercentage: 120}]\n",
            "spec.tracing[0].randomSamplingPercentage",
            "between 0 and 100",
        ),
        ("  tracing: [{providers: [{name: a}, {name: b}]}]\n", "spec.tracing[0].providers", "one tracer"),
        (
            "  tracing: [{customTags: {x: {literal: {value: a}, header: {name: b}}}}]\n",
            "spec.tracing[0].customTags.x",
            "exactly one",
        ),
        (
            "  tracing: [{customTags: {x: {header: {defaultValue: b}}}}]\n",
            "spec.tracing[0].customTags.x.header.name",
            "required",
        ),
        ("  tracing: [{sampling: 3}]\n", "spec.tracing[0].sampling", "unknown field"),
        ("  metrics: [{providers: [{name: prometheus}]}]\n", "spec.metrics", "not supported"),
        ("  targetRefs: [{kind: Gateway, name: g}]\n", "spec.targetRefs", "not supported"),
    ];
    for (spec, field, message) in cases {
        let e = parse_yaml(&format!("{HEAD}{spec}")).expect_err(spec);
        assert_eq!(e.field, field, "{spec}: {e}");
        assert!(e.message.contains(message), "{spec}: {e}");
    }
}

#[test]
fn response_code_filters() {
    use CodeComparison::*;
    let cases = [
        ("response.code >= 400", Ok((Ge, 400))),
        ("response.code>399", Ok((Gt, 399))),
        ("response.code == 200", Ok((Eq, 200))),
        ("response.code != 200", Ok((Ne, 200))),
        ("500 <= response.code", Ok((Ge, 500))),
        ("response.code < 300", Ok((Lt, 300))),
        ("request.code >= 400", Err("only a response-code comparison")),
        ("response.code >= 4000", Err("not an HTTP status code")),
        ("response.code >= x", Err("only a response-code comparison")),
    ];
    for (expression, want) in cases {
        match (parse_code_filter(expression), want) {
            (Ok(f), Ok((op, code))) => assert_eq!(f, ResponseCodeFilter { op, code }, "{expression}"),
            (Err(m), Err(part)) => assert!(m.contains(part), "{expression}: {m}"),
            (got, _) => panic!("{expression}: {got:?}"),
        }
    }
}

#[test]
fn the_examples_load() {
    let text = include_str!("../../../../manifests/examples/telemetry/telemetry.yaml");
    let mut n = 0;
    for doc in text.split("\n---\n") {
        match parse_yaml(doc) {
            Ok(Parsed::Object(MeshObject::Telemetry(_), warnings)) => assert!(warnings.is_empty(), "{warnings:?}"),
            other => panic!("{doc}: {other:?}"),
        }
        n += 1;
    }
    assert_eq!(n, 3);
}
