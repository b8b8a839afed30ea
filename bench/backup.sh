#!/usr/bin/env bash
# bench/backup.sh — base backup, restore and incremental backup: pgark vs pgBackRest 2.45 and barman-cloud 3.4,
# same clusters, same disk, same Ceph RGW.
#
# Scenarios (data sets; each one its own PostgreSQL 15 cluster, initdb -k, run as postgres on a private port):
#   pgbench     pgbench -i -s 100 (zstd-3 ~20:1)                                   --quick: -s 10
#   realistic   realistic.events, 3 M rows of random text/uuid/numeric/timestamps/jsonb, pk + 2 btrees + GIN,
#               ~2 GB (zstd-3 ~2.4:1; bench/sql/realistic-*.sql, the anchors' generator)  --quick: 200,000 rows
#   manyrel     100,000 small tables (one row each, no FSM/VM) in schema manyrel     --quick: 5,000
# Phases, per round:
#   full      every tool takes a full backup (timed), then every tool restores it into an empty directory
#             (timed); each restored cluster is started (recovery to the end of the backup, promote) on its
#             own port and its row counts/sums are compared with the source's (untimed; a mismatch = rc 8)
#   incr      (pgbench, realistic) (a) UPDATE of 1 % random rows, then an incremental backup by every tool
#             that has one; (b) INSERT of 1 % new rows + UPDATE of half of the newest 2 % of rows, then
#             another incremental. Before each change the relation files' pages are hashed; after it (and a
#             CHECKPOINT) the pages that really changed are counted and compressed with zstd-3 (lib/pagemap.mjs):
#             the physical floor. Each incremental is restored and checked like a full one.
# Tools (variants): pgark-file (file:// repo on disk, defaults: backup data zstd-1 — changed pages an incremental
#   picks out: zstd-3 while they compress >= 4:1 —, WAL zstd-3, process-max 4),
#   pgbr-posix-zst, pgbr-posix-lz4 (process-max 2), pgbr-posix-block (zst + repo1-bundle + repo1-block, 2.45's beta block
#   incremental), pgark-s3, pgbr-s3-zst, pgbr-s3-lz4 (RGW through stunnel TLS), barman-s3 (barman-cloud-backup
#   -J 2, no compression; no incremental). Optional, not in the default lists: pgbr-posix-zst1 and pgbr-s3-zst1
#   (pgBackRest at zst level 1, the level pgark uses for backup data: the same-level comparison). Rounds alternate the tools (order reversed every other round);
#   before each round the repositories are emptied (so every round starts from a full backup).
# During each tool's backups archive_command is that tool's own WAL push into its own repository, followed by
# pgark wal-push into the pgark repositories of the run; while the data is changed it is pgark's alone (its
# incrementals read the WAL block maps wal-push stores, so its archive must be complete since the base, as in
# production; untimed: WAL archiving is measured by wal-archive.sh). BK_PGARK_ARCHIVE_ALWAYS=0: only the tool's
# own push during its backups, /bin/true while the data changes (pgark's incrementals then compare page LSNs).
# "stored" = growth of the repository's backup data (pgark: backups/ + packs/, pgBackRest: backup/<stanza>/,
# barman: <server>/base/), WAL archive excluded.
#
# Results: bench/results/backup[-quick].{tsv,json,md}.
# Usage: bench/backup.sh [--quick] [--only pgbench,realistic,manyrel] [--phases full,incr] [--runs N]
#                        [--variants "pgark-file pgbr-posix-zst ..."] [--keep]
# Env knobs: BK_MANYREL_RUNS (rounds for manyrel; default --runs), BK_PGBENCH_PHASES (full,incr; --quick: full),
#   BK_MANYREL_VARIANTS (manyrel: without lz4 and block: its point is memory and time with many files),
#   BK_RESTORE_INCR (all; pgark = restore and check only pgark's incrementals; --quick: pgark), BK_SCALE (100), BK_ROWS (3000000), BK_RELS (100000), BK_PORT_BASE (55480), BENCH_HOME, BENCH_BUILD,
#   BK_REPOS ($BENCH_HOME/repos: file/posix repositories), RES_NAME.
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
. "$BENCH_DIR/lib/env.sh"; . "$BENCH_DIR/lib/services.sh"; . "$BENCH_DIR/lib/measure.sh"

QUICK=0; ONLY="pgbench,realistic,manyrel"; PHASES="full,incr"; KEEP=0; RUNS_ARG=""; VARIANTS_ARG=""
bench_option() {
  case $1 in
    --phases) PHASES=$2 ;;
    --variants) VARIANTS_ARG=$2 ;;
    *) return 1 ;;
  esac
}
parse_bench_args "$@"
ALL_VARIANTS="pgark-file pgbr-posix-zst pgbr-posix-lz4 pgbr-posix-block pgark-s3 pgbr-s3-zst pgbr-s3-lz4 barman-s3"
if [ "$QUICK" = 1 ]; then
  BK_SCALE=${BK_SCALE:-10}; BK_ROWS=${BK_ROWS:-200000}; RUNS=${RUNS_ARG:-2}
  VARIANTS=${VARIANTS_ARG:-"pgark-file pgbr-posix-zst pgbr-posix-block pgark-s3 pgbr-s3-zst barman-s3"}
  BK_RELS=${BK_RELS:-5000}
  MANYREL_VARIANTS=${BK_MANYREL_VARIANTS:-"pgark-file pgbr-posix-zst pgark-s3 pgbr-s3-zst"}
  RESTORE_INCR=${BK_RESTORE_INCR:-pgark}
  PGBENCH_PHASES=${BK_PGBENCH_PHASES:-full}      # --quick: incrementals on the realistic data set only
  RES_NAME=${RES_NAME:-backup-quick}
else
  BK_SCALE=${BK_SCALE:-100}; BK_ROWS=${BK_ROWS:-3000000}; BK_RELS=${BK_RELS:-100000}; RUNS=${RUNS_ARG:-$RUNS}
  VARIANTS=${VARIANTS_ARG:-$ALL_VARIANTS}
  MANYREL_VARIANTS=${BK_MANYREL_VARIANTS:-"pgark-file pgbr-posix-zst pgark-s3 barman-s3"}   # pgBackRest S3: one object per file, 10+ min
  RESTORE_INCR=${BK_RESTORE_INCR:-all}
  PGBENCH_PHASES=${BK_PGBENCH_PHASES:-full,incr}
  RES_NAME=${RES_NAME:-backup}
fi
MANYREL_RUNS=${BK_MANYREL_RUNS:-$RUNS}
BK_PGARK_ARCHIVE_ALWAYS=${BK_PGARK_ARCHIVE_ALWAYS:-1}
BK_PORT_BASE=${BK_PORT_BASE:-55480}
RESTORE_PORT=$((BK_PORT_BASE + 9))
BK_REPOS=${BK_REPOS:-$BENCH_HOME/repos}
RESTORE_DIR="$BENCH_HOME/restore"
BKCONF="$BENCH_HOME/conf/backup"
has() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
has_phase() {  # has_phase PHASE [DATASET]
  case ",$PHASES," in *",$1,"*) ;; *) return 1 ;; esac
  [ "${2:-}" != pgbench ] && return 0
  case ",$PGBENCH_PHASES," in *",$1,"*) return 0 ;; *) return 1 ;; esac
}

ds_port() { case $1 in pgbench) echo $BK_PORT_BASE ;; realistic) echo $((BK_PORT_BASE + 1)) ;; manyrel) echo $((BK_PORT_BASE + 2)) ;; esac; }
ds_pgdata() { echo "$BENCH_HOME/bk-$1"; }
# run the shared helpers (pg_start, psqlc, as_pg, set_archive_command, wait_archiver) against data set $1's cluster
use_ds() { DS=$1; PGDATA=$(ds_pgdata "$1"); PGPORT=$(ds_port "$1"); PGDATABASE=postgres; export PGDATA PGPORT PGDATABASE; }

restored_stop() {
  if [ -f "$RESTORE_DIR/postmaster.pid" ]; then as_pg pg_ctl -D "$RESTORE_DIR" -m immediate -w stop >/dev/null 2>&1 || true; fi
}
cleanup() {
  local rc=$?
  restored_stop; rm -rf "$RESTORE_DIR"
  for d in pgbench realistic manyrel; do
    if [ -f "$(ds_pgdata $d)/postmaster.pid" ]; then
      (use_ds $d; set_archive_command '/bin/true' 2>/dev/null || true; pg_stop || true)
    fi
  done
  cg_cleanup
  if [ "$KEEP" != 1 ]; then stop_stunnel || true; stop_rgw || true; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_dirs; ensure_packages; install_pgark
cp "$BENCH_DIR/lib/pagemap.mjs" "$BENCH_HOME/bin/pagemap.mjs"
start_rgw; start_stunnel
install -d -o postgres -g postgres "$BK_REPOS" "$BKCONF" "$BENCH_HOME/spool" "$PGBR_DIR"

# ---------------------------------------------------------------------------------------------
# data sets
ds_params() {
  case $1 in
    pgbench) echo "pgbench -s $BK_SCALE" ;;
    realistic) echo "realistic $BK_ROWS rows" ;;
    manyrel) echo "manyrel $BK_RELS tables" ;;
  esac
}
pg_conf_lines() {
  cat <<EOF

# ---- pgark benchmarks (bench/backup.sh) ----
port = $PGPORT
listen_addresses = ''
unix_socket_directories = '$RUNDIR'
wal_level = replica
archive_mode = on
archive_command = '/bin/true'     # set per tool with ALTER SYSTEM
max_wal_senders = 10
max_wal_size = 1GB
log_line_prefix = '%m [%p] '
max_locks_per_transaction = 2048   # manyrel's check counts the rows of 100,000 tables in one query
EOF
}
ensure_dataset() {  # ensure_dataset NAME: the cluster exists with the data set's parameters, and runs
  use_ds "$1"
  local want; want=$(ds_params "$1")
  if [ "$(cat "$PGDATA/bench-dataset" 2>/dev/null)" != "$want" ]; then
    [ -f "$PGDATA/postmaster.pid" ] && as_pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$PGDATA"
    log "creating data set $1: $want (cluster $PGDATA, port $PGPORT)"
    install -d -o postgres -g postgres -m 700 "$PGDATA"
    as_pg initdb -k -D "$PGDATA" -U postgres -A trust >"$LOGDIR/initdb-$1.log" || die "initdb failed"
    pg_conf_lines >>"$PGDATA/postgresql.conf"
    as_pg pg_ctl -D "$PGDATA" -l "$LOGDIR/postgres-$1.log" -w -t 300 start >/dev/null || die "postgres ($1) did not start"
    case $1 in
      pgbench)
        as_pg pgbench -i -q -s "$BK_SCALE" postgres >"$LOGDIR/pgbench-init-$1.log" 2>&1 || die "pgbench -i failed" ;;
      realistic)
        load_realistic postgres "$BK_ROWS" ;;
      manyrel)
        # one transaction per 1,000 tables (a single one would need max_locks_per_transaction ~ 100,000)
        psqlc "create schema manyrel"
        local i
        for ((i = 0; i < BK_RELS; i += 1000)); do
          psqlc "do \$\$ begin for i in $i..$((i + 999 < BK_RELS - 1 ? i + 999 : BK_RELS - 1)) loop
                   execute format('create table manyrel.t%s (id int, v bigint)', i);   -- no text column: no TOAST table
                   execute format('insert into manyrel.t%s values (%s, %s)', i, i, i * 7);
                 end loop; end \$\$"
        done
        # the check: number of tables and the sum of their row counts (one count(*) per table)
        psqlc "create function manyrel.check() returns text language plpgsql as \$\$
                 declare t text; n bigint := 0; c bigint; k int := 0;
                 begin for t in select tablename from pg_tables where schemaname = 'manyrel' loop
                   execute format('select count(*) from manyrel.%I', t) into c; n := n + c; k := k + 1; end loop;
                   return k || ' tables/' || n || ' rows'; end \$\$"
        psqlc "analyze" ;;   # no VACUUM: it would give each table a 24 KiB FSM and a VM (100,000 × 40 KiB)
    esac
    psqlc "checkpoint"
    echo "$want" >"$PGDATA/bench-dataset"; chown postgres:postgres "$PGDATA/bench-dataset"
  else
    pg_running || as_pg pg_ctl -D "$PGDATA" -l "$LOGDIR/postgres-$1.log" -w -t 300 start >/dev/null || die "postgres ($1) did not start"
  fi
  set_archive_command '/bin/true'
}
# check_query DATASET: one line that a restored cluster must reproduce exactly
check_query() {
  case $1 in
    pgbench) echo "select (select count(*) || ' accounts/' || sum(abalance) from pgbench_accounts) || '/' || (select count(*) from pgbench_branches) || ' branches/' || (select count(*) from pgbench_tellers) || ' tellers/' || (select count(*) from pgbench_history) || ' history'" ;;
    realistic) echo "select count(*) || ' rows/' || sum(amount) || '/' || count(*) filter (where status = 'updated') || ' updated/' || max(id) from realistic.events" ;;
    manyrel) echo "select manyrel.check()" ;;
  esac
}
pgdata_bytes() { du -sb --exclude=pg_wal "$PGDATA" | cut -f1; }

# ---------------------------------------------------------------------------------------------
# tools
side_of() { case $1 in pgark*) echo pgark ;; *) echo peer ;; esac; }
# pgark runs with its defaults (the configs below set no compression or process-max): src/pipeline/codec.ts
# BACKUP_DATA_DEFAULT_LEVEL / DEFAULT_LEVEL, src/config/settings.ts process-max.
PGARK_DEFAULTS_LABEL="zstd-1, scattered incremental pages zstd-3 while >= 4:1, WAL zstd-3, process-max 4"
label() {
  case $1 in
    pgark-file) echo "pgark, file repo ($PGARK_DEFAULTS_LABEL)" ;;
    pgark-s3) echo "pgark, S3 ($PGARK_DEFAULTS_LABEL)" ;;
    pgbr-posix-zst) echo "pgBackRest posix, zst-3, process-max 2" ;;
    pgbr-posix-zst1) echo "pgBackRest posix, zst-1, process-max 2" ;;
    pgbr-s3-zst1) echo "pgBackRest S3, zst-1, process-max 2" ;;
    pgbr-posix-lz4) echo "pgBackRest posix, lz4, process-max 2" ;;
    pgbr-posix-block) echo "pgBackRest posix, zst-3, pm 2, bundle+block incr (beta)" ;;
    pgbr-s3-zst) echo "pgBackRest S3, zst-3, process-max 2" ;;
    pgbr-s3-lz4) echo "pgBackRest S3, lz4, process-max 2" ;;
    barman-s3) echo "barman-cloud S3 (no compression, -J 2)" ;;
  esac
}
repo_kind() { case $1 in *-file|*-posix-*) echo "file/posix repo" ;; *) echo "S3 (RGW)" ;; esac; }
has_incr() { case $1 in barman*) return 1 ;; *) return 0 ;; esac; }
pgark_conf_file() { echo "$BKCONF/$1-$2.yaml"; }     # VARIANT DATASET
pgbr_conf_file() { echo "$BKCONF/$1.conf"; }
pgark_repo() { case $1 in pgark-file) echo "file://$BK_REPOS/pgark-$2" ;; pgark-s3) echo "s3://$BUCKET_PGARK/bk-$2" ;; esac; }

write_configs() {
  local v d
  for v in $VARIANTS; do
    case $v in
      pgark-*)
        for d in pgbench realistic manyrel; do
          local f; f=$(pgark_conf_file "$v" "$d")
          cat >"$f" <<EOF
# pgark settings for bench/backup.sh (everything else: defaults)
repo: $(pgark_repo "$v" "$d")
s3-endpoint: $S3_URL
s3-access-key-id: $AWS_ACCESS_KEY_ID
s3-secret-access-key: $AWS_SECRET_ACCESS_KEY
spool-path: $BENCH_HOME/spool/bk-$v-$d
pg-host: $RUNDIR
pg-port: $(ds_port "$d")
pg-user: postgres
EOF
          chown postgres:postgres "$f"; chmod 600 "$f"
        done ;;
      pgbr-*)
        local f; f=$(pgbr_conf_file "$v"); local dir="$PGBR_DIR/$v"
        install -d -o postgres -g postgres "$dir" "$dir/log" "$dir/lock" "$dir/spool"
        {
          echo "[global]"
          case $v in
            pgbr-posix-*) echo "repo1-type=posix"; echo "repo1-path=$BK_REPOS/$v" ;;
            pgbr-s3-*) pgbr_s3_repo_lines "/$v" ;;
          esac
          case $v in *-lz4) echo "compress-type=lz4" ;; *-zst1) echo "compress-type=zst"; echo "compress-level=1" ;; *) echo "compress-type=zst"; echo "compress-level=3" ;; esac
          [ "$v" = pgbr-posix-block ] && printf 'beta=y\nrepo1-bundle=y\nrepo1-block=y\n'
          cat <<EOF
repo1-retention-full=9999
process-max=2
start-fast=y
archive-async=n
log-path=$dir/log
log-level-console=warn
log-level-file=info
lock-path=$dir/lock
spool-path=$dir/spool
EOF
          for d in pgbench realistic manyrel; do
            printf '\n[%s]\npg1-path=%s\npg1-port=%s\npg1-socket-path=%s\n' "$d" "$(ds_pgdata $d)" "$(ds_port $d)" "$RUNDIR"
          done
        } >"$f"
        chown postgres:postgres "$f"; chmod 600 "$f" ;;
    esac
  done
  if [ "$BK_REPOS" != / ]; then chown postgres:postgres "$BK_REPOS"; fi
}
BARMAN_ENV="AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION=$AWS_DEFAULT_REGION"
pgark_archive_cmds() {  # pgark_archive_cmds DATASET [FIRST]: wal-push into every pgark repository of the run (FIRST's first), joined by &&
  local v cmds=""
  for v in ${2:-} $VARIANTS; do
    case $v in pgark-*) ;; *) continue ;; esac
    case " $cmds " in *"$(pgark_conf_file "$v" "$1")"*) continue ;; esac
    cmds="${cmds:+$cmds && }PGARK_CONFIG=$(pgark_conf_file "$v" "$1") $PGARK wal-push %p"
  done
  echo "$cmds"
}
archive_cmd() {  # archive_cmd VARIANT DATASET
  # pgark's archiving stays on while other tools back up (BK_PGARK_ARCHIVE_ALWAYS=1, the default), as in
  # production: its incrementals read the WAL block maps wal-push stores, which need every segment
  # since the base. The other tool's push goes first, so its own backups wait for nothing more.
  local own pgark=""
  [ "$BK_PGARK_ARCHIVE_ALWAYS" = 1 ] && pgark=$(pgark_archive_cmds "$2" "$1")
  case $1 in
    pgark-*) [ -n "$pgark" ] && { echo "$pgark"; return; }; echo "PGARK_CONFIG=$(pgark_conf_file "$1" "$2") $PGARK wal-push %p"; return ;;
    pgbr-*) own="pgbackrest --config=$(pgbr_conf_file "$1") --stanza=$2 archive-push %p" ;;
    barman-s3) own="$BARMAN_ENV barman-cloud-wal-archive --endpoint-url $S3_URL s3://$BUCKET_BARMAN bk-$2 %p" ;;
  esac
  echo "$own${pgark:+ && $pgark}"
}
change_archive_cmd() {  # change_archive_cmd DATASET: archive_command while the data changes
  local pgark=""
  [ "$BK_PGARK_ARCHIVE_ALWAYS" = 1 ] && pgark=$(pgark_archive_cmds "$1")
  echo "${pgark:-/bin/true}"
}
# reset VARIANT DATASET: an empty repository (and WAL archive) for the data set, ready for a full backup
reset_repo() {
  case $1 in
    pgark-file) rm -rf "$BK_REPOS/pgark-$2"; install -d -o postgres -g postgres "$BK_REPOS/pgark-$2" ;;
    pgark-s3) s3_rm "s3://$BUCKET_PGARK/bk-$2/" ;;
    pgbr-posix-*) rm -rf "$BK_REPOS/$1/archive/$2" "$BK_REPOS/$1/backup/$2" ;;
    pgbr-s3-*) s3_rm "s3://$BUCKET_PGBR/$1/archive/$2/"; s3_rm "s3://$BUCKET_PGBR/$1/backup/$2/" ;;
    barman-s3) s3_rm "s3://$BUCKET_BARMAN/bk-$2/" ;;
  esac
  rm -rf "$BENCH_HOME/spool/bk-$1-$2"
  case $1 in
    pgark-*) as_pg env PGARK_CONFIG="$(pgark_conf_file "$1" "$2")" "$PGARK" init >"$LOGDIR/bk-init-$1-$2.log" 2>&1 ||
               die "pgark init ($1 $2) failed: $(tail -2 "$LOGDIR/bk-init-$1-$2.log")" ;;
    pgbr-*) as_pg pgbackrest --config="$(pgbr_conf_file "$1")" --stanza="$2" stanza-create >"$LOGDIR/bk-stanza-$1-$2.log" 2>&1 ||
              die "pgbackrest stanza-create ($1 $2) failed: $(tail -3 "$LOGDIR/bk-stanza-$1-$2.log")" ;;
  esac
}
tree_bytes() { if [ -d "$1" ]; then find "$1" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f\n", s}'; else echo 0; fi; }
# stored_bytes VARIANT DATASET: bytes of backup data in the repository (WAL archive excluded)
stored_bytes() {
  case $1 in
    pgark-file) echo $(( $(tree_bytes "$BK_REPOS/pgark-$2/backups") + $(tree_bytes "$BK_REPOS/pgark-$2/packs") )) ;;
    pgark-s3) echo $(( $(s3_bytes "s3://$BUCKET_PGARK/bk-$2/backups/" || echo 0) + $(s3_bytes "s3://$BUCKET_PGARK/bk-$2/packs/" || echo 0) )) ;;
    pgbr-posix-*) tree_bytes "$BK_REPOS/$1/backup/$2" ;;
    pgbr-s3-*) s3_bytes "s3://$BUCKET_PGBR/$1/backup/$2/" ;;
    barman-s3) s3_bytes "s3://$BUCKET_BARMAN/bk-$2/base/" ;;
  esac
}
backup_cmd() {  # backup_cmd VARIANT DATASET full|incr
  case $1 in
    pgark-*) if [ "$3" = full ]; then echo "env PGARK_CONFIG=$(pgark_conf_file "$1" "$2") $PGARK backup --full --json"
             else echo "env PGARK_CONFIG=$(pgark_conf_file "$1" "$2") $PGARK backup --json"; fi ;;
    pgbr-*) echo "pgbackrest --config=$(pgbr_conf_file "$1") --stanza=$2 --type=$3 backup" ;;
    barman-s3) echo "env $BARMAN_ENV barman-cloud-backup --endpoint-url $S3_URL -h $RUNDIR -p $(ds_port "$2") -U postgres --immediate-checkpoint -J 2 s3://$BUCKET_BARMAN bk-$2" ;;
  esac
}
barman_latest() {  # barman_latest DATASET: id of the newest barman backup
  as_pg env $BARMAN_ENV barman-cloud-backup-list --format json --endpoint-url "$S3_URL" "s3://$BUCKET_BARMAN" "bk-$1" |
    python3 -c 'import json,sys; b=[x for x in json.load(sys.stdin)["backups_list"] if x.get("status")=="DONE"]; print(sorted(b,key=lambda x:x["end_time"])[-1]["backup_id"])'
}
restore_cmd() {  # restore_cmd VARIANT DATASET: restore the newest backup into $RESTORE_DIR, recovery to the end of it
  case $1 in
    pgark-*) echo "env PGARK_CONFIG=$(pgark_conf_file "$1" "$2") $PGARK restore --json --target-dir $RESTORE_DIR --target-immediate --target-action promote --restore-command 'PGARK_CONFIG=$(pgark_conf_file "$1" "$2") $PGARK wal-fetch %f %p'" ;;
    pgbr-*) echo "pgbackrest --config=$(pgbr_conf_file "$1") --stanza=$2 --pg1-path=$RESTORE_DIR --type=immediate --target-action=promote restore" ;;
    barman-s3) echo "env $BARMAN_ENV barman-cloud-restore --endpoint-url $S3_URL s3://$BUCKET_BARMAN bk-$2 $(barman_latest "$2") $RESTORE_DIR" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# one backup / one restore, measured
run_backup() {  # run_backup SECTION CASE VARIANT DATASET full|incr RUN
  local v=$3 d=$4 before after
  set_archive_command "$(archive_cmd "$v" "$d")"; wait_archiver 120 || true
  before=$(stored_bytes "$v" "$d")
  M_OUT="$LOGDIR/bk-$v-$d-$5.out" measure --pg -- bash -c "$(backup_cmd "$v" "$d" "$5")"
  after=$(stored_bytes "$v" "$d")
  local note=""
  case $v in pgark-*) note=$(tail -1 "$LOGDIR/bk-$v-$d-$5.out" | python3 -c 'import json,sys
try:
  s=json.loads(sys.stdin.read()); print("pgark: %s blocks stored, %s referenced, %d files" % (s["blocksStored"], s["blocksReferenced"], s["files"]))
except Exception: print("")') ;; esac
  res_row "$1" "$2" "$(side_of "$v")" "$(label "$v")" "$6" "$BASIS" "$((after - before))" "$note"
  [ "$M_RC" = 0 ] || tail -20 "$LOGDIR/bk-$v-$d-$5.out" | sed 's/^/    /' >&2
}
start_restored() {  # start the cluster in $RESTORE_DIR on $RESTORE_PORT until it has promoted; echo the check line
  cat >>"$RESTORE_DIR/postgresql.auto.conf" <<EOF
# bench/backup.sh: a restored copy, never archiving into the benchmarks' repositories
port = $RESTORE_PORT
archive_mode = off
EOF
  if [ "$1" = barman-s3 ]; then   # barman-cloud-restore writes no recovery settings
    cat >>"$RESTORE_DIR/postgresql.auto.conf" <<EOF
restore_command = '$BARMAN_ENV barman-cloud-wal-restore --endpoint-url $S3_URL s3://$BUCKET_BARMAN bk-$2 %f %p'
recovery_target = 'immediate'
recovery_target_action = 'promote'
EOF
    touch "$RESTORE_DIR/recovery.signal"
  fi
  chown -R postgres:postgres "$RESTORE_DIR"; chmod 700 "$RESTORE_DIR"
  rm -f "$RESTORE_DIR/postmaster.pid"
  as_pg pg_ctl -D "$RESTORE_DIR" -l "$LOGDIR/restored-$1-$2.log" -w -t 600 start >/dev/null 2>&1 || { echo "START FAILED"; return 0; }
  local i
  for i in $(seq 1200); do
    [ "$(as_pg psql -X -At -p "$RESTORE_PORT" -d postgres -c 'select pg_is_in_recovery()' 2>/dev/null)" = f ] && break
    sleep 0.25
  done
  as_pg psql -X -At -p "$RESTORE_PORT" -d postgres -c "$(check_query "$2")" 2>&1 | head -1
  as_pg pg_ctl -D "$RESTORE_DIR" -m fast -w stop >/dev/null 2>&1 || true
}
run_restore() {  # run_restore SECTION CASE VARIANT DATASET RUN
  local v=$3 d=$4 got
  restored_stop; rm -rf "$RESTORE_DIR"; install -d -o postgres -g postgres -m 700 "$RESTORE_DIR"
  local cmd; cmd=$(restore_cmd "$v" "$d")
  M_OUT="$LOGDIR/rs-$v-$d.out" measure --pg -- bash -c "$cmd"
  local rc=$M_RC wall=$M_WALL user=$M_USER sys=$M_SYS cpu=$M_CPU rss=$M_RSS_KB srv=$M_SRV_CPU load=$M_LOAD
  local bytes; bytes=$(du -sb "$RESTORE_DIR" | cut -f1)
  if [ "$rc" = 0 ]; then got=$(start_restored "$v" "$d"); else got="restore failed"; tail -20 "$LOGDIR/rs-$v-$d.out" | sed 's/^/    /' >&2; fi
  M_RC=$rc M_WALL=$wall M_USER=$user M_SYS=$sys M_CPU=$cpu M_RSS_KB=$rss M_SRV_CPU=$srv M_LOAD=$load
  local note
  if [ "$got" = "$EXPECT" ]; then note="started, check ok: $got"
  else note="CHECK FAILED: got '$got', source has '$EXPECT'"; [ "$M_RC" = 0 ] && M_RC=8; log "$note ($v $d, see $LOGDIR/restored-$v-$d.log)"; fi
  res_row "$1" "$2" "$(side_of "$v")" "$(label "$v")" "$5" "$BASIS" "$bytes" "$note"
  restored_stop; rm -rf "$RESTORE_DIR"
}
ordered() {  # the variants in this round's order: as given in odd rounds, reversed in even rounds
  if [ $(( $1 % 2 )) = 1 ]; then echo $VARIANTS; else echo $VARIANTS | tr ' ' '\n' | tac | tr '\n' ' '; fi
}

# changes between backups
change_sql() {  # change_sql DATASET a|b
  case $1:$2 in
    pgbench:a) echo "update pgbench_accounts set abalance = abalance + 1 where random() < 0.01" ;;
    realistic:a) echo "update realistic.events set amount = round((random() * 10000)::numeric, 2), status = 'updated', attrs = attrs || jsonb_build_object('rev', floor(random() * 1000)::int) where random() < 0.01" ;;
    pgbench:b) echo "do \$\$ declare m bigint; n bigint; begin
        select max(aid), count(*) / 100 into m, n from pgbench_accounts;
        insert into pgbench_accounts (aid, bid, abalance, filler) select g, 1 + (g % $BK_SCALE), 0, '' from generate_series(m + 1, m + n) g;
        update pgbench_accounts set abalance = abalance + 1 where aid > m + n - 2 * n and random() < 0.5; end \$\$" ;;
    realistic:b) echo "BK_REALISTIC_B" ;;
  esac
}
apply_change() {  # apply_change DATASET a|b
  local sql; sql=$(change_sql "$1" "$2")
  if [ "$sql" = BK_REALISTIC_B ]; then
    local m n; m=$(psqlc "select max(id) from realistic.events"); n=$(( $(psqlc "select count(*) from realistic.events") / 100 ))
    as_pg psql -X -q -At -v ON_ERROR_STOP=1 -d postgres -v tbl=realistic.events -v lo=$((m + 1)) -v hi=$((m + n)) -f "$BENCH_DIR/sql/realistic-insert.sql" >/dev/null
    psqlc "update realistic.events set amount = round((random() * 10000)::numeric, 2), status = 'updated' where id > $((m + n - 2 * n)) and random() < 0.5"
  else
    psqlc "$sql"
  fi
}
CHANGE_LABEL_a="1 % random rows UPDATEd"
CHANGE_LABEL_b="append: 1 % new rows + UPDATE of half of the newest 2 %"

# ---------------------------------------------------------------------------------------------
res_init "$RES_NAME"
write_meta "$RES_NAME" "datasets=$ONLY" "phases=$PHASES" "runs=$RUNS" "variants=$VARIANTS" "pgbench_scale=$BK_SCALE" \
  "realistic_rows=$BK_ROWS" "manyrel_tables=$BK_RELS" "manyrel_variants=$MANYREL_VARIANTS" "manyrel_runs=$MANYREL_RUNS" "pgbench_phases=$PGBENCH_PHASES" "restore_incr=$RESTORE_INCR" "quick=$QUICK" "repos=$BK_REPOS (disk)" "restore_dir=$RESTORE_DIR (disk)" \
  "rgw=$RGW_OBJECTSTORE tcp_nodelay=1 $S3_URL (pgBackRest via stunnel $S3_TLS_URL)"
write_configs

# one benchmark at a time: wait (before each round) while another bench script measures
MY_PGID=$(ps -o pgid= $$ | tr -d ' ')
wait_for_other_benchmarks() {
  local others i
  for i in $(seq 720); do
    # (our own subshells share our process group; a benchmark started elsewhere has its own)
    others=$(ps -eo pid=,pgid=,args= | awk -v me="$MY_PGID" '$2 != me && $0 ~ /bench\/(pipeline|wal-archive|verify|backup)\.sh/' || true)
    [ -z "$others" ] && return 0
    [ "$i" = 1 ] && log "waiting until another benchmark finishes: $(echo "$others" | head -2 | cut -c1-100 | tr '\n' ';')"
    sleep 5
  done
  log "still another benchmark running after an hour; going on (see the load column)"
}
ALL_DS_VARIANTS=$VARIANTS
for d in realistic manyrel pgbench; do
  has "$d" || continue
  VARIANTS=$ALL_DS_VARIANTS
  if [ "$d" = manyrel ] && [ -z "$VARIANTS_ARG" ]; then VARIANTS=$MANYREL_VARIANTS; fi
  ensure_dataset "$d"
  psqlc "checkpoint"
  log "data set $d: $(ds_params "$d"), PGDATA without pg_wal $(( $(pgdata_bytes) / 1000000 )) MB"
  rounds=$RUNS; [ "$d" = manyrel ] && rounds=$MANYREL_RUNS
  for run in $(seq "$rounds"); do
    wait_for_other_benchmarks
    use_ds "$d"
    BASIS=$(pgdata_bytes); EXPECT=$(psqlc "$(check_query "$d")")
    log "== $d round $run: $(ordered "$run"); source check: $EXPECT"
    for v in $VARIANTS; do reset_repo "$v" "$d"; done
    for v in $(ordered "$run"); do run_backup full "$d · $(repo_kind "$v")" "$v" "$d" full "$run"; done
    for v in $(ordered "$run"); do run_restore restore "$d · $(repo_kind "$v")" "$v" "$d" "$run"; done
    if has_phase incr "$d" && [ "$d" != manyrel ]; then
      for c in a b; do
        label_var="CHANGE_LABEL_$c"; sec="incr-$c"
        set_archive_command "$(change_archive_cmd "$d")"; wait_archiver 600 || true; psqlc "checkpoint"
        snap="$TMPD/pagemap-$d.json"; since=$(psqlc "select pg_current_wal_lsn()")
        "$NODE" "$BENCH_HOME/bin/pagemap.mjs" snapshot "$PGDATA" "$snap"
        log "$d round $run: change ($c) ${!label_var}"
        apply_change "$d" "$c"
        psqlc "select pg_switch_wal()" >/dev/null; wait_archiver 600 || true   # untimed, like archiving in production
        EXPECT=$(psqlc "$(check_query "$d")"); psqlc "checkpoint"   # the check reads every row: hint bits are set before the floor is taken
        floor=$("$NODE" "$BENCH_HOME/bin/pagemap.mjs" diff "$PGDATA" "$snap" "$since")
        BASIS=$(pgdata_bytes)
        read -r fpages fchanged flsn fraw fz <<<"$(echo "$floor" | python3 -c 'import json,sys; f=json.load(sys.stdin); print(f["pages"], f["changed"], f["lsn_newer"], f["changed_bytes"], f["changed_zstd3"])')"
        fnote="${!label_var}: $fchanged of $fpages pages changed ($(awk -v a="$fchanged" -v b="$fpages" 'BEGIN{printf "%.1f", 100*a/b}') %), LSN newer: $flsn; changed pages zstd-3: $fz bytes"
        log "floor: $fnote"
        M_WALL=0 M_USER=0 M_SYS=0 M_CPU=0 M_RSS_KB=0 M_SRV_CPU=0 M_RC=0 M_LOAD=$(cut -d' ' -f1 /proc/loadavg)
        seen=""
        for v in $VARIANTS; do   # the floor, once per case (repository kind) that has incrementals
          has_incr "$v" || continue
          k=$(repo_kind "$v"); case "$seen" in *"|$k|"*) continue ;; esac; seen="$seen|$k|"
          res_row "$sec" "$d · $k" floor "changed pages, zstd-3 (physical floor)" "$run" "$fraw" "$fz" "$fnote"
        done
        for v in $(ordered "$run"); do
          has_incr "$v" || continue
          run_backup "$sec" "$d · $(repo_kind "$v")" "$v" "$d" incr "$run"
        done
        for v in $(ordered "$run"); do
          has_incr "$v" || continue
          [ "$RESTORE_INCR" = all ] || [ "$(side_of "$v")" = pgark ] || continue
          run_restore "restore-$sec" "$d · $(repo_kind "$v")" "$v" "$d" "$run"
        done
      done
    fi
  done
  set_archive_command '/bin/true'; pg_stop
done

"$NODE" "$BENCH_DIR/lib/report.mjs" "$RES_NAME" >/dev/null
log "done: $RES_FILE, $RESULTS_DIR/$RES_NAME.md, $RESULTS_DIR/$RES_NAME.json"
