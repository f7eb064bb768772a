#!/usr/bin/env bash
# Bytes on disk per conversation (docs/sizing.md): runs the server on a fresh SQLite store
# with the example configuration, 20 s of wrapup-load's WORKLOAD (16 connections), with or
# without a webhook action (whose jobs and attempts are then stored too), and divides the
# database's used pages by its conversations.
# usage: bench/sizing.sh WORKLOAD WEBHOOK(0|1) PORT   (after cargo build --workspace)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/debug}
w=$1; hook=$2; port=$3; rport=$((port+1000))
d=$(mktemp -d); rm -rf $d; mkdir -p $d; cd $d
sed "s#^listen = .*#listen = \"127.0.0.1:$port\"#" $ROOT/examples/wrapup.toml > w.toml
if [ "$hook" = 1 ]; then
python3 - <<PY
s=open('w.toml').read()
s=s.replace('inactivity_timeout = "4h"\n','inactivity_timeout = "4h"\n\n[[bots.on_end]]\nkind = "webhook"\nurl = "http://127.0.0.1:$rport/"\nsecret = "whsec_ZGVtby13ZWJob29rLXNlY3JldC1ETy1OT1QtVVNF"\n',1)
open('w.toml','w').write(s)
PY
fi
$BIN/wrapup serve -c w.toml 2>log & pid=$!
sleep 1
extra=""; [ "$hook" = 1 ] && extra="--receiver 127.0.0.1:$rport --drain 60s"
$BIN/wrapup-load --url http://127.0.0.1:$port --workload $w --connections 16 --duration 20s --quiet $extra > result.json
kill $pid; wait $pid || true
python3 - <<PY
import sqlite3,os
c=sqlite3.connect('wrapup.db')
n=c.execute('select count(*) from conversations').fetchone()[0]
j=c.execute('select count(*) from jobs').fetchone()[0]
ev=c.execute('select count(*) from events').fetchone()[0]
size=os.path.getsize('wrapup.db')+ (os.path.getsize('wrapup.db-wal') if os.path.exists('wrapup.db-wal') else 0)
pages=c.execute('pragma page_count').fetchone()[0]*c.execute('pragma page_size').fetchone()[0]
free=c.execute('pragma freelist_count').fetchone()[0]*c.execute('pragma page_size').fetchone()[0]
print(f"$w hook=$hook conversations={n} events={ev} jobs={j} bytes={pages-free} per_conversation={(pages-free)/max(n,1):.0f} per_million_GB={(pages-free)/max(n,1)*1e6/1e9:.2f}")
PY
