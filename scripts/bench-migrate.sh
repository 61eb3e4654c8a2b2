#!/usr/bin/env bash
# Times one migration (docs/performance.md, "Migration"): a container run by hand with a
# data folder of SIZE_GIB GiB (default 4) on the private test dockerd is imported with
# --move, then adopted by a running `serve`. Prints the wall time of each step.
#
# usage: scripts/bench-migrate.sh [SIZE_GIB]      (after scripts/test-env.sh up and
#                                                  cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-4}
bin=$PWD/target/release/archipelago
host=unix:///tmp/archipelago-test/docker.sock
[ -x "$bin" ] || { echo "bench-migrate: build first: cargo build --release" >&2; exit 2; }
dir=$(mktemp -d /tmp/archipelago-bench-migrate.XXXXXX)
name=bench-migrate-$$
cleanup() {
    if [ -n "${pid:-}" ]; then kill "$pid" 2>/dev/null || true; fi
    docker -H "$host" rm -f "$name" "archipelago-$name" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
mkdir -p "$dir/old/chain" "$dir/apps"
for ((i = 0; i < size; i++)); do
    head -c 1073741824 /dev/urandom >"$dir/old/chain/blk$i.dat"
done
echo "data folder: $(du -sh "$dir/old/chain" | cut -f1)"
echo bench-password >"$dir/password"
port=$((20000 + $$ % 10000))
cat >"$dir/config.yml" <<CFG
listen: 127.0.0.1:$port
apps_dir: apps
data_dir: data
engine:
  host: $host
  default_network: none
reconcile_interval: 5s
default_apps: []
auth:
  password_file: password
CFG
docker -H "$host" run -d --name "$name" --restart unless-stopped -m 64m --network none \
    -e NODE_PASSWORD=bench-secret -v "$dir/old/chain:/data" archipelago-test/busybox:latest \
    sh -c 'while true; do date >> /data/log; sleep 1; done' >/dev/null
started=$(docker -H "$host" inspect -f '{{.State.StartedAt}}' "$name")
ms() { echo $((($(date +%s%N) - $1) / 1000000)); }
t=$(date +%s%N)
"$bin" import container "$name" --config "$dir/config.yml" --move >/dev/null
echo "import --move: $(ms "$t") ms"
"$bin" serve --config "$dir/config.yml" >"$dir/serve.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
done
t=$(date +%s%N)
ARCHIPELAGO_PASSWORD=bench-password "$bin" adopt "$name" --app "$name" \
    --url "http://127.0.0.1:$port" >/dev/null
echo "adopt (login, operation, polled every 250 ms): $(ms "$t") ms"
now=$(docker -H "$host" inspect -f '{{.State.StartedAt}}' "archipelago-$name")
if [ "$now" = "$started" ]; then
    echo "not restarted: StartedAt $now"
else
    echo "RESTARTED: $started -> $now"
    exit 1
fi
