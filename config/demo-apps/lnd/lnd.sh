#!/bin/sh
# Demo lnd: connects to the demo bitcoind's RPC port with the password it was given, then
# marks itself synced (/tmp/synced, which the health probe checks) and keeps watching.
trap 'echo "lnd demo stopping"; exit 0' TERM INT

if [ -z "$BITCOIND_RPCPASS" ]; then
    echo "no BITCOIND_RPCPASS given" >&2
    exit 1
fi
tries=0
until wget -q -O /dev/null "http://$BITCOIND_RPCHOST/"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 30 ]; then
        echo "cannot reach bitcoind at $BITCOIND_RPCHOST" >&2
        exit 1
    fi
    sleep 1
done
echo "connected to bitcoind at $BITCOIND_RPCHOST as $BITCOIND_RPCUSER (rpc password of ${#BITCOIND_RPCPASS} characters)"
touch /tmp/synced
while true; do
    if ! wget -q -O /dev/null "http://$BITCOIND_RPCHOST/"; then
        echo "lost bitcoind at $BITCOIND_RPCHOST"
        rm -f /tmp/synced
        exit 1
    fi
    sleep 5 &
    wait $!
done
