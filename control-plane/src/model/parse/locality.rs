//! A DestinationRule's `loadBalancer.localityLbSetting`, checked as Istio checks it
//! (`validateLocalityLbSetting`): `distribute` and `failover` not both; each `distribute`
//! entry's weights in 1-100 adding up to 100; failover from one region to another
//! (regions only, no wildcards); locality patterns with at most one `*`, as their last
//! part. Failover without `outlierDetection` is a warning: Envoy would never fail over.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::*;
use crate::model::locality::{Distribute, LocalityLb, RegionFailover};

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct LocalityLbSpec {
    #[serde(default)]
    distribute: Vec<DistributeSpec>,
    #[serde(default)]
    failover: Vec<FailoverSpec>,
    enabled: Option<bool>,
}

#[derive(Deserialize, Default)]
struct DistributeSpec {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: BTreeMap<String, i64>,
}

#[derive(Deserialize, Default)]
struct FailoverSpec {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// A locality pattern of `distribute`: `region[/zone[/subzone]]`, where the last part
/// may be `*` (and `*` alone matches every locality).
fn check_pattern(cx: &Context<'_>, field: &str, pattern: &str) -> Result<(), Diagnostic> {
    if pattern.is_empty() {
        return Err(cx.error(field, "required (a locality: region, region/zone or region/zone/subzone)"));
    }
    let parts: Vec<&str> = pattern.split('/').collect();
    let stars = parts.iter().filter(|p| p.contains('*')).count();
    if stars > 1 || (stars == 1 && *parts.last().expect("split gives a part") != "*") {
        return Err(cx.error(field, format!("{pattern:?}: a wildcard '*' may only be the whole last part, once")));
    }
    let plain = parts.iter().filter(|p| **p != "*").copied().collect::<Vec<_>>().join("/");
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(cx.error(field, format!("{pattern:?} is not region, region/zone or region/zone/subzone")));
    }
    crate::model::locality::Locality::parse(&plain).map_err(|e| cx.error(field, e.to_string()))?;
    Ok(())
}

fn parse_distribute(cx: &Context<'_>, field: &str, spec: &[DistributeSpec]) -> Result<Vec<Distribute>, Diagnostic> {
    let mut out = Vec::new();
    let mut froms = BTreeSet::new();
    for (i, d) in spec.iter().enumerate() {
        let f = format!("{field}.distribute[{i}]");
        check_pattern(cx, &format!("{f}.from"), &d.from)?;
        if !froms.insert(d.from.as_str()) {
            return Err(cx.error(&format!("{f}.from"), format!("{:?} is given twice", d.from)));
        }
        if d.to.is_empty() {
            return Err(cx.error(&format!("{f}.to"), "required (destination localities and their weights)"));
        }
        let mut to = BTreeMap::new();
        for (pattern, weight) in &d.to {
            let wf = format!("{f}.to.{pattern}");
            check_pattern(cx, &wf, pattern)?;
            if !(1..=100).contains(weight) {
                return Err(cx.error(&wf, format!("weight {weight} is out of range 1-100")));
            }
            to.insert(pattern.clone(), u32::try_from(*weight).expect("in range"));
        }
        let total: u32 = to.values().sum();
        if total != 100 {
            return Err(cx.error(&format!("{f}.to"), format!("weights add up to {total}, not 100")));
        }
        out.push(Distribute { from: d.from.clone(), to });
    }
    Ok(out)
}

fn parse_failover(cx: &Context<'_>, field: &str, spec: &[FailoverSpec]) -> Result<Vec<RegionFailover>, Diagnostic> {
    let mut out = Vec::new();
    for (i, fo) in spec.iter().enumerate() {
        let f = format!("{field}.failover[{i}]");
        for (name, region) in [("from", &fo.from), ("to", &fo.to)] {
            let rf = format!("{f}.{name}");
            if region.is_empty() {
                return Err(cx.error(&rf, "required (a region)"));
            }
            if region.contains('/') || region.contains('*') {
                return Err(cx.error(&rf, format!("{region:?}: failover names a region only, without '/' or '*'")));
            }
            check_pattern(cx, &rf, region)?;
        }
        if fo.from == fo.to {
            return Err(cx.error(&f, format!("from and to are both {:?}; failover goes to another region", fo.from)));
        }
        if out.iter().any(|o: &RegionFailover| o.from == fo.from) {
            return Err(cx.error(&format!("{f}.from"), format!("region {:?} already has a failover", fo.from)));
        }
        out.push(RegionFailover { from: fo.from.clone(), to: fo.to.clone() });
    }
    Ok(out)
}

/// `localityLbSetting` at `field`; `outlier`: whether the same policy sets outlier
/// detection (failover needs it).
pub(super) fn parse_locality_lb(
    cx: &mut Context<'_>,
    field: &str,
    spec: &LocalityLbSpec,
    outlier: bool,
) -> Result<LocalityLb, Diagnostic> {
    if !spec.distribute.is_empty() && !spec.failover.is_empty() {
        return Err(cx.error(field, "distribute and failover are both set; choose one"));
    }
    let distribute = parse_distribute(cx, field, &spec.distribute)?;
    let failover = parse_failover(cx, field, &spec.failover)?;
    if spec.enabled == Some(false) {
        if !distribute.is_empty() || !failover.is_empty() {
            cx.warn(
                &format!("{field}.enabled"),
                "false: locality balancing is off, so distribute and failover are not used",
            );
        }
        return Ok(LocalityLb::Disabled);
    }
    if !distribute.is_empty() {
        return Ok(LocalityLb::Distribute(distribute));
    }
    if !failover.is_empty() && !outlier {
        cx.warn(
            &format!("{field}.failover"),
            "failover needs outlierDetection in the same traffic policy: without ejection Envoy never leaves the \
             nearest endpoints, so this has no effect",
        );
    }
    Ok(LocalityLb::Failover(failover))
}
