#!/usr/bin/env bash
# The first-run demo: starts the private test dockerd, builds archipelago and runs it on
# config/demo.yml, a catalog of three small busybox apps (bitcoind, lnd, webui) built on
# this machine. No image registry is needed.
#
# usage: scripts/demo.sh
#
# State (app data, secrets, the dashboard password) lives in /tmp/archipelago-demo, or in
# the folder named by ARCHIPELAGO_DEMO_DIR. Ctrl-C stops the supervisor; the app containers
# keep running, and the next run adopts them. `scripts/test-env.sh down` removes them and
# stops the test engines.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

DEFAULT_DEMO_DIR=/tmp/archipelago-demo
DEMO_DIR=$(realpath -m "${ARCHIPELAGO_DEMO_DIR:-$DEFAULT_DEMO_DIR}")
CONFIG=config/demo.yml
URL=http://127.0.0.1:8080/

step() { printf '\n==> %s\n' "$*" >&2; }
die() {
    printf 'demo: error: %s\n' "$*" >&2
    exit 1
}

# Escapes text for the replacement side of a sed `s|…|…|` command.
sed_escape() { printf '%s' "$1" | sed 's/[&|\\]/\\&/g'; }

step "test engines: scripts/test-env.sh up"
scripts/test-env.sh up

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || die "cargo is missing: install Rust (https://rustup.rs) first"
step "building: cargo build --release"
cargo build --release

mkdir -p "$DEMO_DIR"
chmod 700 "$DEMO_DIR"
PASSWORD_FILE="$DEMO_DIR/password"
# serve keeps only an argon2 hash in the password file (it hashes a clear one on start), so
# the demo keeps the clear password beside it, owner-only, to print it on every run.
CLEAR_FILE="$DEMO_DIR/password.txt"
if [ ! -s "$CLEAR_FILE" ]; then
    # shellcheck disable=SC2016 # a literal `$argon2` at the start of the line
    if [ -s "$PASSWORD_FILE" ] && ! head -n1 "$PASSWORD_FILE" | grep -q '^\$argon2'; then
        # A demo folder from before passwords were hashed.
        (umask 077 && head -n1 "$PASSWORD_FILE" >"$CLEAR_FILE")
    else
        # head ends first, so no pipe stage dies of SIGPIPE; 48 random bytes leave well over
        # 24 alphanumeric characters after base64.
        password=$(head -c 48 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9' | cut -c1-24)
        (umask 077 && printf '%s\n' "$password" >"$CLEAR_FILE")
        rm -f "$PASSWORD_FILE"
    fi
fi
password=$(head -n1 "$CLEAR_FILE")
if [ ! -s "$PASSWORD_FILE" ]; then
    (umask 077 && printf '%s\n' "$password" >"$PASSWORD_FILE")
fi

# Another folder than the default: a copy of the config pointing there.
if [ "$DEMO_DIR" != "$DEFAULT_DEMO_DIR" ]; then
    sed -e "s|$DEFAULT_DEMO_DIR|$(sed_escape "$DEMO_DIR")|g" \
        -e "s|^apps_dir: demo-apps\$|apps_dir: $(sed_escape "$ROOT/config/demo-apps")|" \
        "$CONFIG" >"$DEMO_DIR/demo.yml"
    CONFIG=$DEMO_DIR/demo.yml
fi

target/release/archipelago validate --config "$CONFIG" >/dev/null

cat >&2 <<MSG

==> archipelago demo
    dashboard: $URL
    password:  $password   (kept in $CLEAR_FILE; serve keeps its hash)
    config:    $CONFIG
    data:      $DEMO_DIR/data

    bitcoind, lnd and webui are built from busybox and started on first run; lnd waits
    until bitcoind is healthy. Stopping bitcoind takes about 20 s (it "flushes").
    The webui app's page is at http://127.0.0.1:18280/.

    Ctrl-C stops the supervisor only: the app containers keep running and the next run
    adopts them. scripts/test-env.sh down removes them and stops the test engines.

MSG

exec target/release/archipelago serve --config "$CONFIG"
