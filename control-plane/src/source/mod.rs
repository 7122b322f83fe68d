//! Config sources: where meshd's objects come from. Every source parses through
//! [`crate::model::parse_object`] and feeds the one index in [`crate::push::MeshState`].

pub mod config_dir;
pub mod dir_scan;
pub mod dir_watch;
pub mod documents;
pub mod kube;
