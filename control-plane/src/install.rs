//! `meshctl install`: the CRDs ([`crate::crd::render_crds`]) and the install manifests
//! (`manifests/install/*.yaml`, embedded in order) as one multi-document YAML for
//! `kubectl apply -f -`, with the namespace and images overridden.
//!
//! Rules it keeps:
//! - with the defaults the output is the files on disk, byte for byte (comments kept);
//!   control-plane/tests/install.rs holds the embedded list to the directory;
//! - overrides are structured edits: each document is parsed, the fields that name the
//!   namespace or an image are changed, and only a changed document is emitted again
//!   (without its comments);
//! - after a namespace change no string of any document still names the default
//!   namespace: a reference the edits do not know is an error, never a silent leftover.

use serde_yaml::Value;

/// The namespace the manifests install meshd into.
pub const DEFAULT_NAMESPACE: &str = "amime-system";
/// The container (in the Deployment) that runs meshd.
pub const MESHD_CONTAINER: &str = "meshd";

/// The CRD manifests as committed, in name order (generated from [`crate::crd`]; its test
/// keeps them equal).
pub const CRDS: &[(&str, &str)] = &[
    ("manifests/crds/networking.amime.dev.yaml", include_str!("../../manifests/crds/networking.amime.dev.yaml")),
    ("manifests/crds/telemetry.amime.dev.yaml", include_str!("../../manifests/crds/telemetry.amime.dev.yaml")),
];

/// [`CRDS`], one after the other.
pub fn crds_yaml() -> String {
    CRDS.iter().map(|(_, text)| *text).collect()
}

macro_rules! manifest {
    ($name:literal) => {
        (concat!("manifests/install/", $name), include_str!(concat!("../../manifests/install/", $name)))
    };
}

/// The install manifests, in the order they are applied: (path from the repository
/// root, content).
pub const MANIFESTS: &[(&str, &str)] = &[
    manifest!("00-namespace.yaml"),
    manifest!("10-serviceaccount.yaml"),
    manifest!("20-clusterrole.yaml"),
    manifest!("21-clusterrolebinding.yaml"),
    manifest!("30-role-leases.yaml"),
    manifest!("31-rolebinding-leases.yaml"),
    manifest!("32-role-webhook.yaml"),
    manifest!("33-rolebinding-webhook.yaml"),
    manifest!("34-role-mesh-config.yaml"),
    manifest!("35-rolebinding-mesh-config.yaml"),
    manifest!("40-deployment.yaml"),
    manifest!("41-poddisruptionbudget.yaml"),
    manifest!("50-service.yaml"),
    manifest!("60-mutatingwebhookconfiguration.yaml"),
];

/// What to render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallOptions {
    /// Only the CRDs.
    pub crds_only: bool,
    /// Where meshd runs (its namespaced objects and every reference to them).
    pub namespace: String,
    /// meshd's image, if not the manifests' own.
    pub image: Option<String>,
    /// The sidecar image meshd's injector puts into pods (meshd's `--proxy-image`).
    pub proxy_image: Option<String>,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions { crds_only: false, namespace: DEFAULT_NAMESPACE.to_owned(), image: None, proxy_image: None }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InstallError {
    #[error("--namespace {0:?} is not a valid namespace name (lower-case letters, digits and '-', at most 63)")]
    Namespace(String),
    #[error("--{flag} must not be empty")]
    Empty { flag: &'static str },
    #[error("{file} (document {document}): {message}")]
    Manifest { file: &'static str, document: usize, message: String },
}

/// The manifests for `kubectl apply -f -`.
pub fn render(options: &InstallOptions) -> Result<String, InstallError> {
    check(options)?;
    let mut out = crds_yaml();
    if options.crds_only {
        return Ok(out);
    }
    for (file, text) in MANIFESTS {
        out.push_str("---\n");
        for (document, source) in split_documents(text).into_iter().enumerate() {
            let fail = |message: String| InstallError::Manifest { file, document, message };
            if document > 0 {
                out.push_str("---\n");
            }
            let mut value: Value = serde_yaml::from_str(source).map_err(|e| fail(format!("not valid YAML: {e}")))?;
            if edit(&mut value, options) {
                if options.namespace != DEFAULT_NAMESPACE {
                    if let Some(path) = find_name(&value, "", DEFAULT_NAMESPACE) {
                        return Err(fail(format!("{path} still names {DEFAULT_NAMESPACE} after the namespace edit")));
                    }
                }
                out.push_str(&serde_yaml::to_string(&value).map_err(|e| fail(e.to_string()))?);
            } else {
                if options.namespace != DEFAULT_NAMESPACE {
                    if let Some(path) = find_name(&value, "", DEFAULT_NAMESPACE) {
                        return Err(fail(format!("{path} names {DEFAULT_NAMESPACE}, which no edit follows")));
                    }
                }
                out.push_str(source);
            }
        }
    }
    Ok(out)
}

fn check(options: &InstallOptions) -> Result<(), InstallError> {
    let ns = &options.namespace;
    let label = !ns.is_empty()
        && ns.len() <= 63
        && ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if !label {
        return Err(InstallError::Namespace(ns.clone()));
    }
    for (flag, value) in [("image", &options.image), ("proxy-image", &options.proxy_image)] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(InstallError::Empty { flag });
        }
    }
    Ok(())
}

/// A file's documents, as written (comments kept): split at `---` lines.
fn split_documents(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            if !text[start..at].trim().is_empty() {
                out.push(&text[start..at]);
            }
            start = at + line.len();
        }
        at += line.len();
    }
    if !text[start..].trim().is_empty() {
        out.push(&text[start..]);
    }
    out
}

/// Applies the overrides to one document; returns whether it changed.
fn edit(doc: &mut Value, options: &InstallOptions) -> bool {
    let ns = options.namespace.as_str();
    let mut changed = false;
    let mut set = |slot: Option<&mut Value>, from: &str, to: &str| {
        if let Some(slot) = slot.filter(|v| v.as_str() == Some(from)) {
            if from != to {
                *slot = Value::String(to.to_owned());
                changed = true;
            }
        }
    };
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    if kind == "Namespace" {
        set(at(doc, &["metadata", "name"]), DEFAULT_NAMESPACE, ns);
    }
    set(at(doc, &["metadata", "namespace"]), DEFAULT_NAMESPACE, ns);
    for subject in items(doc, &["subjects"]) {
        set(subject.get_mut("namespace"), DEFAULT_NAMESPACE, ns);
    }
    for webhook in items(doc, &["webhooks"]) {
        set(at(webhook, &["clientConfig", "service", "namespace"]), DEFAULT_NAMESPACE, ns);
        // The control plane's own namespace is kept out of injection.
        for expression in items(webhook, &["namespaceSelector", "matchExpressions"]) {
            if expression.get("key").and_then(Value::as_str) == Some("kubernetes.io/metadata.name") {
                for value in items(expression, &["values"]) {
                    set(Some(value), DEFAULT_NAMESPACE, ns);
                }
            }
        }
    }
    if kind == "Deployment" {
        changed |= edit_meshd(doc, options);
    }
    changed
}

/// meshd's container: its image, and the flags of what its injector writes into pods.
fn edit_meshd(doc: &mut Value, options: &InstallOptions) -> bool {
    let mut changed = false;
    for container in items(doc, &["spec", "template", "spec", "containers"]) {
        if container.get("name").and_then(Value::as_str) != Some(MESHD_CONTAINER) {
            continue;
        }
        if let Some(image) = &options.image {
            if container.get("image").and_then(Value::as_str) != Some(image) {
                container["image"] = Value::String(image.clone());
                changed = true;
            }
        }
        if let Some(image) = &options.proxy_image {
            changed |= set_flag(container, "--proxy-image", image);
        }
        if options.namespace != DEFAULT_NAMESPACE {
            // Sidecars reach meshd through its Service in its namespace.
            let address = injector::settings::DEFAULT_XDS_ADDRESS
                .replace(&format!(".{DEFAULT_NAMESPACE}."), &format!(".{}.", options.namespace));
            changed |= set_flag(container, "--proxy-xds-address", &address);
        }
    }
    changed
}

/// Sets `--flag=value` in the container's args (replacing any earlier value).
fn set_flag(container: &mut Value, flag: &str, value: &str) -> bool {
    let arg = format!("{flag}={value}");
    let Some(map) = container.as_mapping_mut() else { return false };
    let args = map.entry(Value::String("args".into())).or_insert_with(|| Value::Sequence(Vec::new()));
    let Some(args) = args.as_sequence_mut() else { return false };
    let prefix = format!("{flag}=");
    args.retain(|a| a.as_str().is_none_or(|a| a != flag && !a.starts_with(&prefix)));
    args.push(Value::String(arg));
    true
}

fn at<'a>(value: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, key| v.get_mut(*key))
}

/// The items of the sequence at `path`, if there is one.
fn items<'a>(value: &'a mut Value, path: &[&str]) -> impl Iterator<Item = &'a mut Value> {
    at(value, path).and_then(Value::as_sequence_mut).into_iter().flatten()
}

/// Whether `text` names `name` as a whole: not as part of a longer name (`amime-system`
/// is in `amime-meshd.amime-system.svc`, not in `amime-system-dev`).
fn names(text: &str, name: &str) -> bool {
    let part_of_name = |c: char| c.is_ascii_alphanumeric() || c == '-';
    text.match_indices(name)
        .any(|(at, _)| !text[..at].ends_with(part_of_name) && !text[at + name.len()..].starts_with(part_of_name))
}

/// The path of the first string in `value` that names `needle` (see [`names`]).
fn find_name(value: &Value, path: &str, needle: &str) -> Option<String> {
    match value {
        Value::String(s) if names(s, needle) => Some(path.to_owned()),
        Value::Sequence(seq) => seq.iter().enumerate().find_map(|(i, v)| find_name(v, &format!("{path}[{i}]"), needle)),
        Value::Mapping(map) => map.iter().find_map(|(k, v)| {
            let key = k.as_str().map_or_else(|| format!("{k:?}"), str::to_owned);
            let path = if path.is_empty() { key } else { format!("{path}.{key}") };
            find_name(v, &path, needle)
        }),
        Value::Tagged(tagged) => find_name(&tagged.value, path, needle),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documents(text: &str) -> Vec<Value> {
        split_documents(text).into_iter().map(|d| serde_yaml::from_str(d).unwrap()).collect()
    }

    #[test]
    fn the_defaults_render_the_committed_files() {
        let out = render(&InstallOptions::default()).unwrap();
        let mut want = crds_yaml();
        for (_, text) in MANIFESTS {
            want.push_str("---\n");
            want.push_str(text);
        }
        assert_eq!(out, want);
        assert_eq!(render(&InstallOptions { crds_only: true, ..Default::default() }).unwrap(), crds_yaml());
    }

    #[test]
    fn another_namespace_moves_every_object_and_reference() {
        let options = InstallOptions {
            namespace: "mesh".into(),
            image: Some("example.com/meshd:dev".into()),
            proxy_image: Some("example.com/proxy:dev".into()),
            ..Default::default()
        };
        let out = render(&options).unwrap();
        assert!(!out.contains(DEFAULT_NAMESPACE), "{out}");
        let docs = documents(&out);
        let of = |kind: &'static str| docs.iter().filter(move |d| d["kind"].as_str() == Some(kind));
        assert_eq!(of("Namespace").next().unwrap()["metadata"]["name"].as_str(), Some("mesh"));
        let deployment = of("Deployment").next().unwrap();
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"].as_str(), Some("example.com/meshd:dev"));
        let args: Vec<&str> = container["args"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(args.contains(&"--proxy-image=example.com/proxy:dev"), "{args:?}");
        assert!(args.contains(&"--proxy-xds-address=amime-meshd.mesh.svc:15010"), "{args:?}");
        for binding in of("RoleBinding").chain(of("ClusterRoleBinding")) {
            assert_eq!(binding["subjects"][0]["namespace"].as_str(), Some("mesh"), "{binding:?}");
        }
        let webhooks = of("MutatingWebhookConfiguration").next().unwrap();
        for webhook in webhooks["webhooks"].as_sequence().unwrap() {
            assert_eq!(webhook["clientConfig"]["service"]["namespace"].as_str(), Some("mesh"));
        }
        assert!(
            out.contains("values:\n      - kube-system\n      - kube-public\n      - kube-node-lease\n      - mesh\n")
        );
    }

    /// A namespace whose name contains the default one (`amime-system-dev`) is another
    /// name, not a leftover reference to `amime-system`.
    #[test]
    fn a_namespace_named_like_the_default_is_not_a_leftover() {
        for ns in ["amime-system-dev", "x-amime-system", "amime-systems"] {
            let out = render(&InstallOptions { namespace: ns.into(), ..Default::default() })
                .unwrap_or_else(|e| panic!("--namespace {ns}: {e}"));
            let docs = documents(&out);
            let namespace = docs.iter().find(|d| d["kind"].as_str() == Some("Namespace")).unwrap();
            assert_eq!(namespace["metadata"]["name"].as_str(), Some(ns));
            assert!(out.contains(&format!("--proxy-xds-address=amime-meshd.{ns}.svc:15010")), "{ns}");
        }
    }

    /// The default namespace as a name inside a longer string (a DNS name) is still found.
    #[test]
    fn leftovers_are_found_as_names_not_as_substrings() {
        let doc: Value =
            serde_yaml::from_str("a: [x, 'amime-meshd.amime-system.svc:15010']\nb: amime-system-dev\n").unwrap();
        assert_eq!(find_name(&doc, "", DEFAULT_NAMESPACE).as_deref(), Some("a[1]"));
        let other: Value = serde_yaml::from_str("b: amime-system-dev\nc: my-amime-system.svc\n").unwrap();
        assert_eq!(find_name(&other, "", DEFAULT_NAMESPACE), None);
    }

    /// The flags set on meshd are meshd's, and sidecars get the address of the Service the
    /// manifests define, in the namespace asked for.
    #[test]
    fn meshd_reads_the_flags_it_is_given() {
        use clap::Parser;
        let options =
            InstallOptions { namespace: "mesh".into(), proxy_image: Some("p:1".into()), ..Default::default() };
        let docs = documents(&render(&options).unwrap());
        let deployment = docs.iter().find(|d| d["kind"].as_str() == Some("Deployment")).unwrap();
        let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].as_sequence().unwrap();
        let args = args.iter().map(|a| a.as_str().unwrap().to_owned());
        let config = crate::config::MeshdConfig::try_parse_from(std::iter::once("meshd".to_owned()).chain(args))
            .unwrap_or_else(|e| panic!("meshd refuses the Deployment's args: {e}"));
        let settings = config.injection.settings();
        assert_eq!(settings.image, "p:1");
        let service = docs.iter().find(|d| d["kind"].as_str() == Some("Service")).unwrap();
        let name = service["metadata"]["name"].as_str().unwrap();
        assert_eq!(settings.xds_address, format!("{name}.mesh.svc:15010"));
    }

    #[test]
    fn bad_flags_are_refused() {
        let bad = |options: InstallOptions| render(&options).unwrap_err().to_string();
        let ns = bad(InstallOptions { namespace: "Mesh_1".into(), ..Default::default() });
        assert!(ns.starts_with("--namespace \"Mesh_1\" is not a valid namespace name"), "{ns}");
        let image = bad(InstallOptions { image: Some(" ".into()), ..Default::default() });
        assert_eq!(image, "--image must not be empty");
    }

    #[test]
    fn documents_split_at_separator_lines_only() {
        let text = "# a\na: 1\n---\nb: \"---\"\n--- \n\n---\nc: 3\n";
        assert_eq!(split_documents(text), ["# a\na: 1\n", "b: \"---\"\n", "c: 3\n"]);
    }
}
