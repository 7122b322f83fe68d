#!/usr/bin/env bash
# The Amime demo: meshd + an Envoy sidecar + reviews v1/v2/v3 on 127.0.10.x, showing header
# routing, a weighted split and a live rule change. Pass --keep-running to keep the mesh up
# (until Ctrl-C) and try it with curl.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

scripts/install-envoy.sh
cargo build --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/debug/amime-demo" "$@"
