#!/usr/bin/env bash
# Start or stop a local tansu broker (Kafka-compatible) on 127.0.0.1.
#   scripts/broker.sh start [PORT] [--fresh]   # idempotent; installs tansu if missing;
#                                              # --fresh: start from an empty store
#   scripts/broker.sh stop  [PORT]
#   scripts/broker.sh status [PORT]
# Storage: SQLite in .run/tansu-PORT.db (survives a broker restart), unless
# TANSU_STORAGE is set. Not `memory://`: tansu 0.6's memory engine answers a
# fetch that starts inside a record batch with the *next* batch, which skips
# messages whenever a consumer resumes from a committed offset.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cmd="${1:-start}"
port="${2:-${TOLLGATE_BROKER_PORT:-9092}}"
fresh="${3:-}"
run_dir="$PWD/.run"
pid_file="$run_dir/tansu-$port.pid"
log_file="$run_dir/tansu-$port.log"
mkdir -p "$run_dir"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
running() { [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; }

case "$cmd" in
  start)
    if [ "$fresh" = "--fresh" ] && running; then
      # A fresh store needs a fresh process (and clears a wedged broker).
      "$0" stop "$port"
    fi
    if running && listening; then
      echo "broker: already running on 127.0.0.1:$port (pid $(cat "$pid_file"))"
      exit 0
    fi
    if listening; then
      echo "broker: port $port is taken by another process; set TOLLGATE_BROKER_PORT or stop it" >&2
      exit 1
    fi
    scripts/ensure-tansu.sh
    if [ "$fresh" = "--fresh" ]; then
      rm -f "$run_dir/tansu-$port.db" "$run_dir/tansu-$port.db-shm" "$run_dir/tansu-$port.db-wal"
    fi
    storage="${TANSU_STORAGE:-sqlite://tansu-$port.db}"
    (cd "$run_dir" && exec nohup tansu broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "$storage" >"$log_file" 2>&1) &
    echo $! >"$pid_file"
    for _ in $(seq 1 100); do
      if listening; then
        echo "broker: tansu listening on 127.0.0.1:$port (pid $(cat "$pid_file"), log $log_file)"
        exit 0
      fi
      if ! running; then break; fi
      sleep 0.1
    done
    echo "broker: tansu did not start; last log lines:" >&2
    tail -n 20 "$log_file" >&2 || true
    exit 1
    ;;
  stop)
    if running; then
      kill "$(cat "$pid_file")" 2>/dev/null || true
      for _ in $(seq 1 50); do running || break; sleep 0.1; done
      running && kill -9 "$(cat "$pid_file")" 2>/dev/null || true
      echo "broker: stopped (port $port)"
    fi
    rm -f "$pid_file"
    ;;
  status)
    if running && listening; then echo "broker: running on 127.0.0.1:$port"; else echo "broker: not running on $port"; exit 1; fi
    ;;
  *)
    echo "usage: $0 start|stop|status [PORT]" >&2
    exit 2
    ;;
esac
