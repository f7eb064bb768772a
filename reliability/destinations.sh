#!/usr/bin/env bash
# Misbehaving destinations, measured: the end-to-delivery latency of a fast webhook (the load
# generator's own receiver, so acknowledgement and delivery are timed on one clock) while
# another webhook of the same bot answers in 1.5 s, with and without bulkheads
# (`per_destination = 64` is the same as none: it equals the global `concurrency`).
# Usage: reliability/destinations.sh    (about a minute after the release build)
# Knobs: RATE=100 DURATION=5s PORT=8099
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-100}
DURATION=${DURATION:-5s}
PORT=${PORT:-8099}
RECEIVER_PORT=$((PORT + 1))
SLOW_PORT=$((PORT + 2))
BIG_PORT=$((PORT + 3))
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
cargo build --release --quiet --bin wrapup
cargo build --release --quiet -p wrapup-bench --bin wrapup-load

# A receiver that answers every delivery after 1.5 s, many at once.
python3 - "$SLOW_PORT" <<'PY' &
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Slow(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(1.5)
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Slow).serve_forever()
PY

# A receiver that answers every delivery with 50 MB.
python3 - "$BIG_PORT" <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
BIG = b"x" * (50 << 20)
class Big(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", str(len(BIG))); self.end_headers()
        try:
            self.wfile.write(BIG)
        except (BrokenPipeError, ConnectionResetError):
            pass
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Big).serve_forever()
PY

webhook() {
  printf '[[bots.on_end]]\nname = "%s"\nkind = "webhook"\nurl = "%s"\nsecret = "whsec_ZGVtby13ZWJob29rLXNlY3JldC1ETy1OT1QtVVNF"\n' "$1" "$2"
}
run() { # run LABEL NEIGHBOUR(no|slow|big) PER_DESTINATION
  rm -f "$WORK"/wrapup.db*
  {
    sed -e "s#sqlite://wrapup.db#sqlite://$WORK/wrapup.db#" -e "s#^listen = .*#listen = \"127.0.0.1:$PORT\"#" \
        -e '/^inactivity_timeout/d' examples/wrapup.toml
    webhook fast "http://127.0.0.1:$RECEIVER_PORT/fast"
    [ "$2" = slow ] && webhook slow "http://127.0.0.1:$SLOW_PORT/slow"
    [ "$2" = big ] && webhook big "http://127.0.0.1:$BIG_PORT/big"
    printf '[workers]\nper_destination = %s\n' "$3"
  } > "$WORK/wrapup.toml"
  WRAPUP_LOG=warn target/release/wrapup serve --config "$WORK/wrapup.toml" > "$WORK/server.log" 2>&1 &
  local server=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break; sleep 0.1; done
  target/release/wrapup-load --url "http://127.0.0.1:$PORT" --rate "$RATE" --connections 8 \
    --duration "$DURATION" --warmup 0s --quiet --receiver "127.0.0.1:$RECEIVER_PORT" --label "$1"
  awk '$1 == "VmHWM:" {print $2}' "/proc/$server/status" > "$WORK/peak-$1"
  kill -INT "$server"; wait "$server" || true
}
BASE=$(run baseline no 8)
BULK=$(run slow-neighbour-bulkheads slow 8)
NONE=$(run slow-neighbour-no-bulkheads slow 64)
# 50 MB answers, up to 64 at once: only their first KiB is read.
run big-answers big 64 > /dev/null
echo "peak RSS: baseline $(( $(cat "$WORK/peak-baseline") / 1024 )) MiB; beside a receiver answering 50 MB to each of up to 64 deliveries at once $(( $(cat "$WORK/peak-big-answers") / 1024 )) MiB"
python3 - "$BASE" "$BULK" "$NONE" <<'PY'
import json, sys
rows = [json.loads(a) for a in sys.argv[1:]]
print("| case | ends | fast webhook: acknowledgement to delivery p50 / p99 |")
print("|---|---|---|")
for r in rows:
    d = r["deliveries"]
    print(f"| {r['label']} | {r['requests']} (delivered {d['delivered']}) | {d['ack_to_delivery_p50_ms']} ms / {d['ack_to_delivery_p99_ms']} ms |")
base, bulk = rows[0]["deliveries"]["ack_to_delivery_p99_ms"], rows[1]["deliveries"]["ack_to_delivery_p99_ms"]
assert bulk <= 2 * max(base, 5), f"with bulkheads the fast p99 {bulk} ms is over twice the baseline {base} ms"
print("destinations: ok")
PY
