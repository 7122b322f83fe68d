//! `exportTo` and the source conditions of an HTTP match (`sourceLabels`,
//! `sourceNamespace`, `gateways`), checked as Istio checks them.

use std::collections::BTreeSet;

use super::*;

/// Istio's `exportTo` (VirtualService, DestinationRule): `*`, `.` (the rule's own
/// namespace) or namespace names, each once; `*` alone. Unset: every namespace (Istio's
/// default, `defaultVirtualServiceExportTo` / `defaultDestinationRuleExportTo` = `*`).
pub(super) fn parse_export_to(cx: &Context<'_>, namespace: &str, list: &[String]) -> Result<ExportTo, Diagnostic> {
    if list.is_empty() {
        return Ok(ExportTo::All);
    }
    let mut set = BTreeSet::new();
    for (i, entry) in list.iter().enumerate() {
        let field = format!("spec.exportTo[{i}]");
        let name = match entry.as_str() {
            "*" if list.len() == 1 => return Ok(ExportTo::All),
            "*" => return Err(cx.error(&field, "\"*\" exports to every namespace; list nothing else with it")),
            "~" => return Err(cx.error(&field, "\"~\" (no namespace) is allowed only on a ServiceEntry")),
            "." => namespace,
            other => {
                check_dns_label(cx, &field, other)?;
                other
            }
        };
        if !set.insert(name.to_owned()) {
            return Err(cx.error(&field, format!("namespace {name:?} is listed twice (\".\" is {namespace:?})")));
        }
    }
    Ok(ExportTo::Namespaces(set))
}

/// A Kubernetes label key (`[prefix/]name`) or value; `None` when valid, else why not.
fn label_problem(text: &str, key: bool) -> Option<&'static str> {
    let name_ok = |s: &str| {
        s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
    };
    if !key {
        return (!name_ok(text))
            .then_some("is not a valid label value (at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends)");
    }
    let (prefix, name) = match text.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, text),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
    });
    (name.is_empty() || !name_ok(name) || !prefix_ok)
        .then_some("is not a valid label key ([prefix/]name, name at most 63 of [A-Za-z0-9-_.])")
}

/// `sourceLabels` of `field`: valid Kubernetes labels.
pub(super) fn parse_source_labels(cx: &Context<'_>, field: &str, labels: &Labels) -> Result<Labels, Diagnostic> {
    for (k, v) in labels {
        if let Some(problem) = label_problem(k, true) {
            return Err(cx.error(&format!("{field}.{k}"), format!("{k:?} {problem}")));
        }
        if let Some(problem) = label_problem(v, false) {
            return Err(cx.error(&format!("{field}.{k}"), format!("{v:?} {problem}")));
        }
    }
    Ok(labels.clone())
}

/// A Gateway reference (VirtualService `gateways`, match-level too): `mesh`, or
/// `[namespace/]name` with DNS names.
pub(super) fn check_gateway_ref(cx: &Context<'_>, field: &str, gateway: &str) -> Result<(), Diagnostic> {
    if gateway == "mesh" {
        return Ok(());
    }
    let (namespace, name) = match gateway.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, gateway),
    };
    if let Some(ns) = namespace {
        check_dns_label(cx, field, ns)?;
    }
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
    if ok {
        Ok(())
    } else {
        Err(cx.error(field, format!("{gateway:?} is not `mesh` or a Gateway's [namespace/]name")))
    }
}

/// The source conditions of the match at `field`, with the warnings Istio's semantics
/// call for: a match for gateways only has no effect on sidecars (and meshd runs no
/// gateways yet); `gateways` decides alone, so `sourceLabels` and `sourceNamespace`
/// beside it are not looked at.
pub(super) fn source_conditions(
    cx: &mut Context<'_>,
    field: &str,
    vs_gateways: &[String],
    source_labels: &Labels,
    source_namespace: Option<&str>,
    gateways: &[String],
) -> Result<(Labels, Option<String>, Vec<String>), Diagnostic> {
    let labels = parse_source_labels(cx, &format!("{field}.sourceLabels"), source_labels)?;
    if let Some(ns) = source_namespace {
        check_dns_label(cx, &format!("{field}.sourceNamespace"), ns)?;
    }
    for (i, g) in gateways.iter().enumerate() {
        check_gateway_ref(cx, &format!("{field}.gateways[{i}]"), g)?;
    }
    if !gateways.is_empty() {
        let mesh = gateways.iter().any(|g| g == "mesh");
        let vs_mesh = vs_gateways.is_empty() || vs_gateways.iter().any(|g| g == "mesh");
        // Without `mesh` the match is for those gateways only; sidecars skip it.
        if mesh && !vs_mesh {
            cx.warn(
                &format!("{field}.gateways"),
                "`mesh` here has no effect: the VirtualService's spec.gateways does not include `mesh`, so sidecars \
                 do not use the rule",
            );
        }
        if !labels.is_empty() || source_namespace.is_some() {
            cx.warn(
                &format!("{field}.gateways"),
                "with gateways set, sourceLabels and sourceNamespace are not looked at (as in Istio)",
            );
        }
    }
    Ok((labels, source_namespace.map(str::to_owned), gateways.to_vec()))
}

/// A DestinationRule's `exportTo` and `workloadSelector.matchLabels`, checked as Istio
/// checks them. `~` is refused (Istio allows it on ServiceEntries only). A rule with a
/// selector is for its own namespace only: Istio refuses an `exportTo` naming any other
/// namespace (or `*`, or more than one entry), and treats it as `.` when unset.
/// A selector without labels selects every workload of the namespace (a warning, as in
/// Istio).
pub(super) fn destination_rule_scope(
    cx: &mut Context<'_>,
    namespace: &str,
    export_to: &[String],
    match_labels: Option<&Labels>,
) -> Result<(ExportTo, Option<Labels>), Diagnostic> {
    let export = parse_export_to(cx, namespace, export_to)?;
    let Some(labels) = match_labels else { return Ok((export, None)) };
    let labels = parse_source_labels(cx, "spec.workloadSelector.matchLabels", labels)?;
    let own_only = match &export {
        ExportTo::All => export_to.is_empty(),
        ExportTo::Namespaces(set) => set.len() == 1 && set.contains(namespace),
    };
    if !own_only {
        return Err(cx.error(
            "spec.exportTo",
            format!(
                "a DestinationRule with a workloadSelector applies only to workloads of its own namespace \
                 ({namespace:?}); exportTo may only be \".\" (or unset), as in Istio"
            ),
        ));
    }
    if labels.is_empty() {
        cx.warn(
            "spec.workloadSelector.matchLabels",
            format!("no labels: the rule applies to every workload of namespace {namespace:?} (as in Istio)"),
        );
    }
    Ok((ExportTo::Namespaces([namespace.to_owned()].into()), Some(labels)))
}
