#!/usr/bin/env bash
# bench/teardown.sh [--purge] — stops what the benchmarks started (PostgreSQL clusters via pg_ctl on our
# data directories, stunnel by its pid file, our Ceph RGW via scripts/objstores/stop-ceph-rgw.sh on our
# directory). --purge also deletes $BENCH_HOME (data sets, staged WAL, cold copy, RGW data; default
# /var/tmp/pgark-bench). Results in bench/results/ are kept.
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
. "$BENCH_DIR/lib/env.sh"; . "$BENCH_DIR/lib/services.sh"
for d in "$BENCH_HOME/replica" "$BENCH_HOME/pgdata-dataset" "$PGDATA"; do
  if [ -f "$d/postmaster.pid" ]; then log "stopping PostgreSQL in $d"; as_pg pg_ctl -D "$d" -m fast -w stop >/dev/null 2>&1 || true; fi
done
stop_stunnel
if [ "${1:-}" = --purge ]; then stop_rgw --purge; rm -rf "$BENCH_HOME" /dev/shm/pgark-bench; log "removed $BENCH_HOME"
else stop_rgw; fi
for cg in /sys/fs/cgroup/cpuacct/pgark-bench-*; do [ -d "$cg" ] && rmdir "$cg" 2>/dev/null || true; done
log "stopped"
