//! The one narrow interface between a control plane and the protocol servers.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::watch;

use crate::resource::Snapshot;

/// Why a proxy could not be given a snapshot watch.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The node in the first request does not identify a proxy this source can serve.
    #[error("invalid node: {0}")]
    InvalidNode(String),
}

/// A proxy's view of its configuration: the current snapshot (`None` until the control
/// plane has its initial state) and every later one. `guard` is dropped when the
/// proxy's stream ends, so the source can release whatever it keeps per proxy.
pub struct SnapshotWatch {
    pub snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    pub guard: Option<Box<dyn Send + Sync>>,
    /// What the source knows of the proxy, shown with its status (e.g. its instance
    /// IPs); opaque to this crate.
    pub details: std::collections::BTreeMap<String, String>,
}

/// Supplies snapshots to proxies. Implemented by the control plane; the protocol
/// servers depend only on this.
pub trait SnapshotSource: Send + Sync + 'static {
    /// Called once per stream, with the node from its first request.
    fn watch(&self, node: &Node) -> Result<SnapshotWatch, WatchError>;
}
