#!/usr/bin/env bash
# Make sure the Kubernetes control-plane binaries the tests run (etcd, kube-apiserver,
# kube-controller-manager, kubectl) exist in <repo>/.k8s/<version>/bin, and print that directory.
#
# Where they come from, in order:
#   1. the project cache  <repo>/.k8s/<version>/bin
#   2. the machine cache  ${AMIME_CACHE_DIR:-$HOME/.cache/amime}/k8s/<version>/bin (hard-linked or
#      copied into the project, so a fresh clone on the same machine starts in seconds)
#   3. a build from the Go module proxy (k8s.io/kubernetes and go.etcd.io/etcd/server/v3; about
#      14 minutes cold on 2 cores), which then fills both caches.
# Parallel callers wait on one lock (flock) instead of building twice; every cache directory is
# built in a temporary directory and renamed into place, so a cache is never half there.
# Progress goes to stderr; stdout is only the bin directory.
set -euo pipefail

K8S_VERSION=v1.37.2 # also KUBERNETES_VERSION in tests/src/paths.rs (a test there holds them equal)
ETCD_VERSION=v3.7.0
BINARIES=(etcd kube-apiserver kube-controller-manager kubectl)

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
project_dir="${repo_root}/.k8s/${K8S_VERSION}"
project_bin="${project_dir}/bin"
machine_root="${AMIME_CACHE_DIR:-${HOME:-${repo_root}/.k8s}/.cache/amime}/k8s"
machine_bin="${machine_root}/${K8S_VERSION}/bin"

# shellcheck source=lib/binary-cache.sh
source "${repo_root}/scripts/lib/binary-cache.sh"

log() { echo "k8s-binaries: $*" >&2; }

complete() {
  local dir=$1 name
  for name in "${BINARIES[@]}"; do
    [[ -x "${dir}/${name}" ]] || return 1
  done
}

finish() {
  echo "${project_bin}"
  exit 0
}

# The consumer module for k8s.io/kubernetes: its go/godebug lines and one replace per staging
# module, read from the published go.mod (the staging modules are `v0.0.0 => ./staging/...` there).
write_kubernetes_module() {
  local dir=$1 gomod staging_version="v0.${K8S_VERSION#v1.}"
  gomod="$(cd "${dir}" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" |
    sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  [[ -f "${gomod}" ]] || { log "could not download the go.mod of k8s.io/kubernetes@${K8S_VERSION}"; exit 1; }
  {
    echo "module amime.dev/k8s-binaries"
    echo
    grep -E '^(go|godebug) ' "${gomod}"
    echo
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    echo
    echo "tool ("
    printf '\tk8s.io/kubernetes/cmd/%s\n' kube-apiserver kube-controller-manager kubectl
    echo ")"
    echo
    echo "replace ("
    grep -oE '^\s+k8s\.io/[a-z0-9-]+ => \./staging/' "${gomod}" |
      awk -v v="${staging_version}" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } >"${dir}/go.mod"
}

write_etcd_module() {
  local dir=$1
  printf 'module amime.dev/etcd-binary\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "${ETCD_VERSION}" >"${dir}/go.mod"
  cat >"${dir}/main.go" <<'EOF'
// etcd, built from its published module (go.etcd.io/etcd/server/v3).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
}

build_into() {
  local out=$1 src="${project_dir}/src" major minor ldflags=()
  command -v go >/dev/null 2>&1 || {
    log "Go is needed to build the Kubernetes test binaries once (https://go.dev/dl, Go >= 1.26);"
    log "or put prebuilt ${BINARIES[*]} (${K8S_VERSION}) into ${machine_bin}"
    exit 1
  }
  major="${K8S_VERSION#v}"; major="${major%%.*}"
  minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=("-X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}")
  done
  rm -rf "${src}"
  mkdir -p "${src}/kubernetes" "${src}/etcd"
  export GOFLAGS="${GOFLAGS:--p=2}"
  log "building Kubernetes ${K8S_VERSION} and etcd ${ETCD_VERSION} with $(go version) (cold: ~14 min)"
  write_kubernetes_module "${src}/kubernetes"
  write_etcd_module "${src}/etcd"
  (cd "${src}/kubernetes" && go mod tidy >&2)
  (cd "${src}/etcd" && go mod tidy >&2)
  local cmd
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    log "go build k8s.io/kubernetes/cmd/${cmd}"
    (cd "${src}/kubernetes" && go build -ldflags "${ldflags[*]}" -o "${out}/${cmd}" "k8s.io/kubernetes/cmd/${cmd}")
  done
  log "go build etcd"
  (cd "${src}/etcd" && go build -o "${out}/etcd" .)
}

complete "${project_bin}" && finish

mkdir -p "${machine_root}"
hold_build_lock "${machine_root}/${K8S_VERSION}.lock"
complete "${project_bin}" && finish

if ! complete "${machine_bin}"; then
  build_atomically "${machine_bin}"
fi
install_dir "${machine_bin}" "${project_bin}"
log "copied ${machine_bin} -> ${project_bin}"
finish
