//! meshd: the Amime control-plane daemon. See `control_plane` for the pieces.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use control_plane::config::MeshdConfig;

#[tokio::main]
async fn main() -> ExitCode {
    let config = MeshdConfig::parse();
    let filter = match tracing_subscriber::EnvFilter::try_new(&config.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: --log {:?}: {e}", config.log);
            return ExitCode::from(2);
        }
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    match control_plane::run::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
