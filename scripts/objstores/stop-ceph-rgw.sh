#!/usr/bin/env bash
# stop-ceph-rgw.sh — stop what start-ceph-rgw.sh started: only the PIDs in its pid file (radosgw,
# then the OSD, then the monitor), and only while each still is a ceph-mon/ceph-osd/radosgw
# process. Idempotent. --purge also deletes the cluster dir.
set -uo pipefail
BASE=${PGARK_TEST_HOME:-/var/tmp/pgark-test}
DIR=${PGARK_RGW_DIR:-$BASE/ceph-rgw}
PIDFILE=$DIR/ceph-rgw.pid
log() { echo "[stop-ceph-rgw] $*" >&2; }
is_ours() {
  local pid=$1 exe
  [ -n "$pid" ] && [ -e "/proc/$pid" ] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  case "${exe% (deleted)}" in */ceph-mon|*/ceph-osd|*/radosgw) return 0;; *) return 1;; esac
}
stop_pid() {
  local pid=$1 i
  is_ours "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 100); do is_ours "$pid" || { log "stopped pid $pid"; return 0; }; sleep 0.1; done
  log "pid $pid still alive after 10 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true
  for i in $(seq 1 30); do is_ours "$pid" || return 0; sleep 0.1; done
}
if [ -s "$PIDFILE" ]; then
  mapfile -t pids < "$PIDFILE"
  # reverse order of start: rgw, osd, mon (an OSD whose mon is gone waits before exiting)
  for ((i=${#pids[@]}-1; i>=0; i--)); do stop_pid "${pids[i]}"; done
  rm -f "$PIDFILE"
else
  log "not running (no $PIDFILE)"
fi
if [ "${1:-}" = "--purge" ]; then rm -rf "$DIR"; log "removed $DIR"; fi
exit 0
