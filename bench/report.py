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
def row(name, rs):
    rps = med(rs, "rps")
    lines.append(f"| {name} | {rps:,.0f} | {med(rs, 'p50_ms'):.2f} | {med(rs, 'p99_ms'):.2f} | "
                 f"{rps / ceiling * 100:.0f} % | {len(rs)} |")

row("bare axum, `{\"STATUS\":\"OK\"}` (HTTP ceiling), 64 conns", runs("ceiling"))
row("bare axum, 256 conns", runs("ceiling", conns=256))
row("+ serde parse + HS256 check (work ceiling), 64 conns", runs("work-ceiling"))
row("+ one SQLite commit per request behind a mutex (naive durable), 64 conns", runs("naive"))
row("**wrapup**, end-only, 64 conns", runs("wrapup"))
row("**wrapup**, end-only, 256 conns", runs("wrapup", conns=256))
row("**wrapup**, lifecycle (8 requests per conversation), 64 conns", runs("wrapup", "lifecycle"))
open_rs = runs("wrapup-open", mode="open")
w64, w256, naive = med(runs("wrapup"), "rps"), med(runs("wrapup", conns=256), "rps"), med(runs("naive"), "rps")
res = [r for r in rows if r.get("label") == "wrapup-resources"]
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

- wrapup / naive durable: **{w64 / naive:.1f}×** at 64 connections.
- wrapup at 256 connections: **{w256 / w64 * 100:.0f} %** of its 64-connection throughput.
- Open loop at half of wrapup's closed-loop rate ({med(open_rs, 'rps'):,.0f} req/s offered): p50 {med(open_rs, 'p50_ms'):.2f} ms,
  p99 {med(open_rs, 'p99_ms'):.2f} ms, p99.9 {med(open_rs, 'p999_ms'):.2f} ms (latency from each request's due time).
- Verified after the wrapup runs: {verified:,} acknowledged ends read back through the records API, each stored exactly once.
- wrapup's RSS after the runs: {statistics.median([r['rss_kib'] for r in res]) / 1024 if res else float('nan'):.0f} MiB; database after a round's
  wrapup runs: {statistics.median([r['db_kib'] for r in res]) / 1024 if res else float('nan'):.0f} MiB.
<!-- latest-run:end -->
"""
try:
    text = open("BENCHMARKS.md").read()
except FileNotFoundError:
    text = "# Benchmarks\n\n<!-- latest-run:start -->\n<!-- latest-run:end -->\n"
start, end = text.index("<!-- latest-run:start -->"), text.index("<!-- latest-run:end -->") + len("<!-- latest-run:end -->\n")
open("BENCHMARKS.md", "w").write(text[:start] + out + text[end:])
print(out)
