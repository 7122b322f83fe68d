//! Table tests of the validation path: one object in, the diagnostic (or model) out.

use super::*;

pub(super) fn parse_yaml(yaml: &str) -> Result<Parsed, Diagnostic> {
    let value: Value = serde_yaml::from_str(yaml).expect("test YAML parses");
    parse_object(&RawObject::from_value(value)?)
}

pub(super) const VS: &str =
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: ns}\nspec:\n";

#[test]
fn errors_name_the_field() {
    let cases = [
        ("kind: Service\nmetadata: {name: x}", "apiVersion", "required"),
        ("apiVersion: v1\nkind: Service\nmetadata: {}", "metadata.name", "required"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: Bad_NS}", "metadata.namespace", "DNS label"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: a.b}", "metadata.name", "DNS label"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 70000}]}", "spec.ports[0].port", "out of range"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {clusterIP: nope}", "spec.clusterIP", "not an IP"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nstatus: {podIP: 1.2.3}", "status.podIP", "not an IP"),
        ("apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: x}", "apiVersion", "not an API version of VirtualService"),
        (&format!("{VS}  hosts: [r/x]"), "spec.hosts[0]", "not a valid host"),
        (&format!("{VS}  hosts: [r]\n  http: [{{route: [{{destination: {{host: r}}, weight: -5}}, {{destination: {{host: r}}}}]}}]"), "spec.http[0].route[0].weight", "between 0"),
        (&format!("{VS}  hosts: [r]\n  http: [{{match: [{{uri: {{regex: '(('}}}}], route: [{{destination: {{host: r}}}}]}}]"), "spec.http[0].match[0].uri.regex", "invalid regular expression"),
        (&format!("{VS}  hosts: [r]\n  http: [{{match: [{{uri: {{exact: /a, prefix: /b}}}}], route: [{{destination: {{host: r}}}}]}}]"), "spec.http[0].match[0].uri", "only one"),
        (&format!("{VS}  hosts: [r]\n  http: [{{match: [{{uri: {{regex: '([a-z]{{1,100}}){{1,100}}'}}}}], route: [{{destination: {{host: r}}}}]}}]"), "spec.http[0].match[0].uri.regex", "too large for Envoy"),
        (&format!("{VS}  hosts: [r]\n  http: [{{match: [{{headers: {{'end user': {{exact: j}}}}}}], route: [{{destination: {{host: r}}}}]}}]"), "spec.http[0].match[0].headers.end user", "header name"),
        (&format!("{VS}  hosts: [r]\n  http: [{{route: [{{destination: {{host: r}}}}, {{destination: {{host: r, subset: v2}}}}]}}]"), "spec.http[0].route", "give weights"),
        (&format!("{VS}  hosts: [r]\n  http: [{{route: [{{destination: {{subset: v1}}}}]}}]"), "spec.http[0].route[0].destination.host", "required"),
        (&format!("{VS}  hosts: [r]\n  http: [{{route: [{{destination: {{host: r}}, weight: ten}}]}}]"), "spec.http[0].route[0].weight", "invalid type"),
        ("apiVersion: networking.amime.dev/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec: {host: r, subsets: [{name: v1}, {name: v1}]}", "spec.subsets[1].name", "defined twice"),
        ("apiVersion: networking.amime.dev/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec: {host: r, trafficPolicy: {loadBalancer: {simple: FASTEST}}}", "spec.trafficPolicy.loadBalancer.simple", "FASTEST"),
        ("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\nendpoints: []", "metadata.labels", "service-name"),
    ];
    for (yaml, field, message) in cases {
        match parse_yaml(yaml) {
            Err(e) => {
                assert_eq!(e.field, field, "field for:\n{yaml}\n{e}");
                assert!(e.message.contains(message), "message for:\n{yaml}\n{e}");
            }
            Ok(p) => panic!("accepted:\n{yaml}\n{p:?}"),
        }
    }
}

/// A VirtualService with one HTTP rule, written in flow style.
pub(super) fn rule(rule: &str) -> String {
    format!("{VS}  hosts: [r]\n  http: [{rule}]\n")
}

pub(super) const ROUTE: &str = "route: [{destination: {host: r}}]";

pub(super) fn dr(spec: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: d, namespace: ns}}\nspec: {{host: r, {spec}}}\n")
}

pub(super) fn refused(cases: &[(String, &str, &str)]) {
    for (yaml, field, message) in cases {
        match parse_yaml(yaml) {
            Err(e) => {
                assert_eq!(e.field, *field, "field for:\n{yaml}\n{e}");
                assert!(e.message.contains(message), "message for:\n{yaml}\n{e}");
                assert_eq!(e.severity, Severity::Error);
            }
            Ok(p) => panic!("accepted:\n{yaml}\n{p:?}"),
        }
    }
}

#[test]
fn fields_outside_the_api_are_errors_with_a_suggestion() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: s";
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n";
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: s}}\n";
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\n";
    refused(&[
        (
            rule("{route: [{destination: {host: r}, wieght: 10}]}"),
            "spec.http[0].route[0].wieght",
            "did you mean `weight`?",
        ),
        (rule(&format!("{{mach: [{{uri: {{prefix: /a}}}}], {ROUTE}}}")), "spec.http[0].mach", "did you mean `match`?"),
        (format!("{svc}, lables: {{app: s}}}}"), "metadata.lables", "did you mean `labels`?"),
        (format!("{VS}  hots: [r]\n"), "spec.hots", "did you mean `hosts`?"),
        (format!("{VS}  hosts: [r]\n  export_to: ['*']\n"), "spec.export_to", "did you mean `exportTo`?"),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nsepc: {hosts: [r]}\n"
                .to_owned(),
            "sepc",
            "did you mean `spec`?",
        ),
        (
            rule(&format!("{{match: [{{uri: {{prefx: /a}}}}], {ROUTE}}}")),
            "spec.http[0].match[0].uri.prefx",
            "did you mean `prefix`?",
        ),
        (
            rule(&format!("{{match: [{{headers: {{x-a: {{exact: a, regx: b}}}}}}], {ROUTE}}}")),
            "spec.http[0].match[0].headers.x-a.regx",
            "did you mean `regex`?",
        ),
        (
            rule(&format!("{{fault: {{abort: {{httpStatsu: 500}}}}, {ROUTE}}}")),
            "spec.http[0].fault.abort.httpStatsu",
            "did you mean `httpStatus`?",
        ),
        (rule(&format!("{{{ROUTE}, colour: blue}}")), "spec.http[0].colour", "unknown field `colour`"),
        (
            dr("trafficPolicy: {loadBalacer: {simple: RANDOM}}"),
            "spec.trafficPolicy.loadBalacer",
            "did you mean `loadBalancer`?",
        ),
        (dr("subsets: [{name: v1, lables: {v: '1'}}]"), "spec.subsets[0].lables", "did you mean `labels`?"),
        (
            dr("trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: c, attributes: [{nmae: a}]}}}}"),
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[0].nmae",
            "did you mean `name`?",
        ),
        (format!("{svc}}}\nspec: {{selectr: {{app: s}}}}"), "spec.selectr", "did you mean `selector`?"),
        (
            format!("{svc}}}\nspec: {{ports: [{{port: 80, targetport: 8080}}]}}"),
            "spec.ports[0].targetport",
            "did you mean `targetPort`?",
        ),
        (
            format!("{pod}spec: {{serviceAccountNmae: x}}"),
            "spec.serviceAccountNmae",
            "did you mean `serviceAccountName`?",
        ),
        (
            format!("{pod}spec: {{containers: [{{name: c, ports: [{{containerPrt: 80}}]}}]}}"),
            "spec.containers[0].ports[0].containerPrt",
            "did you mean `containerPort`?",
        ),
        (format!("{slice}endpoints: [{{adresses: [10.0.0.1]}}]"), "endpoints[0].adresses", "did you mean `addresses`?"),
        (
            format!("{slice}endpoints: [{{addresses: [10.0.0.1], conditions: {{raedy: true}}}}]"),
            "endpoints[0].conditions.raedy",
            "did you mean `ready`?",
        ),
        (
            format!("{gw}spec: {{servers: [{{port: {{number: 80, protocol: HTTP}}, host: ['*']}}]}}"),
            "spec.servers[0].host",
            "did you mean `hosts`?",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: n, lable: {}}".to_owned(),
            "metadata.lable",
            "did you mean `labels`?",
        ),
    ]);
}

/// Real Istio fields meshd does not implement yet, where ignoring them would change
/// which requests a rule takes or where they go: the object is refused, saying so.
#[test]
fn fields_whose_absence_would_misroute_refuse_the_object() {
    let m = |cond: &str| rule(&format!("{{match: [{{{cond}}}], {ROUTE}}}"));
    refused(&[
        (m("queryParams: {debug: {}}"), "spec.http[0].match[0].queryParams.debug", "presence"),
        (
            m("headers: {'@request.auth.claims.group': {exact: admin}}"),
            "spec.http[0].match[0].headers.@request.auth.claims.group",
            "JWT claims",
        ),
        (
            m("withoutHeaders: {'@request.auth.claims.iss': {exact: x}}"),
            "spec.http[0].match[0].withoutHeaders.@request.auth.claims.iss",
            "JWT claims",
        ),
        (
            format!("{VS}  hosts: [r]\n  tcp: [{{match: [{{sourceLabels: {{app: a}}}}], {ROUTE}}}]\n"),
            "spec.tcp[0].match[0].sourceLabels",
            "every workload",
        ),
        (
            format!("{VS}  hosts: [r]\n  tls: [{{match: [{{sniHosts: [r], sourceNamespace: a}}], {ROUTE}}}]\n"),
            "spec.tls[0].match[0].sourceNamespace",
            "every namespace",
        ),
        (
            dr("trafficPolicy: {tunnel: {protocol: CONNECT, targetHost: p, targetPort: 8080}}"),
            "spec.trafficPolicy.tunnel",
            "tunnel",
        ),
        // A typo inside an action is reported as the typo.
        (rule("{redirect: {uri: /v2, autority: b}}"), "spec.http[0].redirect.autority", "did you mean `authority`?"),
    ]);
}

/// Real Istio fields meshd does not implement yet, where ignoring them cannot change
/// who is routed where: accepted, with one warning naming the field.
#[test]
fn fields_whose_absence_cannot_misroute_are_warnings() {
    let cases = [
        (
            rule(&format!("{{match: [{{uri: {{prefix: /}}, statPrefix: s}}], {ROUTE}}}")),
            "spec.http[0].match[0].statPrefix",
        ),
        (dr("trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}"), "spec.trafficPolicy.tls.mode"),
        (
            dr("trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: u, ttl: 0s, attributes: [{name: SameSite, value: Strict}]}}}}"),
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes",
        ),
        (
            dr("subsets: [{name: v1, trafficPolicy: {proxyProtocol: {version: V1}}}]"),
            "spec.subsets[0].trafficPolicy.proxyProtocol",
        ),
        // Fields new in Istio 1.32.
        (
            dr("trafficPolicy: {loadBalancer: {backendUtilization: {weightUpdatePeriod: 1s, errorUtilizationPenaltyPercent: 10}}}"),
            "spec.trafficPolicy.loadBalancer.backendUtilization",
        ),
        (
            dr("subsets: [{name: v1, trafficPolicy: {loadBalancer: {simple: RANDOM, zoneAwareLbSetting: {enabled: true, minClusterSize: 3, failover: [{from: a, to: b}]}}}}]"),
            "spec.subsets[0].trafficPolicy.loadBalancer.zoneAwareLbSetting",
        ),
        (
            dr("trafficPolicy: {portLevelSettings: [{port: {number: 80}, connectionPool: {http: {http2KeepAlive: {interval: 10s, timeout: 1s}}}}]}"),
            "spec.trafficPolicy.portLevelSettings[0].connectionPool.http.http2KeepAlive",
        ),
        (
            dr("trafficPolicy: {connectionPool: {http: {http2KeepAlive: {interval: 10s, timeout: 1s}}}}"),
            "spec.trafficPolicy.connectionPool.http.http2KeepAlive",
        ),
        (
            dr("trafficPolicy: {outlierDetection: {failurePercentageThreshold: 50}}"),
            "spec.trafficPolicy.outlierDetection.failurePercentageThreshold",
        ),
        (dr("trafficPolicy: {tls: {mode: SIMPLE, caCrl: /etc/crl.pem}}"), "spec.trafficPolicy.tls.caCrl"),
        (dr("trafficPolicy: {retryBudget: {percent: 20, budgetInterval: 10s}}"), "spec.trafficPolicy.retryBudget"),
    ];
    for (yaml, field) in cases {
        let Ok(Parsed::Object(_, warnings)) = parse_yaml(&yaml) else {
            panic!("refused:\n{yaml}\n{:?}", parse_yaml(&yaml))
        };
        let fields: Vec<_> = warnings.iter().map(|w| (w.severity, w.field.as_str())).collect();
        assert_eq!(fields.len(), 1, "{yaml}\n{warnings:?}");
        assert_eq!(fields[0], (Severity::Warning, field), "{yaml}");
        assert!(warnings[0].message.contains("not implemented by meshd yet"), "{}", warnings[0]);
    }
}

/// `warmup` (and the older `warmupDurationSecs`) with Istio's defaults; left out, with a
/// warning, for the policies Envoy has no slow start for; merged as part of `loadBalancer`.
#[test]
fn warmup_is_read_with_istios_defaults() {
    use crate::model::{effective_policy, Warmup};
    use std::time::Duration;
    let y = dr("trafficPolicy: {loadBalancer: {warmup: {duration: 90s, aggression: 2}}}, subsets: [{name: v1, trafficPolicy: {loadBalancer: {simple: RANDOM, warmupDurationSecs: 10s}}}, {name: v2, trafficPolicy: {connectionPool: {tcp: {maxConnections: 3}}}}]");
    let Ok(Parsed::Object(MeshObject::DestinationRule(rule), warnings)) = parse_yaml(&y) else {
        panic!("{:?}", parse_yaml(&y))
    };
    let fields: Vec<_> = warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(fields, ["spec.subsets[0].trafficPolicy.loadBalancer.warmup"], "{warnings:?}");
    let tp = rule.traffic_policy.as_deref();
    let want = Warmup { duration: Duration::from_secs(90), minimum_percent: 10.0, aggression: 2.0 };
    assert_eq!(tp.unwrap().sections.warmup, Some(want.clone()));
    // v1 replaces the load balancer section (its warmup is dropped with the warning); v2 keeps the rule's.
    assert_eq!(effective_policy(tp, rule.subsets[0].traffic_policy.as_ref(), 80).warmup, None);
    assert_eq!(effective_policy(tp, rule.subsets[1].traffic_policy.as_ref(), 80).warmup, Some(want));
    let old = dr("trafficPolicy: {loadBalancer: {warmupDurationSecs: 60s}}");
    let Ok(Parsed::Object(MeshObject::DestinationRule(rule), _)) = parse_yaml(&old) else { panic!() };
    let w = rule.traffic_policy.unwrap().sections.warmup.unwrap();
    assert_eq!((w.duration, w.minimum_percent, w.aggression), (Duration::from_secs(60), 10.0, 1.0));

    refused(&[
        (
            dr("trafficPolicy: {loadBalancer: {warmup: {minimumPercent: 5}}}"),
            "spec.trafficPolicy.loadBalancer.warmup.duration",
            "required",
        ),
        (
            dr("trafficPolicy: {loadBalancer: {warmup: {duration: 1m, aggression: 0}}}"),
            "spec.trafficPolicy.loadBalancer.warmup.aggression",
            "above 0",
        ),
        (
            dr("trafficPolicy: {loadBalancer: {warmup: {duration: 1m, minimumPercent: 120}}}"),
            "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
            "0-100",
        ),
        (
            dr("trafficPolicy: {loadBalancer: {warmupDurationSecs: soon}}"),
            "spec.trafficPolicy.loadBalancer.warmupDurationSecs",
            "not a duration",
        ),
    ]);
}

/// Traffic policies: read into the model; a bad value is refused naming its field.
#[test]
fn traffic_policies_are_read_and_bad_values_name_the_field() {
    use std::time::Duration;
    let y = dr("trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: X-User, ringHash: {minimumRingSize: 64}}}, connectionPool: {tcp: {maxConnections: 1, connectTimeout: 250ms}, http: {http1MaxPendingRequests: 0, maxRetries: 2}}, outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100}, portLevelSettings: [{port: {number: 9090}, loadBalancer: {simple: RANDOM}}]}, subsets: [{name: v1, trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}}]");
    let Ok(Parsed::Object(MeshObject::DestinationRule(rule), warnings)) = parse_yaml(&y) else {
        panic!("{:?}", parse_yaml(&y))
    };
    assert!(warnings.is_empty(), "{warnings:?}");
    let tp = rule.traffic_policy.expect("policy");
    assert_eq!(
        tp.sections.load_balancer,
        Some(LoadBalancer::ConsistentHash(ConsistentHash {
            key: HashKey::Header("x-user".into()),
            ring: HashRing::RingHash { minimum_ring_size: Some(64) }
        }))
    );
    let pool = tp.sections.connection_pool.expect("pool");
    assert_eq!((pool.max_connections, pool.connect_timeout), (Some(1), Some(Duration::from_millis(250))));
    // 0 means Istio's default, as in Istio.
    assert_eq!((pool.http1_max_pending_requests, pool.max_retries), (None, Some(2)));
    let outlier = tp.sections.outlier_detection.expect("outlier");
    assert_eq!(outlier.base_ejection_time, Some(Duration::from_secs(180)));
    assert_eq!(tp.port_level[&9090].load_balancer, Some(LoadBalancer::Random));
    let subset = rule.subsets[0].traffic_policy.as_ref().expect("subset policy");
    assert_eq!(subset.sections.load_balancer, Some(LoadBalancer::LeastRequest));

    refused(&[
        (
            dr("trafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}"),
            "spec.trafficPolicy.loadBalancer",
            "both set",
        ),
        (
            dr("trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}"),
            "spec.trafficPolicy.loadBalancer.simple",
            "not supported",
        ),
        (
            dr("trafficPolicy: {loadBalancer: {consistentHash: {}}}"),
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "name what to hash",
        ),
        (
            dr("trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, httpHeaderName: x}}}"),
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "one key",
        ),
        (
            dr("trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {ttl: 1s}}}}"),
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
            "required",
        ),
        (
            dr("trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}}}"),
            "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
            "prime",
        ),
        (
            dr("trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 99999999}}}"),
            "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
            "out of range",
        ),
        (
            dr("trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}"),
            "spec.trafficPolicy.connectionPool.tcp.maxConnections",
            "out of range",
        ),
        (
            dr("trafficPolicy: {connectionPool: {tcp: {connectTimeout: '10'}}}"),
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
            "not a duration",
        ),
        (
            dr("trafficPolicy: {connectionPool: {tcp: {connectTimeout: 0s}}}"),
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
            "shorter than the minimum",
        ),
        (
            dr("trafficPolicy: {connectionPool: {http: {idleTimeout: soon}}}"),
            "spec.trafficPolicy.connectionPool.http.idleTimeout",
            "not a duration",
        ),
        (
            dr("trafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}"),
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
            "out of range 0-100",
        ),
        (
            dr("trafficPolicy: {outlierDetection: {consecutive5xxErrors: -3}}"),
            "spec.trafficPolicy.outlierDetection.consecutive5xxErrors",
            "out of range",
        ),
        (
            dr("trafficPolicy: {outlierDetection: {baseEjectionTime: 1d}}"),
            "spec.trafficPolicy.outlierDetection.baseEjectionTime",
            "not a duration",
        ),
        (
            dr("trafficPolicy: {portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}"),
            "spec.trafficPolicy.portLevelSettings[0].port.number",
            "required",
        ),
        (
            dr("subsets: [{name: v1, trafficPolicy: {outlierDetection: {minHealthPercent: 200}}}]"),
            "spec.subsets[0].trafficPolicy.outlierDetection.minHealthPercent",
            "out of range",
        ),
        (
            dr("trafficPolicy: {tls: {mode: MUTUAL, caCertificates: /ca.pem}}"),
            "spec.trafficPolicy.tls.clientCertificate",
            "required with mode MUTUAL",
        ),
        (
            dr("trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem}}"),
            "spec.trafficPolicy.tls.privateKey",
            "required with mode MUTUAL",
        ),
        (dr("trafficPolicy: {tls: {mode: SIMPLE, sni: ''}}"), "spec.trafficPolicy.tls.sni", "must not be empty"),
        (dr("trafficPolicy: {tls: {mode: PERMISSIVE}}"), "spec.trafficPolicy.tls.mode", "not one of"),
        (dr("trafficPolicy: {tls: {mode: SIMPLE, sni: \"a\\0b\"}}"), "spec.trafficPolicy.tls.sni", "not a server name"),
        (
            dr("trafficPolicy: {tls: {mode: SIMPLE, caCertificates: certs/ca.pem}}"),
            "spec.trafficPolicy.tls.caCertificates",
            "absolute",
        ),
        (
            dr("trafficPolicy: {tls: {mode: SIMPLE, subjectAltNames: [a, '']}}"),
            "spec.trafficPolicy.tls.subjectAltNames[1]",
            "not a name",
        ),
        (
            dr("trafficPolicy: {portLevelSettings: [{port: {number: 443}, tls: {mode: SIMPLE, credentialName: c}}]}"),
            "spec.trafficPolicy.portLevelSettings[0].tls.credentialName",
            "SDS",
        ),
    ]);
}

#[test]
fn header_names_are_tokens_of_any_case_kept_in_lower_case() {
    let y = rule(&format!("{{match: [{{headers: {{End-User: {{exact: jason}}, X-B3-TraceId: {{}}, x_custom.v1: {{prefix: a}}, ':authority': {{exact: h}}}}}}], {ROUTE}}}"));
    let Ok(Parsed::Object(MeshObject::VirtualService(vs), _)) = parse_yaml(&y) else { panic!("{:?}", parse_yaml(&y)) };
    let names: Vec<_> = vs.http[0].matches[0].headers.keys().cloned().collect();
    assert_eq!(names, [":authority", "end-user", "x-b3-traceid", "x_custom.v1"]);
    refused(&[
        (
            rule(&format!("{{match: [{{headers: {{End-User: {{exact: a}}, end-user: {{exact: b}}}}}}], {ROUTE}}}")),
            "spec.http[0].match[0].headers.end-user",
            "listed twice",
        ),
        (
            rule(&format!("{{match: [{{headers: {{'a:b': {{exact: a}}}}}}], {ROUTE}}}")),
            "spec.http[0].match[0].headers.a:b",
            "not a valid header name",
        ),
        (
            rule(&format!("{{match: [{{headers: {{':status': {{exact: a}}}}}}], {ROUTE}}}")),
            "spec.http[0].match[0].headers.:status",
            "not a valid header name",
        ),
    ]);
}

#[test]
fn rules_for_gateways_only_are_in_effect_on_those_gateways() {
    let cases = [
        (format!("{VS}  hosts: [r]\n  gateways: [ingress]\n  http: [{{{ROUTE}}}]\n"), 0),
        (format!("{VS}  hosts: [r]\n  gateways: [istio-system/ingress]\n  http: [{{{ROUTE}}}]\n"), 0),
        (format!("{VS}  hosts: [r]\n  gateways: [ingress, mesh]\n  http: [{{{ROUTE}}}]\n"), 0),
        (format!("{VS}  hosts: [r]\n  exportTo: ['*']\n  http: [{{{ROUTE}}}]\n"), 0),
    ];
    for (yaml, want) in cases {
        let Ok(Parsed::Object(_, warnings)) = parse_yaml(&yaml) else { panic!("{yaml}: {:?}", parse_yaml(&yaml)) };
        assert_eq!(warnings.len(), want, "{yaml}: {warnings:?}");
    }
}

#[test]
fn a_virtual_service_without_hosts_is_a_delegate_that_cannot_delegate_again() {
    let y = format!("{VS}  http: [{{{ROUTE}}}]\n");
    let Ok(Parsed::Object(MeshObject::VirtualService(vs), warnings)) = parse_yaml(&y) else {
        panic!("{:?}", parse_yaml(&y))
    };
    assert!(vs.hosts.is_empty());
    assert!(warnings.is_empty(), "{warnings:?}");
    refused(&[(format!("{VS}  http: [{{delegate: {{name: d}}}}]\n"), "spec.http[0].delegate", "one level")]);
}

#[test]
fn gateways_and_service_entries_are_read_and_checked() {
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: ns}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [bookinfo/www.example.com, '*.example.org']\n    tls: {mode: SIMPLE, credentialName: cert, alpnProtocols: [h2], ecdhCurves: [X25519], insecureSkipVerify: true}\n  - port: {number: 80, name: http, protocol: http}\n    hosts: ['*']\n    tls: {httpsRedirect: true}\n";
    let Ok(Parsed::Object(MeshObject::Gateway(g), warnings)) = parse_yaml(gw) else { panic!("{:?}", parse_yaml(gw)) };
    assert_eq!(g.servers.len(), 2);
    assert_eq!(g.servers[0].tls.as_ref().unwrap().mode, ServerTlsMode::Simple);
    assert_eq!(g.servers[1].protocol, PortProtocol::Http);
    assert!(g.servers[1].tls.as_ref().unwrap().https_redirect);
    assert_eq!(g.servers[0].tls.as_ref().unwrap().credential_names, ["cert"]);
    // alpnProtocols, ecdhCurves and insecureSkipVerify are ignored, each with a warning.
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    let passthrough = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: ['*']\n    tls: {mode: PASSTHROUGH}\n  - port: {number: 5432, name: tcp, protocol: TCP}\n    hosts: ['*']\n";
    let Ok(Parsed::Object(MeshObject::Gateway(_), warnings)) = parse_yaml(passthrough) else { panic!() };
    assert!(warnings.is_empty(), "PASSTHROUGH and TCP servers are served: {warnings:#?}");
    let auto = passthrough.replace("PASSTHROUGH", "AUTO_PASSTHROUGH");
    let Ok(Parsed::Object(MeshObject::Gateway(_), warnings)) = parse_yaml(&auto) else { panic!() };
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert_eq!(warnings[0].field, "spec.servers[0]");
    assert!(warnings[0].message.contains("leaves this server out"), "{}", warnings[0]);
    let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: e}\nspec:\n  hosts: [api.example.com]\n  addresses: [192.0.2.0/24, '2001:db8::/32']\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  endpoints: [{address: 192.0.2.1, ports: {tls: 8443}, weight: 2}]\n";
    let Ok(Parsed::Object(MeshObject::ServiceEntry(e), warnings)) = parse_yaml(se) else {
        panic!("{:?}", parse_yaml(se))
    };
    assert_eq!(e.resolution, Resolution::Static);
    assert_eq!(e.endpoints[0].ports["tls"], 8443);
    assert!(warnings.is_empty(), "a ServiceEntry is in effect: {warnings:?}");
    let g = |spec: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: g}}\nspec: {spec}\n")
    };
    let s = |spec: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: e}}\nspec: {spec}\n")
    };
    refused(&[
        (g("{servers: []}"), "spec.servers", "at least one server"),
        (g("{servers: [{port: {number: 80, protocol: HTTP, name: h}}]}"), "spec.servers[0].hosts", "at least one host"),
        (g("{servers: [{port: {number: 80, protocol: HTTP}, hosts: ['*']}]}"), "spec.servers[0].port.name", "required"),
        (s("{hosts: [a.com], ports: [{number: 80, protocol: HTTP}]}"), "spec.ports[0].name", "required"),
        (g("{servers: [{port: {number: 80, protocol: QUIC}, hosts: ['*']}]}"), "spec.servers[0].port.protocol", "QUIC"),
        (
            g("{servers: [{port: {number: 443, protocol: HTTPS, name: s}, hosts: ['*']}]}"),
            "spec.servers[0].tls",
            "required",
        ),
        (
            g("{servers: [{port: {number: 0, protocol: HTTP}, hosts: ['*']}]}"),
            "spec.servers[0].port.number",
            "out of range",
        ),
        (
            g("{servers: [{port: {number: 80, protocol: HTTP, name: h}, hosts: ['a/b/c']}]}"),
            "spec.servers[0].hosts[0]",
            "namespace/host",
        ),
        (
            g("{servers: [{port: {number: 443, protocol: HTTPS, name: s}, hosts: ['*'], tls: {mode: STRICT}}]}"),
            "spec.servers[0].tls.mode",
            "STRICT",
        ),
        (
            g("{servers: [{port: {number: 443, protocol: HTTPS, name: s}, hosts: ['*'], tls: {mode: SIMPLE}}]}"),
            "spec.servers[0].tls",
            "needs a certificate",
        ),
        (
            g("{servers: [{port: {number: 443, protocol: HTTPS, name: s}, hosts: ['*'], tls: {mode: SIMPLE, serverCertificate: /c.pem}}]}"),
            "spec.servers[0].tls.privateKey",
            "required",
        ),
        (
            g("{servers: [{port: {number: 443, protocol: HTTPS, name: s}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: Bad_Name}}]}"),
            "spec.servers[0].tls.credentialName",
            "not a valid name",
        ),
        (
            g("{servers: [{port: {number: 443, protocol: HTTPS, name: s}, hosts: ['*'], tls: {mode: MUTUAL, credentialName: c, subjectAltNames: [a]}}]}"),
            "spec.servers[0].tls.subjectAltNames",
            "client certificates",
        ),
        (
            g("{servers: [{port: {number: 80, protocol: HTTP, name: h}, hosts: ['*']}, {port: {number: 80, protocol: HTTPS, name: s}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: c}}]}"),
            "spec.servers[1].port.protocol",
            "plain HTTP or TLS",
        ),
        (s("{hosts: []}"), "spec.hosts", "at least one host"),
        (s("{hosts: [a.com], addresses: [10.0.0.0/33]}"), "spec.addresses[0]", "CIDR"),
        (s("{hosts: [a.com], ports: [{number: 80, name: a}, {number: 80, name: b}]}"), "spec.ports[1].number", "twice"),
        (s("{hosts: [a.com], resolution: DYNAMIC}"), "spec.resolution", "DYNAMIC"),
        (
            s("{hosts: [a.com], resolution: DYNAMIC_DNS}"),
            "spec.resolution",
            "DYNAMIC_DNS (resolving each wildcard host on demand) is not supported by meshd yet",
        ),
        (s("{hosts: [a.com], location: OUTSIDE}"), "spec.location", "OUTSIDE"),
        (
            s("{hosts: [a.com], resolution: STATIC, endpoints: [{address: a.com}]}"),
            "spec.endpoints[0].address",
            "not an IP",
        ),
        (
            s("{hosts: [a.com], endpoints: [{address: 1.2.3.4}], workloadSelector: {labels: {a: b}}}"),
            "spec.workloadSelector",
            "not both",
        ),
    ]);
}

/// Fields of the Kubernetes API that meshd does not read are accepted silently.
#[test]
fn kubernetes_fields_meshd_does_not_read_are_accepted() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: a\n  uid: x\n  annotations: {a: b}\n  ownerReferences: [{kind: ReplicaSet, name: r}]\n  creationTimestamp: '2024-01-01T00:00:00Z'\nspec:\n  nodeName: n\n  restartPolicy: Always\n  volumes: [{name: v, emptyDir: {}}]\n  initContainers: [{name: i, image: busybox}]\n  containers:\n  - name: c\n    image: nginx\n    imagePullPolicy: IfNotPresent\n    env: [{name: A, value: b}]\n    readinessProbe: {httpGet: {path: /, port: 80}}\n    resources: {limits: {cpu: 100m}}\n    ports: [{containerPort: 80, name: http, protocol: TCP}]\n  tolerations: [{key: k, operator: Exists}]\nstatus:\n  phase: Running\n  podIP: 10.0.0.1\n  podIPs: [{ip: 10.0.0.1}]\n  conditions: [{type: Ready, status: 'True', lastTransitionTime: null}]\n  containerStatuses: []\n  qosClass: Burstable\n";
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  sessionAffinity: None\n  ipFamilies: [IPv4]\n  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]\nstatus: {loadBalancer: {}}\n";
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: s}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1], conditions: {ready: true, serving: true, terminating: false}, nodeName: n, zone: z, targetRef: {kind: Pod, name: p, namespace: a, uid: u}}]\nports: [{name: http, port: 80, protocol: TCP, appProtocol: http}]\n";
    for yaml in [pod, svc, slice] {
        match parse_yaml(yaml) {
            Ok(Parsed::Object(_, warnings)) => assert!(warnings.is_empty(), "{yaml}\n{warnings:?}"),
            other => panic!("{yaml}\n{other:?}"),
        }
    }
}

#[test]
fn kinds_meshd_does_not_use_are_ignored() {
    assert!(matches!(parse_yaml("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}"), Ok(Parsed::Skipped(_))));
}

#[test]
fn services_pick_protocols_like_istio() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - {name: http-web, port: 80}\n  - {name: grpc, port: 81}\n  - {name: tcp-db, port: 82}\n  - {port: 83, appProtocol: mysql}\n  - {port: 84, targetPort: web}\n  - {port: 85, protocol: UDP}\n";
    let Ok(Parsed::Object(MeshObject::Service(s), warnings)) = parse_yaml(yaml) else { panic!("rejected") };
    let protocols: Vec<_> = s.ports.iter().map(|p| p.protocol).collect();
    assert_eq!(protocols, [Protocol::Http, Protocol::Http2, Protocol::Tcp, Protocol::Tcp, Protocol::Http]);
    assert_eq!(s.ports[4].target_port, TargetPort::Name("web".into()));
    assert_eq!(s.namespace, "default");
    assert_eq!(warnings.len(), 1, "UDP port reported: {warnings:?}");
}

#[test]
fn tls_secrets_are_read_and_checked_other_secrets_skipped() {
    let cert = rcgen::generate_simple_self_signed(vec!["a.example.com".to_owned()]).unwrap();
    let secret = |data: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: c, namespace: ns}}\ntype: kubernetes.io/tls\n{data}")
    };
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    let good = secret(&format!(
        "data: {{tls.crt: {}, tls.key: {}}}\n",
        b64(&cert.cert.pem()),
        b64(&cert.signing_key.serialize_pem())
    ));
    let Ok(Parsed::Object(MeshObject::Secret(s), warnings)) = parse_yaml(&good) else {
        panic!("{:?}", parse_yaml(&good))
    };
    assert!(warnings.is_empty() && s.cert_chain.contains("BEGIN CERTIFICATE") && s.ca_cert.is_none());
    let opaque = "apiVersion: v1\nkind: Secret\nmetadata: {name: o}\ntype: Opaque\ndata: {password: cGFzcw==}\n";
    let Ok(Parsed::Skipped(note)) = parse_yaml(opaque) else { panic!("{:?}", parse_yaml(opaque)) };
    assert_eq!(note.severity, Severity::Info);
    let key = b64(&cert.signing_key.serialize_pem());
    refused(&[
        (secret(&format!("data: {{tls.key: {key}}}\n")), "data.tls.crt", "required"),
        (
            secret(&format!("data: {{tls.crt: {}, tls.key: {key}}}\n", b64("not a cert"))),
            "data.tls.crt",
            "no PEM certificate",
        ),
        (
            secret(&format!("data: {{tls.crt: {}, tls.key: {}}}\n", b64(&cert.cert.pem()), b64("nope"))),
            "data.tls.key",
            "not a PEM private key",
        ),
        (secret("data: {tls.crt: '%%%'}\n"), "data.tls.crt", "not base64"),
    ]);
}
