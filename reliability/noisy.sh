#!/usr/bin/env bash
# Noisy tenant: one app grows a conversation as the security review did (NA entry, then
# 20 requests of 100 WARM entries with distinct 256-character identities, then 100 COLD
# entries with the end), then floods that conversation with 16 connections; meanwhile a
# well-behaved app on another bot sends ends over 4 connections. Reports what the growth
# was answered, the record's size, the quiet app's median and p99 latency idle and
# during the flood (with the noisy app's rate_limit off, then on), peak RSS, and the
# bytes of a 500-conversation list page.
# The flood goes to a second conversation, grown to its state cap with valid requests.
# Then 10,000 distinct ~8 KiB valid tokens from the rate-limited noisy app (the token
# cache's memory, the 429 access lines written) against the quiet app.
# Then filter walks and 4 MiB event pages from the rate-limited noisy app; 600 silent
# sockets against a client on fresh connections; wrong sign-ins from another address;
# a flood of /metrics and /readyz. Last, on PostgreSQL (DATABASE_URL), a flood of one hot
# conversation against the quiet app's ends.
# Usage: reliability/noisy.sh     (about 3 minutes after the release build)
# Knobs: DURATION=10s NOISY_RATE=200 PORT=8097
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
NOISY_RATE=${NOISY_RATE:-200}
PORT=${PORT:-8097}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
QUIET_APP=cs-6363fcbb-310e-5b07-91a9-c614cd3cbf6e
QUIET_SECRET=demo-secret-DO-NOT-USE-IN-PRODUCTION-0001
QUIET_BOT=st-56fbfece-0293-55a3-9154-7e3e19xxxxxx
NOISY_APP=cs-noisy-tenant
NOISY_SECRET=noisy-secret-for-this-script-only-000001
NOISY_BOT=st-noisy

cargo build --release --quiet --bin wrapup
cargo build --release --quiet -p wrapup-bench --bin wrapup-load
BASE="http://127.0.0.1:$PORT"

# The PostgreSQL phase's store (STORE=postgres): a schema of its own, dropped at the end.
PG_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
PG_SCHEMA="noisy_pg_$$"
STORE=sqlite

# config RATE: the example configuration plus the noisy app and its bot.
config() {
  local rate="" store="s#sqlite://wrapup.db#sqlite://$WORK/wrapup.db#"
  [ "$1" != off ] && rate=$'\nrate_limit = '"$1"
  [ "$STORE" = postgres ] && store="s#^url = .*#url = \"$PG_URL\"\nschema = \"$PG_SCHEMA\"#"
  sed -e "$store" -e "s#^listen = .*#listen = \"127.0.0.1:$PORT\"#" \
      -e '/^inactivity_timeout/d' examples/wrapup.toml
  cat <<TOML

[[apps]]
client_id = "$NOISY_APP"
client_secret = "$NOISY_SECRET"$rate

[[bots]]
id = "$NOISY_BOT"
apps = ["$NOISY_APP"]

# The events cap would stop the flood's writes after 10,000 messages; lifted, every
# message of the flood is a write to a conversation at its state cap.
[bots.caps]
events = 10000000

# A summary of a huge transcript (the last path): extractive, no network.
[bots.summary]
provider = "extractive"
TOML
}

SERVER=
start() { # start RATE [SERVER_LINE]: the noisy app's rate_limit, and a line for [server]
  if [ -n "${2:-}" ]; then config "$1" | sed "/^listen = /a $2"; else config "$1"; fi > "$WORK/wrapup.toml"
  WRAPUP_LOG=${LOG:-warn} target/release/wrapup serve --config "$WORK/wrapup.toml" >> "$WORK/server.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do curl -sf "$BASE/healthz" > /dev/null && break; sleep 0.1; done
}
stop() { kill -INT "$SERVER"; wait "$SERVER" || true; }
kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$SERVER/status"; }

quiet() {
  WRAPUP_CLIENT_ID=$QUIET_APP WRAPUP_CLIENT_SECRET=$QUIET_SECRET target/release/wrapup-load \
    --url "$BASE" --bot "$QUIET_BOT" --connections 4 --duration "$DURATION" --warmup 1s --quiet --label "$1"
}
flood() {
  WRAPUP_CLIENT_ID=$NOISY_APP WRAPUP_CLIENT_SECRET=$NOISY_SECRET target/release/wrapup-load \
    --url "$BASE" --bot "$NOISY_BOT" --workload message --conversation at-caps --connections 16 \
    --duration "$DURATION" --warmup 0s --quiet --allow-errors --label "$1"
}
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

start off
NOISY_TOKEN=$(target/release/wrapup token --client-id "$NOISY_APP" --secret "$NOISY_SECRET")
QUIET_TOKEN=$(target/release/wrapup token --client-id "$QUIET_APP" --secret "$QUIET_SECRET")

# The reproduction, as the review sent it.
GROWTH=$(python3 - "$BASE" "$NOISY_BOT" "$NOISY_TOKEN" <<'PY'
import json, sys, urllib.request, urllib.error
base, bot, token = sys.argv[1:4]
def post(events):
    body = json.dumps({"botId": bot, "conversationId": "grown", "events": events}).encode()
    req = urllib.request.Request(f"{base}/agentai/api/v1/hooks/{bot}", body,
                                 {"content-type": "application/json", "token": token})
    try:
        return urllib.request.urlopen(req).status
    except urllib.error.HTTPError as e:
        return e.code
def transfer(kind, who):
    return {"name": "INTERNAL_TRANSFER_EVENT", "transfertype": kind, "transition": "entry",
            "experience": "voice", "participant": {"identity": who, "name": who, "type": "agent"}}
statuses = [post([transfer("NA", "a0")])]
for r in range(20):
    statuses.append(post([transfer("WARM", f"{r*100+i:0>256}") for i in range(100)]))
cold = [transfer("COLD", f"c{i:0>255}") for i in range(99)]
statuses.append(post(cold))
print(json.dumps({"na": statuses[0], "warm": sorted(set(statuses[1:21])), "cold": statuses[21]}))
PY
)
# A conversation grown to its caps with valid requests: agents with 60 customFields of
# 100 characters each, until the state cap refuses the next one.
AT_CAPS=$(python3 - "$BASE" "$NOISY_BOT" "$NOISY_TOKEN" <<'PY'
import json, sys, urllib.request, urllib.error
base, bot, token = sys.argv[1:4]
def post(events):
    body = json.dumps({"botId": bot, "conversationId": "at-caps", "events": events}).encode()
    req = urllib.request.Request(f"{base}/agentai/api/v1/hooks/{bot}", body,
                                 {"content-type": "application/json", "token": token})
    try:
        return urllib.request.urlopen(req).status, ""
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["message"]
for n in range(1000):
    fields = {f"field{i:02}": "v" * 100 for i in range(60)}
    status, message = post([{"name": "INTERNAL_TRANSFER_EVENT", "transfertype": "NA" if n == 0 else "WARM",
        "transition": "entry", "experience": "voice",
        "participant": {"identity": f"agent-{n:03}-{'x' * 200}", "name": "A", "type": "agent", "customFields": fields}}])
    if status != 200:
        print(f"{n} agents, then {status}: {message}")
        break
PY
)
AT_CAPS_BYTES=$(curl -s -H "token: $NOISY_TOKEN" "$BASE/api/v1/bots/$NOISY_BOT/conversations/at-caps" | wc -c)
RECORD_BYTES=$(curl -s -H "token: $NOISY_TOKEN" "$BASE/api/v1/bots/$NOISY_BOT/conversations/grown" | wc -c)

IDLE=$(quiet idle)
flood flood-unlimited > "$WORK/flood1.json" &
FLOOD=$!
sleep 1
BUSY=$(quiet during-flood-unlimited)
wait $FLOOD
PEAK_RSS=$(kib VmHWM)
LIST_BYTES=$(curl -s -H "token: $QUIET_TOKEN" "$BASE/api/v1/bots/$QUIET_BOT/conversations?limit=500" | wc -c)
stop

start "$NOISY_RATE"
IDLE2=$(quiet idle-2)
flood flood-limited > "$WORK/flood2.json" &
FLOOD=$!
sleep 1
BUSY2=$(quiet during-flood-limited)
wait $FLOOD
stop

# Summary of a huge transcript: 1,000 messages of 64 KB (inside every cap), then one
# TRIGGER_SUMMARY_EVENT; the quiet app's latency while it is summarized, the server's
# peak RSS (it once went from 117 MB to 4.3 GB and aborted), the summary's outcome.
start off
IDLE3=$(quiet idle-3)
HUGE=$(python3 - "$BASE" "$NOISY_BOT" "$NOISY_TOKEN" <<'PY'
import json, sys, time, urllib.request, urllib.error
base, bot, token = sys.argv[1:4]
def post(body):
    req = urllib.request.Request(f"{base}/agentai/api/v1/hooks/{bot}", json.dumps(body).encode(),
                                 {"content-type": "application/json", "token": token})
    try:
        return urllib.request.urlopen(req).status
    except urllib.error.HTTPError as e:
        return e.code
words = ("refund order parcel delivery address invoice account agent customer issue "
         "tracking payment warehouse courier replacement. ").split(" ")
text = " ".join(words[i % len(words)] for i in range(12000))[:64000]
statuses = set()
for i in range(1000):
    statuses.add(post({"botId": bot, "conversationId": "huge", "query": text,
                       "author": {"type": "USER" if i % 2 else "AGENT"}}))
statuses.add(post({"botId": bot, "conversationId": "huge", "events": [{"name": "TRIGGER_SUMMARY_EVENT",
                   "data": {"language": "English", "locale": "en", "type": "post"}}]}))
print(json.dumps(sorted(statuses)))
PY
)
quiet during-summary > "$WORK/quiet3.json" &
QUIET3=$!
SUMMARY=""
for _ in $(seq 600); do
  SUMMARY=$(curl -s -H "token: $NOISY_TOKEN" "$BASE/api/v1/bots/$NOISY_BOT/conversations/huge/summaries" |
    python3 -c "import json,sys; s=json.load(sys.stdin).get('summaries',[]); print(s[0]['status'] + ' in ' + str(s[0]['generationTimeMs']) + ' ms of ' + str(s[0]['messages']) + ' messages' if s else '')" 2>/dev/null || true)
  [ -n "$SUMMARY" ] && break
  sleep 0.1
done
wait $QUIET3
BUSY3=$(cat "$WORK/quiet3.json")
PEAK_RSS3=$(kib VmHWM)
stop

# Large tokens and a 429 flood: 10,000 distinct valid tokens of ~8 KiB (the largest
# taken) from the rate-limited noisy app over 8 connections. The verified-token cache
# once kept every token's text (RSS 34 -> 181 MB) and every 429 wrote a 435-byte access
# line; now the cache keeps digests and 429 lines are sampled (one per route and second).
LOG=info start "$NOISY_RATE"
IDLE4=$(quiet idle-4)
RSS4_BEFORE=$(kib VmRSS)
LOG4_BEFORE=$(grep -c "" "$WORK/server.log" || true)
python3 - "$BASE" "$NOISY_BOT" "$NOISY_APP" "$NOISY_SECRET" > "$WORK/tokens.json" <<'PY' &
import base64, hashlib, hmac, json, sys, threading, urllib.request, urllib.error
from collections import Counter
base, bot, app, secret = sys.argv[1:5]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
def token(i):
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"appId": app, "n": i, "pad": "x" * 5900}).encode())
    sig = b64(hmac.new(secret.encode(), head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()
statuses, lock = Counter(), threading.Lock()
def worker(k):
    for i in range(k, 10000, 8):
        body = json.dumps({"botId": bot, "conversationId": f"tok-{i}", "query": "hi", "author": {"type": "USER"}}).encode()
        req = urllib.request.Request(f"{base}/agentai/api/v1/hooks/{bot}", body,
                                     {"content-type": "application/json", "token": token(i)})
        try:
            s = urllib.request.urlopen(req).status
        except urllib.error.HTTPError as e:
            s = e.code
        with lock:
            statuses[s] += 1
threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps({"token_bytes": len(token(9999)), "statuses": dict(statuses)}))
PY
TOKENS=$!
sleep 1
BUSY4=$(quiet during-big-tokens)
wait $TOKENS
RSS4_AFTER=$(kib VmRSS)
# The access lines of the noisy bot's 429s only (its 200s and the quiet app's are logged too).
NOISY_LOG_BYTES=$(tail -n +"$((LOG4_BEFORE + 1))" "$WORK/server.log" | grep -F "\"bot\":\"$NOISY_BOT\"" |
  grep -F '"status":429' | wc -c)
TOKENS_RESULT=$(cat "$WORK/tokens.json")
stop

# Filter walks and big pages (issue 23, item 4): the noisy bot's ends (each agent_initiated,
# voice) for 10 s, then 8 threads of the rate-limited noisy app reading what costs the most
# to read: a filter that matches none of them (?reason=agent_initiated&experience=chat,
# walked by its cursor; the review walked one at 22/s over 30,000 conversations) and the
# flooded conversation's 4 MiB event pages (5 MB pages at 34/s took the other tenant's
# reads to p99 967 ms), against the quiet app's ends.
start off
WRAPUP_CLIENT_ID=$NOISY_APP WRAPUP_CLIENT_SECRET=$NOISY_SECRET target/release/wrapup-load \
  --url "$BASE" --bot "$NOISY_BOT" --connections 8 --duration 10s --warmup 0s --quiet --label fill > "$WORK/fill.json"
stop
start "$NOISY_RATE"
IDLE5=$(quiet idle-5)
python3 - "$BASE" "$NOISY_BOT" "$NOISY_TOKEN" 14 > "$WORK/reads.json" <<'PY' &
import json, sys, threading, time, urllib.request, urllib.error
from collections import Counter
base, bot, token, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
stop = time.time() + secs
statuses, lock, read = Counter(), threading.Lock(), {"walk_pages": 0, "walk_examined_to_end": 0, "event_bytes": 0}
def get(path):
    req = urllib.request.Request(base + path, headers={"token": token})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
def walker():
    cursor = None
    while time.time() < stop:
        q = f"/api/v1/bots/{bot}/conversations?reason=agent_initiated&experience=chat&limit=500"
        status, data = get(q + (f"&cursor={cursor}" if cursor else ""))
        with lock:
            statuses[status] += 1
            if status == 200:
                read["walk_pages"] += 1
        if status == 200:
            cursor = json.loads(data).get("nextCursor")
            if cursor is None:
                with lock:
                    read["walk_examined_to_end"] += 1
        else:
            time.sleep(0.01)
def pager():
    after = 0
    while time.time() < stop:
        status, data = get(f"/api/v1/bots/{bot}/conversations/at-caps/events?limit=1000&after={after}")
        with lock:
            statuses[status] += 1
            read["event_bytes"] += len(data)
        if status == 200:
            after = json.loads(data).get("nextAfter") or 0
        else:
            time.sleep(0.01)
threads = [threading.Thread(target=walker if k % 2 else pager) for k in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps({"statuses": dict(statuses), **read}))
PY
READS=$!
sleep 1
BUSY5=$(quiet during-reads)
wait $READS
READS_RESULT=$(cat "$WORK/reads.json")
FILLED=$(field "$(cat "$WORK/fill.json")" requests)
stop

# Idle connections (issue 23, item 6): with max_connections = 512, 600 sockets opened from
# eight addresses (127.0.0.2-9) and left silent, each reopened as soon as it is closed,
# against a client sending 250 ends, each on a fresh connection (the review: 520 idle
# sockets reopened every 9 s, and 220 of the victim's 249 writes got 503).
start "$NOISY_RATE" 'max_connections = 512'
victim() {
  python3 - "$BASE" "$QUIET_BOT" "$QUIET_TOKEN" <<'PY'
import http.client, json, sys, time, urllib.parse
base, bot, token = sys.argv[1:4]
host = urllib.parse.urlparse(base)
statuses, took = {}, []
for i in range(250):
    body = json.dumps({"botId": bot, "conversationId": f"fresh-{time.time_ns()}-{i}",
                       "events": [{"name": "END_OF_CONVERSATION", "reason": "agent_initiated", "language": "en",
                                   "experience": "voice", "participant": {"identity": "agent1", "name": "A", "type": "agent"}}]})
    t = time.perf_counter()
    try:
        c = http.client.HTTPConnection(host.hostname, host.port, timeout=10, source_address=("127.0.0.1", 0))
        c.request("POST", f"/agentai/api/v1/hooks/{bot}", body, {"content-type": "application/json", "token": token})
        s = c.getresponse().status
        c.close()
    except Exception as e:
        s = type(e).__name__
    took.append((time.perf_counter() - t) * 1000)
    statuses[str(s)] = statuses.get(str(s), 0) + 1
took.sort()
print(json.dumps({"statuses": statuses, "p50_ms": round(took[len(took) // 2], 2), "p99_ms": round(took[int(len(took) * 0.99)], 2)}))
PY
}
IDLE6=$(victim)
python3 - "$BASE" 30 > "$WORK/idle.json" <<'PY' &
import select, signal, socket, sys, time, urllib.parse
base, secs = sys.argv[1], float(sys.argv[2])
signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
u = urllib.parse.urlparse(base)
def open_one(k):
    s = socket.socket()
    s.bind((f"127.0.0.{2 + k % 8}", 0))
    s.connect((u.hostname, u.port))
    return s
socks = [open_one(k) for k in range(600)]
reopened, stop = 0, time.time() + secs
try:
    while time.time() < stop:
        readable, _, _ = select.select(socks, [], [], 0.2)
        for s in readable:
            if s.recv(1) == b"":  # closed by the server: open another in its place
                k = socks.index(s)
                s.close()
                socks[k] = open_one(k)
                reopened += 1
except KeyboardInterrupt:
    pass
print('{"sockets": 600, "reopened": %d}' % reopened, flush=True)
PY
IDLER=$!
sleep 2
BUSY6=$(victim)
kill $IDLER 2>/dev/null || true; wait $IDLER 2>/dev/null || true
IDLE_CLOSED=$(curl -s "$BASE/metrics" | awk '$1 == "wrapup_connections_idle_closed_total" {print $2}')

# Sign-in lockout (issue 23, item 5): twelve wrong admin tokens from 127.0.0.2, then the
# right one from 127.0.0.1, which must still sign in (it once got 429: every client was
# one address).
ADMIN_TOKEN=demo-admin-token-DO-NOT-USE-IN-PRODUCTION
LOCKOUT=""
for _ in $(seq 12); do
  LOCKOUT="$LOCKOUT $(curl -s -o /dev/null -w '%{http_code}' --interface 127.0.0.2 -d token=wrong-token-0123456789 "$BASE/console/login")"
done
OPERATOR=$(curl -s -o /dev/null -w '%{http_code}' --interface 127.0.0.1 -d "token=$ADMIN_TOKEN" "$BASE/console/login")
stop

# Probes and scrapes (issue 25): 16 threads asking /metrics and /readyz as fast as they are
# answered, on the public listener (no admin_listen), against the quiet app's ends. Each
# one once wrote a heartbeat through the store's writer and counted every job; now one
# check at a time runs and its answer is reused for a second.
start "$NOISY_RATE"
IDLE7=$(quiet probes-idle)
python3 - "$BASE" "$DURATION" > "$WORK/probes.json" <<'PY' &
import json, sys, threading, time, urllib.request
base, secs = sys.argv[1], float(sys.argv[2].rstrip("s"))
stop = time.time() + secs + 2
counts = {"metrics": 0, "readyz": 0, "errors": 0}
lock = threading.Lock()
def run(path):
    while time.time() < stop:
        try:
            urllib.request.urlopen(base + path, timeout=5).read()
            key = path.strip("/")
        except Exception:
            key = "errors"
        with lock:
            counts[key] += 1
threads = [threading.Thread(target=run, args=("/metrics" if i % 2 else "/readyz",)) for i in range(16)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(counts))
PY
PROBES=$!
sleep 1
BUSY7=$(quiet during-probes)
wait "$PROBES"
stop

# PostgreSQL, one hot conversation (issue 26): the noisy app, rate_limit off, floods one new
# conversation with messages over 16 connections while the quiet app sends ends. The
# batches write a conversation's requests one after the other in one write; when a batch
# took one request per conversation, such a flood held each batch to one of its messages
# and every other tenant's requests queued behind them.
STORE=postgres
start off
IDLE8=$(quiet pg-idle)
WRAPUP_CLIENT_ID=$NOISY_APP WRAPUP_CLIENT_SECRET=$NOISY_SECRET target/release/wrapup-load \
  --url "$BASE" --bot "$NOISY_BOT" --workload message --conversation pg-hot --connections 16 \
  --duration "$DURATION" --warmup 0s --quiet --allow-errors --label pg-hot > "$WORK/pg-hot.json" &
HOT=$!
sleep 1
BUSY8=$(quiet pg-during-hot)
wait "$HOT"
BATCHES=$(curl -s "$BASE/metrics" | awk '/^wrapup_commit_batch_size_(sum|count)/ {printf "%s=%s ", $1, $2}')
stop
psql -q "$PG_URL" -c "DROP SCHEMA IF EXISTS $PG_SCHEMA CASCADE" 2>/dev/null || true
STORE=sqlite

p50() { field "$1" p50_ms; }
p99() { field "$1" p99_ms; }
ratio() { python3 -c "print(round($1 / $2, 2))"; }
echo "growth answered: $GROWTH (200 for the NA entry, 422 for the rest); record: $RECORD_BYTES bytes"
echo "conversation at its caps: $AT_CAPS; record: $AT_CAPS_BYTES bytes"
echo "quiet app, rate_limit off: idle p50 $(p50 "$IDLE") ms p99 $(p99 "$IDLE") ms; during flood p50 $(p50 "$BUSY") ms p99 $(p99 "$BUSY") ms; ratio $(ratio "$(p50 "$BUSY")" "$(p50 "$IDLE")")x"
echo "  flood: $(( $(field "$(cat "$WORK/flood1.json")" requests) - $(field "$(cat "$WORK/flood1.json")" errors) )) messages stored at $(field "$(cat "$WORK/flood1.json")" rps) req/s"
echo "quiet app, noisy rate_limit = $NOISY_RATE/s: idle p50 $(p50 "$IDLE2") ms; during flood p50 $(p50 "$BUSY2") ms p99 $(p99 "$BUSY2") ms; ratio $(ratio "$(p50 "$BUSY2")" "$(p50 "$IDLE2")")x"
echo "  flood: $(( $(field "$(cat "$WORK/flood2.json")" requests) - $(field "$(cat "$WORK/flood2.json")" errors) )) stored, $(field "$(cat "$WORK/flood2.json")" limited_429) answered 429"
echo "peak RSS: $((PEAK_RSS / 1024)) MiB; a 500-conversation list page: $LIST_BYTES bytes"
echo "huge transcript: posts answered $HUGE; summary ${SUMMARY:-not made}; quiet app idle p50 $(p50 "$IDLE3") ms p99 $(p99 "$IDLE3") ms, during p50 $(p50 "$BUSY3") ms p99 $(p99 "$BUSY3") ms; peak RSS $((PEAK_RSS3 / 1024)) MiB"
echo "filter walks and event pages over $FILLED conversations: $READS_RESULT; quiet app idle p50 $(p50 "$IDLE5") ms p99 $(p99 "$IDLE5") ms, during p50 $(p50 "$BUSY5") ms p99 $(p99 "$BUSY5") ms"
echo "idle connections: $(cat "$WORK/idle.json" 2>/dev/null || echo '{}') ($IDLE_CLOSED closed by the server); fresh-connection client alone $IDLE6, beside them $BUSY6"
echo "sign-in: wrong tokens from 127.0.0.2 answered$LOCKOUT; the right one from 127.0.0.1 $OPERATOR"
echo "probes and scrapes: $(cat "$WORK/probes.json") answered; quiet app idle p50 $(p50 "$IDLE7") ms p99 $(p99 "$IDLE7") ms, during p50 $(p50 "$BUSY7") ms p99 $(p99 "$BUSY7") ms; ratio $(ratio "$(p50 "$BUSY7")" "$(p50 "$IDLE7")")x"
echo "big tokens: $TOKENS_RESULT; RSS $((RSS4_BEFORE / 1024)) -> $((RSS4_AFTER / 1024)) MiB; access log of its 429s $NOISY_LOG_BYTES bytes; quiet app idle p50 $(p50 "$IDLE4") ms, during p50 $(p50 "$BUSY4") ms p99 $(p99 "$BUSY4") ms"

echo "postgresql, one hot conversation: $(field "$(cat "$WORK/pg-hot.json")" rps) messages/s ($(field "$(cat "$WORK/pg-hot.json")" by_status)); quiet app idle p50 $(p50 "$IDLE8") ms p99 $(p99 "$IDLE8") ms, during p50 $(p50 "$BUSY8") ms p99 $(p99 "$BUSY8") ms; ratio $(ratio "$(p50 "$BUSY8")" "$(p50 "$IDLE8")")x; $BATCHES"

# Fail unless the reproduction was refused from its first growth request and the quiet
# app's median stayed within 3x of idle with the noisy app rate limited.
python3 - "$GROWTH" "$(p50 "$BUSY2")" "$(p50 "$IDLE2")" "$SUMMARY" "$PEAK_RSS3" "$(p50 "$BUSY3")" "$(p50 "$IDLE3")" \
  "$RSS4_BEFORE" "$RSS4_AFTER" "$NOISY_LOG_BYTES" "$(p50 "$BUSY4")" "$(p50 "$IDLE4")" "$TOKENS_RESULT" \
  "$(p50 "$BUSY5")" "$(p50 "$IDLE5")" "$READS_RESULT" "$IDLE6" "$BUSY6" "$OPERATOR" \
  "$(p50 "$BUSY8")" "$(p50 "$IDLE8")" <<'PY'
import json, sys
busy8, idle8 = float(sys.argv[20]), float(sys.argv[21])
assert busy8 <= 3 * idle8, f"postgresql hot conversation: quiet median {busy8} ms against {idle8} ms idle"
busy5, idle5, reads = float(sys.argv[14]), float(sys.argv[15]), json.loads(sys.argv[16])
idle6, busy6, operator = json.loads(sys.argv[17]), json.loads(sys.argv[18]), sys.argv[19]
assert reads["walk_pages"] > 0 and reads["event_bytes"] > 0, reads
assert busy5 <= 3 * idle5, f"filter walks and big pages: quiet median {busy5} ms against {idle5} ms idle"
assert busy6["statuses"] == {"200": 250}, f"beside idle connections: {busy6}"
assert busy6["p50_ms"] <= 3 * idle6["p50_ms"], f"beside idle connections: {busy6} against {idle6}"
assert operator == "303", f"the operator's sign-in from another address got {operator}"
growth, busy, idle = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
summary, rss_kib, busy3, idle3 = sys.argv[4], int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
rss4_before, rss4_after, log4 = int(sys.argv[8]), int(sys.argv[9]), int(sys.argv[10])
busy4, idle4, tokens = float(sys.argv[11]), float(sys.argv[12]), json.loads(sys.argv[13])
assert sum(tokens["statuses"].values()) == 10000 and set(tokens["statuses"]) <= {"200", "429"}, tokens
assert tokens["token_bytes"] > 7900, tokens
assert rss4_after - rss4_before <= 64 * 1024, f"big tokens: RSS grew {(rss4_after - rss4_before) // 1024} MiB"
assert log4 <= 64 * 1024, f"429 flood: {log4} bytes of access log for its 429s"
assert busy4 <= 3 * idle4, f"big tokens: quiet median {busy4} ms against {idle4} ms idle"
assert growth == {"na": 200, "warm": [422], "cold": 422}, growth
assert busy <= 3 * idle, f"quiet median {busy} ms against {idle} ms idle"
assert summary.startswith("COMPLETED"), f"huge transcript: summary {summary!r}"
assert rss_kib <= 512 * 1024, f"huge transcript: peak RSS {rss_kib // 1024} MiB over 512 MiB"
assert busy3 <= 3 * idle3, f"huge transcript: quiet median {busy3} ms against {idle3} ms idle"
PY
echo "noisy tenant: ok"
