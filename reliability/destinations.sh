#!/usr/bin/env bash
# Misbehaving destinations, measured: the end-to-delivery latency of a fast webhook (the load
# generator's own receiver, so acknowledgement and delivery are timed on one clock) and the
# end request's latency while another webhook of the same bot answers in 1.5 s (with and
# without bulkheads: `per_destination = 64` is the same as none), holds a backlog of BACKLOG
# due jobs behind a receiver that never answers (its breaker off, the worst case), or while
# eight webhooks never answer, or while eight webhooks misbehave each its own way (a stall, a
# closed port, 500s, 429s, 410s, a 100 MB answer, a redirect loop, a self-signed certificate;
# the circuit breaker as configured by default).
# Usage: reliability/destinations.sh    (a few minutes after the release build)
# Knobs: RATE=100 DURATION=20s PORT=8099 BACKLOG=86000 STORE=sqlite|postgres CASES="eight-stalled …"
#        (postgres: DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test, a schema per case)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-100}
DURATION=${DURATION:-20s}
STORE=${STORE:-sqlite}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
PORT=${PORT:-8099}
RECEIVER_PORT=$((PORT + 1))
SLOW_PORT=$((PORT + 2))
BIG_PORT=$((PORT + 3))
STALL_PORT=$((PORT + 4))
ODD_PORT=$((PORT + 5))
TLS_PORT=$((PORT + 6))
CLOSED_PORT=$((PORT + 7))
BACKLOG=${BACKLOG:-86000}
BOT=st-56fbfece-0293-55a3-9154-7e3e19xxxxxx
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

# A receiver that accepts every connection and never answers.
python3 - "$STALL_PORT" <<'PY' &
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4096)
held = []
while True:
    c, _ = s.accept(); held.append(c)
PY

# A receiver that misbehaves by path: /500, /429 (Retry-After: 1), /410, /big (100 MB),
# /loop (a redirect to itself); and the same behind a self-signed certificate.
cat > "$WORK/odd.py" <<'PY'
import ssl, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
BIG = b"x" * (100 << 20)
class Odd(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        status, headers, body = {
            "/500": (500, {}, b"boom"),
            "/429": (429, {"retry-after": "1"}, b""),
            "/410": (410, {}, b"gone"),
            "/big": (200, {}, BIG),
            "/loop": (307, {"location": self.path}, b""),
        }.get(self.path, (404, {}, b""))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
    def log_message(self, *a): pass
server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Odd)
if len(sys.argv) > 2:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
PY
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -keyout "$WORK/key.pem" \
  -out "$WORK/cert.pem" 2> /dev/null
python3 "$WORK/odd.py" "$ODD_PORT" &
python3 "$WORK/odd.py" "$TLS_PORT" "$WORK/cert.pem" "$WORK/key.pem" &

webhook() {
  printf '[[bots.on_end]]\nname = "%s"\nkind = "webhook"\nurl = "%s"\nsecret = "whsec_ZGVtby13ZWJob29rLXNlY3JldC1ETy1OT1QtVVNF"\n' "$1" "$2"
}
run() { # run LABEL NEIGHBOUR(no|slow|big|backlog|stalled8|odd8) PER_DESTINATION
  rm -f "$WORK"/wrapup.db*
  local schema="wrapup_dest_$$_${1//[^a-z0-9]/_}"
  local store_url="sqlite://$WORK/wrapup.db"
  [ "$STORE" = postgres ] && store_url="$DATABASE_URL\"\nschema = \"$schema"
  {
    sed -e "s#^url = \"sqlite://wrapup.db\"#url = \"$store_url\"#" -e "s#^listen = .*#listen = \"127.0.0.1:$PORT\"#" \
        -e '/^inactivity_timeout/d' examples/wrapup.toml
    webhook fast "http://127.0.0.1:$RECEIVER_PORT/fast"
    [ "$2" = slow ] && webhook slow "http://127.0.0.1:$SLOW_PORT/slow"
    [ "$2" = big ] && webhook big "http://127.0.0.1:$BIG_PORT/big"
    [ "$2" = backlog ] && webhook stalled "http://127.0.0.1:$STALL_PORT/stalled"
    if [ "$2" = stalled8 ]; then
      for i in 1 2 3 4 5 6 7 8; do webhook "stalled$i" "http://127.0.0.1:$STALL_PORT/s$i"; done
    fi
    if [ "$2" = odd8 ]; then
      for odd in ${ODD:-stall closed 500 429 410 big loop selfsigned}; do
        case $odd in
          stall) webhook stall "http://127.0.0.1:$STALL_PORT/stall" ;;
          closed) webhook closed "http://127.0.0.1:$CLOSED_PORT/closed" ;;
          selfsigned) webhook selfsigned "https://localhost:$TLS_PORT/500" ;;
          *) webhook "odd$odd" "http://127.0.0.1:$ODD_PORT/$odd" ;;
        esac
      done
    fi
    printf '[workers]\nper_destination = %s\n' "$3"
    # The backlog case measures claims beside a backlog that keeps being claimed.
    [ "$2" = backlog ] && printf 'pause_after = 0\n'
  } > "$WORK/wrapup.toml"
  if [ "$2" = backlog ]; then
    # BACKLOG jobs of the stalled webhook, due now: what a stalled receiver builds in
    # ten minutes at 150 ends per second.
    target/release/wrapup migrate --config "$WORK/wrapup.toml" > /dev/null
    if [ "$STORE" = postgres ]; then
      psql -q "$DATABASE_URL" -c "SET search_path = $schema;
        INSERT INTO jobs (id, bot_id, conversation_id, action, kind, state, attempts, max_attempts, budget, due_at,
                          created_at, updated_at, payload, destination, action_name)
        SELECT md5(i::text), '$BOT', 'backlog-' || i, 'stalled', 'webhook', 'pending', 0, 8, 8,
               (extract(epoch from now()) * 1000)::bigint - 60000, (extract(epoch from now()) * 1000)::bigint - 60000,
               (extract(epoch from now()) * 1000)::bigint - 60000, '{}', 'webhook:stalled@$BOT', 'stalled'
        FROM generate_series(1, $BACKLOG) i; ANALYZE jobs;"
    else
    python3 - "$WORK/wrapup.db" "$BACKLOG" "$BOT" <<'PY'
import sqlite3, sys, time, uuid
db, n, bot = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = sqlite3.connect(db)
c.execute("INSERT INTO job_payloads (id, payload) VALUES (1, '{}')")
now = int(time.time() * 1000)
c.executemany(
    "INSERT INTO jobs (id, bot_id, conversation_id, action, kind, state, attempts, max_attempts, budget, due_at, created_at, updated_at, payload_id, destination)"
    " VALUES (?, ?, ?, 'stalled', 'webhook', 'pending', 0, 8, 8, ?, ?, ?, 1, ?)",
    ((uuid.uuid4().hex, bot, f"backlog-{i}", now - 60000, now - 60000, now - 60000, f"webhook:stalled@{bot}") for i in range(n)))
c.commit()
print(c.execute("SELECT count(*) FROM jobs WHERE state = 'pending'").fetchone()[0], file=sys.stderr)
PY
    fi
  fi
  WRAPUP_LOG=warn target/release/wrapup serve --config "$WORK/wrapup.toml" > "$WORK/server.log" 2>&1 &
  local server=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break; sleep 0.1; done
  target/release/wrapup-load --url "http://127.0.0.1:$PORT" --rate "$RATE" --connections 8 \
    --duration "$DURATION" --warmup 0s --quiet --receiver "127.0.0.1:$RECEIVER_PORT" --label "$1"
  awk '$1 == "VmHWM:" {print $2}' "/proc/$server/status" > "$WORK/peak-$1"
  kill -INT "$server"; wait "$server" || true
  [ "$STORE" = postgres ] && [ -z "${KEEP:-}" ] && psql -q "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS $schema CASCADE" > /dev/null 2>&1
  true
}
# CASES: which to run (the baseline always runs first).
CASES=${CASES:-"slow-neighbour-bulkheads slow-neighbour-no-bulkheads backlog eight-stalled eight-misbehaving big-answers"}
want() { [[ " $CASES " == *" $1 "* ]]; }
run baseline no 8 >> "$WORK/results"
want slow-neighbour-bulkheads && run slow-neighbour-bulkheads slow 8 >> "$WORK/results"
want slow-neighbour-no-bulkheads && run slow-neighbour-no-bulkheads slow 64 >> "$WORK/results"
want backlog && run "backlog-$BACKLOG-due" backlog 8 >> "$WORK/results"
want eight-stalled && run eight-stalled stalled8 8 >> "$WORK/results"
want eight-misbehaving && run eight-misbehaving odd8 8 >> "$WORK/results"
if want big-answers; then
  # 50 MB answers, up to 64 at once: only their first KiB is read.
  run big-answers big 64 > /dev/null
  echo "peak RSS: baseline $(( $(cat "$WORK/peak-baseline") / 1024 )) MiB; beside a receiver answering 50 MB to each of up to 64 deliveries at once $(( $(cat "$WORK/peak-big-answers") / 1024 )) MiB"
fi
python3 - "$WORK/results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print("| case | ends | fast webhook: acknowledgement to delivery p50 / p99 | end request p50 / p99 |")
print("|---|---|---|---|")
for r in rows:
    d = r["deliveries"]
    print(f"| {r['label']} | {r['requests']} (delivered {d['delivered']}) | {d['ack_to_delivery_p50_ms']} ms / {d['ack_to_delivery_p99_ms']} ms | {r['p50_ms']} ms / {r['p99_ms']} ms |")
base = rows[0]
budget = max(base["deliveries"]["ack_to_delivery_p99_ms"], 5)
failed = []
for r in rows[1:]:
    if r["label"].endswith("no-bulkheads"):
        continue
    p99 = r["deliveries"]["ack_to_delivery_p99_ms"]
    if p99 > 3 * budget:
        failed.append(f"{r['label']}: the fast p99 {p99} ms is over 3x the baseline {budget} ms")
    if r["deliveries"]["delivered"] != r["requests"]:
        failed.append(f"{r['label']}: not every end delivered")
    if r["p99_ms"] > 2 * max(base["p99_ms"], 5):
        failed.append(f"{r['label']}: the end's p99 {r['p99_ms']} ms is over 2x the baseline")
assert not failed, "; ".join(failed)
print("destinations: ok")
PY
