#!/usr/bin/env bash
# Builds the Debian package (cargo-deb: a release build, stripped), inspects it with
# dpkg-deb, checks the unit with systemd-analyze verify in a throw-away root, runs the
# packaged binary with the packaged configuration, then installs the package on this
# machine, checks what its scripts did (the user, the permissions) and purges it.
# .ci/run calls it; CARGO_DEB_VERSION pins the tool.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=${CARGO_DEB_VERSION:-3.8.0}
if ! cargo deb --version >/dev/null 2>&1; then
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi
cargo deb --locked --strip -p wrapup --output target/debian/wrapup.deb
deb=target/debian/wrapup.deb

echo "== package"
dpkg-deb --info "$deb"
contents=$(dpkg-deb --contents "$deb")
for path in ./usr/bin/wrapup ./usr/lib/systemd/system/wrapup.service ./etc/wrapup/wrapup.toml \
    ./usr/share/doc/wrapup/examples/alerts.yml ./usr/share/doc/wrapup/docs/install.md; do
    grep -q " $path\$" <<<"$contents" || { echo "missing $path"; exit 1; }
done
grep -q '/etc/wrapup/wrapup.toml' <(dpkg-deb --info "$deb" conffiles) || { echo "not a conffile"; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
bin="$root/usr/bin/wrapup"
if readelf -S "$bin" | grep -q ' .symtab'; then echo "the binary is not stripped"; exit 1; fi
echo "binary: $(stat -c %s "$bin") bytes, stripped"

echo "== unit"
# Verified against this machine's systemd, pointing at the extracted binary (a bare root
# has no sysinit.target to resolve); the installed unit is verified again below.
sed "s#/usr/bin/wrapup#$root/usr/bin/wrapup#" "$root/usr/lib/systemd/system/wrapup.service" \
    > "$root/wrapup.service"
systemd-analyze verify --man=no "$root/wrapup.service"
grep -q '^ProtectSystem=strict' "$root/usr/lib/systemd/system/wrapup.service"

echo "== the packaged binary with the packaged configuration"
"$bin" check-config --config "$root/etc/wrapup/wrapup.toml"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$work" && WRAPUP_LISTEN=127.0.0.1:$port exec "$bin" serve --config "$root/etc/wrapup/wrapup.toml" 2>"$work/log") &
pid=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://127.0.0.1:$port/readyz"; echo
kill -HUP $pid; sleep 0.5
grep -q 'configuration reloaded' "$work/log" || { cat "$work/log"; echo "SIGHUP did not reload"; exit 1; }
kill $pid; wait $pid || true
rm -rf "$work"

echo "== install on this machine, then purge"
if [ "$(id -u)" = 0 ] && ! dpkg -s wrapup >/dev/null 2>&1; then
    dpkg -i "$deb"
    getent passwd wrapup
    test "$(stat -c '%U:%G %a' /etc/wrapup/wrapup.toml)" = "root:wrapup 640"
    runuser -u wrapup -- /usr/bin/wrapup check-config --config /etc/wrapup/wrapup.toml
    systemd-analyze verify --man=no /usr/lib/systemd/system/wrapup.service
    dpkg --purge wrapup
    ! getent passwd wrapup
else
    echo "skipped (not root, or a wrapup package is installed here)"
fi
echo "package ok: $deb"
