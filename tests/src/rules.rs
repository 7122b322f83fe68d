//! Routing rules for the reviews service of the `bookinfo` namespace, shared by the tests. Each
//! text is one YAML document ending in a newline; put several in one file with
//! [`documents`].

/// Subsets v1/v2/v3 of reviews, by the `version` label.
pub const REVIEWS_DESTINATION_RULE: &str = r#"apiVersion: networking.amime.dev/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: bookinfo
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
  - name: v3
    labels:
      version: v3
"#;

/// Everything to v3.
pub const REVIEWS_VS_ALL_V3: &str = r#"apiVersion: networking.amime.dev/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v3
      weight: 100
"#;

/// jason → v2 (route `jason-to-v2`), everyone else split `v1_weight`/`v3_weight` between v1
/// and v3 (route `split-v1-v3`). With 50/50 this is the VirtualService of
/// `manifests/examples/bookinfo`.
pub fn reviews_vs_jason_v2_else_split(v1_weight: u32, v3_weight: u32) -> String {
    format!(
        r#"apiVersion: networking.amime.dev/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts:
  - reviews
  http:
  - name: jason-to-v2
    match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - name: split-v1-v3
    route:
    - destination:
        host: reviews
        subset: v1
      weight: {v1_weight}
    - destination:
        host: reviews
        subset: v3
      weight: {v3_weight}
"#
    )
}

/// Only the v1/v3 split. Weights are rendered as given, so tests can write invalid ones
/// (negative, or summing past 100).
pub fn reviews_vs_split(v1_weight: i64, v3_weight: i64) -> String {
    format!(
        r#"apiVersion: networking.amime.dev/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts:
  - reviews
  http:
  - name: split-v1-v3
    route:
    - destination:
        host: reviews
        subset: v1
      weight: {v1_weight}
    - destination:
        host: reviews
        subset: v3
      weight: {v3_weight}
"#
    )
}

/// A reviews VirtualService with `rules` (HTTP rules, YAML list items indented by two
/// spaces), followed by a catch-all rule `defaults` to v1 without actions.
pub fn reviews_vs_then_v1(rules: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  namespace: bookinfo\n\
         spec:\n  hosts:\n  - reviews\n  http:\n{rules}  - name: defaults\n    route:\n    - destination:\n        \
         host: reviews\n        subset: v1\n"
    )
}

/// Every caller of reviews to `subset` (networking.istio.io).
pub fn reviews_vs_all_to(subset: &str) -> String {
    REVIEWS_VS_ALL_V3
        .replace("networking.amime.dev/v1", "networking.istio.io/v1")
        .replace("subset: v3", &format!("subset: {subset}"))
}

/// One YAML file holding `docs` in order (`---` between them).
pub fn documents(docs: &[&str]) -> String {
    docs.join("---\n")
}
