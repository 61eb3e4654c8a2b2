#!/usr/bin/env bash
# Boot the node image under QEMU as a new owner would, on a stand-in home LAN, and check
# what they meet: the
# console names the dashboard URL and the setup code; a real browser (headless Chromium on
# this machine, over the forwarded port, the certificate pinned by the fingerprint the
# console printed) sets the password through onboarding and then logs in; the guest's boot
# report (archipelago-sysreport.service) shows DHCP DNS through systemd-resolved, time sync
# active, the nftables ruleset loaded, and apt sources with the security suite.
#
# Usage:  image-recipe/smoke-test.sh [IMAGE]      (as root; default image-recipe/out/archipelago.qcow2)
# Environment:
#   PORT          host port forwarded to the VM's HTTPS port 8443 (default: first free from 18080)
#   BOOT_TIMEOUT  seconds to wait for /healthz (default 600)
#   ACCEL         tcg (software emulation, the default: works everywhere) or kvm
#   SERIAL_LOG    serial console log (default image-recipe/out/serial.log)
#   PASSWORD      dashboard password the browser chooses (default: a random one)
#
# The VM writes to a throw-away qcow2 overlay, so the image on disk is never changed and
# every run is a first boot. After shutdown the journal of the run is read from the overlay
# (loop mount, read-only): out/journal.txt (archipelago units), out/sysreport.txt (the boot
# report). The onboarding page's screenshot goes to out/onboarding.png.
#
# The LAN: a network namespace of the script's own with one tap device (10.0.2.2/24) where
# QEMU's NIC plugs in; dnsmasq there answers DHCP (address 10.0.2.15, DNS and NTP server
# 10.0.2.2) and DNS (no upstream: it logs the node's lookups and answers none), smoke-lan.py answers NTP with this
# machine's clock and asks for <hostname>.local by mDNS. The namespace has no route
# anywhere else, so the guest reaches nothing but these. socat forwards 127.0.0.1:PORT on
# this machine to the guest's 8443 (HTTPS), the owner's browser's view of the node.
#
# Host tools: each one is checked; a missing one is installed from Debian's packages with
# `apt-get --no-remove`, so an installed package (say a newer qemu-utils from backports) is
# never removed or downgraded. qemu-system-x86 is taken from the suite qemu-utils came from.
# Exit status: 0 when every check passed, 1 otherwise.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
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

[ "$(id -u)" -eq 0 ] || die "run as root (tool installs, loop-mounting the overlay)"
[ -f "$image" ] || die "no image at $image (run image-recipe/build.sh first)"
case "$accel" in tcg | kvm) ;; *) die "ACCEL must be tcg or kvm, not $accel" ;; esac

# ---------------------------------------------------------------------------------------
# Host tools: command -> Debian package.
apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        apt-get update -q >&2
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-remove --no-install-recommends "$@" >&2
}
# qemu-system-x86 must match the installed qemu-utils: Debian's qemu-system-x86 depends on
# qemu-system-common of its own version and apt would otherwise swap a newer qemu-utils
# (from backports) for the stable one. --no-remove makes apt refuse instead.
install_qemu_system() {
    local utils suite codename
    utils=$(dpkg-query -W -f '${Version}' qemu-utils 2>/dev/null || true)
    if [[ "$utils" == *bpo* ]]; then
        codename=$(sed -n "s/^VERSION_CODENAME=//p" /etc/os-release)
        suite="$codename-backports"
        if ! apt-cache policy | grep -q "$suite/main"; then
            log "qemu-utils $utils is from $suite; adding that suite to apt's sources"
            printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
                "$suite" >"/etc/apt/sources.list.d/$suite.sources"
            apt_updated=0
        fi
        log "installing qemu-system-x86 from $suite (matches qemu-utils $utils)"
        apt_install -t "$suite" qemu-system-x86
    else
        log "installing qemu-system-x86"
        apt_install qemu-system-x86
    fi
}
missing=()
for pair in qemu-img:qemu-utils curl:curl ss:iproute2 ip:iproute2 openssl:openssl \
    chromium:chromium chromedriver:chromium-driver journalctl:systemd losetup:mount \
    mountpoint:util-linux dnsmasq:dnsmasq-base socat:socat /usr/bin/python3:python3; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing missing host tools: ${missing[*]}"
    apt_install "${missing[@]}"
fi
command -v qemu-system-x86_64 >/dev/null || install_qemu_system
for tool in qemu-system-x86_64 qemu-img curl ss ip openssl chromium chromedriver journalctl \
    losetup mountpoint dnsmasq socat /usr/bin/python3 cargo; do
    command -v "$tool" >/dev/null || die "$tool is still missing"
done

# The browser part is the onboarding test's ignored case, built before the VM boots.
log "building the browser test (cargo test --test onboarding --no-run)"
(cd "$repo" && cargo test --locked --test onboarding --no-run -q) >&2 ||
    die "cannot build tests/onboarding.rs"

if [ -z "${PORT:-}" ]; then
    for p in $(seq 18080 18180); do
        if [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]; then
            PORT=$p
            break
        fi
    done
fi
[ -n "${PORT:-}" ] || die "no free port in 18080-18180; set PORT"
password=${PASSWORD:-$(head -c 15 /dev/urandom | base64 | tr '+/' 'xy')}

mkdir -p "$out" "$(dirname "$serial_log")"
run=$(mktemp -d)
overlay="$out/smoke-overlay.qcow2"
mkfifo "$run/mon.in" "$run/mon.out"
qemu_pid=""
cat_pid=""
loopdev=""
ns="archipelago-smoke-$$"
lan_pids=()

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
    for pid in "${lan_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
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

# The stand-in LAN (see the top of this file).
ip netns add "$ns"
ip -n "$ns" link set lo up
ip netns exec "$ns" ip tuntap add dev tap0 mode tap
ip -n "$ns" addr add 10.0.2.2/24 dev tap0
ip -n "$ns" link set tap0 up
ip netns exec "$ns" dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
    --interface=tap0 --except-interface=lo --dhcp-range=10.0.2.15,10.0.2.15,255.255.255.0,1h \
    --dhcp-option=option:dns-server,10.0.2.2 --dhcp-option=option:ntp-server,10.0.2.2 \
    --dhcp-authoritative --log-dhcp --log-queries --log-facility="$out/dnsmasq.log" \
    --dhcp-leasefile="$run/dnsmasq.leases" --pid-file="$run/dnsmasq.pid" &
lan_pids+=($!)
ip netns exec "$ns" /usr/bin/python3 "$here/smoke-lan.py" ntp 10.0.2.2 "$((boot_timeout + 900))" \
    >"$out/ntp.log" 2>&1 &
lan_pids+=($!)
printf '#!/bin/sh\nexec ip netns exec %s socat STDIO TCP:10.0.2.15:8443\n' "$ns" >"$run/fwd.sh"
chmod +x "$run/fwd.sh"
socat "TCP-LISTEN:$PORT,bind=127.0.0.1,reuseaddr,fork" "EXEC:$run/fwd.sh" &
lan_pids+=($!)

log "booting $image (accel $accel, port 127.0.0.1:$PORT, serial log $serial_log)"
start=$(date +%s)
ip netns exec "$ns" qemu-system-x86_64 \
    -accel "$accel" -m 2048 -smp 2 \
    -nographic -serial "file:$serial_log" -monitor "pipe:$run/mon" \
    -drive "file=$overlay,if=virtio,format=qcow2" \
    -netdev tap,id=net0,ifname=tap0,script=no,downscript=no \
    -device virtio-net-pci,netdev=net0 \
    </dev/null >"$run/qemu.out" 2>&1 &
qemu_pid=$!

monitor() { printf '%s\n' "$1" >"$run/mon.in"; }
# The serial log as text: no carriage returns, no colour codes.
serial() { tr -d '\r' <"$serial_log" | sed 's/\x1b\[[0-9;]*m//g'; }

failures=()
check() { # NAME CONDITION-RESULT(0/1) DETAIL
    if [ "$2" -eq 0 ]; then
        log "ok: $1${3:+ ($3)}"
    else
        log "FAILED: $1${3:+ ($3)}"
        failures+=("$1")
    fi
}

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
check "/healthz answers over the forwarded HTTPS port" $((1 - healthy)) "t+$(($(date +%s) - start))s"

# The console: dashboard URLs, fingerprint and setup code, printed once archipelago is ready.
code="" fingerprint=""
if [ "$healthy" -eq 1 ]; then
    limit=$(($(date +%s) + 120))
    while [ "$(date +%s)" -lt "$limit" ]; do
        code=$(serial | sed -n 's/^[[:space:]]*setup code: \([0-9A-Z-]*\)[[:space:]]*$/\1/p' | tail -n 1)
        [ -n "$code" ] && break
        sleep 2
    done
    echo "--- console: what archipelago printed ---" >&2
    serial | awk '/^archipelago is ready/ {p = 1} p {print} /setup code:/ {p = 0}' | tail -n 12 >&2
    echo "---" >&2
    fingerprint=$(serial | grep -Eo '^[[:space:]]+([0-9A-F]{2}:){31}[0-9A-F]{2}[[:space:]]*$' | tail -n 1 | tr -d '[:space:]' || true)
fi
check "console shows the setup code" "$([ -n "$code" ] && echo 0 || echo 1)" "$code"
url_line=$(serial | grep -Eo 'https://[a-z0-9-]+\.local:8443/' | tail -n 1 || true)
check "console shows https://<hostname>.local:8443/" "$([ -n "$url_line" ] && echo 0 || echo 1)" "$url_line"
ip_line=$(serial | grep -Eo 'https://10\.0\.2\.15:8443/' | tail -n 1 || true)
check "console shows the DHCP address's URL" "$([ -n "$ip_line" ] && echo 0 || echo 1)" "$ip_line"

# The certificate served on the forwarded port must be the one the console vouches for.
spki=""
if [ "$healthy" -eq 1 ]; then
    openssl s_client -connect "127.0.0.1:$PORT" </dev/null 2>/dev/null | openssl x509 -outform PEM >"$run/cert.pem" || true
    served=$(openssl x509 -in "$run/cert.pem" -noout -fingerprint -sha256 2>/dev/null | sed 's/^.*=//')
    check "console's certificate fingerprint matches the served certificate" \
        "$([ -n "$fingerprint" ] && [ "$served" = "$fingerprint" ] && echo 0 || echo 1)" "$fingerprint"
    spki=$(openssl x509 -in "$run/cert.pem" -pubkey -noout | openssl pkey -pubin -outform der |
        openssl dgst -sha256 -binary | base64)
fi

# The browser: onboarding with the console's code, then logout and the normal login.
if [ -n "$code" ] && [ -n "$spki" ]; then
    log "browser: onboarding at https://127.0.0.1:$PORT/ (SPKI pin $spki)"
    rc=0
    (cd "$repo" && ARCHIPELAGO_NODE_URL="https://127.0.0.1:$PORT" ARCHIPELAGO_NODE_SPKI="$spki" \
        ARCHIPELAGO_NODE_SETUP_CODE="$code" ARCHIPELAGO_NODE_PASSWORD="$password" \
        ARCHIPELAGO_NODE_SCREENSHOT="$out/onboarding.png" \
        cargo test --locked --test onboarding -q -- --ignored --exact on_the_node_image --nocapture) >&2 || rc=1
    check "browser sets the password through onboarding, then logs in" "$rc"
    # The console drops the setup code at its next refresh (every 30 s).
    ready_before=$(serial | grep -c '^archipelago is ready' || true)
    limit=$(($(date +%s) + 90))
    refreshed=1
    while [ "$(date +%s)" -lt "$limit" ]; do
        if [ "$(serial | grep -c '^archipelago is ready' || true)" -gt "$ready_before" ]; then
            refreshed=0
            break
        fi
        sleep 3
    done
    last_block=$(serial | awk '/^archipelago is ready/ {b = ""} {b = b $0 "\n"} END {printf "%s", b}')
    check "console refreshed without the setup code after onboarding" \
        "$([ "$refreshed" -eq 0 ] && ! grep -q 'setup code:' <<<"$last_block" && echo 0 || echo 1)"
else
    check "browser sets the password through onboarding, then logs in" 1 "no setup code or certificate"
fi

# <hostname>.local from the LAN, by multicast DNS.
if [ "$healthy" -eq 1 ]; then
    answer=$(ip netns exec "$ns" /usr/bin/python3 "$here/smoke-lan.py" mdns 10.0.2.2 archipelago.local 2>&1 || true)
    check "archipelago.local answers by mDNS on the LAN" "$(grep -q ' 10\.0\.2\.15 ' <<<"$answer" && echo 0 || echo 1)" "$answer"
fi

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

# The run's journal and files, read from the overlay.
mounted=1
if ! kill -0 "$qemu_pid" 2>/dev/null; then
    mkdir -p "$run/mnt"
    if qemu-img convert -O raw "$overlay" "$run/disk.raw" &&
        loopdev=$(losetup --find --show --read-only --offset $((2048 * 512)) "$run/disk.raw") &&
        mount -o ro,noload "$loopdev" "$run/mnt"; then
        mounted=0
    fi
fi
check "overlay mounted after shutdown" "$mounted"
if [ "$mounted" -eq 0 ]; then
    jdir="$run/mnt/var/log/journal"
    journalctl -D "$jdir" --no-pager -o short-monotonic \
        -u archipelago-firstboot.service -u archipelago.service -u archipelago-firewall.service \
        -u archipelago-console.service -u nftables.service -u docker.service \
        >"$out/journal.txt" 2>&1 || true
    journalctl -D "$jdir" --no-pager -o cat -u archipelago-sysreport.service \
        >"$out/sysreport.txt" 2>&1 || true
    echo "--- journal: archipelago units (all in $out/journal.txt) ---" >&2
    grep -E 'archipelago-(firewall|console)|setup code|dashboard at|onboarding|login' "$out/journal.txt" |
        grep -v -- '-- ' | head -n 20 >&2 || true
    echo "--- boot report (archipelago-sysreport.service, in $out/sysreport.txt) ---" >&2
    cat "$out/sysreport.txt" >&2
    echo "---" >&2
    section() { awk -v s="=== $1" '$0 == s {p = 1; next} /^=== / {p = 0} p' "$out/sysreport.txt"; }
    lease=$(grep -o 'DHCPACK(tap0) 10\.0\.2\.15 .*' "$out/dnsmasq.log" | head -n 1 || true)
    check "the guest took its address from DHCP" "$([ -n "$lease" ] && echo 0 || echo 1)" "$lease"
    dns=$(section "resolvectl status" | grep -E '^[[:space:]]*(Current DNS Server|DNS Servers): 10\.0\.2\.2$' | head -n 1 || true)
    check "DNS server from DHCP in use by systemd-resolved" "$([ -n "$dns" ] && echo 0 || echo 1)" "$(echo "$dns" | xargs)"
    asked=$(grep -o 'query\[A\] deb\.debian\.org from 10\.0\.2\.15' "$out/dnsmasq.log" | head -n 1 || true)
    check "a lookup on the node went to that server" "$([ -n "$asked" ] && echo 0 || echo 1)" "$asked"
    link=$(section "ls -l /etc/resolv.conf" | grep -o '/etc/resolv.conf -> .*' || true)
    check "/etc/resolv.conf is resolved's stub" "$(grep -q 'stub-resolv.conf' <<<"$link" && echo 0 || echo 1)" "$link"
    mdns=$(section "resolvectl status" | grep -Eo '\+mDNS' | head -n 1 || true)
    check "mDNS on for the link (<hostname>.local)" "$([ -n "$mdns" ] && echo 0 || echo 1)"
    ntp=$(section "timedatectl show" | grep -E '^NTP(Synchronized)?=' | xargs || true)
    tsd=$(section "systemctl is-active systemd-timesyncd" | head -n 1)
    server=$(section "timedatectl show-timesync" | grep -E '^ServerAddress=' || true)
    check "time synchronized by systemd-timesyncd from DHCP's NTP server" \
        "$([ "$ntp" = "NTP=yes NTPSynchronized=yes" ] && [ "$tsd" = active ] && [ "$server" = ServerAddress=10.0.2.2 ] && echo 0 || echo 1)" \
        "$ntp, timesyncd $tsd, $server"
    rules=$(section "nft list ruleset")
    check "nftables ruleset loaded (table inet archipelago, policy drop, 8443 open)" \
        "$(grep -q 'table inet archipelago' <<<"$rules" && grep -q 'policy drop' <<<"$rules" &&
            grep -q 'tcp dport 8443 accept' <<<"$rules" && echo 0 || echo 1)"
    apps=$(grep -A2 'set app_tcp' <<<"$rules" | grep -o 'elements = {.*' | head -n 1 || true)
    check "app ports from the catalog in the firewall set" "$([ -n "$apps" ] && echo 0 || echo 1)" "${apps:0:60}..."
    sources=$(cat "$run/mnt/etc/apt/sources.list")
    check "apt sources include the security and updates suites" \
        "$(grep -q 'bookworm-security' <<<"$sources" && grep -q 'bookworm-updates' <<<"$sources" && echo 0 || echo 1)"
    check "unattended-upgrades: security only, no automatic reboot" \
        "$(section "unattended-upgrades" | grep -q 'Automatic-Reboot "false"' && echo 0 || echo 1)"
fi

took=$(($(date +%s) - start))
if [ "${#failures[@]}" -eq 0 ]; then
    log "PASS: every check passed (${took}s from power-on to the end)"
    exit 0
fi
log "FAIL: ${#failures[@]} check(s) failed: ${failures[*]} (serial log $serial_log)"
exit 1
