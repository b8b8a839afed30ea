#!/usr/bin/env bash
# bench/wal-archive.sh — WAL archiving and replay: pgark vs pgBackRest 2.45 and barman-cloud 3.4, same Ceph RGW.
#
#   push     WALSEGS (50) real 16 MiB segments of pgbench traffic, staged once (archive_command = cp into a
#            pg_wal-like directory with archive_status/*.ready, laid out like a data directory), are archived
#            by running each tool's archive_command per segment, in order, renaming .ready -> .done after
#            success, exactly like PostgreSQL's archiver (archive-loop.sh). The destination is emptied before
#            each run. Variants: pgark wal-push (defaults: zstd, archive-push-ahead 16, process-max 4), pgark
#            --process-max 2, pgBackRest archive-push sync and async (process-max 2, zst; through stunnel TLS:
#            2.45 speaks only https to S3), barman-cloud-wal-archive (plain http). Rounds alternate the tools.
#   calls    per-call latency of `pgark wal-push`: a call whose segment was uploaded ahead (marker hit), an
#            already-archived segment without push-ahead (S3 SDK load + LIST), with and without a usable
#            V8 compile cache; peers: pgBackRest archive-push of an archived segment, node -e 0
#   live     PostgreSQL's own archiver running the tool while `pgbench -c 4 -j 2 -T $LIVE_T` (scale $SCALE)
#            writes WAL: segments generated vs archived during the run, backlog (.ready) at the end, drain time
#   replay   a cold copy of the cluster, taken just before the staged WAL, started with recovery.signal and
#            restore_command = pgark wal-fetch / pgBackRest archive-get (async, process-max 2) /
#            barman-cloud-wal-restore, replaying the staged segments from the archive the push runs left:
#            seconds from pg_ctl start until the server is up (all WAL replayed, promoted)
#
# Results: bench/results/wal-archive[-quick].{tsv,json,md} (+ -calls.tsv, -live.tsv side tables).
# Usage: bench/wal-archive.sh [--quick] [--only push,calls,live,replay] [--runs N] [--keep]
#   --quick   20 segments, 2 rounds, live 20 s, 5 calls per latency case
# Env knobs: WALSEGS, SCALE (50), LIVE_T (60), LIVE_RUNS (1), LIVE_VARIANTS ("pgark pgbr-async2 pgbr-sync barman"),
#   PUSH_VARIANTS ("pgark pgbr-sync pgark-pm2 pgbr-async2 barman"), REPLAY_VARIANTS ("pgark pgbr-async2 barman"),
#   CALLS_N (10), RESTAGE=1 (stage the WAL again), BENCH_HOME, BENCH_BUILD, RES_NAME.
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
. "$BENCH_DIR/lib/env.sh"; . "$BENCH_DIR/lib/services.sh"; . "$BENCH_DIR/lib/measure.sh"

QUICK=0; ONLY="push,calls,live,replay"; KEEP=0; RUNS_ARG=""
parse_bench_args "$@"
if [ "$QUICK" = 1 ]; then
  WALSEGS=${WALSEGS:-20}; RUNS=${RUNS_ARG:-2}; LIVE_T=${LIVE_T:-20}; CALLS_N=${CALLS_N:-5}; RES_NAME=${RES_NAME:-wal-archive-quick}
else
  WALSEGS=${WALSEGS:-50}; RUNS=${RUNS_ARG:-$RUNS}; LIVE_T=${LIVE_T:-60}; CALLS_N=${CALLS_N:-10}; RES_NAME=${RES_NAME:-wal-archive}
fi
LIVE_RUNS=${LIVE_RUNS:-1}
LIVE_VARIANTS=${LIVE_VARIANTS:-"pgark pgbr-async2 pgbr-sync barman"}
PUSH_VARIANTS=${PUSH_VARIANTS:-"pgark pgbr-sync pgark-pm2 pgbr-async2 barman"}
REPLAY_VARIANTS=${REPLAY_VARIANTS:-"pgark pgbr-async2 barman"}
SEG=16777216
has() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

STAGE="$BENCH_HOME/walstage"          # looks like a data directory: pg_wal/, global/pg_control
WALDIR="$STAGE/pg_wal"
COLD="$BENCH_HOME/coldcopy"           # the cluster, stopped just before the staged WAL begins
REPLICA="$BENCH_HOME/replica"
CONF="$BENCH_HOME/conf"
SPOOL="$BENCH_HOME/spool"
PGARK_STAGED="s3://$BUCKET_PGARK/walstaged"
PGARK_LIVE="s3://$BUCKET_PGARK/walive"
PGBR_CONF="$PGBR_DIR/pgbackrest.conf"
BARMAN_ENV="AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION=$AWS_DEFAULT_REGION"

replica_stop() {
  if [ -f "$REPLICA/postmaster.pid" ] && as_pg pg_ctl -D "$REPLICA" status >/dev/null 2>&1; then
    as_pg pg_ctl -D "$REPLICA" -m immediate -w stop >/dev/null 2>&1 || true
  fi
}
cleanup() {
  local rc=$?
  replica_stop; rm -rf "$REPLICA"
  if pg_running 2>/dev/null; then set_archive_command '/bin/true' 2>/dev/null || true; fi
  cg_cleanup
  if [ "$KEEP" != 1 ]; then pg_stop || true; stop_stunnel || true; stop_rgw || true; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_dirs; ensure_packages; install_pgark
start_rgw; start_stunnel; pg_start; ensure_pgbench
install -d -o postgres -g postgres "$CONF" "$SPOOL" "$PGBR_DIR" "$PGBR_DIR/log" "$PGBR_DIR/lock" "$PGBR_DIR/spool"

# ---------------------------------------------------------------------------------------------
# staging: WALSEGS full segments of pgbench traffic, and a cold copy of the cluster taken right before them
sysid() { as_pg pg_controldata "$1" | awk -F': *' '/Database system identifier/{print $2}'; }
stage_wal() {
  local sid have; sid=$(sysid "$PGDATA")
  have=$(ls "$WALDIR" 2>/dev/null | grep -cE '^[0-9A-F]{24}$' || true)
  if [ "${RESTAGE:-0}" != 1 ] && [ "$have" -ge "$WALSEGS" ] && [ "$(cat "$STAGE/sysid" 2>/dev/null)" = "$sid" ] &&
     [ -f "$COLD/PG_VERSION" ] && [ "$(cat "$STAGE/staged-segs" 2>/dev/null)" -ge "$WALSEGS" ]; then
    log "reusing $have staged segments in $WALDIR and the cold copy $COLD"; return 0
  fi
  log "staging $WALSEGS segments of pgbench traffic (pgbench -c 4 -j 2), cold copy first"
  rm -rf "$STAGE" "$COLD"; install -d -o postgres -g postgres "$STAGE" "$WALDIR" "$WALDIR/archive_status" "$STAGE/global"
  set_archive_command "test ! -f $WALDIR/%f && cp %p $WALDIR/%f"
  psqlc "checkpoint"; psqlc "select pg_switch_wal()" >/dev/null; wait_archiver
  # the cold copy: a cleanly stopped cluster. With archive_mode on, the shutdown switches to a new segment first,
  # so its shutdown checkpoint (the copy's redo point) starts the first segment staged below.
  pg_stop
  install -d -o postgres -g postgres -m 700 "$COLD"
  tar -C "$PGDATA" --exclude='./pg_wal/0*' --exclude='./pg_wal/archive_status/*' --exclude=./postmaster.pid -cf - . | tar -C "$COLD" -xf -
  pg_start; wait_archiver
  rm -f "$WALDIR"/0*      # everything up to the shutdown's switch: not part of the staged set
  local start; start=$(psqlc "select pg_current_wal_lsn()")
  while [ "$(psqlc "select pg_wal_lsn_diff(pg_current_wal_lsn(), '$start') > $(( (WALSEGS + 2) * SEG ))")" != t ]; do
    as_pg pgbench -n -c 4 -j 2 -T 5 postgres >/dev/null 2>&1
  done
  psqlc "select pg_switch_wal()" >/dev/null; wait_archiver
  ls "$WALDIR" | grep -E '^[0-9A-F]{24}$' | sort | tail -n +$((WALSEGS + 1)) | while read -r f; do rm -f "$WALDIR/$f"; done
  cp "$PGDATA/global/pg_control" "$STAGE/global/"; echo 15 >"$STAGE/PG_VERSION"   # pgBackRest async: pg1-path/pg_wal
  chown -R postgres:postgres "$STAGE"
  echo "$sid" >"$STAGE/sysid"; echo "$WALSEGS" >"$STAGE/staged-segs"
  set_archive_command '/bin/true'
  log "staged $(ls "$WALDIR" | grep -cE '^[0-9A-F]{24}$') segments: $(ls "$WALDIR" | grep -E '^[0-9A-F]{24}$' | sort | sed -n '1p;$p' | tr '\n' ' ')"
}
pgark_quiet() {  # wait for the bench pgark's background processes (wal-push-ahead lingers ~10 s for new WAL, wal-prefetch ~3 s)
  local i pat="$BENCH_HOME/pgark/dist/pgark\.mjs wal-(push-ahead|prefetch)"   # not other pgark builds (test runs)
  for i in $(seq 300); do pgrep -u postgres -f "$pat" >/dev/null || return 0; sleep 0.1; done
  log "pgark background processes still running after 30 s: $(pgrep -u postgres -af "$pat" | tr '\n' ';')"
}
staged_ready() {  # .ready markers like PostgreSQL's, for the first WALSEGS staged segments
  pgark_quiet   # a lingering pgark pusher would take the new .ready files
  rm -f "$WALDIR"/archive_status/*
  ls "$WALDIR" | grep -E '^[0-9A-F]{24}$' | sort | head -n "$WALSEGS" | while read -r f; do touch "$WALDIR/archive_status/$f.ready"; done
  chown -R postgres:postgres "$WALDIR"
}
stage_wal

# ---------------------------------------------------------------------------------------------
# configuration of the three tools
pgark_conf() {  # pgark_conf FILE REPO SPOOLDIR
  cat >"$1" <<EOF
# pgark settings for bench/wal-archive.sh (everything else: defaults)
repo: $2
s3-endpoint: $S3_URL
s3-access-key-id: $AWS_ACCESS_KEY_ID
s3-secret-access-key: $AWS_SECRET_ACCESS_KEY
spool-path: $3
pg-host: $RUNDIR
pg-port: $PGPORT
pg-user: postgres
EOF
  chown postgres:postgres "$1"; chmod 600 "$1"
}
pgark_conf "$CONF/pgark-staged.yaml" "$PGARK_STAGED" "$SPOOL/staged"
pgark_conf "$CONF/pgark-live.yaml" "$PGARK_LIVE" "$SPOOL/live"
for c in staged live; do   # init is idempotent for the same cluster; a repository of an older cluster is emptied first
  if ! as_pg env PGARK_CONFIG="$CONF/pgark-$c.yaml" "$PGARK" init >"$LOGDIR/pgark-init-$c.log" 2>&1; then
    grep -q 'another cluster' "$LOGDIR/pgark-init-$c.log" || die "pgark init failed: $(tail -2 "$LOGDIR/pgark-init-$c.log")"
    r=$(awk '/^repo:/{print $2}' "$CONF/pgark-$c.yaml"); s3_rm "$r/"
    as_pg env PGARK_CONFIG="$CONF/pgark-$c.yaml" "$PGARK" init >"$LOGDIR/pgark-init-$c.log" 2>&1 || die "pgark init failed: $(tail -2 "$LOGDIR/pgark-init-$c.log")"
  fi
done

cat >"$PGBR_CONF" <<EOF
[global]
$(pgbr_s3_repo_lines /repo)
repo1-retention-full=9999
compress-type=zst
archive-async=n
log-path=$PGBR_DIR/log
log-level-console=warn
log-level-file=info
lock-path=$PGBR_DIR/lock
spool-path=$PGBR_DIR/spool

[walbench]
pg1-path=$PGDATA
pg1-port=$PGPORT
pg1-socket-path=$RUNDIR

[live]
pg1-path=$PGDATA
pg1-port=$PGPORT
pg1-socket-path=$RUNDIR
EOF
chown postgres:postgres "$PGBR_CONF"
pgbr() { as_pg pgbackrest --config="$PGBR_CONF" "$@"; }
pgbr_reset() {  # pgbr_reset STANZA: empty its archive, create the stanza again
  s3_rm "s3://$BUCKET_PGBR/repo/archive/$1/"; s3_rm "s3://$BUCKET_PGBR/repo/backup/$1/"
  rm -rf "$PGBR_DIR/spool"/*
  pgbr --stanza="$1" stanza-create >"$LOGDIR/pgbr-stanza.log" 2>&1 || die "pgbackrest stanza-create $1 failed: $(tail -3 "$LOGDIR/pgbr-stanza.log")"
}
s3_count() { s3util size "$1" 2>/dev/null | cut -d' ' -f2; }

res_init "$RES_NAME"
write_meta "$RES_NAME" "walsegs=$WALSEGS" "runs=$RUNS" "pgbench_scale=$SCALE" "live_t=$LIVE_T" "live_variants=$LIVE_VARIANTS" \
  "push_variants=$PUSH_VARIANTS" "replay_variants=$REPLAY_VARIANTS" "quick=$QUICK" "rgw=$RGW_OBJECTSTORE tcp_nodelay=1 $S3_URL (pgBackRest via stunnel $S3_TLS_URL)"

# ---------------------------------------------------------------------------------------------
# push: the staged segments, one archive_command per segment
CALLS_TSV="$RESULTS_DIR/$RES_NAME-calls.tsv"
push_cmd() {  # the archive_command of a variant, for the staged segments
  case $1 in
    pgark)       echo "PGARK_CONFIG=$CONF/pgark-staged.yaml $PGARK wal-push %p" ;;
    pgark-pm2)   echo "PGARK_CONFIG=$CONF/pgark-staged.yaml $PGARK wal-push --process-max 2 %p" ;;
    pgbr-sync)   echo "pgbackrest --config=$PGBR_CONF --stanza=walbench --pg1-path=$STAGE archive-push %p" ;;
    pgbr-async2) echo "pgbackrest --config=$PGBR_CONF --stanza=walbench --pg1-path=$STAGE --archive-async=y --process-max=2 archive-push %p" ;;
    barman)      echo "$BARMAN_ENV barman-cloud-wal-archive --endpoint-url $S3_URL s3://$BUCKET_BARMAN walbench %p" ;;
  esac
}
push_reset() {  # empty the variant's destination (and local spool), return its stored-bytes prefix
  case $1 in
    pgark*) s3_rm "$PGARK_STAGED/wal/"; rm -rf "$SPOOL/staged"; echo "$PGARK_STAGED/wal/" ;;
    pgbr*)  pgbr_reset walbench; echo "s3://$BUCKET_PGBR/repo/archive/walbench/" ;;
    barman) s3_rm "s3://$BUCKET_BARMAN/walbench/"; echo "s3://$BUCKET_BARMAN/walbench/" ;;
  esac
}
has_seg() {  # has_seg VARIANT SEGMENT
  local p
  case $1 in
    pgark) p="$PGARK_STAGED/wal/${2:0:16}/$2-" ;;
    pgbr*) p="s3://$BUCKET_PGBR/repo/archive/walbench/15-1/${2:0:16}/$2-" ;;
    barman) p="s3://$BUCKET_BARMAN/walbench/wals/${2:0:16}/$2" ;;
  esac
  [ "$(s3_count "$p")" -ge 1 ]
}
# fill_archive VARIANT: make sure the variant's archive holds the staged segments (first and last checked)
fill_archive() {
  local first last; first=$(ls "$WALDIR" | grep -E '^[0-9A-F]{24}$' | sort | head -1)
  last=$(ls "$WALDIR" | grep -E '^[0-9A-F]{24}$' | sort | head -n "$WALSEGS" | tail -1)
  has_seg "$1" "$first" && has_seg "$1" "$last" && return 0
  log "filling the $1 archive with the staged segments"; push_reset "$1" >/dev/null; staged_ready
  as_pg bash "$BENCH_DIR/archive-loop.sh" "$WALDIR" "$WALSEGS" "$(push_cmd "$1")" >"$LOGDIR/fill-$1.log" 2>&1 || die "pushing for $1 failed, see $LOGDIR/fill-$1.log"
  sleep 2
}
label() {
  case $1 in
    pgark) echo "pgark wal-push (zstd, push-ahead 16, process-max 4)" ;;
    pgark-pm2) echo "pgark wal-push --process-max 2" ;;
    pgbr-sync) echo "pgbackrest archive-push (sync, zst)" ;;
    pgbr-async2) echo "pgbackrest archive-push (async, process-max 2, zst)" ;;
    barman) echo "barman-cloud-wal-archive (no compression)" ;;
    *) echo "$1" ;;
  esac
}
side_of() { case $1 in pgark*) echo pgark ;; *) echo peer ;; esac; }

if has push; then
  printf 'ts\tvariant\trun\tcalls\tmedian_ms\tp90_ms\tmax_ms\tfirst_ms\tcalls_over_100ms\n' >"$CALLS_TSV"
  for run in $(seq "$RUNS"); do
    for v in $PUSH_VARIANTS; do
      prefix=$(push_reset "$v"); staged_ready
      cl="$TMPD/calls-$v-$run.tsv"; rm -f "$cl"
      measure --pg -- bash "$BENCH_DIR/archive-loop.sh" "$WALDIR" "$WALSEGS" "$(push_cmd "$v")" "$cl"
      sleep 1
      res_row walpush "$WALSEGS segments" "$(side_of "$v")" "$(label "$v")" "$run" "$((WALSEGS * SEG))" "$(s3_bytes "$prefix")"
      [ -f "$cl" ] && sort -t$'\t' -k2,2n "$cl" | awk -F'\t' -v v="$v" -v run="$run" -v ts="$(date +%FT%T)" \
        -v first="$(head -1 "$cl" | cut -f2)" '
        { ms[NR] = $2 / 1000; if (ms[NR] > 100) slow++ }
        END { n = NR; p = int(n * 0.9); if (p < n * 0.9) p++; printf "%s\t%s\t%s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%d\n",
              ts, v, run, n, ms[int((n + 1) / 2)], ms[p], ms[n], first / 1000, slow }' >>"$CALLS_TSV"
    done
  done
fi

# ---------------------------------------------------------------------------------------------
# calls: latency of single archive_command calls (start-up + whatever the call has to do)
if has calls; then
  segs=($(ls "$WALDIR" | grep -E '^[0-9A-F]{24}$' | sort | head -n "$WALSEGS"))
  [ "${#segs[@]}" -ge $((CALLS_N + 2)) ] || die "need more staged segments than CALLS_N + 1"
  fill_archive pgark; fill_archive pgbr-sync    # the archives the calls find their segments in
  # marker hits: one call of segment 0 uploads (here: finds archived) the next 16 and leaves a marker for each
  marker_round() {  # marker_round COMPILE_CACHE(1|0) CASE
    rm -rf "$SPOOL/staged"; staged_ready
    as_pg env PGARK_CONFIG="$CONF/pgark-staged.yaml" "$PGARK" wal-push "$WALDIR/${segs[0]}" >/dev/null 2>&1 || die "wal-push of ${segs[0]} failed"
    # the uploads ahead run in pgark's background pusher: wait for its markers, so the calls measure hits, not waits
    local i w missing cc=(); [ "$1" = 0 ] && cc=(env -u NODE_COMPILE_CACHE)
    for w in $(seq 1200); do
      missing=0
      for i in $(seq 1 "$CALLS_N"); do ls "$SPOOL"/staged/*/archived/"${segs[$i]}" >/dev/null 2>&1 || { missing=1; break; }; done
      [ "$missing" = 0 ] && break; sleep 0.1
    done
    for i in $(seq 1 "$CALLS_N"); do
      measure --pg -- "${cc[@]}" env PGARK_CONFIG="$CONF/pgark-staged.yaml" "$PGARK" wal-push "$WALDIR/${segs[$i]}"
      grep -q 'uploaded ahead' "$TMPD/last.out" || log "call $i was not a marker hit: $(tail -1 "$TMPD/last.out")"
      res_row walpush-call "$2" pgark "pgark wal-push" "$i" 0 0
      measure --pg -- "$NODE" -e 0
      res_row walpush-call "$2" peer "node -e 0" "$i" 0 0
    done
  }
  marker_round 1 "marker hit (segment uploaded ahead)"
  if [ ! -w /tmp/node-compile-cache ] || [ "$(stat -c %U /tmp/node-compile-cache 2>/dev/null)" != postgres ]; then
    # the default cache dir, /tmp/node-compile-cache, exists and belongs to root here: what a postgres-run pgark meets
    # when root ran any Node program with the compile cache first (see RESULTS.md)
    [ -d /tmp/node-compile-cache ] || "$NODE" -e 'require("node:module").enableCompileCache()'
    marker_round 0 "marker hit, default compile cache dir not writable"
  fi
  for i in $(seq 1 "$CALLS_N"); do
    measure --pg -- env PGARK_CONFIG="$CONF/pgark-staged.yaml" "$PGARK" wal-push --archive-push-ahead 0 "$WALDIR/${segs[$i]}"
    res_row walpush-call "already archived, no push-ahead (S3 client + LIST)" pgark "pgark wal-push --archive-push-ahead 0" "$i" 0 0
    measure --pg -- pgbackrest --config="$PGBR_CONF" --stanza=walbench --pg1-path="$STAGE" archive-push "$WALDIR/${segs[$i]}"
    res_row walpush-call "already archived, no push-ahead (S3 client + LIST)" peer "pgbackrest archive-push (sync)" "$i" 0 0
  done
fi

# ---------------------------------------------------------------------------------------------
# live: PostgreSQL's archiver under pgbench
LIVE_TSV="$RESULTS_DIR/$RES_NAME-live.tsv"
live_cmd() {
  case $1 in
    pgark)       echo "PGARK_CONFIG=$CONF/pgark-live.yaml $PGARK wal-push %p" ;;
    pgbr-async2) echo "pgbackrest --config=$PGBR_CONF --stanza=live --archive-async=y --process-max=2 archive-push %p" ;;
    pgbr-sync)   echo "pgbackrest --config=$PGBR_CONF --stanza=live archive-push %p" ;;
    barman)      echo "$BARMAN_ENV barman-cloud-wal-archive --endpoint-url $S3_URL s3://$BUCKET_BARMAN live %p" ;;
  esac
}
if has live; then
  printf 'ts\tvariant\trun\tpgbench_s\ttps\tgenerated_segs\tgenerated_per_s\tarchived_during\tarchived_per_s\tbacklog_at_end\tdrain_s\tfailed\tstored_mb\n' >"$LIVE_TSV"
  segno() { psqlc "select (pg_wal_lsn_diff('$1','0/0') / $SEG)::bigint"; }
  for run in $(seq "$LIVE_RUNS"); do
    for v in $LIVE_VARIANTS; do
      case $v in
        pgark) s3_rm "$PGARK_LIVE/wal/"; rm -rf "$SPOOL/live"; prefix="$PGARK_LIVE/wal/" ;;
        pgbr*) pgbr_reset live; prefix="s3://$BUCKET_PGBR/repo/archive/live/" ;;
        barman) s3_rm "s3://$BUCKET_BARMAN/live/"; prefix="s3://$BUCKET_BARMAN/live/" ;;
      esac
      pgark_quiet; set_archive_command "$(live_cmd "$v")"
      psqlc "select pg_switch_wal()" >/dev/null; wait_archiver 120 || true
      psqlc "select pg_stat_reset_shared('archiver')" >/dev/null
      start=$(psqlc "select pg_current_wal_lsn()"); t0=$(date +%s.%N)
      tps=$(as_pg pgbench -n -c 4 -j 2 -T "$LIVE_T" postgres 2>/dev/null | awk '/^tps/{printf "%.0f", $3}')
      t1=$(date +%s.%N); end=$(psqlc "select pg_current_wal_lsn()")
      arch=$(psqlc "select archived_count from pg_stat_archiver")
      backlog=$(ls "$PGDATA/pg_wal/archive_status" | grep -c '\.ready$' || true)
      gen=$(( $(segno "$end") - $(segno "$start") ))
      wait_archiver 600 || true; t2=$(date +%s.%N)
      failed=$(psqlc "select failed_count from pg_stat_archiver")
      sleep 1
      awk -v ts="$(date +%FT%T)" -v v="$v" -v run="$run" -v t0="$t0" -v t1="$t1" -v t2="$t2" -v tps="$tps" -v gen="$gen" \
        -v arch="$arch" -v bl="$backlog" -v failed="$failed" -v stored="$(s3_bytes "$prefix")" 'BEGIN {
          d = t1 - t0; printf "%s\t%s\t%s\t%.1f\t%s\t%d\t%.2f\t%d\t%.2f\t%d\t%.1f\t%s\t%.1f\n",
          ts, v, run, d, tps, gen, gen / d, arch, arch / d, bl, t2 - t1, failed, stored / 1e6 }' >>"$LIVE_TSV"
      log "live $v: $(tail -1 "$LIVE_TSV" | cut -f4-)"
    done
  done
  set_archive_command '/bin/true'
fi

# ---------------------------------------------------------------------------------------------
# replay: cold copy + recovery.signal + restore_command, from the archives the push runs left
replay_cmd() {
  case $1 in
    pgark)       echo "PGARK_CONFIG=$CONF/pgark-staged.yaml $PGARK wal-fetch %f %p" ;;
    pgbr-async2) echo "pgbackrest --config=$PGBR_CONF --stanza=walbench --pg1-path=$REPLICA --archive-async=y --process-max=2 archive-get %f \"%p\"" ;;
    pgbr-sync)   echo "pgbackrest --config=$PGBR_CONF --stanza=walbench --pg1-path=$REPLICA archive-get %f \"%p\"" ;;
    barman)      echo "$BARMAN_ENV barman-cloud-wal-restore --endpoint-url $S3_URL s3://$BUCKET_BARMAN walbench %f %p" ;;
  esac
}
replay_label() {
  case $1 in
    pgark) echo "pgark wal-fetch (prefetch 8, process-max 4)" ;;
    pgbr-async2) echo "pgbackrest archive-get (async, process-max 2)" ;;
    pgbr-sync) echo "pgbackrest archive-get (sync)" ;;
    barman) echo "barman-cloud-wal-restore" ;;
  esac
}
if has replay; then
  for v in $REPLAY_VARIANTS; do
    case $v in pgark) fill_archive pgark ;; pgbr*) fill_archive pgbr-async2 ;; barman) fill_archive barman ;; esac
  done
  # segments the replay needs: the staged ones from the cold copy's redo point on
  redo_seg=$(as_pg pg_controldata "$COLD" | awk -F': *' '/REDO WAL file/{print $2}')
  NEED=$(ls "$WALDIR" | grep -E '^[0-9A-F]{24}$' | sort | head -n "$WALSEGS" | awk -v r="$redo_seg" '$1 >= r' | wc -l)
  log "replay: redo starts in $redo_seg; $NEED staged segments to replay"
  for run in $(seq "$RUNS"); do
    for v in $REPLAY_VARIANTS; do
      replica_stop; rm -rf "$REPLICA"
      install -d -o postgres -g postgres -m 700 "$REPLICA"
      cp -a "$COLD/." "$REPLICA/"
      cat >>"$REPLICA/postgresql.auto.conf" <<EOF
port = $REPLICA_PORT
archive_mode = off
hot_standby = off
restore_command = '$(replay_cmd "$v" | sed "s/'/''/g")'
EOF
      touch "$REPLICA/recovery.signal"; chown -R postgres:postgres "$REPLICA"
      rm -rf "$SPOOL/staged" "$PGBR_DIR/spool"/*
      rlog="$LOGDIR/replica-$v-$run.log"; rm -f "$rlog"
      # timed: from pg_ctl start until the server accepts connections as a primary (with hot_standby = off it
      # refuses them until all WAL is replayed and it has promoted; pg_ctl -w itself returns as soon as recovery
      # starts in that case). The replica is then stopped inside the measurement, so that all CPU of the recovery,
      # the restore commands and their detached helpers is counted.
      measure --pg -- bash -c "t0=\$(date +%s%N); pg_ctl -D $REPLICA -l $rlog -W start >/dev/null || exit 1
        until [ \"\$(psql -X -At -h $RUNDIR -p $REPLICA_PORT -d postgres -c 'select pg_is_in_recovery()' 2>/dev/null)\" = f ]; do
          [ -f $REPLICA/postmaster.pid ] || [ \$(( (\$(date +%s%N) - t0) / 1000000000 )) -lt 10 ] || exit 1   # it died
          [ \$(( (\$(date +%s%N) - t0) / 1000000000 )) -lt 1800 ] || exit 2
          sleep 0.05
        done
        echo \$(( (\$(date +%s%N) - t0) / 1000000 )) > $TMPD/replay-ms; pg_ctl -D $REPLICA -m fast -w stop >/dev/null"
      restored=$(grep -c 'restored log file "[0-9A-F]\{24\}" from archive' "$rlog" || true)
      redo=$(grep -o 'redo done at .*elapsed: [0-9.]* s' "$rlog" | grep -o 'elapsed: [0-9.]*' | awk '{print $2}' || true)
      [ "$M_RC" = 0 ] && M_WALL=$(awk -v ms="$(cat "$TMPD/replay-ms")" 'BEGIN{printf "%.3f", ms / 1000}')
      [ "$restored" -ge "$NEED" ] || { log "replay $v restored only $restored of $NEED segments"; [ "$M_RC" = 0 ] && M_RC=9; }
      res_row walreplay "replay $NEED segments" "$(side_of "$v")" "$(replay_label "$v")" "$run" "$((NEED * SEG))" 0 \
        "restored $restored segments; redo elapsed ${redo:-?} s"
    done
  done
  replica_stop; rm -rf "$REPLICA"
fi

"$NODE" "$BENCH_DIR/lib/report.mjs" "$RES_NAME" >/dev/null
log "done: $RES_FILE, $RESULTS_DIR/$RES_NAME.md, $RESULTS_DIR/$RES_NAME.json"
