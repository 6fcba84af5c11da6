#!/usr/bin/env bash
# Boots a fresh Debian root with systemd as PID 1 under qemu, installs the .deb there and proves that procsync runs as
# the hardened service the unit describes: the package's postinst starts
# it, it runs as `procsync` with no new privileges, a seccomp filter and no
# capabilities, the CLI writes and reads a record through it, and it
# survives `systemctl restart` with its data.
#
# Needs root, debootstrap, qemu-system-x86_64 (installed when missing),
# mkfs.ext4 and a Debian mirror; takes a few minutes (a base system with a
# kernel is downloaded). Not part of .ci/run: run it when the unit or the
# maintainer scripts change.
#
# Usage: packaging/check-systemd.sh [path/to/procsync.deb]
set -euo pipefail
cd "$(dirname "$0")/.."

deb="${1:-}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ "$(id -u)" != 0 ]; then
    echo "--- systemd check skipped: it needs root (debootstrap, image)"
    exit 0
fi
if [ -z "$deb" ]; then
    PROCSYNC_DEB_PROFILE=dev packaging/make-deb.sh "$work/"
    deb="$(ls "$work"/*.deb)"
fi
command -v debootstrap >/dev/null || apt-get install -y debootstrap >/dev/null
command -v qemu-system-x86_64 >/dev/null ||
    apt-get install -y --no-install-recommends qemu-system-x86 >/dev/null

root="$work/root"
echo "--- debootstrap (bookworm with systemd and a kernel)"
if ! timeout 900 debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,udev,linux-image-amd64,initramfs-tools,adduser,hostname,procps \
    bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1; then
    tail -5 "$work/debootstrap.log"
    echo "--- systemd check skipped: debootstrap could not fetch a Debian base system"
    exit 0
fi

cp "$deb" "$root/root/procsync.deb"
echo "/dev/vda / ext4 defaults 0 1" >"$root/etc/fstab"
echo "procsync-check" >"$root/etc/hostname"
cat >"$root/root/check.sh" <<'EOF'
#!/bin/bash
# Runs inside the booted system; everything it says goes to the serial line.
exec >/dev/ttyS0 2>&1
fail() { echo "PROCSYNC-SYSTEMD-CHECK-FAILED: $*"; journalctl -u procsync --no-pager | tail -30; systemctl poweroff; exit 1; }
wait_active() {
    for _ in $(seq 1 100); do
        systemctl is-active -q procsync && test -e /var/lib/procsync/admin.addr && return 0
        sleep 0.2
    done
    return 1
}
echo "--- systemd $(systemctl --version | head -1) is PID 1: $(cat /proc/1/comm)"
dpkg -i /root/procsync.deb || fail "dpkg -i"
wait_active || fail "the service did not start"
systemctl --no-pager status procsync | head -12
pid="$(systemctl show -p MainPID --value procsync)"
user="$(ps -o user= -p "$pid")"
[ "$user" = procsync ] || fail "runs as $user, not procsync"
grep -E "^(NoNewPrivs|Seccomp|CapEff|CapPrm):" "/proc/$pid/status"
grep -q "^NoNewPrivs:[[:space:]]*1" "/proc/$pid/status" || fail "NoNewPrivileges is not in effect"
grep -q "^Seccomp:[[:space:]]*2" "/proc/$pid/status" || fail "no seccomp filter"
grep -q "^CapEff:[[:space:]]*0000000000000000" "/proc/$pid/status" || fail "has capabilities"
id="$(procsync record create incident --data /var/lib/procsync short_description=under-systemd)" || fail "record create"
procsync record get incident "$id" --data /var/lib/procsync | grep -q under-systemd || fail "record get"
systemctl restart procsync
wait_active || fail "the service did not come back after a restart"
procsync record get incident "$id" --data /var/lib/procsync | grep -q under-systemd || fail "the record is gone after a restart"
systemd-analyze security procsync --no-pager 2>/dev/null | tail -1
journalctl -u procsync --no-pager | grep -E "ExecStartPre|config|listening|Listening" | tail -5
echo "PROCSYNC-SYSTEMD-CHECK-PASSED"
systemctl poweroff
EOF
chmod +x "$root/root/check.sh"
cat >"$root/etc/systemd/system/procsync-check.service" <<'EOF'
[Unit]
Description=Install procsync and check it runs as a hardened service
After=multi-user.target network.target

[Service]
Type=oneshot
ExecStart=/root/check.sh

[Install]
WantedBy=multi-user.target
EOF
ln -s /etc/systemd/system/procsync-check.service \
    "$root/etc/systemd/system/multi-user.target.wants/procsync-check.service"
# No login prompt competing for the serial line.
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"

kernel="$(ls "$root"/boot/vmlinuz-* | head -1)"
initrd="$(ls "$root"/boot/initrd.img-* | head -1)"
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd"
truncate -s 3G "$work/root.img"
mkfs.ext4 -q -F -L root -d "$root" "$work/root.img"
rm -rf "$root"

# Software emulation: slower (about two minutes to boot, check and power
# off here) but it works wherever qemu does; nested KVM on the build VM
# failed (`kvm_buf_set_msrs` assertion).
echo "--- booting under qemu (software emulation)"
timeout 900 qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 2 -nographic -no-reboot \
    -kernel "$work/vmlinuz" -initrd "$work/initrd" \
    -append "root=/dev/vda rw console=ttyS0 systemd.show_status=0" \
    -drive "file=$work/root.img,format=raw,if=virtio" \
    -nic none >"$work/console.log" 2>&1 || true
grep -a -E "^(---|NoNewPrivs|Seccomp|CapEff|CapPrm|PROCSYNC)|Active:|Main PID|ExecStartPre|exposure" "$work/console.log" | tail -20
if grep -aq "PROCSYNC-SYSTEMD-CHECK-PASSED" "$work/console.log"; then
    echo "--- systemd check passed"
else
    echo "--- systemd check FAILED; the console said:"
    tail -60 "$work/console.log"
    exit 1
fi
