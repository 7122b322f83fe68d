//! Table tests of RateLimit: what is read (with the defaults), and each invalid value
//! refused with its field named.

use std::time::Duration;

use super::*;

fn parse_spec(spec: &str) -> Result<Parsed, Diagnostic> {
    let yaml = format!(
        "apiVersion: networking.amime.dev/v1\nkind: RateLimit\nmetadata: {{name: rl, namespace: ns}}\nspec: {spec}\n"
    );
    let value: Value = serde_yaml::from_str(&yaml).expect("test YAML parses");
    parse_object(&RawObject::from_value(value)?)
}

fn rate_limit(spec: &str) -> RateLimit {
    match parse_spec(spec) {
        Ok(Parsed::Object(MeshObject::RateLimit(rl), warnings)) => {
            assert!(warnings.is_empty(), "{spec}: {warnings:?}");
            rl
        }
        other => panic!("{spec}: {other:?}"),
    }
}

#[test]
fn fields_are_read_with_their_defaults() {
    let rl = rate_limit("{tokenBucket: {maxTokens: 10, fillInterval: 1s}}");
    assert_eq!(rl.selector, Labels::new(), "no selector: the whole namespace");
    let bucket = TokenBucket { max_tokens: 10, tokens_per_fill: 10, fill_interval: Duration::from_secs(1) };
    assert_eq!(rl.bucket, Some(bucket));
    assert_eq!((rl.status_code, rl.x_rate_limit_headers, rl.rules.len()), (429, false, 0));

    let rl = rate_limit(
        "{selector: {matchLabels: {app: reviews}}, statusCode: 503, xRateLimitHeaders: true, rules: [\
         {name: api, match: {uri: {prefix: /api}, method: {exact: POST}, port: 9080}, \
          tokenBucket: {maxTokens: 2, tokensPerFill: 1, fillInterval: 500ms}}]}",
    );
    assert_eq!(rl.selector.get("app").map(String::as_str), Some("reviews"));
    assert_eq!((rl.bucket, rl.status_code, rl.x_rate_limit_headers), (None, 503, true));
    let rule = &rl.rules[0];
    assert_eq!(rule.name.as_deref(), Some("api"));
    assert_eq!(rule.matched.uri, Some(StringMatch::Prefix("/api".into())));
    assert_eq!(rule.matched.method, Some(StringMatch::Exact("POST".into())));
    assert_eq!(rule.matched.port, Some(9080));
    let bucket = TokenBucket { max_tokens: 2, tokens_per_fill: 1, fill_interval: Duration::from_millis(500) };
    assert_eq!(rule.bucket, bucket);
}

#[test]
fn invalid_values_are_refused_with_the_field_named() {
    let rule = |r: &str| format!("{{rules: [{{{r}}}]}}");
    let b = "tokenBucket: {maxTokens: 1, fillInterval: 1s}";
    let cases = [
        ("{}".to_owned(), "spec.tokenBucket", "required when there are no rules"),
        ("{tokenBucket: {fillInterval: 1s}}".into(), "spec.tokenBucket.maxTokens", "required"),
        ("{tokenBucket: {maxTokens: 0, fillInterval: 1s}}".into(), "spec.tokenBucket.maxTokens", "between 1"),
        ("{tokenBucket: {maxTokens: 5000000000, fillInterval: 1s}}".into(), "spec.tokenBucket.maxTokens", "between 1"),
        (
            "{tokenBucket: {maxTokens: 1, tokensPerFill: -1, fillInterval: 1s}}".into(),
            "spec.tokenBucket.tokensPerFill",
            "between 1",
        ),
        ("{tokenBucket: {maxTokens: 1}}".into(), "spec.tokenBucket.fillInterval", "required"),
        ("{tokenBucket: {maxTokens: 1, fillInterval: 10ms}}".into(), "spec.tokenBucket.fillInterval", "50ms"),
        ("{tokenBucket: {maxTokens: 1, fillInterval: soon}}".into(), "spec.tokenBucket.fillInterval", "not a duration"),
        ("{tokenBucket: {maxTokens: 1, fillInterval: 1s, burst: 3}}".into(), "spec.tokenBucket.burst", "unknown field"),
        (format!("{{{b}, statusCode: 420}}"), "spec.statusCode", "not an HTTP error status"),
        (format!("{{{b}, statusCode: 200}}"), "spec.statusCode", "not an HTTP error status"),
        (
            format!("{{{b}, selector: {{matchLabel: {{app: r}}}}}}"),
            "spec.selector.matchLabel",
            "did you mean `matchLabels`?",
        ),
        (format!("{{{b}, rule: []}}"), "spec.rule", "did you mean `rules`?"),
        (rule(b), "spec.rules[0].match", "required"),
        (rule("match: {uri: {prefix: /a}}"), "spec.rules[0].tokenBucket", "required"),
        (
            rule(&format!("match: {{uri: {{regex: '(('}}}}, {b}")),
            "spec.rules[0].match.uri.regex",
            "invalid regular expression",
        ),
        (
            rule(&format!("match: {{sourceLabels: {{app: x}}}}, {b}")),
            "spec.rules[0].match.sourceLabels",
            "not supported",
        ),
        (rule(&format!("match: [{{uri: {{prefix: /a}}}}], {b}")), "spec.rules[0].match", "one match per rule"),
        (rule(&format!("name: 'a b', match: {{}}, {b}")), "spec.rules[0].name", "letters"),
        (
            format!("{{rules: [{{name: a, match: {{}}, {b}}}, {{name: a, match: {{}}, {b}}}]}}"),
            "spec.rules[1].name",
            "earlier rule",
        ),
        (
            rule("match: {}, tokenBucket: {maxTokens: 1, fillInterval: 1ms}"),
            "spec.rules[0].tokenBucket.fillInterval",
            "50ms",
        ),
    ];
    for (spec, field, message) in cases {
        match parse_spec(&spec) {
            Err(e) => {
                assert_eq!(e.field, field, "field for {spec}: {e}");
                assert!(e.message.contains(message), "message for {spec}: {e}");
                assert_eq!(e.kind.as_deref(), Some("RateLimit"));
            }
            Ok(p) => panic!("{spec} was accepted: {p:?}"),
        }
    }
}
