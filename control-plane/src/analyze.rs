//! `meshctl analyze`: what meshd would say about a set of objects, without running it.
//!
//! Pure functions over what was read; the caller (meshctl) does the reading. Nothing here
//! validates on its own: files go through the config-directory source's path (documents
//! split by [`parse_file_documents`], each object through [`crate::model::parse_object`],
//! definitions across files merged by [`merge_files`]), objects listed from a cluster
//! through the Kubernetes source's [`feed::Model`]; then the whole set is translated
//! ([`MeshConfig::build`]) for the mesh-wide checks (unknown hosts and subsets, rules
//! shadowed by others, what Envoy would refuse). So `meshctl analyze -f DIR` reports what
//! `meshd --config-dir DIR` would log, and `meshctl analyze --kubeconfig` what meshd
//! watching that cluster would.
//!
//! Rules it keeps: output is sorted (file, document, object, field) and free of
//! duplicates, so the same input always prints the same findings.

pub mod cluster;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::model::index::Index;
use crate::model::{locate, Diagnostic, Origins, Severity};
use crate::source::config_dir::{merge_files, FileDefinitions};
use crate::source::documents::{parse_file_documents, FileObjects};
use crate::source::kube::feed::{self, FeedId, WatchEvent};
use crate::translate::{MeshConfig, MeshSettings};

/// One file's text as read.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The path as the user named it (it is what findings show), or `<stdin>`.
    pub path: String,
    pub text: String,
    /// Modification time, nanoseconds since the epoch: of two files defining the same
    /// object, meshd uses the one written last.
    pub mtime_ns: i128,
}

/// The objects one listed resource (kind and group) of a cluster holds.
#[derive(Clone, Debug)]
pub struct Listed {
    pub feed: FeedId,
    /// The version listed and its plural (resource) name.
    pub version: String,
    pub plural: String,
    pub objects: Vec<Value>,
}

/// Counts for the closing line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
    /// Files read (0 for a cluster).
    pub files: usize,
    /// Objects read (of any kind, valid or not).
    pub objects: usize,
}

/// What an analysis found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Analysis {
    /// Sorted by place: file, document, kind, namespace, name, field.
    pub diagnostics: Vec<Diagnostic>,
    pub summary: Summary,
}

impl Analysis {
    pub fn has_errors(&self) -> bool {
        self.summary.errors > 0
    }

    /// Keeps the findings `keep` accepts (e.g. one namespace's); the counts follow.
    pub fn retain(&mut self, keep: impl FnMut(&Diagnostic) -> bool) {
        self.diagnostics.retain(keep);
        self.count();
    }

    fn count(&mut self) {
        let count = |severity: Severity| self.diagnostics.iter().filter(|p| p.severity == severity).count();
        self.summary.errors = count(Severity::Error);
        self.summary.warnings = count(Severity::Warning);
        self.summary.infos = count(Severity::Info);
    }
}

/// Analyzes files as `meshd --config-dir` would read them together.
pub fn analyze_files(files: &[SourceFile]) -> Analysis {
    let none = BTreeMap::new();
    let parsed: Vec<(&Path, i128, FileObjects, Vec<Diagnostic>)> = files
        .iter()
        .map(|file| {
            let (objects, problems) = parse_file_documents(&file.path, &file.text, &none);
            (Path::new(file.path.as_str()), file.mtime_ns, objects.unwrap_or_default(), problems)
        })
        .collect();
    let read = parsed.iter().map(|(_, _, objects, _)| objects.read).sum();
    let (objects, origins, problems) =
        merge_files(parsed.iter().map(|(path, mtime_ns, objects, problems)| FileDefinitions {
            path,
            mtime_ns: *mtime_ns,
            objects: &objects.objects,
            documents: &objects.documents,
            problems,
        }));
    let mut index = Index::new();
    index.sync_to(objects);
    finish(index, &origins, problems, files.len(), read)
}

/// Analyzes objects listed from a cluster as meshd's Kubernetes source would read them.
pub fn analyze_listed(lists: Vec<Listed>) -> Analysis {
    let mut model = feed::Model::new();
    let mut index = Index::new();
    let mut read = 0;
    for list in lists {
        model.add_feed(list.feed, &list.version, &list.plural);
        model.handle(list.feed, WatchEvent::Init, &mut index);
        read += list.objects.len();
        for object in list.objects {
            model.handle(list.feed, WatchEvent::InitApply(object), &mut index);
        }
        model.handle(list.feed, WatchEvent::InitDone, &mut index);
    }
    finish(index, &Origins::new(), model.problems(), 0, read)
}

/// Adds the mesh-wide checks of translating `index`, sorts and counts.
fn finish(index: Index, origins: &Origins, mut problems: Vec<Diagnostic>, files: usize, objects: usize) -> Analysis {
    let mesh = MeshConfig::build(Arc::new(index), &MeshSettings::default());
    problems.extend(locate(origins, mesh.problems.iter().cloned()));
    problems.sort_by(|a, b| place(a).cmp(&place(b)));
    problems.dedup();
    let mut analysis = Analysis { diagnostics: problems, summary: Summary { files, objects, ..Summary::default() } };
    analysis.count();
    analysis
}

/// The sort key of a finding: where it is first, then what it says.
#[allow(clippy::type_complexity)]
fn place(
    d: &Diagnostic,
) -> (&Option<String>, Option<usize>, &Option<String>, &Option<String>, &Option<String>, &str, Severity, &str) {
    (&d.file, d.document, &d.kind, &d.namespace, &d.name, &d.field, d.severity, &d.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile { path: path.into(), text: text.into(), mtime_ns: 0 }
    }

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: bookinfo}\n\
        spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}\n";

    #[test]
    fn findings_of_parsing_and_of_the_whole_mesh_name_file_document_and_field() {
        let vs = "apiVersion: networking.amime.dev/v1\nkind: VirtualService\n\
            metadata: {name: reviews, namespace: bookinfo}\n\
            spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v9}}]}]}\n\
            ---\napiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: bookinfo}\n\
            spec: {ports: [{name: http, port: -1}]}\n";
        let analysis = analyze_files(&[file("b.yaml", vs), file("a.yaml", SERVICE)]);
        let lines: Vec<String> = analysis.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "b.yaml (document 0): VirtualService bookinfo/reviews: spec.http[0].route[0].destination.subset: \
                 no DestinationRule defines subset \"v9\" for host reviews.bookinfo.svc.cluster.local; requests \
                 to it will fail (503)",
                "b.yaml (document 1): Service bookinfo/bad: spec.ports[0].port: port -1 is out of range 1-65535",
            ],
        );
        let summary = Summary { errors: 1, warnings: 1, infos: 0, files: 2, objects: 3 };
        assert_eq!(analysis.summary, summary);
    }

    #[test]
    fn an_object_in_two_files_is_reported_where_it_loses() {
        let older = SourceFile { mtime_ns: 1, ..file("new.yaml", SERVICE) };
        let analysis = analyze_files(&[file("old.yaml", SERVICE), older]);
        assert_eq!(analysis.diagnostics.len(), 1, "{:?}", analysis.diagnostics);
        assert_eq!(analysis.diagnostics[0].file.as_deref(), Some("old.yaml"));
        assert!(analysis.diagnostics[0].message.contains("also defined in new.yaml"), "{:?}", analysis.diagnostics);
    }

    #[test]
    fn listed_objects_are_checked_as_the_kubernetes_source_checks_them() {
        let service: Value = serde_json::to_value(serde_yaml::from_str::<Value>(SERVICE).unwrap()).unwrap();
        let vs = serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {"hosts": ["ratings"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}});
        let lists = vec![
            Listed {
                feed: FeedId::new(crate::model::Kind::Service, feed::Group::Core),
                version: "v1".into(),
                plural: "services".into(),
                objects: vec![service],
            },
            Listed {
                feed: FeedId::new(crate::model::Kind::VirtualService, feed::Group::Istio),
                version: "v1".into(),
                plural: "virtualservices".into(),
                objects: vec![vs],
            },
        ];
        let analysis = analyze_listed(lists);
        let lines: Vec<String> = analysis.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            ["VirtualService bookinfo/reviews: spec.hosts[0]: host ratings.bookinfo.svc.cluster.local is not a \
              known service; the rule has no effect"]
        );
        assert_eq!(analysis.summary, Summary { errors: 0, warnings: 1, infos: 0, files: 0, objects: 2 });
    }
}
