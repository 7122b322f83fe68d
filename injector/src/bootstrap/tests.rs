//! Unit tests of the bootstrap builder and renderer.

use super::*;

#[test]
fn node_id_parsing_accepts_good_ids() {
    let cases = [
        ("productpage-v1-7d9c.bookinfo", "productpage-v1-7d9c", "bookinfo"),
        ("a.b", "a", "b"),
        ("web.0.default", "web.0", "default"),
        ("my.dotted.pod.kube-system", "my.dotted.pod", "kube-system"),
        ("0pod9.ns-1", "0pod9", "ns-1"),
    ];
    for (input, pod, ns) in cases {
        let id = ProxyIdentity::parse(input).unwrap_or_else(|e| panic!("{input:?} should parse, got: {e}"));
        assert_eq!(id.pod_name, pod, "{input}");
        assert_eq!(id.namespace, ns, "{input}");
        assert_eq!(id.node_id(), input);
        assert_eq!(id.to_string(), input);
    }
}

#[test]
fn node_id_parsing_rejects_bad_ids() {
    let long_ns = format!("pod.{}", "n".repeat(64));
    let long_pod = format!("{}.ns", "p".repeat(254));
    // (input, error message must contain)
    let cases: Vec<(&str, &str)> = vec![
        ("", "has no '.'"),
        ("nodots", "has no '.'"),
        (".default", "pod name \"\" is not a valid DNS subdomain: it is empty"),
        ("pod.", "namespace \"\" is not a valid DNS label: it is empty"),
        ("Pod.default", "pod name \"Pod\" is not a valid DNS subdomain: character 'P' at position 1"),
        ("pod.Default", "namespace \"Default\" is not a valid DNS label: character 'D' at position 1"),
        ("pod_1.default", "character '_' at position 4"),
        ("-pod.default", "must start and end with a letter or digit"),
        ("pod-.default", "must start and end with a letter or digit"),
        ("pod.-ns", "must start and end with a letter or digit"),
        ("pod..default", "pod name \"pod.\""),
        ("a..b.default", "empty dot-separated part"),
        ("pod.ns x", "character ' ' at position 3"),
        (&long_ns, "64 characters long, the maximum is 63"),
        (&long_pod, "254 characters long, the maximum is 253"),
    ];
    for (input, want) in cases {
        let err = ProxyIdentity::parse(input).expect_err(&format!("{input:?} should be rejected")).to_string();
        assert!(err.contains(want), "{input:?}: error {err:?} should contain {want:?}");
        assert!(err.contains(&format!("{input:?}")), "{input:?}: error {err:?} should name the input");
    }
}

fn base() -> BootstrapConfigBuilder {
    BootstrapConfig::builder(ProxyIdentity::parse("pod.ns").unwrap()).ip("127.0.0.2".parse().unwrap())
}

#[test]
fn xds_addresses() {
    let ok = [
        ("127.0.0.1:15010", XdsHost::Ip("127.0.0.1".parse().unwrap()), 15010),
        ("[::1]:15010", XdsHost::Ip("::1".parse().unwrap()), 15010),
        ("meshd.amime-system.svc:15010", XdsHost::Dns("meshd.amime-system.svc".into()), 15010),
        ("localhost:1", XdsHost::Dns("localhost".into()), 1),
        ("MeshD.example.com.:443", XdsHost::Dns("MeshD.example.com.".into()), 443),
    ];
    for (input, host, port) in ok {
        let a: XdsAddress = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!((a.host(), a.port()), (&host, port), "{input}");
    }
    let bad = [
        ("meshd", "no ':PORT'"),
        ("meshd:", "port \"\" is not a number"),
        ("meshd:99999", "not a number between 1 and 65535"),
        ("meshd:0", "port 0"),
        ("127.0.0.1:0", "port 0"),
        ("::1:15010", "in brackets"),
        ("[::1]", "in brackets"),
        ("mesh_d:15010", "character '_'"),
        (":15010", "it is empty"),
        ("10.0.0:15010", "looks like an IP address"),
        ("999.1.1.1:15010", "looks like an IP address"),
    ];
    for (input, want) in bad {
        let err = input.parse::<XdsAddress>().expect_err(input).to_string();
        assert!(err.contains(want), "{input:?}: {err:?} should contain {want:?}");
        assert!(err.contains(&format!("{input:?}")), "{err:?} should name {input:?}");
    }
}

#[test]
fn builder_validation() {
    let cases: Vec<(BootstrapConfigBuilder, &str)> = vec![
        (BootstrapConfig::builder(ProxyIdentity::parse("pod.ns").unwrap()), "at least one instance IP"),
        (base().ip("0.0.0.0".parse().unwrap()), "invalid instance IP 0.0.0.0"),
        (base().ip("224.0.0.1".parse().unwrap()), "multicast"),
        (base().label("app", "-bad"), "invalid value \"-bad\" for label \"app\""),
        (base().label("", "x"), "invalid label key \"\""),
        (base().label("bad/prefix/x", "v"), "invalid label key"),
        (base().label("Example.com/x", "v"), "prefix \"Example.com\""),
        (base().service_account("Bad"), "invalid service account \"Bad\""),
        (base().admin_address("10.0.0.1:15000".parse().unwrap()), "loopback"),
        (base().admin_address("127.0.0.1:0".parse().unwrap()), "port 0"),
        (base().xds_address("nope"), "invalid xDS address \"nope\""),
        (
            BootstrapConfig::builder(ProxyIdentity { pod_name: "p".into(), namespace: "a.b".into() })
                .ip("127.0.0.2".parse().unwrap()),
            "namespace \"a.b\"",
        ),
    ];
    for (builder, want) in cases {
        let err = builder.build().expect_err(want).to_string();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
    let good = base()
        .label("app.kubernetes.io/name", "x")
        .label("empty", "")
        .label("app", "reviews")
        .ip("127.0.0.2".parse().unwrap())
        .ip("::1".parse().unwrap())
        .build()
        .unwrap();
    assert_eq!(good.ips().len(), 2, "duplicates are removed");
    assert_eq!(good.service_cluster(), "reviews.ns");
}

#[test]
fn modes_parse() {
    assert_eq!("explicit".parse::<InterceptionMode>().unwrap(), InterceptionMode::None);
    assert_eq!("REDIRECT".parse::<InterceptionMode>().unwrap(), InterceptionMode::Redirect);
    assert!("tproxy".parse::<InterceptionMode>().is_err());
    assert_eq!("sotw".parse::<XdsApi>().unwrap(), XdsApi::Sotw);
    assert_eq!("delta".parse::<XdsApi>().unwrap(), XdsApi::Delta);
    assert!("rest".parse::<XdsApi>().is_err());
}

#[test]
fn render_binds_only_to_derived_addresses() {
    let cfg =
        base().admin_address("127.0.0.2:15000".parse().unwrap()).xds_address("meshd.example:15010").build().unwrap();
    let v = render(&cfg);
    for l in v["static_resources"]["listeners"].as_array().unwrap() {
        assert_eq!(l["address"]["socket_address"]["address"], "127.0.0.2");
    }
    assert_eq!(v["admin"]["address"]["socket_address"]["address"], "127.0.0.2");
    assert_eq!(v["node"]["cluster"], "pod.ns");
    assert_eq!(v["static_resources"]["clusters"][0]["type"], "STRICT_DNS");
    assert_eq!(render_yaml(&cfg).unwrap(), render_yaml(&cfg.clone()).unwrap());
}

#[test]
fn app_probe_validation() {
    use crate::probes::{AppProbe, ProbeHeader, ProbeScheme};
    let probe =
        || AppProbe { port: 8080, path: "/ready".into(), scheme: ProbeScheme::Http, host: None, headers: vec![] };
    let header = |name: &str, value: &str| ProbeHeader { name: name.into(), value: value.into() };
    let cases = [
        ("/healthz/x", probe(), "must start with \"/app-health/\""),
        ("/app-health/", probe(), "must start with \"/app-health/\""),
        ("/app-health/a/readyz", AppProbe { port: 0, ..probe() }, "port 0"),
        ("/app-health/a/readyz", AppProbe { path: "ready".into(), ..probe() }, "must start with '/'"),
        ("/app-health/a/readyz", AppProbe { path: "/a b".into(), ..probe() }, "no spaces"),
        ("/app-health/a/readyz", AppProbe { host: Some("a/b".into()), ..probe() }, "invalid host"),
        ("/app-health/a/readyz", AppProbe { headers: vec![header(":authority", "x")], ..probe() }, "header name"),
        ("/app-health/a/readyz", AppProbe { headers: vec![header("X", "a\nb")], ..probe() }, "control character"),
    ];
    for (path, probe, want) in cases {
        let err = base().app_probes([(path.to_string(), probe)].into()).build().expect_err(want).to_string();
        assert!(err.contains(want) && err.contains(&format!("{path:?}")), "{err:?} should contain {want:?}");
    }
    let ok = base().app_probes([("/app-health/a/readyz".to_string(), probe())].into()).build().unwrap();
    let v = render(&ok);
    let routes = &v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["routes"];
    assert_eq!(routes[0]["match"]["path"], "/healthz/ready", "readiness stays first");
    assert_eq!(routes[1]["route"]["host_rewrite_literal"], "127.0.0.2:8080");
    assert_eq!(v["static_resources"]["clusters"][2]["name"], "app-probe-8080");
}

#[test]
fn gateways_say_so_in_their_metadata_and_sidecars_stay_unchanged() {
    let sidecar = render(&base().build().unwrap());
    assert!(sidecar["node"]["metadata"].get(metadata::PROXY_TYPE).is_none());
    let gateway = render(&base().kind(ProxyKind::Gateway).label("istio", "ingressgateway").build().unwrap());
    assert_eq!(gateway["node"]["metadata"][metadata::PROXY_TYPE], "router");
    assert_eq!(gateway["node"]["metadata"][metadata::LABELS]["istio"], "ingressgateway");
}

#[test]
fn a_locality_is_written_as_the_nodes_only_when_given() {
    assert!(render(&base().build().unwrap())["node"].get("locality").is_none());
    let placed = render(&base().locality(Locality::parse("r1/z1").unwrap()).build().unwrap());
    assert_eq!(placed["node"]["locality"], serde_json::json!({"region": "r1", "zone": "z1", "sub_zone": ""}));
}
