//! `meshctl proxy-config clusters|listeners|routes|endpoints|secrets PROXY`: what meshd
//! last sent one proxy, read from meshd's admin API (GetConfigDump). A table by
//! default; `-o json|yaml` prints the resources whole, in the canonical proto3 JSON of
//! Envoy's own config_dump (proto field names, defaults left out, `Any`s expanded).

mod tables;

use anyhow::Context;
use clap::{Args, ValueEnum};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use proto::admin::{ConfigDump, GetConfigDumpRequest, ProxyStatus, SyncState};

use crate::meshd::{self, MeshdArgs, OutputFormat};
use crate::output::{self, Table};

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const SDS: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Which resources to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Clusters (CDS), with endpoint counts from EDS.
    #[value(alias = "cluster")]
    Clusters,
    /// Listeners (LDS), one row per filter chain.
    #[value(alias = "listener")]
    Listeners,
    /// Route configurations (RDS), one row per route.
    #[value(alias = "route")]
    Routes,
    /// Endpoint assignments (EDS), one row per endpoint.
    #[value(alias = "endpoint")]
    Endpoints,
    /// Secrets (SDS).
    #[value(alias = "secret")]
    Secrets,
}

impl Kind {
    fn type_url(self) -> &'static str {
        match self {
            Kind::Clusters => CDS,
            Kind::Listeners => LDS,
            Kind::Routes => RDS,
            Kind::Endpoints => EDS,
            Kind::Secrets => SDS,
        }
    }

    /// The types the table needs (the clusters table counts endpoints too).
    fn type_urls(self, output: OutputFormat) -> Vec<String> {
        let mut urls = vec![self.type_url().to_owned()];
        if self == Kind::Clusters && output == OutputFormat::Table {
            urls.push(EDS.to_owned());
        }
        urls
    }
}

#[derive(Debug, Args)]
#[command(after_help = "PROXY is Envoy's node.id, <pod>.<namespace> (as `meshctl proxy-status` lists them), or \
<pod> with -n or when only one proxy has that pod name.\n\n\
Examples:\n  meshctl proxy-config clusters reviews-v1.bookinfo\n  meshctl proxy-config routes reviews-v1 -n bookinfo\n  \
meshctl proxy-config listeners web.default -o json | jq '.[].name'\n  meshctl proxy-config endpoints web.default -o yaml")]
pub struct ProxyConfigArgs {
    /// What to show.
    #[arg(value_enum, value_name = "KIND")]
    kind: Kind,

    /// The proxy: `<pod>.<namespace>`, or `<pod>` with -n or when unique.
    #[arg(value_name = "PROXY")]
    proxy: String,

    /// The proxy's namespace, when PROXY is a pod name.
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
    namespace: Option<String>,

    /// Output format: a table, or the resources whole as JSON or YAML.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,

    #[command(flatten)]
    meshd: MeshdArgs,
}

pub async fn run(args: ProxyConfigArgs) -> anyhow::Result<()> {
    let mut admin = args.meshd.connect().await?;
    let proxies = meshd::find_proxy(&mut admin, &args.proxy, args.namespace.as_deref()).await?;
    let proxy_id = proxies.first().map(|p| p.id.clone()).unwrap_or_else(|| args.proxy.clone());
    let request = GetConfigDumpRequest { proxy_id: proxy_id.clone(), type_urls: args.kind.type_urls(args.output) };
    let dump = admin.client.get_config_dump(request).await;
    let dump = dump.map_err(|s| meshd::call_error(&admin.at, "GetConfigDump", s))?;
    let dump = dump.into_inner();
    if let Some(note) = streams_note(&proxies, &dump) {
        eprintln!("{note}");
    }
    if args.output != OutputFormat::Table {
        return output::print_document(args.output, &resources_json(&dump, args.kind.type_url())?);
    }
    let note = note(&dump, args.kind);
    if let Some(note) = &note {
        eprintln!("{note}");
    }
    let table = table(&dump, args.kind)?;
    if table.is_empty() {
        if note.is_none() {
            eprintln!("No {} sent to {proxy_id}.", format!("{:?}", args.kind).to_lowercase());
        }
        return Ok(());
    }
    output::print_text(&table.render())
}

/// The resources of one type in a dump.
fn resources<'a>(dump: &'a ConfigDump, type_url: &'a str) -> impl Iterator<Item = &'a Any> {
    dump.types
        .iter()
        .filter(move |t| t.type_url == type_url)
        .flat_map(|t| &t.resources)
        .filter_map(|r| r.resource.as_ref())
}

/// Decodes every resource of type `M`, naming the one that does not decode.
fn decoded<M: Message + Name + Default>(dump: &ConfigDump) -> anyhow::Result<Vec<M>> {
    resources(dump, &M::type_url())
        .map(|any| M::decode(any.value.as_slice()).with_context(|| format!("decoding a {} from meshd", M::full_name())))
        .collect()
}

/// The readable table of `kind`.
fn table(dump: &ConfigDump, kind: Kind) -> anyhow::Result<Table> {
    Ok(match kind {
        Kind::Clusters => tables::clusters(&decoded(dump)?, &decoded(dump)?),
        Kind::Listeners => tables::listeners(&decoded(dump)?),
        Kind::Routes => tables::routes(&decoded(dump)?),
        Kind::Endpoints => tables::endpoints(&decoded(dump)?),
        Kind::Secrets => tables::secrets(&decoded(dump)?),
    })
}

/// The resources as a JSON array in canonical proto3 JSON.
fn resources_json(dump: &ConfigDump, type_url: &str) -> anyhow::Result<serde_json::Value> {
    let all: Result<Vec<_>, _> = resources(dump, type_url).map(proto::envoy_json::any_to_json).collect();
    Ok(serde_json::Value::Array(all.context("converting meshd's resources to JSON")?))
}

/// Two live streams claim the proxy's id (a copied bootstrap, a pod replaced while the
/// old one lingers): meshd answers for one of them; say which, on every output format.
fn streams_note(proxies: &[ProxyStatus], dump: &ConfigDump) -> Option<String> {
    if proxies.len() < 2 && !proxies.iter().any(|p| p.duplicate_id) {
        return None;
    }
    let stream = |p: &ProxyStatus| format!("{} from {}", p.connection_id, p.peer_address);
    let all: Vec<String> = proxies.iter().map(stream).collect();
    let shown = proxies
        .iter()
        .find(|p| p.connection_id == dump.connection_id)
        .map_or_else(|| dump.connection_id.to_string(), stream);
    Some(format!(
        "warning: {} streams claim {} (connections {}): this is what connection {shown} was sent",
        all.len().max(2),
        dump.proxy_id,
        all.join(", ")
    ))
}

/// What to tell a person before the table: the type was never asked for, or what the
/// proxy holds differs from what was sent.
fn note(dump: &ConfigDump, kind: Kind) -> Option<String> {
    let Some(t) = dump.types.iter().find(|t| t.type_url == kind.type_url()) else {
        return Some(match kind {
            Kind::Secrets => {
                format!("{} has not asked for secrets (SDS): meshd sends none until mTLS is enabled.", dump.proxy_id)
            }
            _ => format!("{} has not asked for {} yet.", dump.proxy_id, format!("{kind:?}").to_lowercase()),
        });
    };
    match t.state() {
        SyncState::Nacked => Some(format!(
            "warning: {} rejected the last {} update (see `meshctl proxy-status {}`): this is what meshd sent, \
             not what Envoy runs.",
            dump.proxy_id, t.short_name, dump.proxy_id
        )),
        SyncState::Stale => {
            Some(format!("note: {} has not acknowledged this {} version yet.", dump.proxy_id, t.short_name))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_streams_with_one_id_say_which_one_is_shown() {
        let stream = |connection_id: u64, peer: &str| ProxyStatus {
            id: "web.default".into(),
            connection_id,
            peer_address: peer.into(),
            duplicate_id: true,
            ..Default::default()
        };
        let dump = ConfigDump { proxy_id: "web.default".into(), connection_id: 7, types: vec![] };
        let both = [stream(3, "10.0.0.1:4000"), stream(7, "10.0.0.2:5000")];
        assert_eq!(
            streams_note(&both, &dump).as_deref(),
            Some(
                "warning: 2 streams claim web.default (connections 3 from 10.0.0.1:4000, 7 from 10.0.0.2:5000): \
                 this is what connection 7 from 10.0.0.2:5000 was sent"
            )
        );
        let one = [ProxyStatus { duplicate_id: false, ..stream(7, "10.0.0.2:5000") }];
        assert_eq!(streams_note(&one, &dump), None);
    }
}
