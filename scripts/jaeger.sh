#!/usr/bin/env bash
# Make sure the Jaeger all-in-one binary the tracing tests run (tests/src/jaeger.rs) exists in
# <repo>/.jaeger/<version>/bin, and print that directory.
#
# Where it comes from, in order:
#   1. the project cache  <repo>/.jaeger/<version>/bin
#   2. the machine cache  ${AMIME_CACHE_DIR:-$HOME/.cache/amime}/jaeger/<version>/bin (hard-linked
#      or copied into the project)
#   3. a build from the Go module proxy (github.com/jaegertracing/jaeger/cmd/jaeger, Jaeger v2:
#      the OpenTelemetry-collector based all-in-one; several minutes cold on 2 cores), which then
#      fills both caches.
# Parallel callers wait on one lock (flock); every cache directory is built in a temporary
# directory and renamed into place, so a cache is never half there.
# Progress goes to stderr; stdout is only the bin directory.
set -euo pipefail

JAEGER_MODULE_VERSION=v1.76.0 # the Go module's version (the binary calls itself Jaeger v2)

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
project_dir="${repo_root}/.jaeger/${JAEGER_MODULE_VERSION}"
project_bin="${project_dir}/bin"
machine_root="${AMIME_CACHE_DIR:-${HOME:-${repo_root}/.jaeger}/.cache/amime}/jaeger"
machine_bin="${machine_root}/${JAEGER_MODULE_VERSION}/bin"

# shellcheck source=lib/binary-cache.sh
source "${repo_root}/scripts/lib/binary-cache.sh"

log() { echo "jaeger: $*" >&2; }

finish() {
  echo "${project_bin}"
  exit 0
}

build_into() {
  local out=$1 src
  command -v go >/dev/null 2>&1 || {
    log "Go is needed to build Jaeger once (https://go.dev/dl, Go >= 1.26);"
    log "or put a prebuilt jaeger (module ${JAEGER_MODULE_VERSION}) into ${machine_bin}"
    exit 1
  }
  src="$(mktemp -d "${machine_root}/.src.XXXXXX")"
  export GOFLAGS="${GOFLAGS:--p=2}"
  log "building github.com/jaegertracing/jaeger/cmd/jaeger@${JAEGER_MODULE_VERSION} with $(go version)"
  (
    cd "${src}"
    go mod init amime.dev/jaeger-binary >&2 2>/dev/null
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@${JAEGER_MODULE_VERSION}" >&2
    go build -o "${out}/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger
  )
  rm -rf "${src}"
}

[[ -x "${project_bin}/jaeger" ]] && finish

mkdir -p "${machine_root}"
hold_build_lock "${machine_root}/${JAEGER_MODULE_VERSION}.lock"
[[ -x "${project_bin}/jaeger" ]] && finish

if [[ ! -x "${machine_bin}/jaeger" ]]; then
  build_atomically "${machine_bin}"
fi
install_dir "${machine_bin}" "${project_bin}"
log "copied ${machine_bin} -> ${project_bin}"
finish
