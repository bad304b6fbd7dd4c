#!/usr/bin/env bash
# The whole test suite: unit tests of every crate, then the integration tests
# in tests/ against a real tansu broker on 127.0.0.1 (started and stopped here).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh
cargo fmt --all -- --check
# Forbidden edges between the crates (ARCHITECTURE.md, "Invariants").
scripts/depcheck.py
# One build for the tests and the binary: building the binary on its own
# resolves features without the dev-dependencies and rebuilds DataFusion.
cargo build --workspace --all-targets
cargo test --workspace
port="${TOLLGATE_TEST_BROKER_PORT:-19092}"
scripts/broker.sh stop "$port"
scripts/broker.sh start "$port" --fresh
trap 'scripts/broker.sh stop "$port"' EXIT
# Rust tests that need a broker are `#[ignore]`d in a plain `cargo test`.
TOLLGATE_TEST_BROKER_PORT="$port" cargo test --workspace -- --ignored
TOLLGATE_TEST_BROKER_PORT="$port" TOLLGATE_BIN="$PWD/target/debug/tollgate" python3 -m pytest tests -v -p no:cacheprovider
