//! Sidecar injection logic for Amime.
//!
//! This crate owns everything needed to turn a workload into a meshed workload:
//! the sidecar and init containers, their configuration, and the Envoy bootstrap
//! the sidecar starts from. For now it holds the Envoy bootstrap
//! ([`bootstrap`]), which the injection webhook and `meshctl bootstrap` share so
//! that both produce byte-identical output for the same proxy identity.
//!
//! Everything here is pure: plain data in, plain data out, no I/O.
#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod node_metadata;
