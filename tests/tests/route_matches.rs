//! Every kind of VirtualService HTTP match end to end: real `meshd`, `meshctl bootstrap` and
//! Envoy (productpage's sidecar, explicit mode). Each rule takes its own path prefix plus
//! one condition and answers itself (`directResponse`, its name as the body), so a request
//! that meets the condition gets the rule's name and one that misses it falls through to
//! reviews v1, an echo upstream. A matcher translated wrongly would route silently
//! elsewhere; here each is seen both matching and not matching.
//!
//! Block 175 belongs to this file.

use amime_e2e::http::proxy_request;
use amime_e2e::mesh;
use amime_e2e::rules::{documents, REVIEWS_DESTINATION_RULE};
use amime_e2e::{run_test, Bookinfo, BookinfoOptions, IpBlock, MeshDir};
use anyhow::ensure;

/// One rule: its name (the body it answers with), its path prefix, and the rest of its
/// match (YAML flow mapping entries).
const RULES: &[(&str, &str, &str)] = &[
    ("uri-regex", "", r#"uri: {regex: "/items/[0-9]+"}"#),
    ("hdr-prefix", "/hp", "headers: {x-user: {prefix: adm}}"),
    ("hdr-regex", "/hr", r#"headers: {x-build: {regex: "v[0-9]+\\.[0-9]+"}}"#),
    ("hdr-present", "/hs", "headers: {x-debug: {}}"),
    ("hdr-absent", "/private", "withoutHeaders: {x-auth: {}}"),
    ("query", "/q", "queryParams: {tier: {exact: gold}}"),
    ("method", "/m", "method: {exact: POST}"),
    ("authority", "/a", "authority: {prefix: reviews.bookinfo}"),
    ("other-port", "/port", "port: 9999"),
    ("no-case", "", "uri: {exact: /CaseBlind}, ignoreUriCase: true"),
];

/// A request (method, URL, headers) and the rule that must answer it (None: reviews v1).
type Case = (&'static str, &'static str, &'static [(&'static str, &'static str)], Option<&'static str>);

fn reviews_vs() -> String {
    let mut rules = String::new();
    for (name, prefix, condition) in RULES {
        let uri = if prefix.is_empty() { String::new() } else { format!("uri: {{prefix: {prefix}}}, ") };
        rules.push_str(&format!(
            "  - name: {name}\n    match: [{{{uri}{condition}}}]\n    directResponse: {{status: 200, body: {{string: \
             {name}}}}}\n"
        ));
    }
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: bookinfo}}\n\
         spec:\n  hosts: [reviews]\n  http:\n{rules}  - route: [{{destination: {{host: reviews, subset: v1}}}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_match_kind_takes_what_it_names_and_nothing_else() {
    run_test("every_match_kind_takes_what_it_names_and_nothing_else", |ctx| async move {
        let block = IpBlock(175);
        let dir = MeshDir::new(&ctx)?;
        dir.write("mesh.yaml", &mesh::bookinfo_mesh_yaml(block)?)?;
        dir.write("reviews-rules.yaml", &documents(&[REVIEWS_DESTINATION_RULE, &reviews_vs()]))?;
        let bookinfo = Bookinfo::start(&ctx, block, dir, BookinfoOptions::default()).await?;
        let proxy = bookinfo.productpage.proxy_addr();
        // (method, URL, headers, the rule that must answer, or None: reviews v1).
        let cases: &[Case] = &[
            ("GET", "http://reviews:9080/items/12", &[], Some("uri-regex")),
            ("GET", "http://reviews:9080/items/12x", &[], None),
            ("GET", "http://reviews:9080/hp", &[("x-user", "admin")], Some("hdr-prefix")),
            ("GET", "http://reviews:9080/hp", &[("x-user", "guest")], None),
            ("GET", "http://reviews:9080/hr", &[("x-build", "v1.25")], Some("hdr-regex")),
            ("GET", "http://reviews:9080/hr", &[("x-build", "v1.25-rc")], None),
            ("GET", "http://reviews:9080/hs", &[("x-debug", "1")], Some("hdr-present")),
            ("GET", "http://reviews:9080/hs", &[], None),
            ("GET", "http://reviews:9080/private", &[], Some("hdr-absent")),
            ("GET", "http://reviews:9080/private", &[("x-auth", "token")], None),
            ("GET", "http://reviews:9080/q?tier=gold&x=1", &[], Some("query")),
            ("GET", "http://reviews:9080/q?tier=silver", &[], None),
            ("POST", "http://reviews:9080/m", &[], Some("method")),
            ("GET", "http://reviews:9080/m", &[], None),
            ("GET", "http://reviews.bookinfo:9080/a", &[], Some("authority")),
            ("GET", "http://reviews:9080/a", &[], None),
            ("GET", "http://reviews:9080/port", &[], None),
            ("GET", "http://reviews:9080/casEBLIND", &[], Some("no-case")),
            ("GET", "http://reviews:9080/CaseBlindness", &[], None),
        ];
        for (method, url, headers, want) in cases {
            let r = proxy_request(proxy, method, url, headers).await?;
            match want {
                Some(rule) => ensure!(
                    r.status == 200 && r.body == *rule,
                    "{method} {url} {headers:?} should be answered by rule {rule}: {}",
                    r.summary()
                ),
                None => ensure!(
                    r.status == 200 && r.json_str("version").as_deref() == Some("v1"),
                    "{method} {url} {headers:?} should fall through to reviews v1: {}",
                    r.summary()
                ),
            }
        }
        eprintln!("{} requests, each matched or missed as its rule says", cases.len());
        bookinfo.check_no_nacks().await
    })
    .await;
}
