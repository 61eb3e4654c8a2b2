#!/bin/sh
# Demo bitcoind: reads -rpcauth and -rpcport, "loads the block index" for 5 s (so lnd's
# wait for a healthy bitcoind shows), then serves the "RPC" port with busybox httpd on
# loopback, counts blocks into /data, and takes 20 s to flush when asked to stop.
rpcport=18332
user=none
for arg in "$@"; do
    case "$arg" in
    -rpcauth=*) user=${arg#-rpcauth=}; user=${user%%:*} ;;
    -rpcport=*) rpcport=${arg#-rpcport=} ;;
    esac
done

trap 'echo "shutdown requested while loading"; exit 0' TERM INT
height=$(cat /data/height 2>/dev/null || echo 0)
echo "bitcoind demo starting: rpcauth user $user, loading block index (height $height)"
sleep 5 &
wait $!

mkdir -p /www /data
echo '{"result":{"chain":"demo"},"error":null,"id":null}' >/www/index.html
httpd -f -p "127.0.0.1:$rpcport" -h /www &
httpd_pid=$!

trap 'echo "shutdown requested: flushing chainstate to disk (20 s)"; sleep 20; kill "$httpd_pid"; echo "shutdown done"; exit 0' TERM INT

echo "block index loaded; rpc on 127.0.0.1:$rpcport"
while true; do
    height=$((height + 1))
    echo "$height" >/data/height
    if [ $((height % 10)) -eq 0 ]; then
        echo "UpdateTip: height=$height"
    fi
    sleep 1 &
    wait $!
done
