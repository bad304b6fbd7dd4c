#!/usr/bin/env bash
# Tollgate on a topic written by batching producers (confluent-kafka, keyed by
# team, linger.ms / batch.num.messages, event time with jitter), beside a
# count-only consumer, the Python pipeline and DuckDB's batch rollup of the
# same events, all in one run on one fresh in-memory tansu broker:
#   scripts/bench-batched.sh [--count N] [--teams N] [--jitter-ms N] [--linger-ms N]
#                            [--batch-messages N] [--partitions N] [--skip python,duckdb]
# Needs the Python packages of scripts/setup.sh (confluent-kafka, pyarrow, duckdb).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh
port="${TOLLGATE_BENCH_BROKER_PORT:-29093}"
TANSU_STORAGE="${TANSU_STORAGE:-memory://tansu/}" scripts/broker.sh start "$port" --fresh
trap 'scripts/broker.sh stop "$port"' EXIT
cargo build -q --release -p tollgate-cli
python3 benches/batched/run.py --brokers "127.0.0.1:$port" "$@"
