//! `proto`: Amime's protobuf.
//!
//! - [`admin`]: the admin API (`amime.admin.v1`) that meshd serves on its gRPC port
//!   beside ADS and meshctl speaks: messages, the tonic server and the client, generated
//!   at build time from `amime/admin/v1/admin.proto`.
//! - [`envoy_json`]: the Envoy descriptor set and canonical proto3 JSON for Envoy
//!   resources (what meshd validates and hashes with, what `meshctl proxy-config -o json`
//!   prints).
//!
//! Envoy's own xDS types come from `envoy-types`; none are vendored here.
#![forbid(unsafe_code)]

pub mod envoy_json;

/// `amime.admin.v1`: see `amime/admin/v1/admin.proto` for what each field means.
pub mod admin {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/amime.admin.v1.rs"));
}
