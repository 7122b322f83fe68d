//! meshd: the Amime control-plane daemon. See `control_plane` for the pieces.
#![forbid(unsafe_code)]

use clap::Parser;
use control_plane::config::MeshdConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = MeshdConfig::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    control_plane::run::run(config).await
}
