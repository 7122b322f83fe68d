//! Shared fixtures for the control-plane integration tests.
#![allow(dead_code)]

pub mod envoy;

use std::path::PathBuf;
use std::sync::Arc;

use control_plane::model::index::Index;
use control_plane::source::config_dir::ConfigDir;
use control_plane::translate::{MeshConfig, MeshSettings};

pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Loads a fixture directory exactly as meshd would, and translates it.
pub fn mesh_from(name: &str) -> MeshConfig {
    mesh_with_settings(name, &MeshSettings::default())
}

/// [`mesh_from`] with mesh-wide settings.
pub fn mesh_with_settings(name: &str, settings: &MeshSettings) -> MeshConfig {
    let mut dir = ConfigDir::new(fixture_dir(name));
    dir.load().expect("fixture loads");
    let (objects, problems) = dir.objects();
    assert!(
        problems.iter().all(|p| p.severity != control_plane::model::Severity::Error),
        "fixture {name} has errors: {problems:#?}"
    );
    let mut index = Index::new();
    index.reset(objects);
    MeshConfig::build(Arc::new(index), settings)
}

/// The settings of the mesh-config file `tests/fixtures/<fixture>/<file>` (which must be valid).
pub fn mesh_config_settings(fixture: &str, file: &str) -> MeshSettings {
    let path = fixture_dir(fixture).join(file);
    let text = std::fs::read_to_string(&path).expect("mesh config fixture");
    let outcome = control_plane::mesh_config::parse::parse(&path.display().to_string(), &text);
    let config = outcome.config.unwrap_or_else(|| panic!("{}: {:?}", path.display(), outcome.diagnostics));
    control_plane::mesh_config::watch::settings(&path.display().to_string(), &config, None, "amime-system").0
}

pub fn rich_mesh() -> MeshConfig {
    mesh_from("rich")
}

/// `$AMIME_ENVOY`, else the project's `.venv/bin/envoy`.
pub fn envoy_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("AMIME_ENVOY") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/envoy");
    assert!(p.exists(), "no Envoy at {}: run scripts/install-envoy.sh (or set AMIME_ENVOY)", p.display());
    p
}
