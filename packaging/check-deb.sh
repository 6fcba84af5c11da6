#!/usr/bin/env bash
# The package check .ci/run calls: builds the .deb (packaging/make-deb.sh),
# lists its contents and checks the expected paths (the manual page and
# the shell completions among them), the conffile and the maintainer
# scripts, extracts it into a
# temporary root, runs the packaged binary's --version and `config
# validate` on the packaged config, and verifies the unit with
# systemd-analyze where that tool exists.
#
# PROCSYNC_DEB_PROFILE=release builds the real release package (LTO, a few
# minutes); CI uses the dev build the tests already made.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${PROCSYNC_DEB_PROFILE:-dev}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "--- building the .deb ($PROFILE profile)"
PROCSYNC_DEB_PROFILE="$PROFILE" packaging/make-deb.sh "$work/"
deb="$(ls "$work"/*.deb)"

echo "--- contents of $(basename "$deb")"
dpkg-deb --contents "$deb" | tee "$work/contents"
for path in \
    ./usr/bin/procsync \
    ./lib/systemd/system/procsync.service \
    ./etc/procsync/procsync.toml \
    ./usr/share/doc/procsync/README.md \
    ./usr/share/doc/procsync/sync.example.toml \
    ./usr/share/man/man1/procsync.1.gz \
    ./usr/share/man/man1/procsync-remote-validate.1.gz \
    ./usr/share/bash-completion/completions/procsync \
    ./usr/share/zsh/vendor-completions/_procsync \
    ./usr/share/fish/vendor_completions.d/procsync.fish; do
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
echo "--- the packaged manual page and bash completion"
zcat "$work/root/usr/share/man/man1/procsync.1.gz" | grep -q '^\.TH procsync 1' || {
    echo "FAIL: the manual page is not procsync(1)" >&2
    exit 1
}
if command -v groff >/dev/null; then
    zcat "$work/root/usr/share/man/man1/procsync.1.gz" | groff -man -Tutf8 -P -cbou | grep -q 'Remote Process Sync' || {
        echo "FAIL: the manual page does not render" >&2
        exit 1
    }
fi
offered="$(bash -c "source '$work/root/usr/share/bash-completion/completions/procsync'
COMP_WORDS=(procsync rem); COMP_CWORD=1; _procsync procsync rem procsync; echo \"\${COMPREPLY[*]}\"")"
[ "$offered" = remote ] || { echo "FAIL: bash completes 'procsync rem' to '$offered'" >&2; exit 1; }

if command -v systemd-analyze >/dev/null; then
    echo "--- systemd-analyze verify"
    sed "s#/usr/bin/procsync#$work/root/usr/bin/procsync#g" \
        "$work/root/lib/systemd/system/procsync.service" >"$work/procsync.service"
    systemd-analyze verify "$work/procsync.service"
else
    echo "--- systemd-analyze not found: unit not verified"
fi
echo "--- package check passed"
