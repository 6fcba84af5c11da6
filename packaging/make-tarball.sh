#!/usr/bin/env bash
# The tarball for hosts without dpkg: the release binary, the hardened
# systemd unit, the commented configs and the README, in
# procsync-VERSION-x86_64-linux/. Install by hand as README "Install" says.
set -euo pipefail
cd "$(dirname "$0")/.."

version="$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"name":"procsync","version":"\([^"]*\)".*/\1/p')"
arch="$(uname -m)"
name="procsync-${version}-${arch}-linux"
out="${1:-target/dist}"

cargo build --release --locked
rm -rf "$out/$name"
mkdir -p "$out/$name"
install -m 0755 target/release/procsync "$out/$name/procsync"
install -m 0644 packaging/procsync.service "$out/$name/procsync.service"
install -m 0644 packaging/procsync.toml "$out/$name/procsync.toml"
install -m 0644 packaging/sync.example.toml "$out/$name/sync.example.toml"
install -m 0644 README.md "$out/$name/README.md"
tar -C "$out" -czf "$out/$name.tar.gz" "$name"
echo "$out/$name.tar.gz"
