#!/usr/bin/env bash
# Builds the .deb: the binary, then the manual pages and the bash, zsh and
# fish completions the binary generates from its argument definitions (into
# packaging/generated, not committed), then cargo-deb (installed from the
# registry if missing) packages them with the unit, the config and the docs.
#
#   packaging/make-deb.sh [OUTDIR]     # default target/debian
#
# PROCSYNC_DEB_PROFILE=dev packages the debug build the tests made (a quick
# package for checks); the default is the release build.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
PROFILE="${PROCSYNC_DEB_PROFILE:-release}"
out="${1:-target/debian}"

if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    echo "--- installing cargo-deb $CARGO_DEB_VERSION from crates.io"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

echo "--- building procsync ($PROFILE profile)"
cargo build --locked --profile "$PROFILE"
target_dir="${CARGO_TARGET_DIR:-target}"
case "$PROFILE" in
    dev) bin="$target_dir/debug/procsync" ;;
    *) bin="$target_dir/$PROFILE/procsync" ;;
esac

echo "--- generating the manual page and shell completions"
# Beside the sources (not in the target directory, which CARGO_TARGET_DIR
# may move): the package's asset paths are relative to Cargo.toml.
assets=packaging/generated
rm -rf "$assets"
mkdir -p "$assets/man"
"$bin" man --dir "$assets/man"
gzip -9n "$assets"/man/*.1
"$bin" completions bash >"$assets/procsync.bash"
"$bin" completions zsh >"$assets/_procsync"
"$bin" completions fish >"$assets/procsync.fish"

echo "--- packaging"
if [ "$PROFILE" = release ]; then
    cargo deb --locked --no-build -o "$out"
else
    # cargo-deb warns that dev builds are for testing only: so is this one.
    cargo deb --locked --no-build --profile "$PROFILE" --strip -o "$out" 2>&1 |
        grep -v "dev profile\|debug symbols set" || true
fi
ls "$out"/procsync_*.deb >/dev/null
