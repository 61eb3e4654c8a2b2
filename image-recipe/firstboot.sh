#!/bin/sh
# First-boot machine set-up for an archipelago node (run by archipelago-firstboot.service).
# Idempotent: every step checks before it acts, so a boot cut short just runs it again.
#
# The dashboard password: by default none is made. archipelago then opens first-run
# onboarding (a setup code on the console, the password chosen in the browser). For a
# headless install, either put a password file at /etc/archipelago/password before the
# first boot (a clear first line is replaced by its argon2 hash), or create
# /etc/archipelago/headless: then a random password is generated here and a root-only
# copy is left in /etc/archipelago/initial-password.
set -eu

DATA_DIR=/var/lib/archipelago
CONF_DIR=/etc/archipelago
PASSWORD_FILE="$CONF_DIR/password"

umask 077

# data_dir: state file, secrets and app volumes live here; only root may read it.
install -d -m 0700 -o root -g root "$DATA_DIR"
for sub in state secrets apps snapshots; do
    install -d -m 0700 -o root -g root "$DATA_DIR/$sub"
done

install -d -m 0755 -o root -g root "$CONF_DIR"
if [ -e "$CONF_DIR/headless" ] && [ ! -s "$PASSWORD_FILE" ]; then
    # 24 characters (18 random bytes, base64 without / and +).
    tmp="$PASSWORD_FILE.tmp.$$"
    pw=$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')
    printf '%s\n' "$pw" >"$tmp"
    chmod 0600 "$tmp"
    # archipelago serve replaces the clear password by its argon2 hash on first start; this
    # root-only copy is how the owner learns it. Delete it after `archipelago passwd`.
    cp -p "$tmp" "$CONF_DIR/initial-password"
    mv -f "$tmp" "$PASSWORD_FILE"
    echo "archipelago: headless install: dashboard password written to $CONF_DIR/initial-password"
fi

touch "$DATA_DIR/.firstboot-done"
sync
