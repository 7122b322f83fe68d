use super::*;

fn ok(yaml: &str) -> MeshConfigFile {
    let out = parse("mesh.yaml", yaml);
    out.config.unwrap_or_else(|| panic!("{yaml}: {:?}", out.diagnostics))
}

#[test]
fn a_full_telemetry_config() {
    let c = ok(r#"
accessLogFile: /dev/stdout
accessLogEncoding: JSON
enableTracing: true
defaultConfig:
  tracing:
    sampling: 12.5
extensionProviders:
- name: jaeger
  zipkin: {service: jaeger.observability.svc.cluster.local, port: 9411, maxTagLength: 99}
- name: otel
  opentelemetry: {service: otel.example.com, port: 4317}
- name: file
  envoyFileAccessLog: {path: /tmp/a.log, logFormat: {labels: {code: "%RESPONSE_CODE%"}}}
defaultProviders:
  tracing: [jaeger]
  accessLogging: [file]
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"#);
    let t = &c.telemetry;
    assert_eq!(t.access_log_file.as_deref(), Some("/dev/stdout"));
    assert_eq!(t.access_log_encoding, LogEncoding::Json);
    assert_eq!(t.sampling_millionths, 125_000);
    assert_eq!(
        t.providers["jaeger"],
        Provider::Tracing(TracingProvider {
            kind: TracerKind::Zipkin,
            service: "jaeger.observability.svc.cluster.local".into(),
            port: 9411,
            max_tag_length: 99
        })
    );
    assert!(
        matches!(&t.providers["otel"], Provider::Tracing(p) if p.kind == TracerKind::OpenTelemetry && p.max_tag_length == 256)
    );
    assert!(
        matches!(&t.providers["file"], Provider::FileLog(f) if f.encoding == LogEncoding::Json && f.json_labels.len() == 1)
    );
    assert_eq!(
        (t.default_tracing.clone(), t.default_access_logging.clone()),
        (vec!["jaeger".into()], vec!["file".into()])
    );
    assert_eq!(c.outbound_traffic_policy, Some(OutboundTrafficPolicy::RegistryOnly));
}

#[test]
fn defaults_are_istios() {
    let c = ok("");
    assert_eq!(c, MeshConfigFile::default());
    assert!(c.telemetry.enable_tracing);
    assert_eq!(c.telemetry.sampling_millionths, 10_000, "1%");
    assert!(c.telemetry.default_access_log_providers().is_empty(), "no access log unless asked");
    let on = ok("accessLogFile: /dev/stdout\n");
    assert_eq!(on.telemetry.default_access_log_providers(), vec!["envoy".to_owned()]);
}

#[test]
fn problems_name_the_file_and_field() {
    let cases = [
        ("accesLogFile: /dev/stdout\n", "accesLogFile", "did you mean `accessLogFile`?"),
        ("accessLogEncoding: XML\n", "accessLogEncoding", "is not TEXT or JSON"),
        ("defaultConfig: {tracing: {sampling: 101}}\n", "defaultConfig.tracing.sampling", "between 0 and 100"),
        ("defaultConfig: {tracing: {sampling: high}}\n", "defaultConfig.tracing.sampling", "must be a number"),
        ("extensionProviders: [{name: z, zipkin: {service: s}}]\n", "extensionProviders[0].zipkin.port", "required"),
        (
            "extensionProviders: [{name: z, zipkin: {service: s, port: 70000}}]\n",
            "extensionProviders[0].zipkin.port",
            "not a port",
        ),
        (
            "extensionProviders: [{name: z, zipkin: {service: s, prot: 1}}]\n",
            "extensionProviders[0].zipkin.prot",
            "did you mean `port`?",
        ),
        (
            "extensionProviders: [{name: z, datadog: {service: s, port: 1}}]\n",
            "extensionProviders[0].datadog",
            "not supported",
        ),
        ("extensionProviders: [{zipkin: {service: s, port: 1}}]\n", "extensionProviders[0].name", "required"),
        ("defaultProviders: {tracing: [nope]}\n", "defaultProviders.tracing[0]", "not a zipkin or opentelemetry"),
        ("outboundTrafficPolicy: {mode: DENY}\n", "outboundTrafficPolicy.mode", "ALLOW_ANY or REGISTRY_ONLY"),
        ("enableTracing: 3\n", "enableTracing", "true or false"),
        ("- a\n", "", "must be a mapping"),
    ];
    for (yaml, field, message) in cases {
        let out = parse("/etc/mesh.yaml", yaml);
        assert!(out.config.is_none(), "{yaml} should be refused");
        let e = out.diagnostics.last().expect("an error");
        assert_eq!((e.severity, e.field.as_str()), (Severity::Error, field), "{yaml}: {e}");
        assert!(e.message.contains(message), "{yaml}: {e}");
        assert_eq!(e.file.as_deref(), Some("/etc/mesh.yaml"));
        assert!(e.to_string().starts_with("/etc/mesh.yaml: MeshConfig "), "{e}");
    }
}

#[test]
fn istio_fields_meshd_does_not_implement_are_warnings() {
    let out = parse("m.yaml", "trustDomain: cluster.local\ndefaultConfig: {discoveryAddress: 'istiod:15012'}\n");
    assert!(out.config.is_some());
    let fields: Vec<&str> = out.diagnostics.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(fields, ["trustDomain", "defaultConfig.discoveryAddress"]);
    assert!(out.diagnostics.iter().all(|d| d.severity == Severity::Warning));
}

#[test]
fn the_example_loads() {
    let out = parse("manifests/examples/telemetry/mesh", include_str!("../../../manifests/examples/telemetry/mesh"));
    assert!(out.diagnostics.is_empty(), "{:?}", out.diagnostics);
    let t = out.config.expect("valid").telemetry;
    assert_eq!(t.providers.len(), 3);
    assert_eq!(t.sampling_millionths, 1_000_000);
}
