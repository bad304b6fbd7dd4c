#!/usr/bin/env bash
# End to end on this machine: broker up, topics created, sample events
# produced, the pipeline run until every window is written, then a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh --no-python
cargo build -q -p tollgate-cli
bin=target/debug/tollgate
port="${TOLLGATE_BROKER_PORT:-9092}"
scripts/broker.sh start "$port"
export KAFKA_BROKERS="127.0.0.1:$port"
count="${QUICKSTART_EVENTS:-50000}"
echo "== producing $count events (10 minutes of event time, 1% retried duplicates)"
$bin produce --count "$count" --teams 8 --models 6 --span-secs 600 --duplicates 0.01 --seed "$(date +%s)"
echo "== running the pipeline until every window is written"
$bin run --exit-when-idle --idle-timeout-secs 3
echo "== rollups (data/rollups) by team"
$bin summary --rollup-dir data/rollups
