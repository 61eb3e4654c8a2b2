#!/bin/sh
# Prints the node's DNS, time sync, firewall and apt sources (see archipelago-sysreport.service).
set -u
section() { printf '=== %s\n' "$*"; }
section "resolvectl query deb.debian.org"
timeout 15 resolvectl query deb.debian.org 2>&1
section "resolvectl status"
resolvectl status 2>&1
section "ls -l /etc/resolv.conf"
ls -l /etc/resolv.conf 2>&1
# A first sync takes a few seconds after the network is up: wait for it, 60 s at most.
for _ in $(seq 1 30); do
    [ "$(timedatectl show -p NTPSynchronized --value 2>/dev/null)" = yes ] && break
    sleep 2
done
section "timedatectl show"
timedatectl show 2>&1
section "systemctl is-active systemd-timesyncd"
systemctl is-active systemd-timesyncd 2>&1
section "timedatectl show-timesync"
timedatectl show-timesync 2>&1
section "nft list ruleset"
nft list ruleset 2>&1
section "apt sources"
cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null
section "unattended-upgrades"
apt-config dump 2>/dev/null | grep -E '^(APT::Periodic|Unattended-Upgrade::(Origins-Pattern|Automatic-Reboot))' || true
section "end"
