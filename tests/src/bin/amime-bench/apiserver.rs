//! kube-apiserver's request counters (`apiserver_request_total` from its `/metrics`), keyed
//! `VERB resource[/subresource][.group]`, and deltas between two scrapes.
//!
//! The counters say nothing about the client: a delta is attributed to meshd only by taking
//! it while nothing else acts (the bench's own writes are subtracted by the caller, the idle
//! rate of kube-controller-manager is measured beforehand). A WATCH is counted when it ends,
//! so the watches meshd holds open show up in `apiserver_longrunning_requests` instead.

use super::*;

pub(crate) type Requests = BTreeMap<String, f64>;

/// The labels of one sample line, e.g. `{verb="GET",resource="pods"}`.
pub(crate) fn labels(text: &str) -> BTreeMap<&str, &str> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        out.insert(key.trim_start_matches([',', ' ']), &after[..end]);
        rest = &after[end + 1..];
    }
    out
}

/// The samples of metric `name` (filtered by `keep`) summed by request key. Requests to
/// non-resource URLs (`/metrics`, `/version`, discovery) are left out.
pub(crate) fn requests_of(text: &str, name: &str, keep: impl Fn(&BTreeMap<&str, &str>) -> bool) -> Requests {
    let mut out = Requests::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else { continue };
        let Some((label_text, value)) = rest.rsplit_once("} ") else { continue };
        let Ok(value) = value.trim().parse::<f64>() else { continue };
        let l = labels(label_text);
        let resource = l.get("resource").copied().unwrap_or("");
        if resource.is_empty() || !keep(&l) {
            continue;
        }
        let mut key = format!("{} {resource}", l.get("verb").copied().unwrap_or("?"));
        if let Some(sub) = l.get("subresource").filter(|s| !s.is_empty()) {
            key.push('/');
            key.push_str(sub);
        }
        if let Some(group) = l.get("group").filter(|g| !g.is_empty()) {
            key.push('.');
            key.push_str(group);
        }
        *out.entry(key).or_default() += value;
    }
    out
}

/// Completed requests by key.
pub(crate) fn completed(text: &str) -> Requests {
    requests_of(text, "apiserver_request_total", |_| true)
}

/// Watches open now, by resource.
pub(crate) fn open_watches(text: &str) -> Requests {
    requests_of(text, "apiserver_longrunning_requests", |l| l.get("verb") == Some(&"WATCH"))
}

/// `after - before`, only the keys that changed.
pub(crate) fn delta(after: &Requests, before: &Requests) -> Requests {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| v.abs() > 0.5)
        .collect()
}

/// Removes `n` requests of `key` (made by the bench itself) from `requests`.
pub(crate) fn subtract(requests: &mut Requests, key: &str, n: f64) {
    if let Some(v) = requests.get_mut(key) {
        *v -= n;
        if v.abs() < 0.5 {
            requests.remove(key);
        }
    }
}

pub(crate) fn total(requests: &Requests) -> f64 {
    requests.values().sum()
}

/// `GET pods 3, LIST services 2, ...` (largest first).
pub(crate) fn describe(requests: &Requests) -> String {
    if requests.is_empty() {
        return "none".to_owned();
    }
    let mut v: Vec<(&String, &f64)> = requests.iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    v.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP apiserver_request_total x
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="LIST",version="v1"} 10
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="networking.amime.dev",resource="virtualservices",scope="resource",subresource="status",verb="PATCH",version="v1"} 100
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="",scope="",subresource="/metrics",verb="GET",version=""} 7
apiserver_longrunning_requests{component="apiserver",group="",resource="pods",scope="cluster",subresource="",verb="WATCH",version="v1"} 3
apiserver_longrunning_requests{component="apiserver",group="",resource="pods",scope="resource",subresource="log",verb="CONNECT",version="v1"} 1
"#;

    #[test]
    fn counts_by_verb_and_resource_without_non_resource_urls() {
        let r = completed(SCRAPE);
        assert_eq!(r.get("LIST pods"), Some(&12.0));
        assert_eq!(r.get("PATCH virtualservices/status.networking.amime.dev"), Some(&100.0));
        assert_eq!(r.len(), 2);
        assert_eq!(open_watches(SCRAPE), Requests::from([("WATCH pods".to_owned(), 3.0)]));
    }

    #[test]
    fn deltas_keep_changes_and_subtract_the_benchs_own() {
        let before = Requests::from([("LIST pods".to_owned(), 10.0), ("GET nodes".to_owned(), 1.0)]);
        let after = Requests::from([
            ("LIST pods".to_owned(), 12.0),
            ("GET nodes".to_owned(), 1.0),
            ("PATCH virtualservices".to_owned(), 1.0),
        ]);
        let mut d = delta(&after, &before);
        assert_eq!(describe(&d), "LIST pods 2, PATCH virtualservices 1");
        subtract(&mut d, "PATCH virtualservices", 1.0);
        assert_eq!(d, Requests::from([("LIST pods".to_owned(), 2.0)]));
        assert_eq!(total(&d), 2.0);
    }
}
