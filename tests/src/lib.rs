//! `amime-e2e`: the end-to-end test harness for Amime.
//!
//! This crate owns everything needed to drive the *real* processes of a mesh from a test:
//!
//! - [`paths`]: where the workspace, the `meshd`/`meshctl` binaries and Envoy are.
//! - [`context::TestContext`]: a per-test scratch directory, the registry of process logs and
//!   printing their tails when a test fails (error or panic).
//! - [`process::ManagedProcess`]: a child process whose stdout/stderr go to files in the
//!   test's directory and which is killed when dropped (also while unwinding from a panic).
//! - [`wait::await_condition`]: poll a condition until a deadline; never sleep to wait.
//! - [`http`]: a tiny HTTP/1.1 client (origin-form and absolute-form/proxy requests).
//! - [`upstream::Upstream`]: an in-process HTTP server that says which instance served a request.
//! - [`meshd::Meshd`]: the control-plane process and its monitoring endpoints.
//! - [`sidecar::Sidecar`]: an Envoy sidecar (bootstrap from `meshctl bootstrap`) and its admin API.
//! - [`mesh`]: loopback IP blocks, the YAML config directory and the bookinfo fixture.
//! - [`kube`]: a real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager)
//!   on the test's loopback block, and the harness playing kubelet.
//! - [`injected`]: injected pods in network namespaces (the harness plays kubelet with the injector's output).
//! - [`rbac`]: the install manifests' RBAC as data, and what it allows (as the RBAC authorizer decides).
//! - [`webhook`]: a client of meshd's injection webhook over verified TLS, AdmissionReview bodies.
//! - [`jaeger`]: a real Jaeger (built from its Go module) on the test's loopback block, and its query API.
//! - [`rules`]: the reviews DestinationRule and VirtualServices the tests use.
//! - [`prometheus`]: a real Prometheus scraping meshd and the sidecars, and its query API.
//!
//! Tests run in parallel: each test picks its own loopback block `127.0.N.0/24` ([`mesh::IpBlock`])
//! so that ports never collide between tests.

pub mod context;
pub mod http;
pub mod injected;
pub mod jaeger;
pub mod kube;
pub mod mesh;
pub mod meshd;
pub mod netns;
pub mod paths;
pub mod process;
pub mod prometheus;
pub mod rbac;
pub mod rules;
pub mod sidecar;
pub mod tls_sites;
pub mod upstream;
pub mod wait;
pub mod webhook;

pub use context::{run_test, TestContext};
pub use http::Response;
pub use mesh::{hosts, Bookinfo, BookinfoOptions, IpBlock, MeshDir};
pub use meshd::{ConfigError, Meshd};
pub use sidecar::{Sidecar, SidecarSpec, Tally, XdsApi};
pub use upstream::Upstream;
pub use wait::{await_condition, fatal};
