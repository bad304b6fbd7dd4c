#!/usr/bin/env bash
# Install the tansu broker (Kafka-compatible, from crates.io) if it is not on PATH yet.
# Idempotent: a second run is a no-op. First build takes ~18 minutes on 2 cores.
set -euo pipefail
TANSU_VERSION="${TANSU_VERSION:-}"
export PATH="$HOME/.cargo/bin:$PATH"
if command -v tansu >/dev/null 2>&1; then
  exit 0
fi
echo "ensure-tansu: installing tansu from crates.io (first time only, ~18 min on 2 cores)" >&2
args=(install tansu --locked --features dynostore,libsql)
[ -n "$TANSU_VERSION" ] && args+=(--version "$TANSU_VERSION")
# A separate target dir keeps tansu's build out of the workspace's target/.
CARGO_TARGET_DIR="${TANSU_TARGET_DIR:-$HOME/.cache/tollgate/tansu-target}" cargo "${args[@]}"
