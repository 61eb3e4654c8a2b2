#!/usr/bin/env bash
# The `faults` command: the slow part of the fault suite (docs/reliability.md).
#
#   1. tests/faults.rs with many kill points (ARCHIPELAGO_FAULT_ITERATIONS, default 12)
#      against the real binary and the test engines;
#   2. each cargo-fuzz target in fuzz/ for a fixed time (default 60 s): manifest, memory,
#      rpc. A crash, a panic or a hang (libFuzzer's -timeout) fails the run.
#
# usage: scripts/faults.sh [SECONDS_PER_FUZZ_TARGET]
#   FAULTS_SKIP_TESTS=1   only fuzz;  FAULTS_SKIP_FUZZ=1   only the fault tests
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; without nightly the
# stable one is used with RUSTC_BOOTSTRAP=1. Exits non-zero if any step fails.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-60}
iterations=${ARCHIPELAGO_FAULT_ITERATIONS:-12}
failed=()
summary=()

step() { printf '\n==> %s\n' "$*" >&2; }

if [ "${FAULTS_SKIP_TESTS:-0}" != 1 ]; then
    step "test engines: scripts/test-env.sh up"
    scripts/test-env.sh up
    eval "$(scripts/test-env.sh env)"
    step "fault tests, $iterations kill points each for install and uninstall"
    t0=$SECONDS
    if ARCHIPELAGO_FAULT_ITERATIONS=$iterations \
        cargo test --test faults -- --nocapture --test-threads 1; then
        summary+=("fault tests: ok ($((SECONDS - t0))s)")
    else
        summary+=("fault tests: FAILED ($((SECONDS - t0))s)")
        failed+=(fault-tests)
    fi
fi

if [ "${FAULTS_SKIP_FUZZ:-0}" != 1 ]; then
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "faults.sh: cargo-fuzz is missing; install it with: cargo install cargo-fuzz" >&2
        exit 1
    fi
    toolchain=()
    if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        toolchain=(+nightly)
    else
        export RUSTC_BOOTSTRAP=1
    fi
    cd "$root/fuzz"
    step "building fuzz targets: cargo ${toolchain[*]} fuzz build -O"
    cargo "${toolchain[@]}" fuzz build -O
    for target in manifest memory rpc; do
        corpus="corpus/$target"
        mkdir -p "$corpus" "artifacts/$target"
        if [ -d "seeds/$target" ]; then
            cp -n seeds/"$target"/* "$corpus"/ 2>/dev/null || true
        fi
        if [ "$target" = manifest ]; then
            for m in "$root"/apps/*/manifest.yml; do
                cp -n "$m" "$corpus/$(basename "$(dirname "$m")").yml"
            done
        fi
        log=$(mktemp)
        step "fuzzing $target for ${seconds}s"
        if cargo "${toolchain[@]}" fuzz run -O "$target" "$corpus" -- \
            -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
            -max_len=8192 -print_final_stats=1 >"$log" 2>&1; then
            result=ok
        else
            result=FAILED
            failed+=("fuzz-$target")
            tail -n 40 "$log" >&2
        fi
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
        cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 || true)
        summary+=("fuzz $target: $result, ${execs:-?} execs in ${seconds}s (${rate:-?}/s), ${cov:-cov: ?}, corpus $(find "$corpus" -type f | wc -l) inputs")
        rm -f "$log"
    done
    cd "$root"
fi

printf '\n' >&2
for line in "${summary[@]}"; do
    echo "faults: $line"
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "faults: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "faults: all passed"
