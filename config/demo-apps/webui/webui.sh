#!/bin/sh
# Demo web UI: busybox httpd on 127.0.0.1:18280; stops at once on SIGTERM.
httpd -f -v -p 127.0.0.1:18280 -h /www &
httpd_pid=$!
trap 'kill "$httpd_pid"; exit 0' TERM INT
echo "web UI on http://127.0.0.1:18280/"
wait "$httpd_pid"
