#!/usr/bin/env bash
# Schema-driven fuzzing of every operation in /openapi.json with schemathesis (PyPI):
# the check is that no generated request gets a 5xx. Not part of .ci/run (it takes minutes).
# Usage: reliability/schemathesis.sh [MAX_EXAMPLES]   (default 200 per operation)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v st >/dev/null || pip install -q schemathesis
cargo build --release --quiet --bin wrapup
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
sed -e "s#sqlite://wrapup.db#sqlite://$WORK/wrapup.db#" -e 's/^listen = .*/listen = "127.0.0.1:18080"/' \
  examples/wrapup.toml > "$WORK/wrapup.toml"
printf '\n[admin]\ntoken_env = "WRAPUP_ADMIN_TOKEN"\n' >> "$WORK/wrapup.toml"
WRAPUP_LOG=warn WRAPUP_ADMIN_TOKEN=schemathesis-admin-token target/release/wrapup serve --config "$WORK/wrapup.toml" &
SERVER=$!
for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/18080) 2>/dev/null && break; sleep 0.1; done
TOKEN=$(target/release/wrapup token --client-id cs-6363fcbb-310e-5b07-91a9-c614cd3cbf6e \
  --secret demo-secret-DO-NOT-USE-IN-PRODUCTION-0001)
# The hooks and records operations with the JWT in every header they accept (the same token in
# each, so they agree); the admin operations with the admin token. Both must have no 5xx.
st run http://127.0.0.1:18080/openapi.json --checks not_a_server_error --exclude-path-regex '^/admin' \
  -H "token: $TOKEN" -H "auth: $TOKEN" -H "Authorization: Bearer $TOKEN" \
  --max-examples "${1:-200}" --workers 2
st run http://127.0.0.1:18080/openapi.json --checks not_a_server_error --include-path-regex '^/admin' \
  -H "Authorization: Bearer schemathesis-admin-token" \
  --max-examples "${1:-200}" --workers 2
