#!/usr/bin/env bash
# bench/verify.sh — `pgark verify` (full, and incremental after one more backup) against
# pgBackRest 2.45 `verify`, both on a local posix/file repository holding the same data: a
# pgbench database (SCALE, default 20), a full backup, pgbench traffic, an incremental backup,
# with every WAL segment archived by both tools (archive_command runs both). Then:
#   pgark verify --full          reads and checks every pack and WAL file
#   pgBackRest verify            reads and checks every file of the repository (it has no incremental mode)
#   pgark verify                 right after --full: nothing new to read
#   more traffic + one more incremental backup by both, then
#   pgark verify                 reads only the new packs and WAL files
#   pgBackRest verify            everything again
# Throughput = stored bytes read / wall time (pgark: from its --json report; pgBackRest: the size
# of its repository, which it reads whole). Both with process-max = PROCESS_MAX (default 2 = the
# machine's cores) and zstd level 3. Results: results/verify.tsv (+ .meta.json), a summary on stderr.
#
# Runs its own PostgreSQL 15 (Debian packages) under BENCH_HOME=/var/tmp/pgark-bench-verify on
# port 55470, so it does not disturb the other benchmarks. Knobs: SCALE, PROCESS_MAX, TRAFFIC_S (30).
set -euo pipefail
export BENCH_HOME="${BENCH_HOME:-/var/tmp/pgark-bench-verify}"
export BENCH_PGPORT="${BENCH_PGPORT:-55470}"
export SCALE="${SCALE:-20}"
. "$(dirname "$0")/lib/env.sh"; . "$BENCH_DIR/lib/services.sh"; . "$BENCH_DIR/lib/measure.sh"
PROCESS_MAX="${PROCESS_MAX:-2}"; TRAFFIC_S="${TRAFFIC_S:-30}"
[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL runs as the postgres OS user)"

ensure_packages; bench_dirs
BENCH_BUILD="${BENCH_BUILD:-0}" install_pgark
pg_start
ensure_pgbench

# ---- the two repositories, fresh ----
PGARK_DIR="$BENCH_HOME/pgark-verify"; PGARK_CONF="$PGARK_DIR/pgark.yaml"
rm -rf "$PGARK_DIR" "$PGBR_DIR"
install -d -o postgres -g postgres "$PGARK_DIR" "$PGARK_DIR/repo" "$PGARK_DIR/spool" "$PGBR_DIR" "$PGBR_DIR/repo" "$PGBR_DIR/log" "$PGBR_DIR/lock" "$PGBR_DIR/spool"
cat >"$PGARK_CONF" <<EOF
repo: "file://$PGARK_DIR/repo"
spool-path: "$PGARK_DIR/spool"
pg-host: "$RUNDIR"
pg-port: $PGPORT
pg-user: postgres
process-max: $PROCESS_MAX
compression: zstd
log-format: text
EOF
cat >"$PGBR_DIR/pgbackrest.conf" <<EOF
[global]
repo1-type=posix
repo1-path=$PGBR_DIR/repo
repo1-retention-full=9999
compress-type=zst
compress-level=3
process-max=$PROCESS_MAX
start-fast=y
log-path=$PGBR_DIR/log
log-level-console=warn
log-level-file=info
lock-path=$PGBR_DIR/lock
spool-path=$PGBR_DIR/spool

[bench]
pg1-path=$PGDATA
pg1-port=$PGPORT
pg1-socket-path=$RUNDIR
EOF
chown postgres:postgres "$PGARK_CONF" "$PGBR_DIR/pgbackrest.conf"
pgark() { as_pg "$PGARK" "$@" --config "$PGARK_CONF"; }
pgbr() { as_pg pgbackrest --config="$PGBR_DIR/pgbackrest.conf" --stanza=bench "$@"; }

pgark init >/dev/null
pgbr stanza-create >/dev/null
set_archive_command "$PGARK wal-push %p --config $PGARK_CONF && pgbackrest --config=$PGBR_DIR/pgbackrest.conf --stanza=bench archive-push %p"
psqlc "select pg_switch_wal()" >/dev/null; wait_archiver

traffic() { log "pgbench -T $TRAFFIC_S"; as_pg pgbench -n -c 2 -T "$TRAFFIC_S" postgres >"$LOGDIR/pgbench-verify.log" 2>&1; psqlc "select pg_switch_wal()" >/dev/null; wait_archiver; }
backups() {  # backups full|incr
  log "backups ($1)"
  if [ "$1" = full ]; then pgark backup --full >/dev/null 2>&1; pgbr backup --type=full >/dev/null
  else pgark backup >/dev/null 2>&1; pgbr backup --type=incr >/dev/null; fi
  wait_archiver
}
backups full; traffic; backups incr; traffic

res_init verify
dir_bytes() { du -sb --apparent-size "$1" | cut -f1; }
# verify_pgark CASE ARGS...: stored bytes read (packs + WAL + manifests) from the JSON report
verify_pgark() {
  local case=$1; shift
  M_OUT="$TMPD/verify-pgark.out" measure --pg -- "$PGARK" verify --json "$@" --config "$PGARK_CONF"
  local bytes; bytes=$(grep '^{' "$TMPD/verify-pgark.out" | tail -1 | python3 -c 'import json,sys; r=json.load(sys.stdin)["read"]; print(r["packs"]["bytes"] + r["wal"]["bytes"] + r["manifests"]["bytes"])')
  res_row verify "$case" pgark "pgark verify $*" 1 "$(dir_bytes "$PGARK_DIR/repo")" "$bytes" "ok=$(grep -c '"ok":true' "$TMPD/verify-pgark.out")"
  printf '%s\tpgark verify %s\t%s\t%s\t%s\n' "$case" "$*" "$M_WALL" "$M_CPU" "$bytes"
}
verify_pgbr() {
  local case=$1 bytes; bytes=$(dir_bytes "$PGBR_DIR/repo")
  M_OUT="$TMPD/verify-pgbr.out" measure --pg -- pgbackrest --config="$PGBR_DIR/pgbackrest.conf" --stanza=bench --log-level-console=info verify
  res_row verify "$case" peer "pgbackrest verify" 1 "$bytes" "$bytes" "$(grep -o 'Results:.*' "$TMPD/verify-pgbr.out" | head -1 | tr '\t' ' ' | cut -c1-80)"
  printf '%s\tpgbackrest verify\t%s\t%s\t%s\n' "$case" "$M_WALL" "$M_CPU" "$bytes"
}

SUMMARY="$TMPD/verify-summary.txt"; : >"$SUMMARY"
verify_pgark full --full >>"$SUMMARY"
verify_pgbr full >>"$SUMMARY"
verify_pgark "incremental (nothing new)" >>"$SUMMARY"
traffic; backups incr
verify_pgark "incremental (one more backup)" >>"$SUMMARY"
verify_pgbr "after one more backup" >>"$SUMMARY"
write_meta verify scale="$SCALE" process_max="$PROCESS_MAX" traffic_s="$TRAFFIC_S" \
  pgark_repo_bytes="$(dir_bytes "$PGARK_DIR/repo")" pgbackrest_repo_bytes="$(dir_bytes "$PGBR_DIR/repo")" \
  pgdata_bytes="$(du -sb --exclude=pg_wal "$PGDATA" | cut -f1)"

log "results (wall s, cpu s, stored bytes read, MB/s):"
awk -F'\t' '{ printf "  %-30s %-28s wall %6.1f s  cpu %6.1f s  read %8.1f MB  %7.1f MB/s\n", $1, $2, $3, $4, $5 / 1e6, ($3 > 0 ? $5 / 1e6 / $3 : 0) }' "$SUMMARY" | tee "$RESULTS_DIR/verify.md" >&2
