#!/usr/bin/env bash
# Gate load harness (release build): the API's gate under a closed loop
# (requests/s, against GET /healthz on the same server as the baseline) and
# an open loop at a fixed rate (p50/p99 latency from the scheduled send).
#   scripts/bench-gate.sh [--seconds 10] [--connections 32] [--rate 1000]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# The bench profile: shares its build with `cargo bench` (same release settings).
cargo build -q --profile bench -p tollgate-benches --bin gate_load
MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}" RUST_LOG="${RUST_LOG:-warn}" target/release/gate_load "$@"
