#!/usr/bin/env bash
# Reproduces BENCHMARKS.md: every server driven by the same load generator in the same run,
# alternating, ROUNDS times; the medians and their ratios replace the "Latest run" section.
# Usage: bench/run.sh            (ROUNDS=3 DURATION=10s by default; 15 to 20 minutes plus the build)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
OUT=${OUT:-bench/results.jsonl}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release --quiet --bin wrapup
cargo build --release --quiet -p wrapup-bench --bin wrapup-load --bin bench-ceiling --bin bench-naive --bin bench-group
T=target/release
LOAD="$T/wrapup-load --duration $DURATION --warmup 2s --quiet"
# The pinned pass runs each server on core 0 and the load generator on core 1 (PostgreSQL's
# own processes are not pinned): figures from noisy boxes compare. Unpinned by default.
SRV_PIN=(); PLOAD="$LOAD"
pin() { if [ "$1" = on ]; then SRV_PIN=(taskset -c 0); PLOAD="taskset -c 1 $LOAD"; else SRV_PIN=(); PLOAD="$LOAD"; fi; }

wait_port() { for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened"; exit 1; }
start() { # start NAME PORT COMMAND...
  local port=$2; shift 2
  "${SRV_PIN[@]}" "$@" > "$WORK/server.log" 2>&1 &
  SERVER=$!
  wait_port "$port"
}
stop() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }
kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$SERVER/status"; }
webhook_config() { cat >> "$WORK/wrapup.toml" <<'TOML'

[[bots.on_end]]
kind = "webhook"
url = "http://127.0.0.1:9000/conversation-ended"
secret = "whsec_ZGVtby13ZWJob29rLXNlY3JldC1ETy1OT1QtVVNF"   # DEMO VALUE

[workers]
concurrency = 64
TOML
}
wrapup_config() { sed -e "s#sqlite://wrapup.db#sqlite://$WORK/wrapup.db#" examples/wrapup.toml > "$WORK/wrapup.toml"; }
# pg_config SCHEMA PORT: the example on PostgreSQL (DATABASE_URL), in a schema of the run's own.
PG_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
pg_config() {
  sed -e "s#^url = \"sqlite://wrapup.db\"#url = \"$PG_URL\"\nschema = \"$1\"\npool_size = 16#" \
      -e "s#^listen = \"127.0.0.1:8080\"#listen = \"127.0.0.1:$2\"#" examples/wrapup.toml > "$WORK/pg-$2.toml"
}
drop_schema() { psql -q "$PG_URL" -c "DROP SCHEMA IF EXISTS $1 CASCADE" 2>/dev/null || true; }

: > "$OUT"
for round in $(seq "$ROUNDS"); do
  echo "== round $round of $ROUNDS" >&2
  start ceiling 8081 $T/bench-ceiling 127.0.0.1:8081
  $LOAD --url http://127.0.0.1:8081 --connections 64 --label ceiling >> "$OUT"
  $LOAD --url http://127.0.0.1:8081 --connections 256 --label ceiling >> "$OUT"
  stop
  start work 8083 $T/bench-ceiling 127.0.0.1:8083 --work
  $LOAD --url http://127.0.0.1:8083 --connections 64 --label work-ceiling >> "$OUT"
  stop
  rm -f "$WORK"/naive.db*
  start naive 8082 $T/bench-naive 127.0.0.1:8082 "$WORK/naive.db"
  $LOAD --url http://127.0.0.1:8082 --connections 64 --label naive >> "$OUT"
  stop
  rm -f "$WORK"/group.db*
  start group 8084 $T/bench-group 127.0.0.1:8084 "$WORK/group.db"
  $LOAD --url http://127.0.0.1:8084 --connections 64 --label group >> "$OUT"
  stop
  for conns in 64 256; do
    rm -f "$WORK"/wrapup.db*; wrapup_config
    start wrapup 8080 env WRAPUP_LOG=warn $T/wrapup serve --config "$WORK/wrapup.toml"
    IDLE=$(kib VmRSS)
    $LOAD --url http://127.0.0.1:8080 --connections "$conns" --label wrapup --verify >> "$OUT"
    echo "{\"label\":\"wrapup-rss\",\"connections\":$conns,\"idle_kib\":$IDLE,\"peak_kib\":$(kib VmHWM)}" >> "$OUT"
    stop
  done
  # Lifecycle on a fresh store; after a clean stop (WAL checkpointed) its size per conversation.
  rm -f "$WORK"/wrapup.db*; wrapup_config
  start wrapup 8080 env WRAPUP_LOG=warn $T/wrapup serve --config "$WORK/wrapup.toml"
  $LOAD --url http://127.0.0.1:8080 --connections 64 --workload lifecycle --label wrapup --verify > "$WORK/lifecycle.json"
  cat "$WORK/lifecycle.json" >> "$OUT"
  stop
  echo "{\"label\":\"wrapup-disk\",\"db_bytes\":$(du -cb "$WORK"/wrapup.db* | tail -1 | cut -f1),\"conversations\":$(python3 -c "import json; print(json.load(open('$WORK/lifecycle.json'))['verified_ends'])")}" >> "$OUT"
  # PostgreSQL (group commit): one instance, then three on one schema, each driven by a
  # generator of its own (22 connections each, 66 in all), figures summed by report.py.
  schema="bench_pg_$$_$round"
  pg_config "$schema" 8090
  start wrapup-pg 8090 env WRAPUP_LOG=warn $T/wrapup serve --config "$WORK/pg-8090.toml"
  $LOAD --url http://127.0.0.1:8090 --connections 64 --label wrapup-pg --verify >> "$OUT"
  stop
  drop_schema "$schema"
  PIDS=()
  for port in 8090 8091 8092; do
    pg_config "${schema}_3" $port
    env WRAPUP_LOG=warn $T/wrapup serve --config "$WORK/pg-$port.toml" > "$WORK/pg-$port.log" 2>&1 &
    PIDS+=($!)
    wait_port $port
  done
  LOADS=()
  for port in 8090 8091 8092; do
    $LOAD --url http://127.0.0.1:$port --connections 22 --label wrapup-pg3 --verify > "$WORK/pg3-$port.json" &
    LOADS+=($!)
  done
  wait "${LOADS[@]}"
  cat "$WORK"/pg3-*.json >> "$OUT"
  kill "${PIDS[@]}"; wait "${PIDS[@]}" 2>/dev/null || true
  drop_schema "${schema}_3"
  # The pinned pass: the baselines the targets are ratios of, and wrapup on both stores.
  pin on
  start ceiling 8081 $T/bench-ceiling 127.0.0.1:8081
  $PLOAD --url http://127.0.0.1:8081 --connections 64 --label pinned-ceiling >> "$OUT"
  stop
  rm -f "$WORK"/group.db*
  start group 8084 $T/bench-group 127.0.0.1:8084 "$WORK/group.db"
  $PLOAD --url http://127.0.0.1:8084 --connections 64 --label pinned-group >> "$OUT"
  $PLOAD --url http://127.0.0.1:8084 --connections 256 --label pinned-group >> "$OUT"
  stop
  for conns in 64 256; do
    rm -f "$WORK"/wrapup.db*; wrapup_config
    start wrapup 8080 env WRAPUP_LOG=warn $T/wrapup serve --config "$WORK/wrapup.toml"
    $PLOAD --url http://127.0.0.1:8080 --connections "$conns" --label pinned-wrapup --verify >> "$OUT"
    stop
  done
  rm -f "$WORK"/wrapup.db*; wrapup_config
  start wrapup 8080 env WRAPUP_LOG=warn $T/wrapup serve --config "$WORK/wrapup.toml"
  $PLOAD --url http://127.0.0.1:8080 --connections 64 --workload lifecycle --label pinned-wrapup --verify >> "$OUT"
  stop
  pg_config "${schema}_p" 8090
  start wrapup-pg 8090 env WRAPUP_LOG=warn $T/wrapup serve --config "$WORK/pg-8090.toml"
  $PLOAD --url http://127.0.0.1:8090 --connections 64 --label pinned-wrapup-pg --verify >> "$OUT"
  stop
  drop_schema "${schema}_p"
  pin off
  # Open loop at half the closed-loop rate: latency without coordinated omission.
  rm -f "$WORK"/wrapup.db*; wrapup_config
  start wrapup 8080 env WRAPUP_LOG=warn $T/wrapup serve --config "$WORK/wrapup.toml"
  RATE=$(python3 -c "import json,sys; r=[json.loads(l) for l in open('$OUT')]; w=[x['rps'] for x in r if x['label']=='wrapup' and x['workload']=='end-only' and x['connections']==64]; print(int(w[-1]//2))")
  $LOAD --url http://127.0.0.1:8080 --connections 64 --rate "$RATE" --label wrapup-open >> "$OUT"
  stop
  # Post-conversation actions: one webhook per end, received by the generator itself (same
  # clock): closed loop (delivery throughput), then open loop at 2,500 ends/s, half the
  # 5,000/s target (acknowledgement-to-delivery latency).
  for mode in "--connections 64" "--connections 64 --rate 2500"; do
    rm -f "$WORK"/wrapup.db*; wrapup_config; webhook_config
    start wrapup 8080 env WRAPUP_LOG=warn $T/wrapup serve --config "$WORK/wrapup.toml"
    $LOAD --url http://127.0.0.1:8080 $mode --receiver 127.0.0.1:9000 --label wrapup-webhook >> "$OUT"
    stop
  done
done

python3 bench/report.py "$OUT" "$ROUNDS" "$DURATION"
