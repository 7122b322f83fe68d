//! Constraints Envoy enforces when it loads a resource that its proto annotations
//! do not declare. Each is keyed by message type and runs wherever that message
//! appears, like the annotation rules.

use prost_reflect::{DynamicMessage, ReflectMessage, Value};

use super::{violation, Violation};

/// Largest RE2 program a sidecar accepts: meshctl's bootstrap sets
/// `re2.max_program_size.error_level` to 32768 instructions.
pub const RE2_MAX_PROGRAM_SIZE: usize = 32768;

/// Bytes of a compiled `regex` program per RE2 instruction, measured at 36-56 with
/// ASCII classes (as RE2 has them); 20 keeps the bound below Envoy's with a margin.
const COMPILED_BYTES_PER_INSTRUCTION: usize = 20;

pub(super) fn check(msg: &DynamicMessage, path: &str, out: &mut Vec<Violation>) {
    match msg.descriptor().full_name() {
        "envoy.config.route.v3.WeightedCluster" => weighted_cluster(msg, path, out),
        "envoy.config.route.v3.WeightedCluster.ClusterWeight" => cluster_weight(msg, path, out),
        "envoy.type.matcher.v3.RegexMatcher" => regex_matcher(msg, path, out),
        "envoy.config.route.v3.RouteConfiguration" => unique_domains(msg, path, out),
        "envoy.config.listener.v3.Listener" => distinct_filter_chain_matches(msg, path, out),
        _ => {}
    }
}

fn at(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// Envoy sums the weights in 32 bits and refuses a sum of zero or one that overflows.
fn weighted_cluster(msg: &DynamicMessage, path: &str, out: &mut Vec<Violation>) {
    let Some(clusters) = msg.get_field_by_name("clusters") else { return };
    let Some(clusters) = clusters.as_list() else { return };
    if clusters.is_empty() {
        return; // min_items reports it.
    }
    let sum: u64 = clusters
        .iter()
        .filter_map(Value::as_message)
        .filter_map(|c| c.get_field_by_name("weight")?.as_message()?.get_field_by_name("value")?.as_u32())
        .map(u64::from)
        .sum();
    if sum == 0 {
        out.push(violation(&at(path, "clusters"), "weights sum to 0; Envoy needs a sum greater than 0".to_owned()));
    } else if sum > u64::from(u32::MAX) {
        out.push(violation(
            &at(path, "clusters"),
            format!("weights sum to {sum}; Envoy refuses a sum above {}", u32::MAX),
        ));
    }
}

fn cluster_weight(msg: &DynamicMessage, path: &str, out: &mut Vec<Violation>) {
    let text = |name: &str| msg.get_field_by_name(name).and_then(|v| v.as_str().map(str::is_empty));
    if text("name") == Some(true) && text("cluster_header") == Some(true) {
        out.push(violation(&at(path, "name"), "one of name or cluster_header is required".to_owned()));
    }
}

/// A domain may appear in one virtual host of a route configuration, once.
fn unique_domains(msg: &DynamicMessage, path: &str, out: &mut Vec<Violation>) {
    let Some(hosts) = msg.get_field_by_name("virtual_hosts") else { return };
    let mut seen = std::collections::HashSet::new();
    for (i, host) in hosts.as_list().unwrap_or_default().iter().filter_map(Value::as_message).enumerate() {
        let Some(domains) = host.get_field_by_name("domains") else { continue };
        for (j, domain) in domains.as_list().unwrap_or_default().iter().filter_map(Value::as_str).enumerate() {
            if !seen.insert(domain.to_ascii_lowercase()) {
                out.push(violation(
                    &at(path, &format!("virtual_hosts[{i}].domains[{j}]")),
                    format!("domain {domain:?} appears twice; Envoy allows each domain once per route configuration"),
                ));
            }
        }
    }
}

/// Envoy refuses a listener where two filter chains match the same connections: the
/// same destination port, address range and server name with the same other
/// conditions ("multiple filter chains with the same matching rules are defined").
/// Ranges are compared as written (the translator writes them with host bits cleared).
fn distinct_filter_chain_matches(msg: &DynamicMessage, path: &str, out: &mut Vec<Violation>) {
    let Some(chains) = msg.get_field_by_name("filter_chains") else { return };
    let mut seen: std::collections::HashMap<(u32, String, String, Vec<u8>), usize> = Default::default();
    for (i, chain) in chains.as_list().unwrap_or_default().iter().filter_map(Value::as_message).enumerate() {
        let Some(m) = chain.get_field_by_name("filter_chain_match") else { continue };
        let Some(m) = m.as_message() else { continue };
        let port = m
            .get_field_by_name("destination_port")
            .and_then(|p| p.as_message().and_then(|p| p.get_field_by_name("value")?.as_u32()))
            .unwrap_or(0);
        let list = |name: &str, item: &dyn Fn(&Value) -> String| -> Vec<String> {
            let items: Vec<String> = m
                .get_field_by_name(name)
                .map(|v| v.as_list().unwrap_or_default().iter().map(item).collect())
                .unwrap_or_default();
            if items.is_empty() {
                vec![String::new()]
            } else {
                items
            }
        };
        let prefixes = list("prefix_ranges", &|v| {
            let Some(r) = v.as_message() else { return String::new() };
            let text = |f: &str| r.get_field_by_name(f).and_then(|x| x.as_str().map(str::to_owned)).unwrap_or_default();
            let len = r
                .get_field_by_name("prefix_len")
                .and_then(|l| l.as_message().and_then(|l| l.get_field_by_name("value")?.as_u32()));
            format!("{}/{}", text("address_prefix"), len.map_or("-".to_owned(), |l| l.to_string()))
        });
        let names = list("server_names", &|v| v.as_str().unwrap_or_default().to_ascii_lowercase());
        let mut rest = m.clone();
        for f in ["destination_port", "prefix_ranges", "server_names"] {
            rest.clear_field_by_name(f);
        }
        let rest = prost::Message::encode_to_vec(&rest);
        for prefix in &prefixes {
            for name in &names {
                if let Some(first) = seen.insert((port, prefix.clone(), name.clone(), rest.clone()), i) {
                    out.push(violation(
                        &at(path, &format!("filter_chains[{i}].filter_chain_match")),
                        format!(
                            "matches the same connections as filter_chains[{first}] (range {prefix:?}, server name \
                             {name:?}); Envoy refuses filter chains with the same matching rules"
                        ),
                    ));
                    return;
                }
            }
        }
    }
}

/// The pattern must be valid RE2 and its program within the sidecars' size limit.
fn regex_matcher(msg: &DynamicMessage, path: &str, out: &mut Vec<Violation>) {
    let Some(regex) = msg.get_field_by_name("regex") else { return };
    let Some(pattern) = regex.as_str() else { return };
    if pattern.is_empty() {
        return; // min_len reports it.
    }
    if let Some(problem) = regex_problem(pattern) {
        out.push(violation(&at(path, "regex"), problem));
    }
}

/// Why Envoy would refuse `pattern` as a regex, if it would.
pub fn regex_problem(pattern: &str) -> Option<String> {
    let too_large = "regular expression is too large for Envoy (RE2 program size limit)";
    if let Err(e) = regex::Regex::new(pattern) {
        if matches!(e, regex::Error::CompiledTooBig(_)) {
            return Some(too_large.to_owned());
        }
        let detail = e.to_string().lines().last().unwrap_or_default().trim().to_owned();
        return Some(format!("invalid regular expression: {detail}"));
    }
    regex::bytes::RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(COMPILED_BYTES_PER_INSTRUCTION * RE2_MAX_PROGRAM_SIZE)
        .build()
        .err()
        .map(|_| too_large.to_owned())
}
