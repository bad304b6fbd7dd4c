#!/usr/bin/env bash
# Install what the build, the quick start and the tests need on a fresh machine.
# Idempotent: anything already present is left alone.
#   scripts/setup.sh          # build tools + tansu broker + Python test clients
#   scripts/setup.sh --no-python
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

need_apt=()
command -v cc >/dev/null || need_apt+=(gcc)
command -v make >/dev/null || need_apt+=(make)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
# promtool (Debian package prometheus) checks the /metrics output in the tests.
command -v promtool >/dev/null || need_apt+=(prometheus)
# Headless Chromium renders the HTML report in the tests (its fonts with it).
command -v chromium >/dev/null || need_apt+=(chromium fonts-dejavu-core)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} with apt-get" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

scripts/ensure-tansu.sh

if [ "${1:-}" != "--no-python" ]; then
  if ! python3 -c 'import confluent_kafka, pyarrow, duckdb, pytest, regopy, yaml, kubernetes_validate, moto.server, boto3, schemathesis, openapi_spec_validator' 2>/dev/null; then
    echo "setup: installing Python test clients (tests/requirements.txt)" >&2
    python3 -m pip install -q --disable-pip-version-check -r tests/requirements.txt
  fi
fi
