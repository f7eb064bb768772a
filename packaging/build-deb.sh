#!/usr/bin/env bash
# Builds the Debian package (cargo-deb: a release build, stripped), inspects it with
# dpkg-deb, checks the unit with systemd-analyze verify in a throw-away root, runs the
# packaged binary with the packaged configuration, then installs and purges the package in
# a throw-away root (an overlay of this machine's, in a mount namespace of its own) and
# checks what its scripts did there. It never installs anything on this machine, except
# cargo-deb itself when the pinned version is missing (from crates.io: it says so).
# .ci/run calls it; CARGO_DEB_VERSION pins the tool.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=${CARGO_DEB_VERSION:-3.8.0}
if [ "$(cargo deb --version 2>/dev/null | awk '{print $2}')" != "$CARGO_DEB_VERSION" ]; then
    echo "== installing cargo-deb $CARGO_DEB_VERSION from crates.io (network) into ~/.cargo/bin"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi
cargo deb --locked --strip -p wrapup --output target/debian/wrapup.deb
deb=target/debian/wrapup.deb

echo "== package"
dpkg-deb --info "$deb"
contents=$(dpkg-deb --contents "$deb")
for path in ./usr/bin/wrapup ./usr/lib/systemd/system/wrapup.service ./etc/wrapup/wrapup.toml \
    ./usr/share/doc/wrapup/examples/alerts.yml ./usr/share/doc/wrapup/examples/wrapup.toml \
    ./usr/share/doc/wrapup/docs/install.md; do
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

echo "== the packaged configuration holds no secret, and cannot start without them"
conf="$root/etc/wrapup/wrapup.toml"
if grep -qE '^[[:space:]]*(client_secret|token|secret)[[:space:]]*=' "$conf"; then
    echo "the packaged configuration holds a secret"; exit 1
fi
status=0; out=$(env -u WRAPUP_APP_SECRET "$bin" check-config --config "$conf" 2>&1) || status=$?
[ "$status" = 78 ] && grep -q 'WRAPUP_APP_SECRET is not set' <<<"$out" \
    || { echo "without its secrets: status $status: $out"; exit 1; }
grep -q '^RestartPreventExitStatus=78' "$root/usr/lib/systemd/system/wrapup.service"

echo "== the packaged binary with the packaged configuration and secrets set"
export WRAPUP_APP_SECRET=build-check-secret-0123456789 WRAPUP_ADMIN_TOKEN=build-check-admin-0123456789
"$bin" check-config --config "$conf"
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$root" "$work" "${ovl:-}"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$work" && WRAPUP_LISTEN=127.0.0.1:$port WRAPUP_STORE_URL="sqlite://$work/wrapup.db" \
    exec "$bin" serve --config "$conf" 2>"$work/log") &
pid=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://127.0.0.1:$port/readyz"; echo
kill -HUP $pid; sleep 0.5
grep -q 'configuration reloaded' "$work/log" || { cat "$work/log"; echo "SIGHUP did not reload"; exit 1; }
kill $pid; wait $pid || true
rm -rf "$work"

echo "== install and purge in a throw-away root (this machine's, overlaid)"
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
    ovl=$(mktemp -d)
    mkdir -p "$ovl/upper" "$ovl/work" "$ovl/root"
    host_before=$(getent passwd wrapup || true; ls -ld /var/lib/wrapup /etc/wrapup 2>/dev/null || true)
    deb_abs=$(realpath "$deb")
    # Run inside: dpkg -i, the user, the permissions, the packaged binary as the
    # service's user, docs/backups.md's recipe, then dpkg --purge. Every write lands in
    # $ovl/upper, deleted after.
    cat >"$ovl/inside.sh" <<'INSIDE'
set -euo pipefail
dpkg -i "$1"
getent passwd wrapup
test "$(stat -c '%U:%G %a' /etc/wrapup/wrapup.toml)" = "root:wrapup 640"
printf 'WRAPUP_APP_SECRET=inside-check-secret-0123\nWRAPUP_ADMIN_TOKEN=inside-check-admin-01234\n' \
    >/etc/wrapup/wrapup.env
chmod 0640 /etc/wrapup/wrapup.env
sh -c 'set -a; . /etc/wrapup/wrapup.env; exec runuser -u wrapup -- wrapup check-config --config /etc/wrapup/wrapup.toml'
systemd-analyze verify --man=no /usr/lib/systemd/system/wrapup.service
# What the unit's StateDirectory makes, then the store, then the recipe.
install -d -o wrapup -g wrapup -m 0700 /var/lib/wrapup
sh -c 'set -a; . /etc/wrapup/wrapup.env; exec runuser -u wrapup -- wrapup migrate --config /etc/wrapup/wrapup.toml'
(cd / && bash -euo pipefail "$2")
copy=/var/backups/wrapup/wrapup-$(date +%F).db
test "$(stat -c '%U %a' "$copy")" = "wrapup 600"
echo "the backup recipe made $copy"
dpkg --purge wrapup
if getent passwd wrapup || dpkg -s wrapup >/dev/null 2>&1; then
    echo "the purge left the user or the package"; exit 1
fi
INSIDE
    # docs/backups.md's first shell block, verbatim.
    awk '/^```sh$/ {on=1; next} /^```$/ && on {exit} on' docs/backups.md >"$ovl/recipe.sh"
    grep -q 'wrapup backup' "$ovl/recipe.sh" || { echo "no backup recipe in docs/backups.md"; exit 1; }
    unshare --mount --propagation private bash -euo pipefail -c '
        mount -t overlay overlay -o "lowerdir=/,upperdir=$1/upper,workdir=$1/work" "$1/root"
        for d in proc dev sys; do mount --rbind "/$d" "$1/root/$d"; done
        chroot "$1/root" bash "$1/inside.sh" "$2" "$3"
    ' overlay "$ovl" "$deb_abs" "$ovl/recipe.sh"
    rm -rf "$ovl"
    host_after=$(getent passwd wrapup || true; ls -ld /var/lib/wrapup /etc/wrapup 2>/dev/null || true)
    [ "$host_before" = "$host_after" ] || { echo "this machine changed: $host_before -> $host_after"; exit 1; }
    echo "installed and purged in a throw-away root; this machine is as it was"
else
    echo "skipped (needs root and unshare for a throw-away root)"
fi
echo "package ok: $deb"
