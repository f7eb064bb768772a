#!/usr/bin/env bash
# Every reliability suite, the long modes included, one after the other (about 30 minutes).
# The fast parts also run in .ci/run (`cargo test --locked --workspace --lib --tests`).
#   WRAPUP_KILLS=20       SIGKILLs per crash loop (each store)
#   FUZZ_SECONDS=600      libFuzzer time per fuzz target
# Figures go to the terminal; RELIABILITY.md holds those of the latest full run.
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}

echo "== every test (hostile input, JWT matrix, duplicate storms, store faults, slow clients)" >&2
cargo test --locked --workspace --lib --tests
echo "== crash loops, ${WRAPUP_KILLS:-20} kills per store" >&2
WRAPUP_KILLS=${WRAPUP_KILLS:-20} cargo test --locked --test api crash_loop -- --nocapture
echo "== overload" >&2
reliability/overload.sh
echo "== noisy tenant" >&2
reliability/noisy.sh
echo "== misbehaving destinations" >&2
reliability/destinations.sh
echo "== schemathesis" >&2
reliability/schemathesis.sh
echo "== cargo fuzz, ${FUZZ_SECONDS:-600}s per target" >&2
reliability/fuzz.sh "${FUZZ_SECONDS:-600}"
