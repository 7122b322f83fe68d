//! `control_plane`: meshd, the Amime control-plane daemon.
//!
//! Data flows one way: config sources ([`source`]) feed validated objects into the
//! model index ([`model`]); the push loop ([`push`]) debounces changes, runs the pure
//! translator ([`translate`]) and hands per-proxy snapshots to the generic xDS engine
//! (the `xds` crate), which serves them to Envoy. [`monitoring`] exposes health,
//! readiness, metrics and debug state, [`admin`] the admin API beside ADS; [`webhook`] is
//! the sidecar-injection admission webhook; [`config`] is meshd's one typed configuration.
#![forbid(unsafe_code)]
// Validation errors are rich (object, file, field, message) and on the cold path;
// boxing them would only add noise.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod analyze;
pub mod config;
pub mod crd;
pub use proto::envoy_json;
pub mod envoy_validate;
pub mod install;
pub mod logging;
pub mod mesh_config;
pub mod model;
pub mod monitoring;
pub mod proxy;
pub mod push;
pub mod run;
pub mod source;
mod sync;
pub mod translate;
pub mod webhook;
pub mod xds_metrics;
