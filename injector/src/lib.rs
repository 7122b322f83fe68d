//! Sidecar injection logic for Amime.
//!
//! This crate owns everything needed to turn a workload into a meshed workload: the
//! decision and the JSON patch ([`inject`]), the settings it uses ([`settings`]), the
//! capture rules the init step installs ([`capture`]), the names shared with the in-pod
//! agent ([`conventions`]) and the Envoy bootstrap the sidecar starts from ([`bootstrap`]),
//! which `meshctl bootstrap` and the agent share so that both produce identical output for
//! the same proxy identity.
//!
//! Everything here is pure: plain data in, plain data out, no I/O.
#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod capture;
pub mod conventions;
pub mod inject;
pub mod locality;
pub mod node_metadata;
pub mod pod_env;
pub mod probes;
pub mod settings;
pub mod workload;
pub mod yaml11;
