//! `meshctl version`: meshctl's version and, when meshd answers, meshd's (ServerInfo).
//! An unreachable meshd is a note, not a failure: the client version is still an answer.

use clap::Args;
use proto::admin::GetServerInfoRequest;
use serde_json::json;

use crate::meshd::{self, MeshdArgs, OutputFormat};
use crate::output;

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Only meshctl's version; do not ask meshd.
    #[arg(long)]
    client: bool,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,

    #[command(flatten)]
    meshd: MeshdArgs,
}

pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

pub async fn run(args: VersionArgs) -> anyhow::Result<()> {
    let server = if args.client { None } else { Some(server_info(&args.meshd).await) };
    if args.output != OutputFormat::Table {
        let mut doc = json!({ "client": { "version": CLIENT_VERSION } });
        match server {
            Some(Ok(info)) => doc["server"] = proto::admin::to_json(&info)?,
            Some(Err(e)) => doc["server_error"] = json!(format!("{e:#}")),
            None => {}
        }
        return output::print_document(args.output, &doc);
    }
    let mut text = format!("meshctl {CLIENT_VERSION}\n");
    match server {
        Some(Ok(info)) => {
            let uptime = info.uptime.map_or(0, |d| d.seconds.max(0));
            let source = match info.source_detail.as_str() {
                "" => info.source_kind.clone(),
                detail => format!("{} {detail}", info.source_kind),
            };
            text.push_str(&format!(
                "meshd   {} (at {}; up {}; source {source}; {} connected{})\n",
                info.version,
                args.meshd.meshd,
                uptime_text(uptime),
                match info.proxies_connected {
                    1 => "1 proxy".to_owned(),
                    n => format!("{n} proxies"),
                },
                if info.ready { "" } else { "; not ready" },
            ));
        }
        Some(Err(e)) => text.push_str(&format!("meshd   unknown: {e:#}\n")),
        None => {}
    }
    output::print_text(&text)
}

async fn server_info(args: &MeshdArgs) -> anyhow::Result<proto::admin::ServerInfo> {
    let mut client = args.connect().await?;
    let info = client
        .get_server_info(GetServerInfoRequest {})
        .await
        .map_err(|s| meshd::call_error(args, "GetServerInfo", s))?;
    Ok(info.into_inner())
}

fn uptime_text(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}
