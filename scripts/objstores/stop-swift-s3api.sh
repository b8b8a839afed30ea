#!/usr/bin/env bash
# stop-swift-s3api.sh — stop what start-swift-s3api.sh started: only the PIDs in its pid file, and
# only while each still runs a swift-*-server on this instance's config. Idempotent.
# --purge also deletes the instance dir.
set -uo pipefail
BASE=${PGARK_TEST_HOME:-/var/tmp/pgark-test}
DIR=${PGARK_SWIFT_DIR:-$BASE/swift}
PIDFILE=$DIR/swift.pid
log() { echo "[stop-swift-s3api] $*" >&2; }
is_ours() {
  local pid=$1
  [ -n "$pid" ] && [ -e "/proc/$pid" ] || return 1
  tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -qE "swift-(account|container|object|proxy)-server $DIR/etc/"
}
if [ -s "$PIDFILE" ]; then
  mapfile -t pids < "$PIDFILE"
  # TERM them all at once, then wait: the four are independent
  for pid in "${pids[@]}"; do is_ours "$pid" && kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do is_ours "$pid" || break; sleep 0.1; done
    is_ours "$pid" && { log "pid $pid still alive after 5 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null; sleep 0.2; }
  done
  log "stopped pids ${pids[*]}"
  rm -f "$PIDFILE"
else log "not running (no $PIDFILE)"; fi
if [ "${1:-}" = "--purge" ]; then rm -rf "$DIR"; log "removed $DIR"; fi
exit 0
