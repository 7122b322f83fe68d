//! DestinationRule: subsets and traffic policies (see [`super::traffic_policy`]).

use serde::Deserialize;

use super::traffic_policy::{parse_traffic_policy, TrafficPolicySpec};
use super::*;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DestinationRuleSpec {
    #[serde(default)]
    host: String,
    traffic_policy: Option<TrafficPolicySpec>,
    #[serde(default)]
    subsets: Vec<SubsetSpec>,
    #[serde(default)]
    export_to: Vec<String>,
    workload_selector: Option<WorkloadSelectorSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkloadSelectorSpec {
    #[serde(default)]
    match_labels: Labels,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubsetSpec {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: Labels,
    traffic_policy: Option<TrafficPolicySpec>,
}

pub(super) fn parse_destination_rule(cx: &mut Context<'_>, namespace: String) -> Result<DestinationRule, Diagnostic> {
    let spec: DestinationRuleSpec = cx.field("spec")?;
    if spec.host.is_empty() {
        return Err(cx.error("spec.host", "required"));
    }
    let selector = spec.workload_selector.as_ref().map(|s| &s.match_labels);
    let (export_to, workload_selector) = scope::destination_rule_scope(cx, &namespace, &spec.export_to, selector)?;
    let traffic_policy = match &spec.traffic_policy {
        Some(tp) => Some(Box::new(parse_traffic_policy(cx, "spec.trafficPolicy", tp)?)),
        None => None,
    };
    let mut subsets: Vec<Subset> = Vec::new();
    for (i, s) in spec.subsets.iter().enumerate() {
        let field = format!("spec.subsets[{i}]");
        check_dns_label(cx, &format!("{field}.name"), &s.name)?;
        if subsets.iter().any(|o| o.name == s.name) {
            return Err(cx.error(&format!("{field}.name"), format!("subset {:?} is defined twice", s.name)));
        }
        let tp = match &s.traffic_policy {
            Some(tp) => Some(parse_traffic_policy(cx, &format!("{field}.trafficPolicy"), tp)?),
            None => None,
        };
        subsets.push(Subset { name: s.name.clone(), labels: s.labels.clone(), traffic_policy: tp });
    }
    Ok(DestinationRule {
        namespace,
        name: cx.raw.name.clone(),
        host: spec.host,
        traffic_policy,
        subsets,
        export_to,
        workload_selector,
    })
}
