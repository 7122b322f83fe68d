//! `meshctl proxy-status [PROXY]`: did every proxy get what meshd wants it to have?
//! One row per proxy and xDS type, read from meshd's admin API (ListProxies).

use clap::Args;
use proto::admin::{ListProxiesResponse, ProxyStatus, SyncState, TypeStatus};

use crate::meshd::{self, MeshdArgs, OutputFormat};
use crate::output::{self, age, short_version, Table};

#[derive(Debug, Args)]
#[command(after_help = "States, per proxy and xDS type (CDS clusters, EDS endpoints, LDS listeners, RDS routes, \
SDS secrets):\n  \
SYNCED    the proxy acknowledged the latest response, which holds what meshd wants it to have\n  \
STALE     sent and not acknowledged yet, or meshd has a newer version to send\n  \
NACKED    the proxy rejected the latest update (MESSAGE says why); it runs an unknown mix of old and new\n  \
WARMING   clusters acknowledged, but some wait for endpoints the proxy has not asked for\n  \
NOT SENT  the proxy asked and meshd has sent nothing yet\n\n\
Examples:\n  meshctl proxy-status\n  meshctl proxy-status -n bookinfo\n  meshctl proxy-status reviews-v1.bookinfo -o yaml\n  \
meshctl proxy-status --meshd 10.0.0.5:15010\n  meshctl proxy-status --kubeconfig ~/.kube/prod --context east")]
pub struct ProxyStatusArgs {
    /// Only this proxy: `<pod>.<namespace>` (Envoy's node.id), or `<pod>` with -n or when unique.
    #[arg(value_name = "PROXY")]
    proxy: Option<String>,

    /// Only proxies of this namespace.
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
    namespace: Option<String>,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,

    #[command(flatten)]
    meshd: MeshdArgs,
}

pub async fn run(args: ProxyStatusArgs) -> anyhow::Result<()> {
    let mut admin = args.meshd.connect().await?;
    let namespace = args.namespace.as_deref();
    let proxies = match &args.proxy {
        Some(name) => meshd::find_proxy(&mut admin, name, namespace).await?,
        None => meshd::list_proxies(&mut admin, namespace).await?,
    };
    match args.output {
        OutputFormat::Table => {
            if proxies.is_empty() {
                let scope = args.namespace.as_ref().map(|ns| format!(" in namespace {ns}")).unwrap_or_default();
                eprintln!("No proxies connected to meshd at {}{scope}.", admin.at);
                return Ok(());
            }
            output::print_text(&table(&proxies).render())
        }
        format => output::print_document(format, &proto::admin::to_json(&ListProxiesResponse { proxies })?),
    }
}

/// The word a state is shown as.
pub fn state_name(state: SyncState) -> &'static str {
    match state {
        SyncState::Synced => "SYNCED",
        SyncState::NotSent | SyncState::Unspecified => "NOT SENT",
        SyncState::Stale => "STALE",
        SyncState::Nacked => "NACKED",
        SyncState::Warming => "WARMING",
    }
}

/// How a proxy is named in the PROXY column: its id, and `(gateway)` for an ingress gateway.
fn proxy_name(p: &ProxyStatus) -> String {
    match p.details.get("proxy_type").map(String::as_str) {
        Some("gateway") => format!("{} (gateway)", p.id),
        _ => p.id.clone(),
    }
}

/// One row per proxy and type; a proxy that asked for nothing yet gets one row.
pub fn table(proxies: &[ProxyStatus]) -> Table {
    let mut table = Table::new(&["PROXY", "TYPE", "STATE", "SENT", "ACKED", "RESOURCES", "AGE", "MESSAGE"]);
    for p in proxies {
        let name = proxy_name(p);
        let mut note_dup = p.duplicate_id.then(|| format!("another stream claims this id (peer {})", p.peer_address));
        if p.types.is_empty() {
            let message = note_dup.take().unwrap_or_else(|| "connected; no request yet".to_owned());
            let cells = [name.as_str(), "-", "NOT SENT", "-", "-", "0", &age(p.connected_at.as_ref()), &message];
            table.row(cells.map(str::to_owned).to_vec());
        }
        for t in &p.types {
            let mut message = message(t, p.endpoints_not_subscribed);
            if let Some(dup) = note_dup.take() {
                message = if message.is_empty() { dup } else { format!("{message}; {dup}") };
            }
            table.row(vec![
                name.clone(),
                t.short_name.clone(),
                state_name(t.state()).to_owned(),
                short_version(&t.sent_version),
                short_version(&t.acked_version),
                t.resource_count.to_string(),
                age(t.sent_at.as_ref()),
                message,
            ]);
        }
    }
    table
}

/// What the MESSAGE column says of a type that is not SYNCED.
fn message(t: &TypeStatus, endpoints_not_subscribed: u64) -> String {
    match t.state() {
        SyncState::Nacked => match &t.nack {
            Some(nack) => format!(
                "rejected {}: {}",
                short_version(&nack.rejected_version),
                nack.message.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
            None => "rejected".to_owned(),
        },
        SyncState::Warming => format!("{endpoints_not_subscribed} cluster(s) wait for endpoints not subscribed"),
        SyncState::Stale if !t.desired_version.is_empty() && t.desired_version != t.sent_version => {
            format!("meshd has {} to send", short_version(&t.desired_version))
        }
        SyncState::Stale => "sent, not acknowledged yet".to_owned(),
        SyncState::Synced | SyncState::NotSent | SyncState::Unspecified => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::admin::Nack;

    fn ty(name: &str, state: SyncState, sent: &str, acked: &str) -> TypeStatus {
        TypeStatus {
            short_name: name.into(),
            state: state as i32,
            sent_version: sent.into(),
            acked_version: acked.into(),
            desired_version: sent.into(),
            resource_count: 2,
            ..Default::default()
        }
    }

    #[test]
    fn one_row_per_type_with_the_reason_when_not_synced() {
        let mut nacked = ty("RDS", SyncState::Nacked, "bbbbbbbbbbbbbbbb", "aaaaaaaaaaaaaaaa");
        nacked.nack = Some(Nack {
            rejected_version: "bbbbbbbbbbbbbbbb".into(),
            message: "route: bad\n regex".into(),
            ..Default::default()
        });
        let mut behind = ty("EDS", SyncState::Stale, "cccccccccccccccc", "cccccccccccccccc");
        behind.desired_version = "dddddddddddddddd".into();
        let proxies = [
            ProxyStatus {
                id: "a.ns".into(),
                types: vec![
                    ty("CDS", SyncState::Warming, "1", "1"),
                    behind,
                    ty("LDS", SyncState::Stale, "2", ""),
                    nacked,
                ],
                endpoints_not_subscribed: 3,
                ..Default::default()
            },
            ProxyStatus {
                id: "b.ns".into(),
                details: [("proxy_type".to_owned(), "gateway".to_owned())].into_iter().collect(),
                duplicate_id: true,
                peer_address: "127.0.0.1:5".into(),
                ..Default::default()
            },
        ];
        let text = table(&proxies).render();
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .map(|l| l.leak() as &str)
            .collect();
        assert_eq!(
            lines,
            [
                "PROXY TYPE STATE SENT ACKED RESOURCES AGE MESSAGE",
                "a.ns CDS WARMING 1 1 2 - 3 cluster(s) wait for endpoints not subscribed",
                "a.ns EDS STALE cccccccccccc cccccccccccc 2 - meshd has dddddddddddd to send",
                "a.ns LDS STALE 2 - 2 - sent, not acknowledged yet",
                "a.ns RDS NACKED bbbbbbbbbbbb aaaaaaaaaaaa 2 - rejected bbbbbbbbbbbb: route: bad regex",
                "b.ns (gateway) - NOT SENT - - 0 - another stream claims this id (peer 127.0.0.1:5)",
            ]
        );
    }
}
