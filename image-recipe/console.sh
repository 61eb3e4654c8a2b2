#!/bin/sh
# Tells the owner at the node's screen how to reach the dashboard: every address of the
# node and <hostname>.local (HTTPS, port 8443), the certificate's SHA-256 fingerprint and,
# while no password is set, the one-time setup code. Written to /etc/issue.d (shown above
# the login prompt) and, when it changed since last time, to the console.
# Run by archipelago-console.service once archipelago is ready, and every 30 s by its timer
# (so a new DHCP address or the end of onboarding shows up).
set -eu

DATA_DIR=${DATA_DIR:-/var/lib/archipelago}
PORT=${PORT:-8443}
ISSUE=${ISSUE:-/etc/issue.d/archipelago.issue}
STATE=${STATE:-/run/archipelago-console.txt}

# Only once archipelago answers: before that there is nothing to open.
if ! curl -fsS --max-time 5 http://127.0.0.1:8080/healthz >/dev/null 2>&1; then
    text="archipelago is starting; the dashboard address will be shown here when it is ready."
else
    host=$(hostname)
    urls="    https://$host.local:$PORT/"
    # One line per global address: IPv4 as is, IPv6 in brackets.
    # (not those of the node's own container bridges).
    for a in $(ip -o addr show scope global |
        awk '$2 !~ /^(docker|br-|veth|podman|cni)/ {split($4, p, "/"); print p[1]}'); do
        case "$a" in
        *:*) urls="$urls
    https://[$a]:$PORT/" ;;
        *) urls="$urls
    https://$a:$PORT/" ;;
        esac
    done
    text="archipelago is ready. Open the dashboard from a browser on your network:
$urls"
    cert="$DATA_DIR/tls/cert.pem"
    if [ -r "$cert" ]; then
        fp=$(openssl x509 -in "$cert" -noout -fingerprint -sha256 | sed 's/^.*=//')
        text="$text
The certificate is self-signed: accept it when its SHA-256 fingerprint is
    $fp"
    fi
    if [ -s "$DATA_DIR/setup-code" ]; then
        code=$(head -n 1 "$DATA_DIR/setup-code")
        text="$text
No password is set yet. The dashboard asks for this setup code to set one:
    setup code: $code"
    fi
fi

old=$(cat "$STATE" 2>/dev/null || true)
[ "$text" = "$old" ] && exit 0
printf '%s\n' "$text" >"$STATE"
mkdir -p "$(dirname "$ISSUE")"
# agetty expands backslash escapes in issue files; none of ours has any.
printf '%s\n\n' "$text" >"$ISSUE.tmp"
mv -f "$ISSUE.tmp" "$ISSUE"
printf '\n%s\n\n' "$text" >/dev/console 2>/dev/null || true
# Running agettys print the new text with their next prompt.
agetty --reload 2>/dev/null || true
