//! Table tests of the filter chains tcp and tls rules make (plain data in, chains out).

use super::*;
use crate::model::{Destination, L4Match, RouteDestination};

fn rule(matches: Vec<L4Match>) -> L4Route {
    let destination = Destination { host: "db".into(), subset: None, port: None };
    L4Route { matches, route: vec![RouteDestination { destination, weight: 100, headers: Default::default() }] }
}

fn subnets(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|s| Cidr::parse(s).expect("valid")).collect()
}

fn tcp_match(port: Option<u16>, nets: &[&str]) -> L4Match {
    L4Match { port, destination_subnets: subnets(nets), ..Default::default() }
}

fn tls_match(sni: &[&str], nets: &[&str]) -> L4Match {
    L4Match {
        sni_hosts: sni.iter().map(|s| s.to_string()).collect(),
        destination_subnets: subnets(nets),
        ..Default::default()
    }
}

/// (field, subnets, server names) of a chain; "" is the service's own chain.
type Row = (String, Vec<String>, Vec<String>);
/// What a case is about, its rules, the chains they make.
type Case = (&'static str, Vec<L4Route>, Vec<Row>);

fn summary(chains: &[Chain<'_>]) -> Vec<Row> {
    chains
        .iter()
        .map(|c| (c.field.clone(), c.subnets.iter().map(ToString::to_string).collect(), c.server_names.clone()))
        .collect()
}

fn row(field: &str, nets: &[&str], names: &[&str]) -> Row {
    (field.into(), nets.iter().map(|s| s.to_string()).collect(), names.iter().map(|s| s.to_string()).collect())
}

#[test]
fn tcp_rules_become_chains_in_istio_order() {
    let cases: Vec<Case> = vec![
        ("no rules: the service's own", vec![], vec![row("", &[], &[])]),
        (
            "a rule without matches takes everything",
            vec![rule(vec![]), rule(vec![])],
            vec![row("spec.tcp[0]", &[], &[])],
        ),
        (
            "subnets first, then the service's own",
            vec![rule(vec![tcp_match(None, &["10.0.0.0/8"]), tcp_match(Some(27017), &["192.168.0.0/16"])])],
            vec![row("spec.tcp[0]", &["10.0.0.0/8", "192.168.0.0/16"], &[]), row("", &[], &[])],
        ),
        (
            "a match for another port does not apply",
            vec![rule(vec![tcp_match(Some(1), &[])]), rule(vec![tcp_match(Some(27017), &[])])],
            vec![row("spec.tcp[1]", &[], &[])],
        ),
        (
            "a catch-all ends the list",
            vec![
                rule(vec![tcp_match(None, &["10.0.0.0/8"])]),
                rule(vec![tcp_match(None, &["10.1.0.0/16"]), tcp_match(None, &[])]),
                rule(vec![tcp_match(None, &["10.2.0.0/16"])]),
            ],
            vec![row("spec.tcp[0]", &["10.0.0.0/8"], &[]), row("spec.tcp[1]", &[], &[])],
        ),
        (
            "a subnet an earlier rule holds is left out",
            vec![rule(vec![tcp_match(None, &["10.0.0.0/8"])]), rule(vec![tcp_match(None, &["10.0.0.0/8"])])],
            vec![row("spec.tcp[0]", &["10.0.0.0/8"], &[]), row("", &[], &[])],
        ),
        (
            "a match for another gateway does not apply",
            vec![rule(vec![L4Match { gateways: vec!["egress".into()], ..Default::default() }])],
            vec![row("", &[], &[])],
        ),
    ];
    for (what, rules, want) in cases {
        assert_eq!(summary(&tcp_chains(&rules, 27017)), want, "{what}");
    }
}

#[test]
fn tls_rules_become_chains_by_sni() {
    let cases: Vec<Case> = vec![
        ("no rules: the service's own", vec![], vec![row("", &[], &[])]),
        (
            "one chain per match",
            vec![rule(vec![tls_match(&["a.example"], &[]), tls_match(&["b.example", "*.c.example"], &[])])],
            vec![
                row("spec.tls[0].match[0]", &[], &["a.example"]),
                row("spec.tls[0].match[1]", &[], &["b.example", "*.c.example"]),
            ],
        ),
        (
            "`*` is any name",
            vec![rule(vec![tls_match(&["a.example", "*"], &[])])],
            vec![row("spec.tls[0].match[0]", &[], &[])],
        ),
        (
            "an SNI host an earlier rule holds is left out; a match left with none is dropped",
            vec![
                rule(vec![tls_match(&["a.example"], &[])]),
                rule(vec![tls_match(&["a.example", "b.example"], &[]), tls_match(&["a.example"], &[])]),
            ],
            vec![row("spec.tls[0].match[0]", &[], &["a.example"]), row("spec.tls[1].match[0]", &[], &["b.example"])],
        ),
        (
            "subnets split a match, one chain each",
            vec![rule(vec![tls_match(&["a.example"], &["10.0.0.0/8", "10.1.0.0/16"])])],
            vec![
                row("spec.tls[0].match[0]#10.0.0.0/8", &["10.0.0.0/8"], &["a.example"]),
                row("spec.tls[0].match[0]#10.1.0.0/16", &["10.1.0.0/16"], &["a.example"]),
            ],
        ),
        (
            "matches for another port leave the service's own",
            vec![rule(vec![L4Match { port: Some(8443), ..tls_match(&["a.example"], &[]) }])],
            vec![row("", &[], &[])],
        ),
    ];
    for (what, rules, want) in cases {
        assert_eq!(summary(&tls_chains(&rules, 443)), want, "{what}");
    }
}
