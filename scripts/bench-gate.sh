#!/usr/bin/env bash
# Gate load harness (release build): the API's gate under a closed loop
# (requests/s, against GET /healthz on the same server as the baseline) and
# an open loop at a fixed rate (p50/p99 latency from the scheduled send),
# then the same loops against the Flask baseline (benches/flask_gate/app.py:
# the same rules in Python under gunicorn, 2 workers), rules only and with
# a signed, fsynced decision per answer.
#   scripts/bench-gate.sh [--seconds 10] [--connections 32] [--rate 1000] [--flood 16]
#   NO_FLASK=1 scripts/bench-gate.sh      # Tollgate alone
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# The bench profile: shares its build with `cargo bench` (same release settings).
cargo build -q --profile bench -p tollgate-benches --bin gate_load

compare=()
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "${flask_log:-}"; }
trap cleanup EXIT
if [ -z "${NO_FLASK:-}" ]; then
  python3 -c 'import flask, gunicorn' 2>/dev/null ||
    python3 -m pip install -q --disable-pip-version-check -r benches/flask_gate/requirements.txt
  flask_log="$(mktemp -d)"
  port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  start() { # name port [env...]
    local name=$1 p=$2; shift 2
    env FLASK_GATE_CONFIG="$PWD/pipelines/default.toml" FLASK_GATE_TOKEN=bench-token-0123456789 "$@" \
      python3 -m gunicorn --chdir benches/flask_gate -w 2 -k gthread --threads 8 \
      -b "127.0.0.1:$p" --log-level warning app:app &
    pids+=($!)
    compare+=(--compare "$name=127.0.0.1:$p")
  }
  p1=$(port); start "Flask (rules only)" "$p1"
  p2=$(port); start "Flask (rules+signed+fsync)" "$p2" FLASK_GATE_LOG="$flask_log"
  for p in "$p1" "$p2"; do
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$p/healthz" >/dev/null && break; sleep 0.1; done
  done
fi
MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}" RUST_LOG="${RUST_LOG:-warn}" target/release/gate_load "${compare[@]}" "$@"
