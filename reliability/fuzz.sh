#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer via cargo-fuzz) of request parsing and token parsing.
# Usage: reliability/fuzz.sh [SECONDS_PER_TARGET]   (default 60; the long mode is 1800)
# Needs the nightly toolchain (`rustup toolchain list`) and `cargo install cargo-fuzz`.
# New inputs that reach new coverage are merged back into fuzz/corpus/<target>, which is
# committed; a crash leaves its input in fuzz/artifacts/<target> and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
for target in request token; do
  mkdir -p "fuzz/corpus/$target" "/tmp/wrapup-fuzz-$target"
  echo "== fuzz $target for ${SECONDS_PER_TARGET}s" >&2
  # Fuzz into a scratch corpus seeded from the committed one, then merge only what adds coverage.
  cargo +nightly fuzz run "$target" "/tmp/wrapup-fuzz-$target" "fuzz/corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    2> "/tmp/wrapup-fuzz-$target.log" || { tail -40 "/tmp/wrapup-fuzz-$target.log"; exit 1; }
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|cov:" "/tmp/wrapup-fuzz-$target.log" | tail -3 >&2
  cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "/tmp/wrapup-fuzz-$target" -- -merge=1 \
    > /dev/null 2>&1
  echo "corpus $target: $(ls "fuzz/corpus/$target" | wc -l) inputs" >&2
done
