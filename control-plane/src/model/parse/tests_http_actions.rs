//! Table tests of `redirect`, `directResponse`, `delegate`, `rewrite`, mirrors and
//! `corsPolicy`: what is read, and each invalid value refused with its field named.

use super::*;

fn parse(rule: &str) -> Result<Parsed, Diagnostic> {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: ns}}\n\
         spec:\n  hosts: [r]\n  http: [{{{rule}}}]\n"
    );
    let value: Value = serde_yaml::from_str(&yaml).expect("test YAML parses");
    parse_object(&RawObject::from_value(value)?)
}

const ROUTE: &str = "route: [{destination: {host: r}}]";

/// The rule read from `rule`, and its warnings' fields.
fn read(rule: &str) -> (HttpRoute, Vec<String>) {
    match parse(rule) {
        Ok(Parsed::Object(MeshObject::VirtualService(vs), warnings)) => {
            (vs.http[0].clone(), warnings.into_iter().map(|w| w.field).collect())
        }
        other => panic!("{rule}: {other:?}"),
    }
}

#[test]
fn answers_and_delegation_are_read() {
    let (r, _) = read("redirect: {uri: /v2, authority: b:8080, scheme: https, port: 8443, redirectCode: 308}");
    let want = Redirect {
        path: Some(RedirectPath::Whole("/v2".into())),
        authority: Some("b:8080".into()),
        port: Some(RedirectPort::Number(8443)),
        scheme: Some("https".into()),
        code: 308,
    };
    assert_eq!(r.redirect, Some(want));
    assert!(r.route.is_empty());
    let (r, _) = read("redirect: {prefixRewrite: /new/, derivePort: FROM_REQUEST_PORT}");
    let redirect = r.redirect.unwrap();
    assert_eq!(
        (redirect.path, redirect.port, redirect.code),
        (Some(RedirectPath::Prefix("/new/".into())), Some(RedirectPort::RequestPort), 301)
    );
    let (r, _) = read("directResponse: {status: 503, body: {string: down}}");
    assert_eq!(r.direct_response, Some(DirectResponse { status: 503, body: Some(ResponseBody::Text("down".into())) }));
    let (r, _) = read("directResponse: {status: 200, body: {bytes: aGk=}}");
    assert_eq!(r.direct_response.unwrap().body, Some(ResponseBody::Bytes(b"hi".to_vec())));
    let (r, _) = read("delegate: {name: reviews-v2}");
    assert_eq!(r.delegate, Some(Delegate { name: "reviews-v2".into(), namespace: "ns".into() }));
    let (r, _) = read("delegate: {name: d, namespace: other}");
    assert_eq!(r.delegate.unwrap().namespace, "other");
}

#[test]
fn rewrites_mirrors_and_cors_are_read() {
    let (r, w) = read(&format!("rewrite: {{uri: /v1/, authority: internal}}, websocketUpgrade: true, {ROUTE}"));
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        r.actions.rewrite,
        Some(Rewrite { uri: Some("/v1/".into()), authority: Some("internal".into()), regex: None })
    );
    let (r, _) = read(&format!(r"rewrite: {{uriRegexRewrite: {{match: '^/a/(\w+)$', rewrite: '/b/\1'}}}}, {ROUTE}"));
    assert_eq!(r.actions.rewrite.unwrap().regex, Some((r"^/a/(\w+)$".into(), r"/b/\1".into())));

    let (r, _) = read(&format!("mirror: {{host: m, subset: v2}}, {ROUTE}"));
    assert_eq!(r.actions.mirrors.len(), 1);
    assert_eq!(r.actions.mirrors[0].per_million, 1_000_000, "Istio mirrors 100% by default");
    assert_eq!(r.actions.mirrors[0].destination.subset.as_deref(), Some("v2"));
    for (share, want) in
        [("mirrorPercentage: {value: 12.5}", 125_000), ("mirror_percent: 20", 200_000), ("mirrorPercent: 5", 50_000)]
    {
        let (r, _) = read(&format!("mirror: {{host: m}}, {share}, {ROUTE}"));
        assert_eq!(r.actions.mirrors[0].per_million, want, "{share}");
    }
    let (r, _) = read(&format!("mirror: {{host: m}}, mirrorPercentage: {{value: 0}}, {ROUTE}"));
    assert!(r.actions.mirrors.is_empty(), "0% mirrors nothing, as in Istio");
    let (r, _) = read(&format!(
        "mirrors: [{{destination: {{host: a}}, percentage: {{value: 50}}}}, {{destination: {{host: b}}}}], {ROUTE}"
    ));
    let shares: Vec<_> = r.actions.mirrors.iter().map(|m| (m.destination.host.as_str(), m.per_million)).collect();
    assert_eq!(shares, [("a", 500_000), ("b", 1_000_000)]);
    let (_, w) = read(&format!("mirrorPercentage: {{value: 5}}, {ROUTE}"));
    assert_eq!(w, ["spec.http[0].mirrorPercentage"]);

    let (r, _) = read(&format!(
        "corsPolicy: {{allowOrigins: [{{exact: 'https://a'}}, {{regex: 'https://.*\\.b'}}], allowMethods: [GET, POST], \
         allowHeaders: [x-a], exposeHeaders: [x-b], maxAge: 24h, allowCredentials: true, unmatchedPreflights: IGNORE}}, {ROUTE}"
    ));
    let cors = r.actions.cors.unwrap();
    assert_eq!(
        cors.allow_origins,
        [StringMatch::Exact("https://a".into()), StringMatch::Regex(r"https://.*\.b".into())]
    );
    assert_eq!(
        (cors.max_age, cors.allow_credentials, cors.forward_unmatched_preflights),
        (Some(86400), Some(true), false)
    );
    let (r, _) = read(&format!("corsPolicy: {{allowOrigin: ['https://a']}}, {ROUTE}"));
    let cors = r.actions.cors.unwrap();
    assert_eq!(cors.allow_origins, [StringMatch::Exact("https://a".into())]);
    assert!(cors.forward_unmatched_preflights, "FORWARD is the default");
}

#[test]
fn invalid_values_name_their_field() {
    let cases = [
        (format!("redirect: {{uri: /a}}, {ROUTE}"), "spec.http[0].redirect", "cannot have redirect too"),
        ("directResponse: {status: 200}, redirect: {uri: /a}".to_owned(), "spec.http[0].directResponse", "cannot have"),
        (format!("delegate: {{name: d}}, {ROUTE}"), "spec.http[0].delegate", "cannot have delegate"),
        ("name: empty".to_owned(), "spec.http[0].route", "give route, redirect, directResponse or delegate"),
        (
            "redirect: {uri: /a, prefixRewrite: /b}".to_owned(),
            "spec.http[0].redirect",
            "only one of uri and prefixRewrite",
        ),
        ("redirect: {port: 80, derivePort: FROM_REQUEST_PORT}".to_owned(), "spec.http[0].redirect", "only one of port"),
        ("redirect: {redirectCode: 304}".to_owned(), "spec.http[0].redirect.redirectCode", "not one of 301"),
        ("redirect: {port: 70000}".to_owned(), "spec.http[0].redirect.port", "out of range"),
        ("redirect: {scheme: 'ht tp'}".to_owned(), "spec.http[0].redirect.scheme", "not a URL scheme"),
        ("redirect: {authority: 'a b'}".to_owned(), "spec.http[0].redirect.authority", "not a host"),
        ("redirect: {uri: /a}, rewrite: {uri: /b}".to_owned(), "spec.http[0].rewrite", "cannot rewrite"),
        ("directResponse: {status: 99}".to_owned(), "spec.http[0].directResponse.status", "not an HTTP status"),
        ("directResponse: {}".to_owned(), "spec.http[0].directResponse.status", "required"),
        (
            "directResponse: {status: 200, body: {string: a, bytes: YQ==}}".to_owned(),
            "spec.http[0].directResponse.body",
            "only one",
        ),
        (
            "directResponse: {status: 200, body: {bytes: '%%%'}}".to_owned(),
            "spec.http[0].directResponse.body.bytes",
            "not base64",
        ),
        (
            format!("directResponse: {{status: 200, body: {{string: {}}}}}", "x".repeat(5000)),
            "spec.http[0].directResponse.body.string",
            "4096",
        ),
        ("delegate: {namespace: ns}".to_owned(), "spec.http[0].delegate.name", "required"),
        ("delegate: {name: Bad_Name}".to_owned(), "spec.http[0].delegate.name", "not a valid object name"),
        (
            format!("rewrite: {{uri: /a, uriRegexRewrite: {{match: a, rewrite: b}}}}, {ROUTE}"),
            "spec.http[0].rewrite",
            "only one",
        ),
        (
            format!("rewrite: {{uriRegexRewrite: {{match: '(a', rewrite: b}}}}, {ROUTE}"),
            "spec.http[0].rewrite.uriRegexRewrite.match",
            "invalid regular expression",
        ),
        (
            format!("rewrite: {{uriRegexRewrite: {{match: a}}}}, {ROUTE}"),
            "spec.http[0].rewrite.uriRegexRewrite.rewrite",
            "required",
        ),
        (
            format!(r"rewrite: {{uriRegexRewrite: {{match: '(a)', rewrite: '\2'}}}}, {ROUTE}"),
            "spec.http[0].rewrite.uriRegexRewrite.rewrite",
            "does not have",
        ),
        (format!("rewrite: {{authority: 'a/b'}}, {ROUTE}"), "spec.http[0].rewrite.authority", "not a host"),
        (format!("rewrite: {{}}, {ROUTE}"), "spec.http[0].rewrite", "give uri, authority or uriRegexRewrite"),
        (format!("mirror: {{host: ''}}, {ROUTE}"), "spec.http[0].mirror.host", "required"),
        (
            format!("mirror: {{host: a}}, mirrors: [{{destination: {{host: b}}}}], {ROUTE}"),
            "spec.http[0].mirrors",
            "only one of mirror and mirrors",
        ),
        (
            format!("mirror: {{host: a}}, mirrorPercentage: {{value: 101}}, {ROUTE}"),
            "spec.http[0].mirrorPercentage.value",
            "between 0 and 100",
        ),
        (
            format!("mirror: {{host: a}}, mirror_percent: 101, {ROUTE}"),
            "spec.http[0].mirror_percent",
            "between 0 and 100",
        ),
        (
            format!("mirrors: [{{percentage: {{value: 5}}}}], {ROUTE}"),
            "spec.http[0].mirrors[0].destination",
            "required",
        ),
        (
            format!("mirrors: [{{destination: {{host: a, subset: ''}}}}], {ROUTE}"),
            "spec.http[0].mirrors[0].destination.subset",
            "must not be empty",
        ),
        (
            format!("corsPolicy: {{allowMethods: [GETT]}}, {ROUTE}"),
            "spec.http[0].corsPolicy.allowMethods[0]",
            "not an HTTP method",
        ),
        (
            format!("corsPolicy: {{allowHeaders: ['a b']}}, {ROUTE}"),
            "spec.http[0].corsPolicy.allowHeaders[0]",
            "not a header name",
        ),
        (format!("corsPolicy: {{maxAge: 1.5s}}, {ROUTE}"), "spec.http[0].corsPolicy.maxAge", "whole seconds"),
        (
            format!("corsPolicy: {{allowOrigins: [{{}}]}}, {ROUTE}"),
            "spec.http[0].corsPolicy.allowOrigins[0]",
            "give exact, prefix or regex",
        ),
        (
            format!("corsPolicy: {{allowOrigins: [{{regex: '('}}]}}, {ROUTE}"),
            "spec.http[0].corsPolicy.allowOrigins[0].regex",
            "invalid regular expression",
        ),
        (
            format!("corsPolicy: {{unmatchedPreflights: DROP}}, {ROUTE}"),
            "spec.http[0].corsPolicy.unmatchedPreflights",
            "not FORWARD or IGNORE",
        ),
    ];
    for (rule, field, message) in cases {
        match parse(&rule) {
            Err(e) => {
                assert_eq!(e.field, field, "{rule}: {e}");
                assert!(e.message.contains(message), "{rule}: {e}");
            }
            Ok(p) => panic!("accepted: {rule}: {p:?}"),
        }
    }
}
