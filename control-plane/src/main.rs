//! meshd: the Amime control-plane daemon. See `control_plane` for the pieces.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use control_plane::config::MeshdConfig;

#[tokio::main]
async fn main() -> ExitCode {
    let config = MeshdConfig::parse();
    if let Err(e) = config.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = control_plane::logging::init(&config.log, config.log_format == "json") {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match control_plane::run::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
