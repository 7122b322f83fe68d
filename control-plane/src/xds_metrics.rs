//! meshd's xDS and configuration metrics by label, in Prometheus text format: proxies by
//! kind and interception mode, pushes and NACKs by type, the push latency and convergence
//! histograms, and configuration errors by object kind. Plain functions over plain data
//! (counts, the registry's stats, the diagnostics), rendered by `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use xds::{ResourceType, XdsStats};

use crate::model::{ObjectError, Severity};
use crate::translate::{InterceptionMode, ProxyKind};

/// The `details` key under which meshd records a proxy's interception mode
/// ([`crate::proxy::Proxy::details`]).
pub const MODE_DETAIL: &str = "interception_mode";
/// The `details` key of a proxy's kind ([`crate::proxy::Proxy::details`]: `sidecar` or
/// `gateway`; `sidecar` when absent).
pub const KIND_DETAIL: &str = "proxy_type";
/// The kind of a proxy that does not say otherwise.
pub const DEFAULT_KIND: &str = "sidecar";

/// The `kind` label of a proxy: Istio's `PROXY_TYPE` value (`sidecar`, `router`), whether
/// the details spell the kind as its name (`gateway`) or as that value.
fn kind_label(detail: Option<&String>) -> &'static str {
    let Some(detail) = detail else { return ProxyKind::Sidecar.metadata_value() };
    [ProxyKind::Sidecar, ProxyKind::Gateway]
        .into_iter()
        .find(|k| k.name() == detail || k.metadata_value() == detail)
        .map_or(DEFAULT_KIND, ProxyKind::metadata_value)
}
/// The `kind` label of a problem that is not about one object (an unreadable path, a
/// YAML document that does not parse).
pub const NO_OBJECT_KIND: &str = "File";

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Live proxies by `(kind, mode)`, from each connection's details; `kind` is `sidecar` or
/// `router` (a gateway). Every mode of a sidecar, and a gateway's mode (`NONE`), appears,
/// at 0 when none is connected, so a query never meets an absent series.
pub fn proxies_by_kind_and_mode<'a>(
    details: impl IntoIterator<Item = &'a BTreeMap<String, String>>,
) -> BTreeMap<(String, String), u64> {
    let sidecar = ProxyKind::Sidecar.metadata_value();
    let always = [
        (sidecar, InterceptionMode::Redirect),
        (sidecar, InterceptionMode::None),
        (ProxyKind::Gateway.metadata_value(), InterceptionMode::None),
    ];
    let mut counts: BTreeMap<(String, String), u64> =
        always.into_iter().map(|(kind, mode)| ((kind.to_owned(), mode.metadata_value().to_owned()), 0)).collect();
    for d in details {
        let kind = kind_label(d.get(KIND_DETAIL)).to_owned();
        let mode = d.get(MODE_DETAIL).cloned().unwrap_or_default();
        *counts.entry((kind, mode)).or_default() += 1;
    }
    counts
}

/// The xDS metrics: `proxies` as [`proxies_by_kind_and_mode`] counts them.
pub fn render_xds(out: &mut String, stats: &XdsStats, proxies: &BTreeMap<(String, String), u64>) {
    header(
        out,
        "amime_xds_connected_proxies",
        "gauge",
        "Proxies with a live xDS stream, by kind and interception mode.",
    );
    for ((kind, mode), n) in proxies {
        let _ = writeln!(out, "amime_xds_connected_proxies{{kind=\"{kind}\",mode=\"{mode}\"}} {n}");
    }
    let per_type = [
        ("amime_xds_pushes_total", "xDS responses sent (one type to one proxy), by type.", &stats.pushes_by_type),
        ("amime_xds_nacks_total", "Updates rejected by proxies (NACK), by type.", &stats.nacks_by_type),
    ];
    for (name, help, counters) in per_type {
        header(out, name, "counter", help);
        for ty in ResourceType::ALL {
            let _ = writeln!(out, "{name}{{type=\"{}\"}} {}", ty.short_name(), XdsStats::get(&counters[ty.index()]));
        }
    }
    let name = "amime_xds_push_latency_seconds";
    header(
        out,
        name,
        "histogram",
        "From a configuration change being applied to meshd's model to each xDS response it causes, by type.",
    );
    for ty in ResourceType::ALL {
        stats.push_latency[ty.index()].render(out, name, &format!("type=\"{}\"", ty.short_name()));
    }
    let name = "amime_xds_convergence_seconds";
    header(
        out,
        name,
        "histogram",
        "From a configuration change being applied to meshd's model to a proxy's ACK of everything it was sent for it \
         (one sample per proxy the change reached).",
    );
    stats.convergence.render(out, name, "");
}

/// Current configuration errors by the kind of the object they are about.
pub fn errors_by_kind(problems: &[ObjectError]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for p in problems.iter().filter(|p| p.severity == Severity::Error) {
        *counts.entry(p.kind.clone().unwrap_or_else(|| NO_OBJECT_KIND.to_owned())).or_default() += 1;
    }
    counts
}

pub fn render_config_errors(out: &mut String, by_kind: &BTreeMap<String, u64>) {
    header(
        out,
        "amime_config_errors",
        "gauge",
        "Current configuration errors (objects refused or in part not in effect), by object kind; absent kinds have none.",
    );
    for (kind, n) in by_kind {
        let _ = writeln!(out, "amime_config_errors{{kind=\"{kind}\"}} {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// A proxy as meshd records it on its connection (what `/metrics` reads).
    fn proxy(kind: ProxyKind, mode: InterceptionMode) -> BTreeMap<String, String> {
        crate::proxy::Proxy {
            id: "p".into(),
            pod_name: "p".into(),
            namespace: "ns".into(),
            labels: Default::default(),
            ips: vec!["10.0.0.1".parse().unwrap()],
            service_account: "default".into(),
            mode,
            kind,
            locality: Default::default(),
        }
        .details()
    }

    #[test]
    fn proxies_are_counted_by_kind_and_mode_with_every_series_present() {
        use InterceptionMode::{None as Explicit, Redirect};
        let none = proxies_by_kind_and_mode([]);
        assert_eq!(none.values().sum::<u64>(), 0);
        let series: Vec<(&str, &str)> = none.keys().map(|(k, m)| (k.as_str(), m.as_str())).collect();
        assert_eq!(series, [("router", "NONE"), ("sidecar", "NONE"), ("sidecar", "REDIRECT")]);
        let all = [
            proxy(ProxyKind::Sidecar, Explicit),
            proxy(ProxyKind::Sidecar, Explicit),
            proxy(ProxyKind::Sidecar, Redirect),
            proxy(ProxyKind::Gateway, Explicit),
            proxy(ProxyKind::Gateway, Explicit),
            details(&[(MODE_DETAIL, "NONE")]),
            details(&[(MODE_DETAIL, "NONE"), (KIND_DETAIL, "router")]),
        ];
        let counts = proxies_by_kind_and_mode(&all);
        let get = |k: &str, m: &str| counts.get(&(k.to_owned(), m.to_owned())).copied();
        assert_eq!(get("sidecar", "NONE"), Some(3), "a proxy without a kind is a sidecar");
        assert_eq!(get("sidecar", "REDIRECT"), Some(1));
        assert_eq!(get("router", "NONE"), Some(3), "gateways, by their name or their PROXY_TYPE");
        assert_eq!(counts.len(), 3, "no other series: {counts:?}");
        let mut out = String::new();
        render_xds(&mut out, &XdsStats::default(), &counts);
        assert!(out.contains("amime_xds_connected_proxies{kind=\"router\",mode=\"NONE\"} 3\n"), "{out}");
    }

    #[test]
    fn every_metric_has_help_and_type_and_every_type_a_series() {
        let stats = XdsStats::default();
        stats.pushes_by_type[ResourceType::Cluster.index()].fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        stats.convergence.observe(std::time::Duration::from_millis(120));
        let mut out = String::new();
        render_xds(&mut out, &stats, &proxies_by_kind_and_mode([]));
        for line in [
            "# TYPE amime_xds_pushes_total counter",
            "amime_xds_pushes_total{type=\"CDS\"} 3",
            "amime_xds_pushes_total{type=\"SDS\"} 0",
            "amime_xds_nacks_total{type=\"RDS\"} 0",
            "# TYPE amime_xds_push_latency_seconds histogram",
            "amime_xds_push_latency_seconds_count{type=\"LDS\"} 0",
            "# TYPE amime_xds_convergence_seconds histogram",
            "amime_xds_convergence_seconds_bucket{le=\"0.1\"} 0",
            "amime_xds_convergence_seconds_bucket{le=\"0.15\"} 1",
            "amime_xds_convergence_seconds_count 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in:\n{out}");
        }
        let helps = out.lines().filter(|l| l.starts_with("# HELP")).count();
        let types = out.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!((helps, types), (5, 5));
    }

    #[test]
    fn errors_are_counted_by_object_kind_and_warnings_are_not() {
        let vs = |sev| ObjectError::at_object(sev, "VirtualService", "ns", "r", "spec.http", "bad");
        let file = ObjectError::at_path(Severity::Error, std::path::Path::new("/x.yaml"), "not YAML");
        let counts = errors_by_kind(&[vs(Severity::Error), vs(Severity::Error), vs(Severity::Warning), file]);
        assert_eq!(counts, BTreeMap::from([("File".to_owned(), 1), ("VirtualService".to_owned(), 2)]));
        let mut out = String::new();
        render_config_errors(&mut out, &counts);
        assert!(out.ends_with("amime_config_errors{kind=\"File\"} 1\namime_config_errors{kind=\"VirtualService\"} 2\n"));
    }
}
