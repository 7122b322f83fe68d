//! ServiceEntry validation as Istio's: what is read, and each refusal naming the field.

use super::*;

fn parse_entry(spec: &str) -> Result<Parsed, Diagnostic> {
    let yaml = format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: e}}\nspec: {spec}\n");
    let value: Value = serde_yaml::from_str(&yaml).expect("test YAML parses");
    parse_object(&RawObject::from_value(value)?)
}

fn entry(spec: &str) -> (ServiceEntry, Vec<Diagnostic>) {
    match parse_entry(spec) {
        Ok(Parsed::Object(MeshObject::ServiceEntry(e), warnings)) => (e, warnings),
        other => panic!("{spec}: {other:?}"),
    }
}

#[test]
fn ports_carry_their_protocol_and_endpoints_their_overrides() {
    let (e, warnings) = entry(
        "{hosts: [api.example.com], resolution: STATIC, ports: [{number: 80, name: web, protocol: http}, \
         {number: 81, name: grpc-a, protocol: GRPC}, {number: 443, name: https, protocol: HTTPS}, \
         {number: 82, name: tcp-db}, {number: 83, name: plain, targetPort: 8083}], \
         endpoints: [{address: 192.0.2.1, ports: {web: 8080}, labels: {v: '1'}, weight: 3}]}",
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let protocols: Vec<_> = e.ports.iter().map(|p| p.mesh_protocol).collect();
    assert_eq!(protocols, [Protocol::Http, Protocol::Http2, Protocol::Tcp, Protocol::Tcp, Protocol::Http]);
    assert_eq!(e.ports[4].target_port, Some(8083));
    assert_eq!((e.endpoints[0].ports["web"], e.endpoints[0].weight), (8080, Some(3)));
    // DNS takes names and IPs, a wildcard host when endpoints say where to go.
    let (e, _) =
        entry("{hosts: ['*.example.com'], resolution: DNS, endpoints: [{address: localhost}, {address: 192.0.2.1}]}");
    assert_eq!(e.resolution, Resolution::Dns);
    // A STATIC entry with nothing to send to is taken, with a warning.
    let (_, warnings) = entry("{hosts: [a.example], resolution: STATIC, ports: [{number: 80, name: http}]}");
    assert!(warnings.iter().any(|w| w.field == "spec.endpoints" && w.message.contains("503")), "{warnings:?}");
}

#[test]
fn resolution_rules_are_istios() {
    let cases = [
        ("{hosts: [a.example], endpoints: [{address: 192.0.2.1}]}", "spec.endpoints", "NONE takes no endpoints"),
        ("{hosts: ['*.example.com'], resolution: DNS}", "spec.hosts[0]", "wildcard"),
        ("{hosts: [a.example, '*.b.example'], resolution: DNS_ROUND_ROBIN}", "spec.hosts[1]", "must be names"),
        (
            "{hosts: [a.example], resolution: DNS_ROUND_ROBIN, endpoints: [{address: x.example}, {address: y.example}]}",
            "spec.endpoints",
            "at most one endpoint",
        ),
        ("{hosts: [a.example], resolution: STATIC, endpoints: [{address: x.example}]}", "spec.endpoints[0].address", "STATIC needs endpoint IPs"),
        ("{hosts: [a.example], resolution: DNS, endpoints: [{address: 'bad_name!'}]}", "spec.endpoints[0].address", "not an IP address or a DNS name"),
        ("{hosts: [a.example], resolution: STATIC, endpoints: [{address: 'unix:///tmp/s'}]}", "spec.endpoints[0].address", "unix"),
        (
            "{hosts: [a.example], resolution: STATIC, ports: [{number: 80, name: http}], endpoints: [{address: 192.0.2.1, ports: {grpc: 81}}]}",
            "spec.endpoints[0].ports.grpc",
            "no port named \"grpc\"",
        ),
        ("{hosts: [a.example], resolution: DNS, workloadSelector: {labels: {app: a}}}", "spec.workloadSelector", "STATIC"),
        ("{hosts: [a.example], ports: [{number: 80, name: h}, {number: 81, name: h}]}", "spec.ports[1].name", "twice"),
        ("{hosts: [a.example], ports: [{number: 80, name: h, protocol: UDP}]}", "spec.ports[0].protocol", "UDP"),
        ("{hosts: ['*']}", "spec.hosts[0]", "not a DNS host name"),
        ("{hosts: [a.example], resolution: STATIC, endpoints: [{address: 192.0.2.1, weight: -1}]}", "spec.endpoints[0].weight", "negative"),
        ("{hosts: [a.example], exportTo: ['.']}", "spec.exportTo", "not supported by meshd yet"),
    ];
    for (spec, field, message) in cases {
        match parse_entry(spec) {
            Err(e) => {
                assert_eq!((e.field.as_str(), e.severity), (field, Severity::Error), "{spec}: {e}");
                assert!(e.message.contains(message), "{spec}: {e}");
            }
            Ok(p) => panic!("accepted: {spec}\n{p:?}"),
        }
    }
}
