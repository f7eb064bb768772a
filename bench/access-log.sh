#!/usr/bin/env bash
# The access log's cost: the release server with [server] access_log on or off, 10 s of
# wrapup-load end-only at 64 connections, log to a file (as to journald). BENCHMARKS.md.
# usage: bench/access-log.sh on|off PORT (after cargo build --release --workspace)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mode=$1; port=$2
d=$(mktemp -d); cd $d
sed "s#^listen = .*#listen = \"127.0.0.1:$port\"\naccess_log = $([ $mode = on ] && echo true || echo false)#" $ROOT/examples/wrapup.toml > w.toml
$ROOT/target/release/wrapup serve -c w.toml 2>log & pid=$!
sleep 1
$ROOT/target/release/wrapup-load --url http://127.0.0.1:$port --workload end-only --connections 64 --duration 10s --quiet > result.json
kill $pid; wait $pid || true
python3 -c "import json;r=json.load(open('result.json'));print('$mode', round(r['rps']), r.get('latency_ms',r.get('latency',{})).get('p99') if isinstance(r.get('latency_ms',r.get('latency')),dict) else '', 'loglines', sum(1 for _ in open('log')))"
rm -rf $d
