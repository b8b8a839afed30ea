#!/usr/bin/env bash
# bench/backup-profile.sh — a quick, local profile of pgark backup/restore while tuning them
# (the side-by-side suite with pgBackRest and barman is bench/backup.sh; this is for iterating).
#
#   bench/backup-profile.sh setup                 PG 15 clusters (pgbench -s $SCALE; $RELS small relations),
#                                                 repos (file:// on tmpfs, S3 on the test RGW), pgark init
#   bench/backup-profile.sh snap NAME             copy dist/ to $BP_HOME/builds/NAME (what runs are timed with)
#   bench/backup-profile.sh backup NAME CL REPO [ARGS]   one backup (CL = pgbench|rels; REPO = file|s3)
#   bench/backup-profile.sh restore NAME CL REPO [ARGS]  restore the newest backup into $BP_HOME/restore
#   bench/backup-profile.sh update CL PCT         pgbench: UPDATE PCT % random rows of pgbench_accounts
#   bench/backup-profile.sh append CL PCT         pgbench: insert PCT % new rows, update the newest ones
#   bench/backup-profile.sh pgbr-backup | pgbr-restore     pgBackRest 2.45, posix repo, zst-3, process-max 2
#   bench/backup-profile.sh stop
# Each timed run prints: wall s, user+sys CPU s, peak RSS MiB, load average (machine is shared).
# BP_NODE_OPTIONS (e.g. --cpu-prof --cpu-prof-dir=/tmp/prof) is passed to node.
set -euo pipefail
BP_HOME=${BP_HOME:-/var/tmp/backperf}
SHM=${BP_SHM:-/dev/shm/backperf}
SCALE=${SCALE:-100}
RELS=${RELS:-100000}
PGBIN=/usr/lib/postgresql/15/bin
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NODE=$(readlink -f "$ROOT/node_modules/.bin/node")
S3_ENDPOINT=${S3_ENDPOINT:-http://127.0.0.1:17480}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-pgarktestaccesskey} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-pgarktestsecretkey} AWS_REGION=us-east-1
BUCKET=backperf
declare -A PORT=([pgbench]=55470 [rels]=55471)

as_pg() { runuser -u postgres -- env PATH="$PGBIN:/usr/bin:/bin" HOME=/var/lib/postgresql LANG=C.UTF-8 \
  AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" AWS_REGION=us-east-1 "$@"; }
psqlc() { as_pg psql -X -q -At -h "$BP_HOME/run" -p "${PORT[$1]}" -U postgres -d postgres -v ON_ERROR_STOP=1 -c "$2"; }
conf() { echo "$BP_HOME/conf/$1-$2.yaml"; }   # conf CL REPO
pgark_of() { echo "$BP_HOME/builds/$1/dist/pgark.mjs"; }

write_conf() {  # write_conf CL REPO
  local cl=$1 r=$2 url
  if [ "$r" = file ]; then url="file://$SHM/repo-$cl"; else url="s3://$BUCKET/$cl"; fi
  {
    echo "repo: $url"
    echo "pg-host: $BP_HOME/run"
    echo "pg-port: ${PORT[$cl]}"
    echo "pg-user: postgres"
    echo "archive-timeout: 120s"
    if [ "$r" = s3 ]; then
      echo "s3-endpoint: $S3_ENDPOINT"
      echo "s3-access-key-id: $AWS_ACCESS_KEY_ID"
      echo "s3-secret-access-key: $AWS_SECRET_ACCESS_KEY"
    fi
  } >"$(conf "$cl" "$r")"
  chown postgres: "$(conf "$cl" "$r")"; chmod 600 "$(conf "$cl" "$r")"
}

start_cluster() {  # start_cluster CL
  local cl=$1 d="$BP_HOME/$1"
  [ -f "$d/postmaster.pid" ] && as_pg pg_ctl -D "$d" status >/dev/null 2>&1 && return 0
  as_pg pg_ctl -D "$d" -l "$BP_HOME/log/$cl.log" -w start >/dev/null
}

timed() {  # timed LABEL CMD... (as postgres, under time -v)
  local label=$1; shift
  local tf="$BP_HOME/tmp/time.$$" t0 t1 load
  load=$(cut -d' ' -f1 /proc/loadavg)
  t0=$(date +%s.%N)
  set +e
  as_pg /usr/bin/time -v -o "$tf" "$@" >"$BP_HOME/tmp/last.out" 2>&1
  local rc=$?
  set -e
  t1=$(date +%s.%N)
  awk -v l="$label" -v a="$t0" -v b="$t1" -v load="$load" -v rc=$rc -F': ' '
    /User time/{u=$2} /System time/{s=$2} /Maximum resident/{r=$2}
    END{printf "%-40s wall %6.2f s  cpu %6.2f s (user %.2f sys %.2f)  rss %4d MiB  load %s%s\n", l, b-a, u+s, u, s, r/1024, load, rc?"  EXIT " rc:""}' "$tf"
  if [ $rc -ne 0 ]; then tail -20 "$BP_HOME/tmp/last.out" >&2; return $rc; fi
}

cmd=${1:-}; shift || true
case $cmd in
setup)
  mkdir -p "$BP_HOME"/{run,log,tmp,conf,builds} "$SHM"
  chown postgres: "$BP_HOME" "$BP_HOME"/{run,log,tmp,conf} "$SHM"
  "$0" snap setup
  /usr/bin/aws --endpoint-url "$S3_ENDPOINT" s3 mb "s3://$BUCKET" 2>/dev/null || true
  for cl in pgbench rels; do
    d="$BP_HOME/$cl"
    if [ ! -d "$d" ]; then
      as_pg initdb -k -D "$d" -U postgres >/dev/null
      cat >>"$d/postgresql.conf" <<CONF
port = ${PORT[$cl]}
listen_addresses = ''
unix_socket_directories = '$BP_HOME/run'
shared_buffers = 128MB
max_wal_size = 1GB
wal_level = replica
archive_mode = on
archive_command = '$NODE $BP_HOME/builds/setup/dist/pgark.mjs wal-push %p --config $(conf $cl file) && $NODE $BP_HOME/builds/setup/dist/pgark.mjs wal-push %p --config $(conf $cl s3)'
autovacuum = off
fsync = off
max_locks_per_transaction = 1024
CONF
    fi
    write_conf "$cl" file; write_conf "$cl" s3
    start_cluster "$cl"
    for r in file s3; do as_pg "$NODE" "$(pgark_of setup)" init --config "$(conf "$cl" "$r")" 2>&1 | grep -v "already\|not encrypted" || true; done
  done
  if [ "$(psqlc pgbench "SELECT count(*) FROM pg_class WHERE relname = 'pgbench_accounts'")" = 0 ]; then
    as_pg pgbench -h "$BP_HOME/run" -p "${PORT[pgbench]}" -U postgres -i -q -s "$SCALE" postgres
    psqlc pgbench "CHECKPOINT"
  fi
  have=$(psqlc rels "SELECT count(*) FROM pg_class WHERE relname LIKE 'r\_%'")
  for ((i = have; i < RELS; i += 2000)); do
    psqlc rels "DO \$\$ BEGIN FOR i IN $i..$((i + 1999)) LOOP EXECUTE format('CREATE TABLE r_%s (id int, v text); INSERT INTO r_%s VALUES (1, ''x'')', i, i); END LOOP; END \$\$"
  done
  psqlc rels "CHECKPOINT"
  ;;
snap)
  rm -rf "$BP_HOME/builds/$1"; mkdir -p "$BP_HOME/builds/$1"
  cp -r "$ROOT/dist" "$BP_HOME/builds/$1/dist"; ln -s "$ROOT/node_modules" "$BP_HOME/builds/$1/node_modules"
  ;;
backup)
  name=$1 cl=$2 r=$3; shift 3
  start_cluster "$cl"
  timed "backup $name $cl $r $*" "$NODE" ${BP_NODE_OPTIONS:-} "$(pgark_of "$name")" backup --config "$(conf "$cl" "$r")" "$@"
  grep -o 'backup [0-9A-Z]* complete.*' "$BP_HOME/tmp/last.out" | cut -c1-400
  ;;
restore)
  name=$1 cl=$2 r=$3; shift 3
  rm -rf "$SHM/restore"; install -d -o postgres -m 700 "$SHM/restore"
  timed "restore $name $cl $r $*" "$NODE" ${BP_NODE_OPTIONS:-} "$(pgark_of "$name")" restore --config "$(conf "$cl" "$r")" --target-dir "$SHM/restore" "$@"
  rm -rf "$SHM/restore"
  ;;
update)
  cl=$1 pct=$2
  psqlc "$cl" "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid IN (SELECT (random() * (SELECT max(aid) FROM pgbench_accounts))::int FROM generate_series(1, (SELECT count(*) * $pct / 100 FROM pgbench_accounts)::int))"
  psqlc "$cl" CHECKPOINT
  ;;
append)
  cl=$1 pct=$2
  psqlc "$cl" "INSERT INTO pgbench_accounts SELECT m + g, 1, 0, '' FROM (SELECT max(aid) m, count(*) c FROM pgbench_accounts) s, generate_series(1, (s.c * $pct / 100)::int) g"
  psqlc "$cl" "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid > (SELECT max(aid) - 10000 FROM pgbench_accounts)"
  psqlc "$cl" CHECKPOINT
  ;;
pgbr-conf)
  mkdir -p "$BP_HOME/pgbr"/{log,lock,spool}; chown -R postgres: "$BP_HOME/pgbr"
  cat >"$BP_HOME/pgbr/pgbackrest.conf" <<CONF
[global]
repo1-type=posix
repo1-path=$SHM/pgbr-repo
repo1-retention-full=9999
compress-type=zst
start-fast=y
archive-check=n
log-path=$BP_HOME/pgbr/log
log-level-console=warn
lock-path=$BP_HOME/pgbr/lock
spool-path=$BP_HOME/pgbr/spool
process-max=2

[pgbench]
pg1-path=$BP_HOME/pgbench
pg1-port=${PORT[pgbench]}
pg1-socket-path=$BP_HOME/run

[rels]
pg1-path=$BP_HOME/rels
pg1-port=${PORT[rels]}
pg1-socket-path=$BP_HOME/run
CONF
  chown postgres: "$BP_HOME/pgbr/pgbackrest.conf"
  for st in pgbench rels; do as_pg pgbackrest --config="$BP_HOME/pgbr/pgbackrest.conf" --stanza=$st stanza-create >/dev/null || true; done
  ;;
pgbr-backup)
  cl=$1; shift
  timed "pgbackrest backup $cl $*" pgbackrest --config="$BP_HOME/pgbr/pgbackrest.conf" --stanza="$cl" backup --type=full "$@"
  as_pg pgbackrest --config="$BP_HOME/pgbr/pgbackrest.conf" --stanza="$cl" --repo1-retention-full=1 expire >/dev/null
  ;;
pgbr-restore)
  cl=$1; shift
  rm -rf "$SHM/restore"; install -d -o postgres -m 700 "$SHM/restore"
  timed "pgbackrest restore $cl $*" pgbackrest --config="$BP_HOME/pgbr/pgbackrest.conf" --stanza="$cl" restore --pg1-path="$SHM/restore" "$@"
  rm -rf "$SHM/restore"
  ;;
stop)
  for cl in pgbench rels; do as_pg pg_ctl -D "$BP_HOME/$cl" -m fast stop || true; done
  ;;
*) sed -n 2,16p "$0"; exit 2 ;;
esac
