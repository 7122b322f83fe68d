//! Talking to meshd's admin API: where it is (`--meshd`, `--kubeconfig`, `AMIME_MESHD`, ...;
//! see [`crate::target`]), connecting with an error that says how to point meshctl at it,
//! and finding a proxy by the name a person types.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};
use proto::admin::admin_client::AdminClient;
use proto::admin::{ListProxiesRequest, ProxyStatus};
use tonic::transport::{Channel, Endpoint};

use crate::cluster;
use crate::target::{self, Sources, Target, DEFAULT_MESHD};

/// How long connecting to meshd may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
use crate::UsageError;

/// meshd's gRPC port (MISSION §2), for an address given without one.
const MESHD_PORT: u16 = 15010;

/// How to reach a meshd that is not where meshctl looked.
const HOW_TO_POINT: &str = "start meshd, or point meshctl at it with --meshd HOST:PORT or AMIME_MESHD=HOST:PORT, \
or at its cluster with --kubeconfig FILE";

#[derive(Debug, Clone, Args)]
pub struct MeshdArgs {
    /// meshd's gRPC address (ADS and the admin API); env AMIME_MESHD [default: a kubeconfig's cluster if
    /// there is one, else 127.0.0.1:15010].
    #[arg(long = "meshd", value_name = "HOST:PORT")]
    pub meshd: Option<String>,

    /// Find meshd in this kubeconfig's cluster (its Ready pod in --meshd-namespace, dialled at its pod IP);
    /// else KUBECONFIG, ~/.kube/config, or in a pod its ServiceAccount.
    #[arg(long = "kubeconfig", value_name = "FILE", conflicts_with = "meshd")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: its current context).
    #[arg(long = "context", value_name = "NAME", conflicts_with = "meshd")]
    pub context: Option<String>,

    /// The namespace meshd runs in, in a cluster (-n filters proxies, not this).
    #[arg(long = "meshd-namespace", value_name = "NS", default_value = cluster::DEFAULT_NAMESPACE)]
    pub meshd_namespace: String,
}

/// A connected admin client and where it is, as messages name it.
pub struct Admin {
    pub client: AdminClient<Channel>,
    pub at: String,
}

/// How a command prints what it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// Canonical proto3 JSON (proto field names, as Envoy's config_dump).
    Json,
    /// The same document as YAML.
    Yaml,
}

/// The endpoint for an address: `HOST:PORT` (HOST alone means port 15010), or a full `http://` URL.
fn endpoint(addr: &str, from: &str) -> anyhow::Result<Endpoint> {
    let addr = addr.trim();
    if addr.is_empty() {
        let message = format!("{from} is empty: give meshd's address as HOST:PORT (default {DEFAULT_MESHD})");
        return Err(UsageError(message).into());
    }
    let mut url = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
    // HOST alone means meshd's port there, not HTTP's 80.
    if let Ok(uri) = url.parse::<tonic::codegen::http::Uri>() {
        if let (Some(authority), None) = (uri.authority(), uri.port()) {
            let with_port = format!("{}:{MESHD_PORT}", authority.as_str());
            url = url.replacen(authority.as_str(), &with_port, 1);
        }
    }
    let endpoint = Endpoint::from_shared(url).map_err(|e| {
        UsageError(format!("{from} {addr:?} is not HOST:PORT (for example {DEFAULT_MESHD}): {}", cause(&e)))
    })?;
    Ok(endpoint.connect_timeout(CONNECT_TIMEOUT).timeout(Duration::from_secs(15)))
}

fn admin(channel: Channel, at: String) -> Admin {
    Admin { client: AdminClient::new(channel).max_decoding_message_size(256 * 1024 * 1024), at }
}

impl MeshdArgs {
    /// A client of meshd's admin API, connected: at the address given, or at a Ready pod of
    /// the cluster a kubeconfig points at.
    pub async fn connect(&self) -> anyhow::Result<Admin> {
        let sources = Sources::from_env(self.meshd.clone(), self.kubeconfig.clone(), self.context.clone());
        match target::choose(&sources)? {
            Target::Direct { addr, from } => match endpoint(&addr, from)?.connect().await {
                Ok(channel) => Ok(admin(channel, addr)),
                Err(e) => bail!("cannot reach meshd at {addr} ({}): {HOW_TO_POINT}", cause(&e)),
            },
            Target::Cluster { kubeconfig, context } => {
                let namespace = &self.meshd_namespace;
                let cluster = cluster::connect(&kubeconfig, context.as_deref()).await?;
                let chosen = cluster::find_meshd(&cluster, namespace).await?;
                let at = format!("{} (pod {namespace}/{})", chosen.addr, chosen.pod);
                match endpoint(&chosen.addr.to_string(), "the pod address")?.connect().await {
                    Ok(channel) => Ok(admin(channel, at)),
                    Err(e) => bail!(
                        "cannot reach meshd pod {namespace}/{} at {} in {} ({}): {}",
                        chosen.pod,
                        chosen.addr,
                        cluster.name,
                        match cause(&e).as_str() {
                            "deadline has elapsed" => format!("no connection within {CONNECT_TIMEOUT:?}"),
                            other => other.to_owned(),
                        },
                        cluster::port_forward_hint(namespace)
                    ),
                }
            }
        }
    }
}

/// The innermost cause of an error (a transport error's own text is only "transport error").
pub fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}

/// A gRPC error from meshd, as one line naming the call and the address.
pub fn call_error(at: &str, call: &str, status: tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unimplemented => anyhow::anyhow!(
            "meshd at {at} does not serve the admin API ({call}: {}); is it an older meshd, or another gRPC server?",
            status.message()
        ),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
            anyhow::anyhow!("meshd at {at} did not answer {call} ({}): {HOW_TO_POINT}", status.message())
        }
        _ => anyhow::anyhow!("meshd at {at}: {call}: {}", status.message()),
    }
}

/// Every connected proxy, optionally only those of `namespace`.
pub async fn list_proxies(admin: &mut Admin, namespace: Option<&str>) -> anyhow::Result<Vec<ProxyStatus>> {
    let request = ListProxiesRequest { namespace: namespace.unwrap_or_default().to_owned(), proxy_id: String::new() };
    let response = admin.client.list_proxies(request).await.map_err(|s| call_error(&admin.at, "ListProxies", s))?;
    Ok(response.into_inner().proxies)
}

/// The streams of the proxy a person named (see [`resolve_proxy`]). The exact id is asked
/// for first, so a large mesh is listed whole only when the name needs resolving.
pub async fn find_proxy(admin: &mut Admin, name: &str, namespace: Option<&str>) -> anyhow::Result<Vec<ProxyStatus>> {
    let exact = match namespace {
        Some(ns) if !name.ends_with(&format!(".{ns}")) => format!("{name}.{ns}"),
        _ => name.to_owned(),
    };
    let request = ListProxiesRequest { namespace: String::new(), proxy_id: exact };
    let found = admin.client.list_proxies(request).await.map_err(|s| call_error(&admin.at, "ListProxies", s))?;
    let found = found.into_inner();
    if !found.proxies.is_empty() {
        return Ok(found.proxies);
    }
    let all = list_proxies(admin, None).await?;
    let id = resolve_proxy(name, namespace, &all)?;
    Ok(all.into_iter().filter(|p| p.id == id).collect())
}

/// The id of the proxy a person named: its id (`<pod>.<namespace>`), `<pod>` with
/// `-n NAMESPACE`, or a pod name only one connected proxy has. Otherwise an error that
/// lists close matches.
pub fn resolve_proxy(name: &str, namespace: Option<&str>, proxies: &[ProxyStatus]) -> anyhow::Result<String> {
    let ids: Vec<&str> = proxies.iter().map(|p| p.id.as_str()).collect();
    if let Some(ns) = namespace {
        let qualified = format!("{name}.{ns}");
        if ids.contains(&qualified.as_str()) {
            return Ok(qualified);
        }
    }
    if ids.contains(&name) && namespace.is_none_or(|ns| proxies.iter().any(|p| p.id == name && p.namespace == ns)) {
        return Ok(name.to_owned());
    }
    if namespace.is_none() {
        let by_pod: Vec<&str> =
            ids.iter().copied().filter(|id| id.rsplit_once('.').is_some_and(|(pod, _)| pod == name)).collect();
        match by_pod.as_slice() {
            [one] => return Ok((*one).to_owned()),
            [] => {}
            many => bail!("proxy {name:?} is ambiguous: {}; give <pod>.<namespace> or -n NAMESPACE", many.join(", ")),
        }
    }
    let wanted = match namespace {
        Some(ns) => format!("{name}.{ns}"),
        None => name.to_owned(),
    };
    let close = close_matches(&wanted, &ids);
    let hint = if ids.is_empty() {
        "no proxy is connected to this meshd".to_owned()
    } else if close.is_empty() {
        format!("{} proxies are connected; `meshctl proxy-status` lists them", ids.len())
    } else {
        format!("did you mean: {}?", close.join(", "))
    };
    bail!("no proxy {wanted:?} is connected: {hint}")
}

/// Up to five ids closest to `wanted`: those containing it (or contained in it), the
/// same pod in another namespace, then those within a third of its length in edit
/// distance.
pub fn close_matches<'a>(wanted: &str, ids: &[&'a str]) -> Vec<&'a str> {
    let limit = (wanted.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = ids
        .iter()
        .filter_map(|id| {
            if id.contains(wanted) || wanted.contains(id) {
                return Some((0, *id));
            }
            // The same pod name in another namespace.
            let pod = |s: &'a str| s.rsplit_once('.').map_or(s, |(pod, _)| pod);
            if pod(id) == wanted.rsplit_once('.').map_or(wanted, |(pod, _)| pod) {
                return Some((1, *id));
            }
            let d = edit_distance(wanted, id);
            (d <= limit).then_some((d, *id))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(5).map(|(_, id)| id).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb)).min(above + 1).min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(id: &str) -> ProxyStatus {
        ProxyStatus {
            id: id.into(),
            namespace: id.rsplit_once('.').map(|(_, ns)| ns.to_owned()).unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn proxies_resolve_by_id_pod_or_pod_and_namespace() {
        let proxies: Vec<ProxyStatus> =
            ["reviews-v1.bookinfo", "reviews-v2.bookinfo", "web.default", "web.shop"].map(proxy).into();
        let ok = |name: &str, ns: Option<&str>| resolve_proxy(name, ns, &proxies).unwrap();
        assert_eq!(ok("reviews-v1.bookinfo", None), "reviews-v1.bookinfo");
        assert_eq!(ok("reviews-v1", None), "reviews-v1.bookinfo");
        assert_eq!(ok("web", Some("shop")), "web.shop");
        assert_eq!(ok("web.default", Some("default")), "web.default");
        let err = |name: &str, ns: Option<&str>| resolve_proxy(name, ns, &proxies).unwrap_err().to_string();
        assert_eq!(
            err("web", None),
            "proxy \"web\" is ambiguous: web.default, web.shop; give <pod>.<namespace> or -n NAMESPACE"
        );
        assert_eq!(
            err("reviews-v3.bookinfo", None),
            "no proxy \"reviews-v3.bookinfo\" is connected: did you mean: reviews-v1.bookinfo, reviews-v2.bookinfo?"
        );
        assert_eq!(
            err("web", Some("prod")),
            "no proxy \"web.prod\" is connected: did you mean: web.default, web.shop?"
        );
        assert_eq!(
            err("zzzzzzzzzzzz", None),
            "no proxy \"zzzzzzzzzzzz\" is connected: 4 proxies are connected; `meshctl proxy-status` lists them"
        );
        assert!(resolve_proxy("x", None, &[]).unwrap_err().to_string().contains("no proxy is connected"));
    }

    /// `--meshd HOST` means meshd's port there, not HTTP's port 80.
    #[test]
    fn an_address_without_a_port_gets_meshds() {
        let port = |addr: &str| endpoint(addr, "--meshd").unwrap().uri().port_u16();
        assert_eq!(port("10.0.0.5"), Some(15010));
        assert_eq!(port("meshd.example"), Some(15010));
        assert_eq!(port("[::1]"), Some(15010));
        assert_eq!(port("10.0.0.5:9000"), Some(9000));
        assert_eq!(port("http://meshd.example"), Some(15010));
        assert_eq!(port("http://meshd.example:9000"), Some(9000));
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        for (a, b, d) in [("", "", 0), ("abc", "abc", 0), ("abc", "abd", 1), ("abc", "ab", 1), ("kitten", "sitting", 3)]
        {
            assert_eq!(edit_distance(a, b), d, "{a} {b}");
        }
    }
}
