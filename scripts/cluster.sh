#!/usr/bin/env bash
# A local Kubernetes control plane (etcd, kube-apiserver on https://127.0.0.1:6443,
# kube-controller-manager) to try meshd against; the same one the tests start (amime_e2e::kube).
#
#   scripts/cluster.sh up       start in the background (data, certs, logs in .k8s/local)
#   scripts/cluster.sh env      print `export KUBECONFIG=...`  (eval "$(scripts/cluster.sh env)")
#   scripts/cluster.sh status   which processes run, kube-apiserver /readyz
#   scripts/cluster.sh down     stop everything (data kept; rm -rf .k8s/local to start over)
#
# No kubelet runs: pods stay Pending unless something sets their status (the tests' harness
# plays kubelet).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

command="${1:-}"
case "${command}" in
  up | down | env | status) ;;
  *) echo "usage: $0 up|down|env|status" >&2; exit 2 ;;
esac

if [[ "${command}" == up ]]; then
  AMIME_K8S_BIN="$(scripts/k8s-binaries.sh)"
  export AMIME_K8S_BIN
fi
# Debug profile: shares the build with the tests (a release build of kube/tokio takes minutes).
# `cargo run` rather than target/debug/...: the target directory may be elsewhere
# (CARGO_TARGET_DIR, build.target-dir).
exec cargo run --quiet -p amime-e2e --bin amime-cluster -- "${command}" --dir "${repo_root}/.k8s/local"
