#!/usr/bin/env bash
# Installs the .deb into a clean Debian root and proves it works there:
# the service user and data directory exist, `procsync init` ran on first
# install, the packaged config validates, `procsync serve` starts as the
# service user with the packaged config and paths and answers the CLI,
# `dpkg -r` keeps the data, `dpkg -P` deletes it and the user.
#
# Needs root, debootstrap and a Debian mirror (it skips itself, saying so,
# without them). systemd does not run in a chroot: check-systemd.sh boots
# one under qemu to check the unit's hardening.
#
# Usage: packaging/check-install.sh [path/to/procsync.deb]
set -euo pipefail
cd "$(dirname "$0")/.."

deb="${1:-}"
work="$(mktemp -d)"
cleanup() {
    pkill -TERM -f "procsync serve --config /etc/procsync/procsync.toml --data /var/lib/procsync --admin-listen 127.0.0.1:17480" 2>/dev/null || true
    sleep 1
    rm -rf "$work"
}
trap cleanup EXIT

if [ -z "$deb" ]; then
    PROCSYNC_DEB_PROFILE=dev packaging/make-deb.sh "$work/"
    deb="$(ls "$work"/*.deb)"
fi
if [ "$(id -u)" != 0 ]; then
    echo "--- install check skipped: it needs root (chroot, dpkg)"
    exit 0
fi
command -v debootstrap >/dev/null || apt-get install -y debootstrap >/dev/null
root="$work/root"
echo "--- debootstrap (minbase bookworm)"
if ! timeout 600 debootstrap --variant=minbase --include=adduser,hostname bookworm "$root" \
    http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1; then
    # No mirror is not a defect of the package; say so loudly and stop.
    tail -5 "$work/debootstrap.log"
    echo "--- install check skipped: debootstrap could not fetch a Debian base system"
    exit 0
fi
cp "$deb" "$root/tmp/procsync.deb"
in_root() { chroot "$root" "$@"; }

echo "--- dpkg -i"
in_root dpkg -i /tmp/procsync.deb
in_root getent passwd procsync
test "$(in_root stat -c %U /var/lib/procsync/procsync.redb)" = procsync
test "$(in_root stat -c %a /var/lib/procsync/admin.token)" = 600
in_root runuser -u procsync -- /usr/bin/procsync config validate --kind server /etc/procsync/procsync.toml

echo "--- serve as the service user"
in_root runuser -u procsync -- /usr/bin/procsync serve --config /etc/procsync/procsync.toml \
    --data /var/lib/procsync --admin-listen 127.0.0.1:17480 --peer-listen 127.0.0.1:0 >"$work/serve.log" 2>&1 &
for _ in $(seq 1 100); do
    test -e "$root/var/lib/procsync/admin.addr" && break
    sleep 0.1
done
id="$(in_root /usr/bin/procsync record create incident --data /var/lib/procsync short_description=installed)"
in_root /usr/bin/procsync record get incident "$id" --data /var/lib/procsync | grep installed >/dev/null
pkill -TERM -f "procsync serve --config /etc/procsync/procsync.toml --data /var/lib/procsync --admin-listen 127.0.0.1:17480"
sleep 1
grep -q "the store is closed" "$work/serve.log"

echo "--- dpkg -r keeps the data; dpkg -P removes it"
in_root dpkg -r procsync
test -e "$root/var/lib/procsync/procsync.redb"
in_root dpkg -P procsync
test ! -e "$root/var/lib/procsync"
if in_root getent passwd procsync >/dev/null; then
    echo "FAIL: purge left the procsync user" >&2
    exit 1
fi
echo "--- install check passed"
