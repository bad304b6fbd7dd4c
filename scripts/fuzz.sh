#!/usr/bin/env bash
# Fuzz the decoder and the decision verifier for a bounded time each
# (libFuzzer via cargo fuzz, nightly toolchain). Not part of CI.
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 600        # 10 minutes per target
# Findings are left in fuzz/artifacts/<target>/; the corpus in fuzz/corpus/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q '^nightly' || {
  echo "fuzz: a nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 1
}
cd fuzz
for target in decode verify; do
  mkdir -p "corpus/$target"
  echo "fuzz: $target for ${secs}s" >&2
  cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -rss_limit_mb=2048
done
