#!/usr/bin/env bash
# Boot the node image under QEMU and wait until archipelago answers /healthz.
#
# Usage:  image-recipe/smoke-test.sh [IMAGE]      (default image-recipe/out/archipelago.qcow2)
# Environment:
#   PORT          host port forwarded to the VM's HTTPS port 8443 (default: first free from 18080)
#   BOOT_TIMEOUT  seconds to wait for /healthz (default 600)
#   ACCEL         tcg (software emulation, the default: works everywhere) or kvm
#   SERIAL_LOG    serial console log (default image-recipe/out/serial.log)
#
# The VM writes to a throw-away qcow2 overlay, so the image on disk is never changed and
# every run is a first boot. After shutdown, when run as root, the journal of the run is
# read from the overlay (loop mount, read-only) and the archipelago/docker lines are
# printed and saved to image-recipe/out/journal.txt. User-mode networking is `restrict=on`: the guest reaches nothing outside
# QEMU; only the forwarded port 127.0.0.1:PORT -> guest:8443 (HTTPS) is open.
# Exit status: 0 when /healthz answered, 1 otherwise (the serial log tells how far the
# boot went; the script prints the lines about archipelago.service).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/out"
image=${1:-$out/archipelago.qcow2}
boot_timeout=${BOOT_TIMEOUT:-600}
accel=${ACCEL:-tcg}
serial_log=${SERIAL_LOG:-$out/serial.log}

log() { echo "smoke: $*" >&2; }
die() {
    echo "smoke: error: $*" >&2
    exit 1
}

[ -f "$image" ] || die "no image at $image (run image-recipe/build.sh first)"
case "$accel" in tcg | kvm) ;; *) die "ACCEL must be tcg or kvm, not $accel" ;; esac

if ! command -v qemu-system-x86_64 >/dev/null; then
    log "installing qemu-system-x86"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-x86
fi
command -v curl >/dev/null || die "curl is missing (apt-get install curl)"

if [ -z "${PORT:-}" ]; then
    for p in $(seq 18080 18180); do
        if [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]; then
            PORT=$p
            break
        fi
    done
fi
[ -n "${PORT:-}" ] || die "no free port in 18080-18180; set PORT"

mkdir -p "$out" "$(dirname "$serial_log")"
run=$(mktemp -d)
overlay="$out/smoke-overlay.qcow2"
mkfifo "$run/mon.in" "$run/mon.out"
qemu_pid=""
cat_pid=""
loopdev=""

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    if [ -n "$cat_pid" ]; then
        kill "$cat_pid" 2>/dev/null || true
        wait "$cat_pid" 2>/dev/null || true
    fi
    if mountpoint -q "$run/mnt" 2>/dev/null; then umount "$run/mnt" || true; fi
    if [ -n "$loopdev" ]; then losetup -d "$loopdev" 2>/dev/null || true; fi
    rm -rf "$run"
    rm -f "$overlay"
}
trap cleanup EXIT

# Drain the monitor's output so it can never block QEMU.
cat "$run/mon.out" >"$run/monitor.log" &
cat_pid=$!

: >"$serial_log"
rm -f "$overlay"
qemu-img create -q -f qcow2 -F qcow2 -b "$(cd "$(dirname "$image")" && pwd)/$(basename "$image")" "$overlay"
log "booting $image (accel $accel, port 127.0.0.1:$PORT, serial log $serial_log)"
start=$(date +%s)
qemu-system-x86_64 \
    -accel "$accel" -m 2048 -smp 2 \
    -nographic -serial "file:$serial_log" -monitor "pipe:$run/mon" \
    -drive "file=$overlay,if=virtio,format=qcow2" \
    -netdev "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:$PORT-:8443" \
    -device virtio-net-pci,netdev=net0 \
    </dev/null >"$run/qemu.out" 2>&1 &
qemu_pid=$!

monitor() { printf '%s\n' "$1" >"$run/mon.in"; }

# Wait for /healthz, reporting boot milestones from the serial log as they appear.
healthy=0
seen_kernel=0 seen_unit=0 seen_login=0
deadline=$((start + boot_timeout))
while [ "$(date +%s)" -lt "$deadline" ]; do
    if ! kill -0 "$qemu_pid" 2>/dev/null; then
        cat "$run/qemu.out" >&2
        die "qemu exited early"
    fi
    now=$(($(date +%s) - start))
    if [ "$seen_kernel" -eq 0 ] && grep -q 'Linux version' "$serial_log"; then
        seen_kernel=1
        log "t+${now}s kernel booting"
    fi
    if [ "$seen_unit" -eq 0 ] && grep -aq 'archipelago.service' "$serial_log"; then
        seen_unit=1
        log "t+${now}s systemd acts on archipelago.service"
    fi
    if [ "$seen_login" -eq 0 ] && grep -aq 'login:' "$serial_log"; then
        seen_login=1
        log "t+${now}s login prompt (boot finished)"
    fi
    if body=$(curl -kfsS --max-time 3 "https://127.0.0.1:$PORT/healthz" 2>/dev/null); then
        healthy=1
        log "t+${now}s /healthz answered: $body"
        break
    fi
    sleep 2
done
took=$(($(date +%s) - start))

echo "--- serial log: lines about archipelago ---" >&2
grep -a 'archipelago' "$serial_log" | tr -d '\r' | sed 's/\x1b\[[0-9;]*m//g' | tail -n 20 >&2 || true
echo "---" >&2

# Shut down: ACPI power button first (clean guest shutdown), then quit.
log "shutting the VM down"
monitor system_powerdown
for _ in $(seq 1 90); do
    kill -0 "$qemu_pid" 2>/dev/null || break
    sleep 1
done
if kill -0 "$qemu_pid" 2>/dev/null; then
    log "guest did not power off within 90s; quitting QEMU"
    monitor quit
    sleep 2
fi

# The run's journal, read from the overlay: what systemd and the units said.
show_journal() {
    [ "$(id -u)" -eq 0 ] || return 0
    command -v journalctl >/dev/null || return 0
    kill -0 "$qemu_pid" 2>/dev/null && return 0
    mkdir -p "$run/mnt"
    qemu-img convert -O raw "$overlay" "$run/disk.raw" || return 0
    loopdev=$(losetup --find --show --read-only --offset $((2048 * 512)) "$run/disk.raw") || return 0
    mount -o ro,noload "$loopdev" "$run/mnt" || return 0
    journalctl -D "$run/mnt/var/log/journal" --no-pager -o short-monotonic \
        -u archipelago-firstboot.service -u archipelago.service -u docker.service \
        >"$out/journal.txt" 2>&1 || true
    echo "--- journal of this boot: archipelago and docker units (all in $out/journal.txt) ---" >&2
    grep -v -- '-- ' "$out/journal.txt" | head -n 15 >&2 || true
    echo "..." >&2
    tail -n 15 "$out/journal.txt" >&2 || true
    echo "---" >&2
}
show_journal

if [ "$healthy" -eq 1 ]; then
    log "PASS: boot to /healthz took ${took}s"
    exit 0
fi
log "FAIL: /healthz did not answer within ${boot_timeout}s (see $serial_log)"
exit 1
