//! Delegation as Istio merges it (`mergeVirtualServicesIfNeeded`): a root rule with
//! `delegate` is replaced by the delegate VirtualService's rules (a VirtualService
//! without hosts), each with its matches merged with the root's:
//! - no root match: the delegate's matches; no delegate match: the root's;
//! - else each delegate match is merged with every root match it does not conflict
//!   with (the root's conditions where the delegate's leave them unset); a delegate match
//!   that conflicts with every root match drops the delegate rule, with a warning
//!   naming both rules (Istio: "HTTPMatchRequests conflict");
//! - the merged rule keeps the delegate's actions, and the root's where the delegate
//!   has none (timeout, retries, fault, headers, rewrite, mirrors, CORS);
//! - a missing delegate (or one with hosts) drops the root rule, with a warning: its
//!   requests go on to the next rules, and without one Envoy answers 404, as in Istio.
//!
//! Hosts in a delegate's destinations resolve in the delegate's namespace.

use std::borrow::Cow;

use crate::model::index::Index;
use crate::model::{resolve_host, HeaderMatch, HttpMatch, HttpRoute, StringMatch, VirtualService};

use super::Problems;

/// `vs` with its delegating rules replaced by their delegates' merged rules.
pub(crate) fn expand<'a>(model: &Index, vs: &'a VirtualService, problems: &mut Problems) -> Cow<'a, VirtualService> {
    if vs.http.iter().all(|r| r.delegate.is_none()) {
        return Cow::Borrowed(vs);
    }
    let mut http = Vec::new();
    for (i, root) in vs.http.iter().enumerate() {
        let Some(d) = &root.delegate else {
            http.push(root.clone());
            continue;
        };
        let field = format!("spec.http[{i}].delegate");
        let found = model.virtual_services.get(&(d.namespace.clone(), d.name.clone()));
        let delegate = match found {
            None => {
                problems.warn_vs(
                    vs,
                    &field,
                    format!(
                        "VirtualService {}/{} does not exist; the rule is left out (its requests go on to the next \
                         rules, as in Istio)",
                        d.namespace, d.name
                    ),
                );
                continue;
            }
            Some(dv) if !dv.hosts.is_empty() => {
                problems.warn_vs(
                    vs,
                    &field,
                    format!(
                        "VirtualService {}/{} has hosts, so it is no delegate (a delegate has none); the rule is left out",
                        d.namespace, d.name
                    ),
                );
                continue;
            }
            Some(dv) => dv,
        };
        for (j, rule) in delegate.http.iter().enumerate() {
            match merge_rule(root, rule, &delegate.namespace) {
                Some(merged) => http.push(merged),
                None => problems.warn_vs(
                    vs,
                    &field,
                    format!(
                        "the matches of rule {} (spec.http[{j}]) of delegate {}/{} conflict with this rule's {}; \
                         that rule is left out (as in Istio)",
                        rule_name(rule),
                        delegate.namespace,
                        delegate.name,
                        rule_name(root)
                    ),
                ),
            }
        }
    }
    Cow::Owned(VirtualService { http, ..vs.clone() })
}

fn rule_name(rule: &HttpRoute) -> String {
    rule.name.as_deref().map_or_else(|| "(unnamed)".to_owned(), |n| format!("{n:?}"))
}

/// `leaf` under `root`, or None when their matches conflict.
fn merge_rule(root: &HttpRoute, leaf: &HttpRoute, leaf_namespace: &str) -> Option<HttpRoute> {
    let matches = merge_matches(&root.matches, &leaf.matches)?;
    let mut out = leaf.clone();
    out.matches = matches;
    out.name = join_names(root.name.as_deref(), leaf.name.as_deref());
    for d in &mut out.route {
        d.destination.host = resolve_host(&d.destination.host, leaf_namespace);
    }
    for m in &mut out.actions.mirrors {
        m.destination.host = resolve_host(&m.destination.host, leaf_namespace);
    }
    let (a, r) = (&mut out.actions, &root.actions);
    a.timeout = a.timeout.or(r.timeout);
    a.retries = a.retries.take().or_else(|| r.retries.clone());
    a.fault = a.fault.take().or_else(|| r.fault.clone());
    a.rewrite = a.rewrite.take().or_else(|| r.rewrite.clone());
    a.cors = a.cors.take().or_else(|| r.cors.clone());
    if a.headers.is_empty() {
        a.headers = r.headers.clone();
    }
    if a.mirrors.is_empty() {
        a.mirrors = r.mirrors.clone();
    }
    out.delegate = None;
    Some(out)
}

/// Istio's names for merged rules and matches: `root-leaf`, or whichever is set.
fn join_names(root: Option<&str>, leaf: Option<&str>) -> Option<String> {
    match (root, leaf) {
        (Some(r), Some(l)) => Some(format!("{r}-{l}")),
        (r, l) => l.or(r).map(str::to_owned),
    }
}

/// Every leaf match merged with each root match it fits; None when one fits none.
pub(crate) fn merge_matches(root: &[HttpMatch], leaf: &[HttpMatch]) -> Option<Vec<HttpMatch>> {
    if root.is_empty() {
        return Some(leaf.to_vec());
    }
    if leaf.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for l in leaf {
        let fitting: Vec<HttpMatch> = root.iter().filter(|r| !conflict(r, l)).map(|r| merge_match(r, l)).collect();
        if fitting.is_empty() {
            return None;
        }
        out.extend(fitting);
    }
    Some(out)
}

fn merge_match(root: &HttpMatch, leaf: &HttpMatch) -> HttpMatch {
    let union = |r: &std::collections::BTreeMap<String, HeaderMatch>, l: &std::collections::BTreeMap<_, _>| {
        let mut m = r.clone();
        m.extend(l.iter().map(|(k, v): (&String, &HeaderMatch)| (k.clone(), v.clone())));
        m
    };
    let mut query_params = root.query_params.clone();
    query_params.extend(leaf.query_params.iter().map(|(k, v)| (k.clone(), v.clone())));
    HttpMatch {
        name: join_names(root.name.as_deref(), leaf.name.as_deref()),
        uri: leaf.uri.clone().or_else(|| root.uri.clone()),
        headers: union(&root.headers, &leaf.headers),
        without_headers: union(&root.without_headers, &leaf.without_headers),
        query_params,
        method: leaf.method.clone().or_else(|| root.method.clone()),
        authority: leaf.authority.clone().or_else(|| root.authority.clone()),
        port: leaf.port.or(root.port),
        ignore_uri_case: leaf.ignore_uri_case,
        scheme: leaf.scheme.clone().or_else(|| root.scheme.clone()),
        source_labels: {
            let mut labels = root.source_labels.clone();
            labels.extend(leaf.source_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            labels
        },
        source_namespace: leaf.source_namespace.clone().or_else(|| root.source_namespace.clone()),
        gateways: if leaf.gateways.is_empty() { root.gateways.clone() } else { leaf.gateways.clone() },
    }
}

/// Istio's `hasConflict`: the leaf match is not within the root match.
fn conflict(root: &HttpMatch, leaf: &HttpMatch) -> bool {
    let strings = [
        (&root.uri, &leaf.uri),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
        (&root.scheme, &leaf.scheme),
    ];
    if strings.iter().any(|(r, l)| matches!((r, l), (Some(r), Some(l)) if string_conflict(r, l))) {
        return true;
    }
    if matches!((&root.source_namespace, &leaf.source_namespace), (Some(r), Some(l)) if r != l)
        || leaf.source_labels.iter().any(|(k, v)| root.source_labels.get(k).is_some_and(|r| r != v))
    {
        return true;
    }
    let header = |r: Option<&HeaderMatch>, l: &HeaderMatch| match (r, l) {
        (None, _) => false,
        (Some(HeaderMatch::Value(r)), HeaderMatch::Value(l)) => string_conflict(r, l),
        // A presence match is an empty StringMatch to Istio, which conflicts with any other.
        _ => true,
    };
    leaf.headers.iter().any(|(k, l)| header(root.headers.get(k), l))
        || leaf.without_headers.iter().any(|(k, l)| header(root.without_headers.get(k), l))
        || leaf.query_params.iter().any(|(k, l)| root.query_params.get(k).is_some_and(|r| string_conflict(r, l)))
        || root.ignore_uri_case != leaf.ignore_uri_case
        || matches!((root.port, leaf.port), (Some(r), Some(l)) if r != l)
}

/// Istio's `stringMatchConflict` for two set matches: the leaf must be as narrow.
fn string_conflict(root: &StringMatch, leaf: &StringMatch) -> bool {
    use StringMatch::{Exact, Prefix, Regex};
    match (root, leaf) {
        (Regex(_), _) | (_, Regex(_)) => true,
        (Exact(r), Exact(l)) => r != l,
        (Exact(_), Prefix(_)) => true,
        (Prefix(r), Prefix(l)) | (Prefix(r), Exact(l)) => !l.starts_with(r.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(m: StringMatch) -> HttpMatch {
        HttpMatch { uri: Some(m), ..Default::default() }
    }

    #[test]
    fn string_matches_conflict_as_in_istio() {
        use StringMatch::{Exact, Prefix, Regex};
        let p = |s: &str| Prefix(s.into());
        let e = |s: &str| Exact(s.into());
        let cases = [
            (p("/a"), p("/a/b"), false),
            (p("/a/b"), p("/a"), true),
            (p("/a"), e("/a/x"), false),
            (p("/a"), e("/b"), true),
            (e("/a"), e("/a"), false),
            (e("/a"), e("/b"), true),
            (e("/a"), p("/a"), true),
            (Regex("/a.*".into()), p("/a"), true),
            (p("/a"), Regex("/a.*".into()), true),
        ];
        for (root, leaf, want) in cases {
            assert_eq!(string_conflict(&root, &leaf), want, "{root:?} / {leaf:?}");
        }
    }

    #[test]
    fn matches_merge_with_every_root_match_they_fit() {
        let root = vec![uri(StringMatch::Prefix("/a".into())), uri(StringMatch::Prefix("/b".into()))];
        let mut leaf = uri(StringMatch::Prefix("/a/x".into()));
        leaf.headers.insert("x-user".into(), HeaderMatch::Present);
        let merged = merge_matches(&root, std::slice::from_ref(&leaf)).unwrap();
        assert_eq!(merged, vec![leaf.clone()], "only /a fits; the leaf's uri is the narrower");
        // A leaf without uri takes the root's.
        let bare = HttpMatch { method: Some(StringMatch::Exact("GET".into())), ..Default::default() };
        let merged = merge_matches(&root[..1], &[bare]).unwrap();
        assert_eq!(merged[0].uri, Some(StringMatch::Prefix("/a".into())));
        assert_eq!(merged[0].method, Some(StringMatch::Exact("GET".into())));
        // Fitting no root match drops the rule.
        assert_eq!(merge_matches(&root, &[uri(StringMatch::Prefix("/c".into()))]), None);
        // No matches on either side.
        assert_eq!(merge_matches(&[], &[leaf.clone()]).unwrap(), vec![leaf.clone()]);
        assert_eq!(merge_matches(&root, &[]).unwrap(), root);
    }
}
