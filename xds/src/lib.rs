//! `xds`: a generic xDS protocol engine for Envoy's Aggregated Discovery Service.
//!
//! This crate owns the wire protocol and nothing else: it knows Envoy's discovery
//! messages, nonces, versions, ACK/NACK and subscriptions, but nothing of Kubernetes or
//! of mesh semantics. A control plane feeds it immutable [`Snapshot`]s through the
//! [`SnapshotSource`] trait; the [`AdsServer`] serves them to every connected proxy over
//! both `StreamAggregatedResources` (state of the world) and `DeltaAggregatedResources`
//! (incremental).
//!
//! Design points:
//! - Resources are encoded once ([`Resource`]) and shared by `Arc` between every proxy
//!   that receives them; a [`ResourceSet`] of one type is shared by all proxies that see
//!   the same set, so a connected proxy costs a few pointers plus its subscriptions.
//! - The per-connection protocol state machine ([`session`]) is sans-IO: requests and
//!   snapshots in, responses out. The tonic glue in [`server`] is thin.
//! - Every connection's per-type state (last sent, last ACK, last NACK with its message)
//!   is kept in a [`ConnectionRegistry`] that other parts read (proxy-status).
#![forbid(unsafe_code)]

pub mod canonical;
pub mod histogram;
pub mod resource;
pub mod server;
pub mod session;
pub mod source;
pub mod status;
mod sync;

pub use canonical::set_descriptor_pool;
pub use histogram::Histogram;
pub use resource::{Resource, ResourceSet, ResourceType, Snapshot};
pub use server::AdsServer;
pub use source::{SnapshotSource, SnapshotWatch, WatchError};
pub use status::{
    ConnectionRegistry, ConnectionStatus, ProxyState, Subscribed, SyncState, TypeStatus, XdsApi, XdsStats,
};

/// Re-export of the Envoy protobuf types this crate speaks, so users need not depend
/// on a second copy.
pub use envoy_types::pb;
