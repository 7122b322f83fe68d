//! DestinationRule: subsets and load-balancing policy.

use serde::Deserialize;

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
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TrafficPolicySpec {
    load_balancer: Option<LoadBalancerSpec>,
}

#[derive(Deserialize, Default)]
struct LoadBalancerSpec {
    simple: Option<String>,
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

fn parse_traffic_policy(cx: &Context<'_>, field: &str, spec: &TrafficPolicySpec) -> Result<TrafficPolicy, Diagnostic> {
    let load_balancer = match spec.load_balancer.as_ref().and_then(|lb| lb.simple.as_deref()) {
        None | Some("UNSPECIFIED") => None,
        Some("ROUND_ROBIN") => Some(LoadBalancer::RoundRobin),
        Some("LEAST_REQUEST" | "LEAST_CONN") => Some(LoadBalancer::LeastRequest),
        Some("RANDOM") => Some(LoadBalancer::Random),
        Some("PASSTHROUGH") => Some(LoadBalancer::Passthrough),
        Some(other) => {
            return Err(cx.error(
                &format!("{field}.loadBalancer.simple"),
                format!("{other:?} is not one of ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM, PASSTHROUGH"),
            ))
        }
    };
    Ok(TrafficPolicy { load_balancer })
}

pub(super) fn parse_destination_rule(cx: &mut Context<'_>, namespace: String) -> Result<DestinationRule, Diagnostic> {
    let spec: DestinationRuleSpec = cx.field("spec")?;
    if spec.host.is_empty() {
        return Err(cx.error("spec.host", "required"));
    }
    virtual_service::check_export_to(cx, &spec.export_to)?;
    let traffic_policy = match &spec.traffic_policy {
        Some(tp) => Some(parse_traffic_policy(cx, "spec.trafficPolicy", tp)?),
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
    Ok(DestinationRule { namespace, name: cx.raw.name.clone(), host: spec.host, traffic_policy, subsets })
}
