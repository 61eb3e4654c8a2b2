#!/usr/bin/env bash
# Build a bootable Debian bookworm disk image of an archipelago node, from Debian's
# packages only (debootstrap against the Debian mirror this machine's apt uses).
#
# Usage:  image-recipe/build.sh [BINARY]           (as root)
#   BINARY   release binary to install; default target/release/archipelago, brought up
#            to date with `cargo build --release` first.
# Environment:
#   MIRROR       Debian mirror URL (default: the bookworm mirror from apt's sources)
#   IMAGE_SIZE   virtual disk size (default 4G)
#   BUILD_TIMEOUT  bound for debootstrap, in seconds (default 2400)
#   IMAGE        output path (default image-recipe/out/archipelago.qcow2)
# Work files (debootstrap tree, package cache) go to image-recipe/out/, which is gitignored.
#
# Layout: one MBR partition (ext4, the root file system) booted by extlinux (syslinux's
# MBR + ldlinux on the partition). extlinux needs no firmware tricks and boots the same
# under KVM, under QEMU's software emulation (TCG) and on BIOS/CSM hardware. The kernel
# command line sends the console to ttyS0, so `qemu -nographic` shows the whole boot.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
out="$here/out"
work="$out/work"
root="$work/rootfs"
cache="$out/cache"
raw="$work/disk.raw"
image=${IMAGE:-$out/archipelago.qcow2}
mnt="$work/mnt"

suite=bookworm
image_size=${IMAGE_SIZE:-4G}
build_timeout=${BUILD_TIMEOUT:-2400}
binary=${1:-$repo/target/release/archipelago}

packages=(
    systemd systemd-sysv udev kmod dbus
    linux-image-amd64 initramfs-tools
    docker.io apparmor
    iproute2 procps ca-certificates curl jq less openssl
    systemd-resolved systemd-timesyncd nftables unattended-upgrades
    restic openssh-client
)

log() { echo "build: $*" >&2; }
die() {
    echo "build: error: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, loop devices and mounts need it)"

# ---------------------------------------------------------------------------------------
# Host tools (Debian packages).
need_pkgs=()
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
command -v extlinux >/dev/null || need_pkgs+=(extlinux)
[ -e /usr/lib/syslinux/mbr/mbr.bin ] || need_pkgs+=(syslinux-common)
command -v qemu-img >/dev/null || need_pkgs+=(qemu-utils)
command -v mkfs.ext4 >/dev/null || need_pkgs+=(e2fsprogs)
command -v sfdisk >/dev/null || need_pkgs+=(fdisk)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    log "installing host tools: ${need_pkgs[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}"
fi

# ---------------------------------------------------------------------------------------
# Mirror: the one apt already uses for bookworm (no other registry is reachable).
if [ -z "${MIRROR:-}" ]; then
    # shellcheck disable=SC2016 # $(REPO_URI) is apt's format field, not a shell expansion
    MIRROR=$(apt-get indextargets --format '$(REPO_URI)' "Codename: $suite" 'Origin: Debian' 2>/dev/null |
        grep -v -- '-security' | sort -u | head -n 1 || true)
fi
if [ -z "${MIRROR:-}" ]; then
    # No downloaded index yet: read the sources files themselves.
    MIRROR=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
        /etc/apt/sources.list.d/*.list 2>/dev/null | grep -i debian | grep -v security |
        sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' |
        awk '{print $1; exit}' || true)
fi
[ -n "${MIRROR:-}" ] || die "no Debian mirror found in apt's sources; set MIRROR"
log "mirror: $MIRROR"

# ---------------------------------------------------------------------------------------
# Release binary. With the default path, cargo brings it up to date (a no-op when it is),
# so the image never ships a stale build.
if [ "$binary" = "$repo/target/release/archipelago" ] && command -v cargo >/dev/null; then
    log "cargo build --release"
    (cd "$repo" && cargo build --release --locked)
fi
[ -x "$binary" ] || die "binary not found: $binary"
file_type=$(head -c 4 "$binary" | od -An -c | tr -d ' ')
[ "$file_type" = '177ELF' ] || die "$binary is not an ELF executable"

# ---------------------------------------------------------------------------------------
# Clean-up: unmount everything below the work folder, detach our loop device.
loopdev=""
unmount_under() {
    local dir=$1 m
    # Deepest first; mountinfo field 5 is the mount point.
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r)
}
cleanup() {
    unmount_under "$work"
    if [ -n "$loopdev" ]; then losetup -d "$loopdev" 2>/dev/null || true; fi
}
trap cleanup EXIT

mkdir -p "$out" "$cache" "$work"
unmount_under "$work"
if awk -v d="$work" 'index($5, d "/") == 1 {found=1} END {exit !found}' /proc/self/mountinfo; then
    die "something is still mounted under $work; unmount it first"
fi
rm -rf --one-file-system "$root" "$mnt" "$raw"
mkdir -p "$root" "$mnt"

# ---------------------------------------------------------------------------------------
# Root file system.
start=$(date +%s)
log "debootstrap $suite (bounded to ${build_timeout}s)"
include=$(
    IFS=,
    echo "${packages[*]}"
)
timeout "$build_timeout" debootstrap --variant=minbase --arch=amd64 --cache-dir="$cache" \
    --include="$include" "$suite" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
    die "debootstrap failed; see $work/debootstrap.log"
unmount_under "$root"

kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sort -V | tail -n 1)
[ -n "$kernel" ] || die "no kernel in $root/boot"
[ -e "$root/boot/initrd.img-${kernel#vmlinuz-}" ] || die "no initramfs for $kernel"
log "kernel: $kernel"

# Identity and basics.
echo archipelago >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tarchipelago\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    >"$root/etc/hosts"
# Empty machine-id: each booted copy of the image makes its own (systemd first boot).
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# apt: Debian's public mirrors (whatever mirror built the image), with the updates and
# security suites; unattended-upgrades applies security updates only and never reboots.
cat >"$root/etc/apt/sources.list" <<EOF
deb http://deb.debian.org/debian $suite main
deb http://deb.debian.org/debian $suite-updates main
deb http://security.debian.org/debian-security $suite-security main
EOF
cat >"$root/etc/apt/apt.conf.d/20auto-upgrades" <<'EOF'
APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
EOF
cat >"$root/etc/apt/apt.conf.d/52archipelago-unattended-upgrades" <<'EOF'
// archipelago: security updates only (docs/operations.md, "Updates"); reboots are the owner's.
#clear Unattended-Upgrade::Origins-Pattern;
Unattended-Upgrade::Origins-Pattern {
        "origin=Debian,codename=${distro_codename}-security,label=Debian-Security";
        "origin=Debian,codename=${distro_codename},label=Debian-Security";
};
Unattended-Upgrade::Automatic-Reboot "false";
EOF

# Network: DHCP on every wired interface (QEMU user networking gives 10.0.2.15), DNS from
# DHCP through systemd-resolved (never the build machine's resolv.conf), <hostname>.local
# answered by resolved's mDNS responder, clock from systemd-timesyncd.
mkdir -p "$root/etc/systemd/network" "$root/etc/systemd/resolved.conf.d"
cat >"$root/etc/systemd/network/80-wired.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=yes
MulticastDNS=yes

[DHCPv4]
UseDNS=yes
UseNTP=yes
EOF
cat >"$root/etc/systemd/resolved.conf.d/archipelago.conf" <<'EOF'
[Resolve]
MulticastDNS=yes
LLMNR=no
EOF
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"

# Firewall: nftables, our own table only (Docker keeps its iptables-nft tables).
install -m 0755 "$here/nftables.conf" "$root/etc/nftables.conf"
install -D -m 0644 "$here/nftables-keep-docker.conf" \
    "$root/etc/systemd/system/nftables.service.d/archipelago.conf"

# archipelago: binary, units, config, catalog, docs.
install -D -m 0755 "$binary" "$root/usr/local/bin/archipelago"
install -D -m 0644 "$here/archipelago.service" "$root/etc/systemd/system/archipelago.service"
install -D -m 0644 "$here/archipelago-firstboot.service" \
    "$root/etc/systemd/system/archipelago-firstboot.service"
for script in firstboot.sh console.sh firewall.sh sysreport.sh; do
    install -D -m 0755 "$here/$script" "$root/usr/local/lib/archipelago/$script"
done
install -D -m 0644 "$here/archipelago-tmpfiles.conf" "$root/usr/lib/tmpfiles.d/archipelago.conf"
for unit in archipelago-console.service archipelago-console.timer \
    archipelago-firewall.service archipelago-sysreport.service; do
    install -D -m 0644 "$here/$unit" "$root/etc/systemd/system/$unit"
done
install -D -m 0644 "$here/config.yml" "$root/etc/archipelago/config.yml"
install -d -m 0755 "$root/usr/share/archipelago/apps"
if [ -d "$repo/apps" ]; then
    cp -a "$repo/apps/." "$root/usr/share/archipelago/apps/"
    chown -R root:root "$root/usr/share/archipelago/apps"
fi
install -d -m 0755 "$root/usr/share/doc/archipelago"
for doc in operations.md dev-setup.md; do
    if [ -f "$repo/docs/$doc" ]; then
        install -m 0644 "$repo/docs/$doc" "$root/usr/share/doc/archipelago/$doc"
    fi
done

systemctl --root="$root" enable systemd-networkd.service systemd-resolved.service \
    systemd-timesyncd.service nftables.service archipelago-firstboot.service \
    archipelago-firewall.service archipelago.service archipelago-console.service \
    archipelago-console.timer archipelago-sysreport.service docker.service \
    >/dev/null 2>&1 || die "systemctl enable failed"
[ -L "$root/etc/resolv.conf" ] || die "/etc/resolv.conf is not resolved's stub link"

# Smaller image: no package cache or lists.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------
# Disk: MBR, one bootable partition from 1 MiB to the end.
log "disk image ($image_size)"
truncate -s "$image_size" "$raw"
echo 'start=2048, type=83, bootable' | sfdisk -q "$raw"
part_start=$((2048 * 512))
part_size=$(($(stat -c %s "$raw") - part_start))
loopdev=$(losetup --find --show --offset "$part_start" --sizelimit "$part_size" "$raw")

# syslinux reads ext4 without the 64bit/metadata_csum_seed/orphan_file features.
uuid=$(cat /proc/sys/kernel/random/uuid)
cat >"$root/etc/fstab" <<EOF
UUID=$uuid / ext4 errors=remount-ro 0 1
EOF
mkdir -p "$root/boot/extlinux"
cat >"$root/boot/extlinux/extlinux.conf" <<EOF
# /vmlinuz and /initrd.img follow the newest installed kernel (Debian keeps them up to date).
SERIAL 0 115200
DEFAULT archipelago
PROMPT 0
TIMEOUT 10
LABEL archipelago
    LINUX /vmlinuz
    INITRD /initrd.img
    APPEND root=UUID=$uuid ro console=tty0 console=ttyS0,115200n8 systemd.show_status=1 systemd.status_unit_format=name
EOF
mkfs.ext4 -q -F -L archipelago-root -U "$uuid" -O '^64bit,^metadata_csum_seed,^orphan_file' \
    -d "$root" "$loopdev"

mount "$loopdev" "$mnt"
extlinux --install "$mnt/boot/extlinux" >/dev/null
umount "$mnt"
losetup -d "$loopdev"
loopdev=""
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$raw" bs=440 count=1 conv=notrunc status=none

log "converting to qcow2"
rm -f "$image"
# Compressed clusters read as fast as plain ones; the guest's writes land uncompressed.
qemu-img convert -c -O qcow2 "$raw" "$image"
rm -f "$raw"
# The root tree is in the image now; keep only the package cache for the next build.
rm -rf --one-file-system "$root" "$mnt"

took=$(($(date +%s) - start))
log "done in ${took}s: $image ($(du -h "$image" | cut -f1) on disk, $image_size virtual)"
