#!/usr/bin/env bash
# End-to-end benchmark (release build): raw consume vs the pipeline on the same
# 1 M events over 10,000 teams, and the pipeline's peak RSS.
#   scripts/bench-e2e.sh [--count N] [--teams N] [--workers N] [--python]
#                        [--producer batched [--jitter-ms N] [--linger-ms N] [--batch-messages N]]
# --python also runs benches/python_pipeline/rollup.py (needs confluent-kafka and pyarrow: scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh --no-python
port="${TOLLGATE_BENCH_BROKER_PORT:-29092}"
# In-memory storage for speed. (It mishandles fetches that start inside a
# record batch, which only matters when a consumer resumes mid-stream; every
# reader here starts at offset 0.)
TANSU_STORAGE="${TANSU_STORAGE:-memory://tansu/}" scripts/broker.sh start "$port"
trap 'scripts/broker.sh stop "$port"' EXIT
# The bench profile: shares its build with `cargo bench` (same release settings).
cargo build -q --profile bench -p tollgate-benches --bin e2e
# Two malloc arenas: the writer and policy threads otherwise keep freed
# memory in arenas of their own (428 vs 259 MiB peak RSS, measured).
MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}" RUST_LOG="${RUST_LOG:-warn}" target/release/e2e --brokers "127.0.0.1:$port" "$@"
