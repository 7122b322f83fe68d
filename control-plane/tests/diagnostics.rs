//! Problems found while translating (not while parsing) still name the file and the YAML
//! document of their object, as every diagnostic does.

use std::sync::Arc;

use control_plane::model::index::Index;
use control_plane::push::MeshState;
use control_plane::source::config_dir::ConfigDir;
use control_plane::translate::{MeshConfig, MeshSettings};

const MESH: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.96.0.7
  selector: {app: cart}
  ports: [{name: http, port: 8080}]
---
# Valid, but its host is no service: the translator says it has no effect.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ghost, namespace: shop}
spec:
  hosts: [ghost]
  http:
  - route:
    - destination: {host: ghost}
"#;

#[test]
fn translation_problems_name_file_and_document() {
    let dir = std::env::temp_dir().join(format!("amime-diagnostics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("shop.yaml");
    std::fs::write(&file, MESH).unwrap();

    let mut config = ConfigDir::new(&dir);
    config.load().unwrap();
    let (objects, origins, problems) = config.objects_with_origins();
    assert!(problems.is_empty(), "{problems:#?}");
    let mut index = Index::new();
    index.sync_to(objects);
    let mesh = MeshConfig::build(Arc::new(index), &MeshSettings::default());
    let state = MeshState::new();
    state.set_origins(origins);

    let located = state.locate(mesh.problems.iter().cloned());
    let ghost = located
        .iter()
        .find(|p| p.name.as_deref() == Some("ghost"))
        .unwrap_or_else(|| panic!("the unknown host is reported: {located:#?}"));
    assert_eq!(ghost.file.as_deref(), Some(file.display().to_string().as_str()), "{ghost:#?}");
    assert_eq!(ghost.document, Some(2), "{ghost:#?}");
    assert_eq!(ghost.field, "spec.hosts[0]");
    std::fs::remove_dir_all(&dir).unwrap();
}
