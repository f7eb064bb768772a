#!/usr/bin/env bash
# Reproduces BENCHMARKS.md: every server driven by the same load generator in the same run,
# alternating, ROUNDS times; the medians and their ratios replace the "Latest run" section.
# Usage: bench/run.sh            (ROUNDS=3 DURATION=10s by default; about 8 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
OUT=${OUT:-bench/results.jsonl}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release --quiet --bin wrapup --bin wrapup-load --example bench-ceiling --example bench-naive
T=target/release
LOAD="$T/wrapup-load --duration $DURATION --warmup 2s --quiet"

wait_port() { for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened"; exit 1; }
start() { # start NAME PORT COMMAND...
  local port=$2; shift 2
  "$@" > "$WORK/server.log" 2>&1 &
  SERVER=$!
  wait_port "$port"
}
stop() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }
wrapup_config() { sed -e "s#sqlite://wrapup.db#sqlite://$WORK/wrapup.db#" examples/wrapup.toml > "$WORK/wrapup.toml"; }

: > "$OUT"
for round in $(seq "$ROUNDS"); do
  echo "== round $round of $ROUNDS" >&2
  start ceiling 8081 $T/examples/bench-ceiling 127.0.0.1:8081
  $LOAD --url http://127.0.0.1:8081 --connections 64 --label ceiling >> "$OUT"
  $LOAD --url http://127.0.0.1:8081 --connections 256 --label ceiling >> "$OUT"
  stop
  start work 8083 $T/examples/bench-ceiling 127.0.0.1:8083 --work
  $LOAD --url http://127.0.0.1:8083 --connections 64 --label work-ceiling >> "$OUT"
  stop
  rm -f "$WORK"/naive.db*
  start naive 8082 $T/examples/bench-naive 127.0.0.1:8082 "$WORK/naive.db"
  $LOAD --url http://127.0.0.1:8082 --connections 64 --label naive >> "$OUT"
  stop
  for conns in 64 256; do
    rm -f "$WORK"/wrapup.db*; wrapup_config
    start wrapup 8080 env WRAPUP_LOG=warn $T/wrapup serve --config "$WORK/wrapup.toml"
    $LOAD --url http://127.0.0.1:8080 --connections "$conns" --label wrapup --verify >> "$OUT"
    stop
  done
  rm -f "$WORK"/wrapup.db*; wrapup_config
  start wrapup 8080 env WRAPUP_LOG=warn $T/wrapup serve --config "$WORK/wrapup.toml"
  $LOAD --url http://127.0.0.1:8080 --connections 64 --workload lifecycle --label wrapup --verify >> "$OUT"
  # Open loop at half the closed-loop rate: latency without coordinated omission.
  RATE=$(python3 -c "import json,sys; r=[json.loads(l) for l in open('$OUT')]; w=[x['rps'] for x in r if x['label']=='wrapup' and x['workload']=='end-only' and x['connections']==64]; print(int(w[-1]//2))")
  $LOAD --url http://127.0.0.1:8080 --connections 64 --rate "$RATE" --label wrapup-open >> "$OUT"
  RSS=$(ps -o rss= -p "$(pgrep -P "$SERVER" wrapup || echo "$SERVER")" 2>/dev/null | tr -d ' ' || echo 0)
  DBSIZE=$(du -ck "$WORK"/wrapup.db* | tail -1 | cut -f1)
  echo "{\"label\":\"wrapup-resources\",\"rss_kib\":${RSS:-0},\"db_kib\":$DBSIZE}" >> "$OUT"
  stop
done

python3 bench/report.py "$OUT" "$ROUNDS" "$DURATION"
