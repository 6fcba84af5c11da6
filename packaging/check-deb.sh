#!/usr/bin/env bash
# The package check .ci/run calls: builds the .deb with cargo-deb (installed
# from the registry if missing), lists its contents and checks the expected
# paths, the conffile and the maintainer scripts, extracts it into a
# temporary root, runs the packaged binary's --version and `config
# validate` on the packaged config, and verifies the unit with
# systemd-analyze where that tool exists.
#
# PROCSYNC_DEB_PROFILE=release builds the real release package (LTO, a few
# minutes); CI uses the dev build the tests already made.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
PROFILE="${PROCSYNC_DEB_PROFILE:-dev}"

if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    echo "--- installing cargo-deb $CARGO_DEB_VERSION from crates.io"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "--- building the .deb ($PROFILE profile)"
if [ "$PROFILE" = release ]; then
    cargo deb --locked -o "$work/"
else
    # cargo-deb warns that dev builds are for testing only: so is this one.
    cargo deb --locked --profile "$PROFILE" --strip -o "$work/" 2>&1 | grep -v "dev profile\|debug symbols set" || true
fi
deb="$(ls "$work"/*.deb)"

echo "--- contents of $(basename "$deb")"
dpkg-deb --contents "$deb" | tee "$work/contents"
for path in \
    ./usr/bin/procsync \
    ./lib/systemd/system/procsync.service \
    ./etc/procsync/procsync.toml \
    ./usr/share/doc/procsync/README.md \
    ./usr/share/doc/procsync/sync.example.toml; do
    if ! grep -q " $path\$" "$work/contents"; then
        echo "FAIL: the package lacks $path" >&2
        exit 1
    fi
done

dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/procsync/procsync.toml "$work/control/conffiles" || {
    echo "FAIL: /etc/procsync/procsync.toml is not a conffile" >&2
    exit 1
}
for script in postinst prerm postrm; do
    test -x "$work/control/$script" || { echo "FAIL: no executable $script" >&2; exit 1; }
    sh -n "$work/control/$script"
done
grep -q 'procsync init' "$work/control/postinst" || { echo "FAIL: postinst does not make the instance" >&2; exit 1; }
if grep -q 'rm -rf /var/lib/procsync' "$work/control/postrm" &&
    ! awk '/"\$1" = "purge"/{purge=1} /rm -rf \/var\/lib\/procsync/{exit !purge}' "$work/control/postrm"; then
    echo "FAIL: postrm deletes data outside purge" >&2
    exit 1
fi

echo "--- the packaged binary"
dpkg-deb -x "$deb" "$work/root"
"$work/root/usr/bin/procsync" --version
"$work/root/usr/bin/procsync" config validate --kind server "$work/root/etc/procsync/procsync.toml"
"$work/root/usr/bin/procsync" config validate "$work/root/usr/share/doc/procsync/sync.example.toml"

if command -v systemd-analyze >/dev/null; then
    echo "--- systemd-analyze verify"
    sed "s#/usr/bin/procsync#$work/root/usr/bin/procsync#g" \
        "$work/root/lib/systemd/system/procsync.service" >"$work/procsync.service"
    systemd-analyze verify "$work/procsync.service"
else
    echo "--- systemd-analyze not found: unit not verified"
fi
echo "--- package check passed"
