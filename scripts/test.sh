#!/usr/bin/env bash
# Build and test the whole workspace, including the end-to-end tests (tests/), which run the
# real meshd, meshctl and Envoy. Extra arguments go to the test runner
# (e.g. `scripts/test.sh routing` or `scripts/test.sh -E 'test(header)'` with nextest).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

scripts/install-envoy.sh

# The real Kubernetes control plane the Kubernetes tests run (tests/src/kube): built once from
# the Go module proxy (~15 min on 2 cores), then reused from .k8s/ or the machine cache.
AMIME_K8S_BIN="$(scripts/k8s-binaries.sh)"
export AMIME_K8S_BIN

# The real Jaeger the tracing tests send spans to (tests/src/jaeger.rs): built once from its Go
# module (~10 min on 2 cores), then reused from .jaeger/ or the machine cache.
AMIME_JAEGER_BIN="$(scripts/jaeger.sh)"
export AMIME_JAEGER_BIN

# The Kubernetes harness makes its certificates with openssl and routes pod addresses with ip.
if [[ "$(id -u)" == 0 ]] && ! { command -v openssl && command -v ip; } >/dev/null 2>&1; then
  echo "==> installing openssl and iproute2"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl iproute2; } >/dev/null
fi

# The network-namespace tests (tests/tests/transparent.rs, injected_pods.rs, agent_init.rs) install
# iptables capture rules with `amime-agent init` inside their own network namespaces; they need the
# iptables tool (they skip only when not root).
if [[ "$(id -u)" == 0 ]] && ! command -v iptables >/dev/null 2>&1; then
  echo "==> installing iptables"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables; } >/dev/null
fi

# The live view of `meshctl demo` is checked in a real terminal (tests/tests/demo.rs runs tmux).
# It also checks with pgrep (procps) that the demo leaves no process behind.
if [[ "$(id -u)" == 0 ]] && ! { command -v tmux && command -v pgrep; } >/dev/null 2>&1; then
  echo "==> installing tmux and procps"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux procps; } >/dev/null
fi

# The metrics tests (tests/tests/metrics.rs) run a real Prometheus scraping meshd and the sidecars:
# Debian's package, without its recommended exporters (the harness starts its own server on the
# test's loopback block; a packaged service, where one starts, listens on 9090, which it avoids).
if [[ "$(id -u)" == 0 ]] && ! command -v prometheus >/dev/null 2>&1; then
  echo "==> installing prometheus"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >/dev/null
fi

if cargo fmt --version >/dev/null 2>&1; then
  echo "==> cargo fmt --all --check"
  cargo fmt --all --check
fi

if cargo clippy --version >/dev/null 2>&1; then
  echo "==> cargo clippy --workspace --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets -- -D warnings
fi

echo "==> cargo build --workspace --all-targets"
cargo build --workspace --all-targets

if cargo nextest --version >/dev/null 2>&1; then
  echo "==> cargo nextest run --workspace"
  cargo nextest run --workspace --no-fail-fast "$@"
else
  echo "==> cargo test --workspace (cargo-nextest not installed)"
  log="$(mktemp)"
  trap 'rm -f "${log}"' EXIT
  status=0
  cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "${log}" || status=$?
  # One closing line over every test binary's `test result:` line.
  awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
       END { printf "%d passed, %d failed\n", p, f }' "${log}"
  exit "${status}"
fi
