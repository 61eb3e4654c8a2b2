#!/bin/sh
# Puts the ports the catalog's apps publish on the host (`ports: ["HOST:CONTAINER/proto"]`
# in each manifest under apps_dir) into the firewall's sets, and 22 into admin_tcp when the
# SSH server is enabled. Run by archipelago-firewall.service before archipelago starts (and
# again on every restart of archipelago). Ports bound to 127.0.0.1 need no rule and are
# skipped. Prints what it allowed.
set -eu

APPS_DIR=${APPS_DIR:-$(sed -n 's/^apps_dir:[[:space:]]*\([^#[:space:]]*\).*/\1/p' /etc/archipelago/config.yml)}
APPS_DIR=${APPS_DIR:-/usr/share/archipelago/apps}
TABLE="inet archipelago"

nft list table inet archipelago >/dev/null 2>&1 || nft -f /etc/nftables.conf

# Every port mapping of the manifests, flow style (ports: ["8333:8333/tcp", ...]) or block
# style (ports:\n  - 8333:8333/tcp), skipping the onion: section's (Tor publishes those).
mappings=$(cat "$APPS_DIR"/*/manifest.yml 2>/dev/null | awk '
    /^onion:/ { onion = 1; next }
    /^[^[:space:]#]/ { onion = 0 }
    onion { next }
    /^[[:space:]]+ports:[[:space:]]*\[/ { sub(/^[^[]*\[/, ""); sub(/\].*/, ""); gsub(/[",'"'"']/, " "); print; next }
    /^[[:space:]]+ports:[[:space:]]*$/ { block = 1; next }
    block && /^[[:space:]]+-[[:space:]]/ { sub(/^[[:space:]]+-[[:space:]]*/, ""); gsub(/[",'"'"']/, " "); print; next }
    { block = 0 }
' | tr ' ' '\n' | grep -E '^[0-9.]*:?[0-9]+:[0-9]+(/(tcp|udp))?$' | sort -u || true)

tcp="" udp=""
for m in $mappings; do
    proto=tcp
    case "$m" in */udp) proto=udp ;; esac
    m=${m%/*}
    # HOST:CONTAINER or IP:HOST:CONTAINER.
    rest=${m%:*}
    port=${rest##*:}
    ip=${rest%"$port"}
    case "$ip" in 127.*) continue ;; esac
    if [ "$proto" = udp ]; then udp="$udp${udp:+, }$port"; else tcp="$tcp${tcp:+, }$port"; fi
done

admin=""
if systemctl -q is-enabled ssh.service 2>/dev/null; then admin=22; fi

{
    echo "flush set $TABLE app_tcp"
    echo "flush set $TABLE app_udp"
    echo "flush set $TABLE admin_tcp"
    [ -z "$tcp" ] || echo "add element $TABLE app_tcp { $tcp }"
    [ -z "$udp" ] || echo "add element $TABLE app_udp { $udp }"
    [ -z "$admin" ] || echo "add element $TABLE admin_tcp { $admin }"
} | nft -f -
echo "firewall: app ports tcp {${tcp}} udp {${udp}} ssh {${admin}} open"
