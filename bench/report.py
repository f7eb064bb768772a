"""Turns bench/results.jsonl into the "Latest run" section of BENCHMARKS.md (medians, ratios)."""
import json, platform, statistics, subprocess, sys

path, rounds, duration = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [json.loads(l) for l in open(path) if l.strip()]

def runs(label, workload="end-only", conns=64, mode="closed"):
    return [r for r in rows if r.get("label") == label and r.get("workload") == workload
            and r.get("connections") == conns and r.get("mode") == mode]

def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")

ceiling = med(runs("ceiling"), "rps")
lines = []
def row(name, rs, into=lines, of=None):
    rps = med(rs, "rps")
    into.append(f"| {name} | {rps:,.0f} | {med(rs, 'p50_ms'):.2f} | {med(rs, 'p99_ms'):.2f} | "
                f"{rps / (of or ceiling) * 100:.0f} % | {len(rs)} |")

row("bare axum, `{\"STATUS\":\"OK\"}` (HTTP ceiling), 64 conns", runs("ceiling"))
row("bare axum, 256 conns", runs("ceiling", conns=256))
row("+ serde parse + HS256 check (work ceiling), 64 conns", runs("work-ceiling"))
row("+ one SQLite commit per request behind a mutex (naive durable), 64 conns", runs("naive"))
row("+ one writer thread, a transaction per batch of waiting requests (minimal group commit), 64 conns", runs("group"))
row("**wrapup**, end-only, 64 conns", runs("wrapup"))
row("**wrapup**, end-only, 256 conns", runs("wrapup", conns=256))
row("**wrapup**, lifecycle (8 requests per conversation), 64 conns", runs("wrapup", "lifecycle"))
row("**wrapup on PostgreSQL**, end-only, one instance, 64 conns", runs("wrapup-pg"))
# Three instances on one schema, a generator each: each round's three lines summed.
pg3 = runs("wrapup-pg3", conns=22)
pg3_rounds = [pg3[i:i + 3] for i in range(0, len(pg3) - len(pg3) % 3, 3)]
pg3_rps = statistics.median([sum(r["rps"] for r in g) for g in pg3_rounds]) if pg3_rounds else float("nan")
pg3_p99 = statistics.median([max(r["p99_ms"] for r in g) for g in pg3_rounds]) if pg3_rounds else float("nan")
lines.append(f"| **wrapup on PostgreSQL**, end-only, three instances on one schema, 3 × 22 conns (summed; p99 the worst) | {pg3_rps:,.0f} | | {pg3_p99:.2f} | {pg3_rps / ceiling * 100:.0f} % | {len(pg3_rounds)} |")
open_rs = runs("wrapup-open", mode="open")
# The pinned pass: each server on core 0, the load generator on core 1.
pceiling = med(runs("pinned-ceiling"), "rps")
plines = []
prow = lambda name, rs: row(name, rs, plines, pceiling)
prow("bare axum (HTTP ceiling), 64 conns", runs("pinned-ceiling"))
prow("minimal group-commit writer, 64 conns", runs("pinned-group"))
prow("minimal group-commit writer, 256 conns", runs("pinned-group", conns=256))
prow("**wrapup**, end-only, 64 conns", runs("pinned-wrapup"))
prow("**wrapup**, end-only, 256 conns", runs("pinned-wrapup", conns=256))
prow("**wrapup**, lifecycle, 64 conns", runs("pinned-wrapup", "lifecycle"))
prow("**wrapup on PostgreSQL**, end-only, 64 conns (PostgreSQL's processes unpinned)", runs("pinned-wrapup-pg"))
pw, pg = med(runs("pinned-wrapup"), "rps"), med(runs("pinned-group"), "rps")
w64, w256, naive = med(runs("wrapup"), "rps"), med(runs("wrapup", conns=256), "rps"), med(runs("naive"), "rps")
rss = lambda conns, key: statistics.median([r[key] for r in rows if r.get("label") == "wrapup-rss" and r["connections"] == conns] or [float("nan")]) / 1024
disk = [r["db_bytes"] / r["conversations"] for r in rows if r.get("label") == "wrapup-disk" and r.get("conversations")]
hooks = [r for r in rows if r.get("label") == "wrapup-webhook"]
dmed = lambda rs, key: statistics.median([r["deliveries"][key] for r in rs if r.get("deliveries")] or [float("nan")])
hook_closed = [r for r in hooks if r["mode"] == "closed"]
hook_open = [r for r in hooks if r["mode"] == "open"]
undelivered = sum(r["deliveries"]["acked_not_delivered"] + r["deliveries"]["duplicates"] for r in hooks if r.get("deliveries"))
verified = sum(r.get("verified_ends", 0) for r in rows)
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()

out = f"""<!-- latest-run:start -->
## Latest run

`bench/run.sh` (ROUNDS={rounds}, DURATION={duration} per scenario after a 2 s warm-up), on {platform.node() or 'this machine'}:
{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores ({cpu}), shared with the load generator
(`wrapup-load`, one thread, closed loop unless noted). Medians of {rounds} rounds; every server is driven by the same
generator in the same run, alternating.

| server | req/s | p50 ms | p99 ms | of HTTP ceiling | runs |
|---|---|---|---|---|---|
""" + "\n".join(lines) + f"""

- wrapup / naive durable: **{w64 / naive:.1f}×** at 64 connections; wrapup / minimal group-commit writer:
  **{w64 / med(runs("group"), "rps"):.2f}**.
- PostgreSQL ÷ SQLite (one instance each, end-only, 64 connections): **{med(runs("wrapup-pg"), "rps") / w64:.2f}** (target ≥ 0.5);
  three instances ÷ one: **{pg3_rps / med(runs("wrapup-pg"), "rps"):.2f}**. PostgreSQL 15 with its default settings on the same box.
- wrapup at 256 connections: **{w256 / w64 * 100:.0f} %** of its 64-connection throughput.
- Open loop at half of wrapup's closed-loop rate ({med(open_rs, 'rps'):,.0f} req/s offered): p50 {med(open_rs, 'p50_ms'):.2f} ms,
  p99 {med(open_rs, 'p99_ms'):.2f} ms, p99.9 {med(open_rs, 'p999_ms'):.2f} ms (latency from each request's due time).
- Verified after the wrapup runs: {verified:,} acknowledged ends read back through the records API, each stored exactly once.
- wrapup's RSS: {rss(64, 'idle_kib'):.0f} MiB idle; peak (VmHWM) {rss(64, 'peak_kib'):.0f} MiB after the 64-connection run and
  {rss(256, 'peak_kib'):.0f} MiB after the 256-connection run.
- Disk: {statistics.median(disk) if disk else float('nan'):,.0f} bytes per `lifecycle` conversation (8 events, the record and indexes; SQLite
  files after a clean stop, divided by the conversations of the run).
- Webhook per end, received by the load generator itself: closed loop, 64 connections: {med(hook_closed, 'rps'):,.0f} ends/s ingested,
  {dmed(hook_closed, 'per_second'):,.0f} deliveries/s from the first delivery to the last (the backlog included), ack-to-delivery
  p99 {dmed(hook_closed, 'ack_to_delivery_p99_ms'):,.0f} ms. Open loop at 2,500 ends/s (half the 5,000/s target): ingest p99
  {med(hook_open, 'p99_ms'):.1f} ms, ack-to-delivery p50 {dmed(hook_open, 'ack_to_delivery_p50_ms'):.1f} ms, p99 {dmed(hook_open, 'ack_to_delivery_p99_ms'):.1f} ms.
  Acknowledged ends not delivered or delivered twice: {undelivered}.

Pinned: the server on core 0, the load generator on core 1 (`taskset`), same run.

| server | req/s | p50 ms | p99 ms | of HTTP ceiling | runs |
|---|---|---|---|---|---|
""" + "\n".join(plines) + f"""

- wrapup (SQLite) ÷ minimal group-commit writer, end-only, 64 connections: **{pw / pg:.2f}** (target ≥ 0.8);
  ÷ HTTP ceiling: **{pw / pceiling:.2f}** (target ≥ 0.35).
- lifecycle ÷ HTTP ceiling: **{med(runs("pinned-wrapup", "lifecycle"), "rps") / pceiling:.2f}** (target ≥ 0.3).
- PostgreSQL ÷ SQLite: **{med(runs("pinned-wrapup-pg"), "rps") / pw:.2f}** (target ≥ 0.5).
<!-- latest-run:end -->
"""
try:
    text = open("BENCHMARKS.md").read()
except FileNotFoundError:
    text = "# Benchmarks\n\n<!-- latest-run:start -->\n<!-- latest-run:end -->\n"
start, end = text.index("<!-- latest-run:start -->"), text.index("<!-- latest-run:end -->") + len("<!-- latest-run:end -->\n")
open("BENCHMARKS.md", "w").write(text[:start] + out + text[end:])
print(out)
