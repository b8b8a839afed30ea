#!/usr/bin/env bash
# bench/pipeline.sh — pgark's stream pipeline against the stock tools on the same data.
#
#   codec    pgark put/get of a PostgreSQL data set (1 GiB of relation files) into a file:// repo on
#            tmpfs, per codec (zstd-3, lz4, gzip-6, none) and with age encryption (none+age, zstd+age),
#            vs `zstd -3 -T1`, `lz4 -1`, `gzip -6`, `cat`, `age -r`, `zstd -3 -T1 | age -r` (and their -d)
#   s3       the same data to/from our Ceph RGW: pgark put/get --compression none|zstd vs
#            `aws s3 cp FILE s3://`, `aws s3 cp - s3://`, `zstd | aws s3 cp -`, `aws s3 cp s3:// -`
#   big      a 6 GiB stdin upload (head -c 6G /dev/urandom | pgark put) to RGW: peak RSS, parts, sha256 of
#            the read-back; part-size 8MiB (default) and 5MiB (parts grow after 900); peer: aws s3 cp -
#   startup  `pgark --version`, `pgark --help` vs `node -e 0`, `pgbackrest version`, `barman-cloud-wal-archive --version`
#
# Every pgark measurement is paired with its peer in the same round (pgark, peer, pgark, peer, ...);
# ratios are pgark/peer per round, medians over rounds. Results: bench/results/pipeline[-quick].{tsv,json,md}.
#
# Usage: bench/pipeline.sh [--quick] [--only codec,s3,big,startup] [--runs N] [--dataset realistic|pgbench] [--keep]
#   --quick    256 MiB data set, 1 GiB big upload, 2 rounds, 5 start-ups (a smoke test of everything)
#   --keep     leave RGW/stunnel/PostgreSQL running afterwards (faster re-runs); default: stop them
# Env knobs: BENCH_HOME (/var/tmp/pgark-bench), SIZE (bytes of the data set), BIG_SIZE, BIG_PART_SIZES ("8MiB 5MiB"),
#   BIG_PEER (0; 1 adds aws s3 cp - of the same size, for its RSS), STARTUP_N, BENCH_BUILD (1: build pgark from src/ into BENCH_HOME; 0: use the clone's dist/),
#   SHM (/dev/shm/pgark-bench: the file:// repo and the CLI outputs), REAL_ROWS (1800000), RES_NAME.
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
. "$BENCH_DIR/lib/env.sh"; . "$BENCH_DIR/lib/services.sh"; . "$BENCH_DIR/lib/measure.sh"

QUICK=0; ONLY="codec,s3,big,startup"; DATASET="${DATASET:-realistic}"; KEEP=0; RUNS_ARG=""
bench_option() {
  case $1 in
    --dataset) DATASET=$2 ;;
    *) return 1 ;;
  esac
}
parse_bench_args "$@"
MiB=1048576; GiB=1073741824
if [ "$QUICK" = 1 ]; then
  SIZE=${SIZE:-$((256 * MiB))}; BIG_SIZE=${BIG_SIZE:-$GiB}; RUNS=${RUNS_ARG:-2}; STARTUP_N=${STARTUP_N:-5}
  RES_NAME=${RES_NAME:-pipeline-quick}
else
  SIZE=${SIZE:-$GiB}; BIG_SIZE=${BIG_SIZE:-$((6 * GiB))}; RUNS=${RUNS_ARG:-$RUNS}; STARTUP_N=${STARTUP_N:-10}
  RES_NAME=${RES_NAME:-pipeline}
fi
BIG_PART_SIZES=${BIG_PART_SIZES:-"8MiB 5MiB"}; BIG_PEER=${BIG_PEER:-0}
REAL_ROWS=${REAL_ROWS:-1800000}
SHM=${SHM:-/dev/shm/pgark-bench}
DATASET_PORT=${DATASET_PORT:-55462}
has() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

cleanup() {
  local rc=$?
  rm -rf "$SHM"
  if rgw_up 2>/dev/null; then
    s3_rm "s3://$BUCKET_PGARK/pipeline/"; s3_rm "s3://$BUCKET_PGARK/awscli/"
  fi
  cg_cleanup
  PGDATA="$BENCH_HOME/pgdata-dataset" PGPORT="$DATASET_PORT" pg_stop || true
  if [ "$KEEP" != 1 ]; then stop_stunnel || true; stop_rgw || true; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_dirs; ensure_packages; install_pgark

# ---------------------------------------------------------------------------------------------
# the data set: the first $SIZE bytes of a tar of one database's relation files (base/<oid>/)
dataset() {
  local f="$BENCH_HOME/data/$DATASET-$SIZE.bin"
  if [ -f "$f" ] && [ "$(stat -c %s "$f")" = "$SIZE" ]; then echo "$f"; return 0; fi
  # a cluster of its own (port $DATASET_PORT), so the WAL benchmark's cluster stays small (its cold copy is
  # copied for every replay run); bash's dynamic scoping makes pg_start/psqlc/as_pg use these two
  local PGDATA="$BENCH_HOME/pgdata-dataset" PGPORT="$DATASET_PORT"
  pg_start
  local db oid
  case $DATASET in
    realistic)
      db=realdata
      [ "$(psqlc "select count(*) from pg_database where datname='$db'")" = 1 ] || psqlc "create database $db"
      if [ "$(as_pg psql -X -At -d $db -c "select to_regclass('realistic.events') is not null and exists (select 1 from pg_indexes where indexname='events_attrs_gin')")" != t ]; then
        log "loading $REAL_ROWS realistic rows into $db (2 sessions), then 4 indexes (~2-3 min)"
        set_archive_command '/bin/true'
        load_realistic "$db" "$REAL_ROWS"
      fi ;;
    pgbench)
      db=pgbench70
      if [ "$(psqlc "select count(*) from pg_database where datname='$db'")" != 1 ]; then
        psqlc "create database $db"; log "pgbench -i -s 70 ($db)"
        as_pg pgbench -i -q -s 70 $db >"$LOGDIR/pgbench70.log" 2>&1; psqlc "checkpoint"
      fi ;;
    *) die "unknown data set $DATASET (realistic|pgbench)" ;;
  esac
  oid=$(psqlc "select oid from pg_database where datname='$db'")
  log "data set: first $SIZE bytes of tar -C base/$oid ($db)"
  tar -C "$PGDATA/base/$oid" --sort=name -cf - . | head -c "$SIZE" >"$f.tmp" || true
  [ "$(stat -c %s "$f.tmp")" = "$SIZE" ] || die "base/$oid is smaller than $SIZE bytes (raise REAL_ROWS)"
  mv "$f.tmp" "$f"; pg_stop; echo "$f"
}

res_init "$RES_NAME"
write_meta "$RES_NAME" "dataset=$DATASET" "size_bytes=$SIZE" "runs=$RUNS" "big_size=$BIG_SIZE" "big_part_sizes=$BIG_PART_SIZES" \
  "startup_n=$STARTUP_N" "quick=$QUICK" "rgw=$RGW_OBJECTSTORE tcp_nodelay=1 $S3_URL" "tmpfs=$SHM"

if has codec || has s3; then
  D=$(dataset); cat "$D" >/dev/null   # warm page cache
  log "data set $D ($SIZE bytes; zstd -3 ratio $(zstd -3 -T0 -c "$D" | wc -c | awk -v s="$SIZE" '{printf "%.2f", s/$1}'))"
fi
stored_bytes() { find "$1" -type f -path '*/streams/*/data-*' -printf '%s\n' | awk '{s+=$1} END{print s+0}'; }

# ---------------------------------------------------------------------------------------------
if has codec; then
  rm -rf "$SHM"; mkdir -p "$SHM"
  "$PGARK" keygen --output "$SHM/key.txt" >"$SHM/recipient.txt" 2>/dev/null || die "pgark keygen failed"
  KEY=$BENCH_HOME/data/age-key.txt; cp "$SHM/key.txt" "$KEY"; RCPT=$(grep -o 'age1[0-9a-z]*' "$SHM/recipient.txt" | head -1)
  [ -n "$RCPT" ] || die "no recipient from pgark keygen"
  # per case: pgark put flags, the peer's compress and decompress commands (stdin -> stdout)
  CASES=(zstd lz4 gzip none "age (none+age)" zstd+age)
  declare -A FLAGS=([zstd]="--compression zstd" [lz4]="--compression lz4" [gzip]="--compression gzip" [none]="--compression none"
    ["age (none+age)"]="--compression none --recipient $RCPT" [zstd+age]="--compression zstd --recipient $RCPT")
  declare -A COMP=([zstd]="zstd -3 -T1 -c" [lz4]="lz4 -1 -c" [gzip]="gzip -6 -c" [none]="cat"
    ["age (none+age)"]="age -r $RCPT" [zstd+age]="zstd -3 -T1 -c | age -r $RCPT")
  declare -A DECOMP=([zstd]="zstd -d -c" [lz4]="lz4 -d -c" [gzip]="gzip -d -c" [none]="cat"
    ["age (none+age)"]="age -d -i $KEY" [zstd+age]="age -d -i $KEY | zstd -d -c")
  for run in $(seq "$RUNS"); do
    for name in "${CASES[@]}"; do
      flags=${FLAGS[$name]}; comp=${COMP[$name]}; decomp=${DECOMP[$name]}
      short() { local t=${1//$RCPT/age1…}; echo "${t//$KEY/KEY}"; }   # labels without the long key strings
      rm -rf "$SHM/repo" "$SHM/out"
      measure -- sh -c "\"$PGARK\" put s$run --repo file://$SHM/repo $flags < \"$D\""
      res_row codec "$name put" pgark "pgark put $(short "$flags")" "$run" "$SIZE" "$(stored_bytes "$SHM/repo")"
      measure -- sh -c "( $comp ) < \"$D\" > \"$SHM/out\""
      res_row codec "$name put" peer "$(short "$comp")" "$run" "$SIZE" "$(stat -c %s "$SHM/out")"
      measure -- sh -c "\"$PGARK\" get s$run --repo file://$SHM/repo --identity $KEY > /dev/null"
      res_row codec "$name get" pgark "pgark get" "$run" "$SIZE" "$SIZE"
      measure -- sh -c "( $decomp ) < \"$SHM/out\" > /dev/null"
      res_row codec "$name get" peer "$(short "$decomp")" "$run" "$SIZE" "$SIZE"
    done
  done
  # reference: what SHA-256 (pgark hashes all content, both ways) costs on its own, with OpenSSL as Node uses it
  for run in $(seq "$RUNS"); do
    measure -- sh -c "openssl dgst -sha256 < \"$D\" >/dev/null"
    res_row codec "reference" peer "openssl dgst -sha256" "$run" "$SIZE" 0
  done
  rm -rf "$SHM"
fi

# ---------------------------------------------------------------------------------------------
if has s3 || has big; then start_rgw; fi
PGARK_S3=(--s3-endpoint "$S3_URL")
# the data object of stream $1 in the pipeline repo, as bucket/key (from our RGW's request log)
datakey() { grep -o "\"PUT /$BUCKET_PGARK/pipeline/streams/$1/data-[^?\" ]*" "$RGW_DIR/log/client.rgw.0.log" | tail -1 | sed 's|^"PUT /||'; }
if has s3; then
  R="s3://$BUCKET_PGARK/pipeline"; A="s3://$BUCKET_PGARK/awscli"
  for run in $(seq "$RUNS"); do
    s3_rm "$R/"; s3_rm "$A/"
    measure -- sh -c "\"$PGARK\" put raw$run --repo $R ${PGARK_S3[*]} --compression none < \"$D\""
    res_row s3 "upload raw" pgark "pgark put --compression none" "$run" "$SIZE" "$SIZE" "$(rgw_parts "$(datakey raw$run)")"
    measure -- sh -c "$AWS --endpoint-url $S3_URL s3 cp --no-progress \"$D\" $A/raw$run"
    res_row s3 "upload raw" peer "aws s3 cp FILE s3://" "$run" "$SIZE" "$SIZE" "$(rgw_parts "$BUCKET_PGARK/awscli/raw$run")"
    measure -- sh -c "$AWS --endpoint-url $S3_URL s3 cp --no-progress - $A/stdin$run < \"$D\""
    res_row s3 "upload raw" peer "aws s3 cp - s3:// (stdin)" "$run" "$SIZE" "$SIZE" "$(rgw_parts "$BUCKET_PGARK/awscli/stdin$run")"
    measure -- sh -c "\"$PGARK\" put zst$run --repo $R ${PGARK_S3[*]} --compression zstd < \"$D\""
    zb=$(s3_bytes "$R/streams/zst$run/data-")
    res_row s3 "upload zstd" pgark "pgark put --compression zstd" "$run" "$SIZE" "$zb" "$(rgw_parts "$(datakey zst$run)")"
    measure -- sh -c "zstd -3 -T1 -c < \"$D\" | $AWS --endpoint-url $S3_URL s3 cp --no-progress - $A/zst$run"
    res_row s3 "upload zstd" peer "zstd -3 -T1 | aws s3 cp -" "$run" "$SIZE" "$(s3_bytes "$A/zst$run")" "$(rgw_parts "$BUCKET_PGARK/awscli/zst$run")"
    measure -- sh -c "\"$PGARK\" get raw$run --repo $R ${PGARK_S3[*]} > /dev/null"
    res_row s3 "download raw" pgark "pgark get" "$run" "$SIZE" "$SIZE"
    measure -- sh -c "$AWS --endpoint-url $S3_URL s3 cp --no-progress $A/raw$run - > /dev/null"
    res_row s3 "download raw" peer "aws s3 cp s3:// -" "$run" "$SIZE" "$SIZE"
    measure -- sh -c "\"$PGARK\" get zst$run --repo $R ${PGARK_S3[*]} > /dev/null"
    res_row s3 "download zstd" pgark "pgark get" "$run" "$SIZE" "$SIZE"
    measure -- sh -c "$AWS --endpoint-url $S3_URL s3 cp --no-progress $A/zst$run - | zstd -d -c > /dev/null"
    res_row s3 "download zstd" peer "aws s3 cp s3:// - | zstd -d" "$run" "$SIZE" "$SIZE"
  done
  s3_rm "$R/"; s3_rm "$A/"
fi

# ---------------------------------------------------------------------------------------------
if has big; then
  R="s3://$BUCKET_PGARK/pipeline"; A="s3://$BUCKET_PGARK/awscli"
  BIG_HEAD="head -c $BIG_SIZE /dev/urandom"
  for ps in $BIG_PART_SIZES; do
    s3_rm "$R/"
    M_OUT="$TMPD/big-put.out" measure -- bash -c "set -o pipefail; $BIG_HEAD | tee >(sha256sum | cut -c1-64 > $TMPD/big-in.sha) | \"$PGARK\" put big --repo $R ${PGARK_S3[*]} --compression none --part-size $ps"
    sleep 1
    note="$(rgw_parts "$(datakey big)")"
    res_row big "stdin upload $((BIG_SIZE / GiB)) GiB, part-size $ps" pgark "head -c | pgark put --compression none --part-size $ps" 1 "$BIG_SIZE" \
      "$(s3_bytes "$R/streams/big/data-")" "$note"
    M_OUT="$TMPD/big-get.out" measure -- bash -c "set -o pipefail; \"$PGARK\" get big --repo $R ${PGARK_S3[*]} | sha256sum | cut -c1-64 > $TMPD/big-out.sha"
    if [ "$M_RC" = 0 ] && cmp -s "$TMPD/big-in.sha" "$TMPD/big-out.sha"; then note="sha256 match $(cut -c1-16 "$TMPD/big-in.sha")…; pgark get verified"
    else note="MISMATCH or failure: in $(cat "$TMPD/big-in.sha" 2>/dev/null) out $(cat "$TMPD/big-out.sha" 2>/dev/null) rc=$M_RC"; fi
    res_row big "read back $((BIG_SIZE / GiB)) GiB (part-size $ps)" pgark "pgark get | sha256sum" 1 "$BIG_SIZE" "$BIG_SIZE" "$note"
    s3_rm "$R/"
  done
  if [ "$BIG_PEER" = 1 ]; then
    M_OUT="$TMPD/big-aws.out" measure -- bash -c "set -o pipefail; $BIG_HEAD | tee >(sha256sum | cut -c1-64 > $TMPD/big-in.sha) | $AWS --endpoint-url $S3_URL s3 cp --no-progress - $A/big"
    res_row big "stdin upload $((BIG_SIZE / GiB)) GiB, part-size 8MiB" peer "head -c | aws s3 cp - s3://" 1 "$BIG_SIZE" \
      "$(s3_bytes "$A/big")" "$(sleep 1; rgw_parts "$BUCKET_PGARK/awscli/big")"
    M_OUT="$TMPD/big-aws-get.out" measure -- bash -c "set -o pipefail; $AWS --endpoint-url $S3_URL s3 cp --no-progress $A/big - | sha256sum | cut -c1-64 > $TMPD/big-out.sha"
    if cmp -s "$TMPD/big-in.sha" "$TMPD/big-out.sha"; then note="sha256 match"; else note="MISMATCH"; fi
    res_row big "read back $((BIG_SIZE / GiB)) GiB (part-size 8MiB)" peer "aws s3 cp s3:// - | sha256sum" 1 "$BIG_SIZE" "$BIG_SIZE" "$note"
    s3_rm "$A/"
  fi
fi

# ---------------------------------------------------------------------------------------------
if has startup; then
  "$PGARK" --help >/dev/null; "$PGARK" --version >/dev/null   # compile cache warm, files in page cache
  for i in $(seq "$STARTUP_N"); do
    measure -- "$PGARK" --version;                 res_row startup "--version" pgark "pgark --version" "$i" 0 0
    measure -- "$NODE" -e 0;                       res_row startup "--version" peer "node -e 0" "$i" 0 0
    measure -- pgbackrest version;                 res_row startup "--version" peer "pgbackrest version" "$i" 0 0
    measure -- barman-cloud-wal-archive --version; res_row startup "--version" peer "barman-cloud-wal-archive --version" "$i" 0 0
    measure -- "$PGARK" --help;                    res_row startup "--help (loads the CLI)" pgark "pgark --help" "$i" 0 0
    measure -- "$NODE" -e 0;                       res_row startup "--help (loads the CLI)" peer "node -e 0" "$i" 0 0
  done
fi

"$NODE" "$BENCH_DIR/lib/report.mjs" "$RES_NAME" >/dev/null
log "done: $RES_FILE, $RESULTS_DIR/$RES_NAME.md, $RESULTS_DIR/$RES_NAME.json"
