#!/usr/bin/env bash
# End to end on this machine: broker up, topics created, sample events
# produced, the pipeline run until every window is written, then a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh --no-python
# The same build as scripts/test.sh: building the CLI alone resolves other
# features and would compile DataFusion a second time.
cargo build -q --workspace --all-targets
bin=target/debug/tollgate
port="${TOLLGATE_BROKER_PORT:-9092}"
scripts/broker.sh start "$port"
export KAFKA_BROKERS="127.0.0.1:$port"
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"  # see README, "Performance"
if [ -z "${SAVE_HMAC_SECRET:-}" ] && [ -z "${SAVE_HMAC_SECRET_FILE:-}" ]; then
  # Decisions are signed; for the quick start only, a generated local secret.
  mkdir -p .run
  if [ ! -s .run/hmac-secret ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 > .run/hmac-secret)
  fi
  export SAVE_HMAC_SECRET_FILE="$PWD/.run/hmac-secret"
  echo "== signing decisions with a generated development secret (.run/hmac-secret); set SAVE_HMAC_SECRET for real use"
fi
count="${QUICKSTART_EVENTS:-50000}"
echo "== producing $count events (10 minutes of event time, 1% retried duplicates)"
$bin produce --count "$count" --teams 8 --models 6 --span-secs 600 --duplicates 0.01 --seed "$(date +%s)"
echo "== running the pipeline until every window is written"
$bin run --exit-when-idle --idle-timeout-secs 3 --http-listen ""
echo "== rollups (data/rollups) by team"
$bin summary --rollup-dir data/rollups
echo "== decisions (data/decisions) by policy and verdict"
cat data/decisions/segment-*.ndjson 2>/dev/null \
  | grep -o '"policy":"[^"]*"\|"verdict":"[^"]*"' | paste - - | sort | uniq -c || true
echo "== the HTTP API over those rollups (AUTH_MODE=none: local only): two release gate checks and a usage summary"
api_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
AUTH_MODE=none $bin run --http-listen "127.0.0.1:$api_port" > .run/quickstart-api.log 2>&1 &
api_pid=$!
trap 'kill "$api_pid" 2>/dev/null || true' EXIT
api="http://127.0.0.1:$api_port"
for _ in $(seq 1 120); do curl -sf "$api/healthz" >/dev/null && break; sleep 0.5; done
echo "-- POST /v1/gates/policy-check {unit_cost_usd: 0.3, tags team+environment}"
curl -sS "$api/v1/gates/policy-check" -H 'Idempotency-Key: quickstart-allow' \
  -d '{"tenant": "tenant-1", "unit_cost_usd": 0.3, "cost_tags": {"team": "team-1", "environment": "dev"}}'; echo
echo "-- POST /v1/gates/policy-check {unit_cost_usd: 0.6}"
curl -sS "$api/v1/gates/policy-check" -H 'Idempotency-Key: quickstart-deny' -d '{"tenant": "tenant-1", "unit_cost_usd": 0.6}'; echo
echo "-- GET /v1/metrics (last 24 h)"
curl -sS "$api/v1/metrics" | python3 -c 'import json, sys; t = json.load(sys.stdin)["total"]; print(json.dumps(t))'
kill -TERM "$api_pid"; wait "$api_pid" || true
$bin verify data/decisions
