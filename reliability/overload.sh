#!/usr/bin/env bash
# Overload: more connections than the server is configured for, plus slow clients that
# dribble their headers, while health checks are polled. Reports peak RSS, how the load was
# shed (503 + Retry-After), what the health checks answered, and checks that the server
# recovers (a normal load afterwards: no errors, every acknowledged end stored once).
# Usage: reliability/overload.sh      (about 1 minute after the release build)
# Knobs: MAX_CONNECTIONS=256 LOAD_CONNECTIONS=1000 DURATION=20s SLOW_CLIENTS=200
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_CONNECTIONS=${MAX_CONNECTIONS:-256}
LOAD_CONNECTIONS=${LOAD_CONNECTIONS:-1000}
DURATION=${DURATION:-20s}
SLOW_CLIENTS=${SLOW_CLIENTS:-200}
PORT=${PORT:-8095}
HEALTH_PORT=$((PORT + 1))
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release --quiet --bin wrapup
cargo build --release --quiet -p wrapup-bench --bin wrapup-load
sed -e "s#sqlite://wrapup.db#sqlite://$WORK/wrapup.db#" \
    -e "s#^listen = .*#listen = \"127.0.0.1:$PORT\"\nmax_connections = $MAX_CONNECTIONS\nheader_read_timeout = \"2s\"\nhealth_listen = \"127.0.0.1:$HEALTH_PORT\"#" \
    examples/wrapup.toml > "$WORK/wrapup.toml"
WRAPUP_LOG=warn target/release/wrapup serve --config "$WORK/wrapup.toml" > "$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break; sleep 0.1; done
kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$SERVER/status"; }
IDLE_RSS=$(kib VmRSS)

# Health checks every 100 ms, each with a 1 s budget, for the whole overload: on the main
# listener (answered while a refusal slot is free) and on server.health_listen (always).
poll() { while true; do
    curl -s -o /dev/null -w '%{http_code}\n' --max-time 1 "$1" || true
    sleep 0.1
  done; }
poll "http://127.0.0.1:$PORT/healthz" > "$WORK/health-main.txt" &
POLLER=$!
poll "http://127.0.0.1:$HEALTH_PORT/readyz" > "$WORK/health.txt" &
POLLER2=$!

# Slow clients: each sends one header byte every 500 ms and should be cut off after ~2 s.
python3 - "$PORT" "$SLOW_CLIENTS" > "$WORK/slow.json" <<'PY' &
import json, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
request = b"POST /agentai/api/v1/hooks/x HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
socks, started = [], time.time()
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port)); s.setblocking(False); socks.append([s, 0, None])
while any(c[2] is None for c in socks) and time.time() - started < 30:
    for c in socks:
        if c[2] is not None: continue
        try:
            if c[0].recv(4096, socket.MSG_PEEK) == b"": c[2] = time.time() - started; continue
        except BlockingIOError: pass
        except OSError: c[2] = time.time() - started; continue
        try:
            c[0].send(request[c[1] % len(request):c[1] % len(request) + 1]); c[1] += 1
        except OSError: c[2] = time.time() - started
    time.sleep(0.5)
cut = sorted(c[2] for c in socks if c[2] is not None)
print(json.dumps({"slow_clients": n, "cut_off": len(cut), "cut_off_after_max_s": round(cut[-1], 1) if cut else None,
                  "bytes_sent_max": max(c[1] for c in socks)}))
PY
SLOW=$!

target/release/wrapup-load --url "http://127.0.0.1:$PORT" --connections "$LOAD_CONNECTIONS" \
  --duration "$DURATION" --warmup 1s --quiet --verify --allow-errors --label overload > "$WORK/overload.json"
wait "$SLOW"
kill "$POLLER" "$POLLER2"; wait "$POLLER" "$POLLER2" 2>/dev/null || true
PEAK_RSS=$(kib VmHWM)
# Recovery: a normal load right after.
target/release/wrapup-load --url "http://127.0.0.1:$PORT" --connections 64 \
  --duration 5s --warmup 1s --quiet --verify --label after > "$WORK/after.json"
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^wrapup_connections_(refused|dropped)_total' > "$WORK/metrics.txt" || true

python3 - "$WORK" "$IDLE_RSS" "$PEAK_RSS" "$MAX_CONNECTIONS" <<'PY'
import collections, json, sys
work, idle, peak, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
over = json.load(open(f"{work}/overload.json")); after = json.load(open(f"{work}/after.json"))
slow = json.load(open(f"{work}/slow.json"))
count = lambda f: collections.Counter(l.strip() for l in open(f"{work}/{f}") if l.strip())
health, health_main = count("health.txt"), count("health-main.txt")
metrics = dict(l.split() for l in open(f"{work}/metrics.txt"))
report = {
    "max_connections": limit, "load_connections": over["connections"],
    "overload": {k: over.get(k) for k in ("rps", "requests", "errors", "shed_503", "p99_ms", "verified_ends")},
    "refused_total": metrics.get("wrapup_connections_refused_total"),
    "dropped_total": metrics.get("wrapup_connections_dropped_total", "0"),
    "readyz_on_health_listen": dict(health), "healthz_on_main_listen": dict(health_main), "rss_idle_mib": round(idle / 1024, 1), "rss_peak_mib": round(peak / 1024, 1),
    "slow": slow, "after": {k: after.get(k) for k in ("rps", "errors", "p99_ms", "verified_ends")},
}
print(json.dumps(report, indent=1))
ok = (after["errors"] == 0 and health.get("200", 0) > 0 and sum(health.values()) == health.get("200", 0)
      and slow["cut_off"] == slow["slow_clients"] and over["shed_503"] > 0)
sys.exit(0 if ok else 1)
PY
