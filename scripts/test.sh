#!/usr/bin/env bash
# The single test command: starts the test engines, then runs formatting, lint, extra checks
# and the whole test suite. Exits non-zero if any step fails.
#
# Engines that were already answering are left running; the ones this run started are
# stopped at the end.
set -euo pipefail

cd "$(dirname "$0")/.."

SERVICES=(docker podman registry)
started=()
failed=()
begin=$SECONDS

step() { printf '\n==> %s\n' "$*" >&2; }

tests_log=$(mktemp)

teardown() {
    if [ "${#started[@]}" -gt 0 ]; then
        step "stopping test engines this run started: ${started[*]}"
        scripts/test-env.sh down "${started[@]}" || true
        started=()
    fi
}
trap 'teardown; rm -f "$tests_log"' EXIT

# run NAME COMMAND...: runs one step, records a failure instead of stopping.
run() {
    local name=$1 t0=$SECONDS
    shift
    step "$name: $*"
    if "$@"; then
        printf '==> %s ok (%ss)\n' "$name" $((SECONDS - t0)) >&2
    else
        printf '==> %s FAILED (%ss)\n' "$name" $((SECONDS - t0)) >&2
        failed+=("$name")
    fi
}

for s in "${SERVICES[@]}"; do
    scripts/test-env.sh status "$s" || started+=("$s")
done
step "test engines: scripts/test-env.sh up"
scripts/test-env.sh up
eval "$(scripts/test-env.sh env)"

run fmt cargo fmt --check
run clippy cargo clippy --all-targets -- -D warnings
if [ -f scripts/check-extra.sh ]; then
    run check-extra bash scripts/check-extra.sh
fi
# The test runner's output is also kept, to repeat its counts as the closing line.
run_tests() {
    local rc
    set +e
    "$@" 2>&1 | tee -a "$tests_log"
    rc=${PIPESTATUS[0]}
    set -e
    return "$rc"
}
: >"$tests_log"
# Supervisor-level tests run a second time against Podman's Docker-compatible API (the
# engine layer's own tests already cover both engines in one run).
PODMAN_SUITES=(supervisor operations real_servers tor)
if cargo nextest --version >/dev/null 2>&1; then
    run tests run_tests cargo nextest run --no-fail-fast
    filter=$(printf 'binary(%s) | ' "${PODMAN_SUITES[@]}")
    run tests-podman run_tests env ARCHIPELAGO_TEST_DOCKER_HOST="$ARCHIPELAGO_TEST_PODMAN_HOST" \
        cargo nextest run --no-fail-fast -E "${filter% | }"
    # The real servers and Tor once more on the machine's own dockerd, the engine node
    # owners run (its iptables-managed bridges, its storage driver).
    run tests-system-docker run_tests env ARCHIPELAGO_TEST_DOCKER_HOST="$ARCHIPELAGO_TEST_SYSTEM_DOCKER_HOST" \
        cargo nextest run --no-fail-fast -E 'binary(real_servers) | binary(tor)'

else
    run tests run_tests cargo test --no-fail-fast
    for suite in real_servers tor; do
        run "tests-system-docker-$suite" run_tests env \
            ARCHIPELAGO_TEST_DOCKER_HOST="$ARCHIPELAGO_TEST_SYSTEM_DOCKER_HOST" \
            cargo test --no-fail-fast --test "$suite"
    done
    for suite in "${PODMAN_SUITES[@]}"; do
        run "tests-podman-$suite" run_tests env \
            ARCHIPELAGO_TEST_DOCKER_HOST="$ARCHIPELAGO_TEST_PODMAN_HOST" \
            cargo test --no-fail-fast --test "$suite"
    done
fi

teardown

# "N passed, N failed" from nextest's summary line, or summed over cargo test's result lines.
counts=$(awk '
    /^ *Summary \[/ && / tests? run: / {
        p = 0; f = 0
        if (match($0, /[0-9]+ passed/)) p = substr($0, RSTART, RLENGTH) + 0
        if (match($0, /[0-9]+ failed/)) f = substr($0, RSTART, RLENGTH) + 0
        np += p; nf += f; nextest = 1
    }
    /^test result: / {
        if (match($0, /[0-9]+ passed/)) tp += substr($0, RSTART, RLENGTH) + 0
        if (match($0, /[0-9]+ failed/)) tf += substr($0, RSTART, RLENGTH) + 0
        seen = 1
    }
    END {
        if (nextest) print np + 0 " passed, " nf + 0 " failed"
        else if (seen) print tp + 0 " passed, " tf + 0 " failed"
    }
' "$tests_log")

if [ "${#failed[@]}" -gt 0 ]; then
    printf '\ntest.sh: FAILED steps: %s (%ss)\n' "${failed[*]}" $((SECONDS - begin)) >&2
    [ -z "$counts" ] || echo "tests: $counts"
    exit 1
fi
printf '\ntest.sh: all steps passed (%ss)\n' $((SECONDS - begin)) >&2
[ -z "$counts" ] || echo "tests: $counts"
