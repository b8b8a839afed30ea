#!/usr/bin/env bash
# stop-azurite.sh — stop the Azurite started by start-azurite.sh: only the PID in its pid file, and
# only while that PID still is azurite's node process on our data dir. Idempotent.
# --purge also deletes its data dir.
set -uo pipefail
BASE=${PGARK_TEST_HOME:-/var/tmp/pgark-test}
DIR=${PGARK_AZURITE_DIR:-$BASE/azurite}
PIDFILE=$DIR/azurite.pid
log() { echo "[stop-azurite] $*" >&2; }
is_ours() {
  local pid=$1
  [ -n "$pid" ] && [ -e "/proc/$pid" ] || return 1
  tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -qF "azurite/dist/src/blob/main.js --blobHost 127.0.0.1 --blobPort "
  tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -qF -- "--location $DIR/data"
}
if [ -s "$PIDFILE" ]; then
  pid=$(cat "$PIDFILE")
  if is_ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do is_ours "$pid" || break; sleep 0.1; done
    is_ours "$pid" && { log "pid $pid still alive after 5 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null; sleep 0.2; }
    log "stopped pid $pid"
  else log "pid $pid is not our azurite: nothing to stop"; fi
  rm -f "$PIDFILE"
else log "not running (no $PIDFILE)"; fi
if [ "${1:-}" = "--purge" ]; then rm -rf "$DIR"; log "removed $DIR"; fi
exit 0
