#!/usr/bin/env bash
# stop-all.sh — stop the object stores started by start-all.sh (each stop script kills only its own
# PIDs), concurrently. Idempotent. --purge also deletes their data dirs.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
"$HERE/stop-ceph-rgw.sh" "$@" & a=$!
"$HERE/stop-swift-s3api.sh" "$@" & b=$!
"$HERE/stop-azurite.sh" "$@" & c=$!
wait $a $b $c
exit 0
