//! Table tests of `tcp` and `tls` rules: what is read, and each invalid value refused
//! with its field named.

use super::*;

fn parse_vs(hosts: &str, rules: &str) -> Result<Parsed, Diagnostic> {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: ns}}\n\
         spec:\n  hosts: {hosts}\n  {rules}\n"
    );
    parse_yaml(&yaml)
}

fn parse_yaml(yaml: &str) -> Result<Parsed, Diagnostic> {
    let value: Value = serde_yaml::from_str(yaml).expect("test YAML parses");
    parse_object(&RawObject::from_value(value)?)
}

fn read(hosts: &str, rules: &str) -> (VirtualService, Vec<Diagnostic>) {
    match parse_vs(hosts, rules) {
        Ok(Parsed::Object(MeshObject::VirtualService(vs), warnings)) => (vs, warnings),
        other => panic!("{rules}: {other:?}"),
    }
}

#[test]
fn tcp_rules_are_read() {
    let (vs, warnings) = read(
        "[db]",
        "tcp: [{match: [{port: 27017, destinationSubnets: [10.1.2.3/16, 10.9.9.9]}], \
         route: [{destination: {host: db, subset: v1}, weight: 80}, {destination: {host: db, subset: v2}, weight: 20}]}, \
         {route: [{destination: {host: db, port: {number: 27018}}}]}]",
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(vs.http.is_empty() && vs.tls.is_empty());
    let m = &vs.tcp[0].matches[0];
    assert_eq!(m.port, Some(27017));
    let subnets: Vec<String> = m.destination_subnets.iter().map(ToString::to_string).collect();
    assert_eq!(subnets, ["10.1.0.0/16", "10.9.9.9/32"]);
    let weights: Vec<u32> = vs.tcp[0].route.iter().map(|d| d.weight).collect();
    assert_eq!(weights, [80, 20]);
    assert_eq!(vs.tcp[0].route[1].destination.subset.as_deref(), Some("v2"));
    assert!(vs.tcp[1].matches.is_empty());
    assert_eq!(vs.tcp[1].route[0].weight, 100, "a lone destination takes everything");
    assert_eq!(vs.tcp[1].route[0].destination.port, Some(27018));
}

#[test]
fn tls_rules_are_read() {
    let (vs, warnings) = read(
        "[secure, a.example, '*.shop.example']",
        "tls: [{match: [{sniHosts: [a.example, x.shop.example, '*.eu.shop.example'], port: 443}], \
         route: [{destination: {host: secure}}]}, \
         {match: [{sniHosts: [b.shop.example], gateways: [mesh]}], route: [{destination: {host: other}}]}]",
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(vs.tls[0].matches[0].sni_hosts, ["a.example", "x.shop.example", "*.eu.shop.example"]);
    assert_eq!(vs.tls[0].matches[0].port, Some(443));
    assert_eq!(vs.tls[1].matches[0].gateways, ["mesh"]);
}

#[test]
fn invalid_tcp_and_tls_rules_name_the_field() {
    let two =
        |w1: &str, w2: &str| format!("route: [{{destination: {{host: a}}{w1}}}, {{destination: {{host: b}}{w2}}}]");
    let cases = [
        ("[db]", "tcp: [{match: [{port: 1}]}]".to_owned(), "spec.tcp[0].route", "at least one"),
        ("[db]", format!("tcp: [{{{}}}]", two("", "")), "spec.tcp[0].route", "all 0 or missing"),
        ("[db]", format!("tcp: [{{{}}}]", two(", weight: 0", ", weight: 0")), "spec.tcp[0].route", "all 0"),
        (
            "[db]",
            format!("tcp: [{{{}}}]", two(", weight: -1", ", weight: 5")),
            "spec.tcp[0].route[0].weight",
            "between",
        ),
        (
            "[db]",
            "tcp: [{route: [{destination: {host: a}, weight: 2147483647}, {destination: {host: b}, weight: \
             2147483647}, {destination: {host: c}, weight: 2}]}]"
                .to_owned(),
            "spec.tcp[0].route",
            "sum",
        ),
        ("[db]", "tcp: [{route: [{weight: 1}]}]".to_owned(), "spec.tcp[0].route[0].destination", "required"),
        (
            "[db]",
            "tcp: [{match: [{destinationSubnets: [10.0.0.0/40]}], route: [{destination: {host: db}}]}]".to_owned(),
            "spec.tcp[0].match[0].destinationSubnets[0]",
            "CIDR",
        ),
        (
            "[db]",
            "tcp: [{match: [{port: 70000}], route: [{destination: {host: db}}]}]".to_owned(),
            "spec.tcp[0].match[0].port",
            "out of range",
        ),
        (
            "[db]",
            "tcp: [{match: [{sourceLabels: {app: x}}], route: [{destination: {host: db}}]}]".to_owned(),
            "spec.tcp[0].match[0].sourceLabels",
            "every workload",
        ),
        (
            "[s]",
            "tls: [{match: [{sniHosts: [s], sourceNamespace: x}], route: [{destination: {host: s}}]}]".to_owned(),
            "spec.tls[0].match[0].sourceNamespace",
            "every namespace",
        ),
        ("[s]", "tls: [{route: [{destination: {host: s}}]}]".to_owned(), "spec.tls[0].match", "at least one match"),
        (
            "[s]",
            "tls: [{match: [{port: 443}], route: [{destination: {host: s}}]}]".to_owned(),
            "spec.tls[0].match[0].sniHosts",
            "required",
        ),
        (
            "[a.example]",
            "tls: [{match: [{sniHosts: [a.example, b.example]}], route: [{destination: {host: s}}]}]".to_owned(),
            "spec.tls[0].match[0].sniHosts[1]",
            "not within",
        ),
        (
            "['*.example']",
            "tls: [{match: [{sniHosts: ['a..example']}], route: [{destination: {host: s}}]}]".to_owned(),
            "spec.tls[0].match[0].sniHosts[0]",
            "not a DNS name",
        ),
        (
            "[s]",
            "tls: [{match: [{sniHosts: [s]}], route: [{destination: {host: s}, headers: {}}]}]".to_owned(),
            "spec.tls[0].route[0].headers",
            "unknown field",
        ),
        (
            "[db]",
            "exportTo: [.]\n  tcp: [{route: [{destination: {host: db}}]}]".to_owned(),
            "spec.exportTo",
            "every namespace",
        ),
    ];
    for (hosts, rules, field, needle) in cases {
        match parse_vs(hosts, &rules) {
            Err(e) => {
                assert_eq!(e.field, field, "{rules}: {e}");
                assert!(e.message.contains(needle), "{rules}: {e}");
            }
            other => panic!("{rules} was accepted: {other:?}"),
        }
    }
}

#[test]
fn l4_conditions_meshd_leaves_out_are_warned_about() {
    let (vs, warnings) = read(
        "[db]",
        "tcp: [{match: [{sourceSubnet: 10.0.0.0/8}, {gateways: [istio-system/egress]}], route: [{destination: {host: db}}]}]",
    );
    assert_eq!(vs.tcp[0].matches.len(), 2);
    let fields: Vec<&str> = warnings.iter().map(|w| w.field.as_str()).collect();
    // A match for a gateway only is plain Istio (sidecars skip it): no warning.
    assert_eq!(fields, ["spec.tcp[0].match[0].sourceSubnet"], "{warnings:?}");
}

#[test]
fn tls_and_https_ports_are_tls() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - {name: https, port: 443}\n  - {name: tls-db, port: 444}\n  - {port: 445, appProtocol: https}\n  - {name: tcp, port: 446, appProtocol: tls}\n  - {name: https-x, port: 447, appProtocol: http}\n";
    let Ok(Parsed::Object(MeshObject::Service(s), _)) = parse_yaml(yaml) else { panic!("rejected") };
    let protocols: Vec<_> = s.ports.iter().map(|p| p.protocol).collect();
    assert_eq!(protocols, [Protocol::Tls, Protocol::Tls, Protocol::Tls, Protocol::Tls, Protocol::Http]);
}
