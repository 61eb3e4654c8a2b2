#!/usr/bin/env bash
# Extra checks run by scripts/test.sh: the systemd units verify cleanly, and every shell
# script under scripts/ and image-recipe/ passes shellcheck.
# Usage: scripts/check-extra.sh        (from anywhere; exits non-zero on any finding)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

status=0
fail() {
    echo "check-extra: FAIL: $*" >&2
    status=1
}

# Install a missing tool from Debian's packages when we may (root), else say what to do.
need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "check-extra: installing $2" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" </dev/null >/dev/null ||
            { apt-get update -q </dev/null >/dev/null &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" </dev/null >/dev/null; } || true
    fi
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "check-extra: $1 is missing (apt-get install $2)" >&2
        exit 2
    fi
}

need systemd-analyze systemd
need shellcheck shellcheck

# --- systemd units ---------------------------------------------------------------------
# `systemd-analyze verify` insists that ExecStart binaries exist. The real paths
# (/usr/local/bin/archipelago, ...) only exist on a node, so verify copies of the units
# whose ExecStart points at a throw-away executable in a private temp folder.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '#!/bin/sh\nexit 0\n' >"$tmp/stub"
chmod 0755 "$tmp/stub"

units=()
for unit in image-recipe/*.service; do
    [ -e "$unit" ] || continue
    # Replace only the executable (first word after ExecStart=, with any prefix like -@+!).
    sed -E "s#^(ExecStart=[-@:+!]*)[^[:space:]]+#\\1$tmp/stub#" "$unit" >"$tmp/$(basename "$unit")"
    units+=("$tmp/$(basename "$unit")")
done

if [ "${#units[@]}" -eq 0 ]; then
    fail "no unit files under image-recipe/"
else
    # Clean output is required: any warning counts as a failure, not only a bad exit code.
    if ! out=$(cd "$tmp" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no "${units[@]}" 2>&1); then
        fail "systemd-analyze verify exited non-zero"
    fi
    if [ -n "$out" ]; then
        printf '%s\n' "$out" >&2
        fail "systemd-analyze verify printed findings"
    else
        echo "check-extra: systemd-analyze verify: ${#units[@]} unit(s) clean"
    fi
fi

# --- shellcheck ------------------------------------------------------------------------
# All *.sh files plus extension-less files whose first line is a sh/bash shebang.
scripts=()
while IFS= read -r -d '' f; do
    case "$f" in
    *.sh) scripts+=("$f") ;;
    *) if head -n 1 "$f" 2>/dev/null | grep -Eq '^#!.*[/ ](ba)?sh([[:space:]]|$)'; then scripts+=("$f"); fi ;;
    esac
done < <(find scripts image-recipe -path image-recipe/out -prune -o -type f -print0 2>/dev/null)

if [ "${#scripts[@]}" -eq 0 ]; then
    fail "no shell scripts found under scripts/ or image-recipe/"
elif shellcheck -x "${scripts[@]}"; then
    echo "check-extra: shellcheck: ${#scripts[@]} script(s) clean"
else
    fail "shellcheck reported problems"
fi

if [ "$status" -eq 0 ]; then
    echo "check-extra: all extra checks passed"
fi
exit "$status"
