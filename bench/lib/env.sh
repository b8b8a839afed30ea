# bench/lib/env.sh — settings shared by pgark's benchmarks. Source it:  . "$(dirname "$0")/lib/env.sh"
#
# Everything the benchmarks create lives under $BENCH_HOME (default /var/tmp/pgark-bench): a
# snapshot of the built CLI, a private Ceph RGW, a stunnel TLS terminator for pgBackRest, one
# PostgreSQL 15 cluster (Debian packages, run as the `postgres` OS user on a private port), the
# data sets, repositories and spools. Scripts and results live in bench/ of the clone.
# Nothing here touches the test suite's servers ($PGARK_TEST_HOME, ports 17480/18480/20000).

BENCH_DIR="${BENCH_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
export BENCH_DIR ROOT
export BENCH_HOME="${BENCH_HOME:-/var/tmp/pgark-bench}"
export RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"

# Debian's binaries only: root's PATH may have pyenv shims (another python3 / aws) first.
export PGBIN=/usr/lib/postgresql/15/bin
export PATH="$BENCH_HOME/bin:$PGBIN:/usr/sbin:/usr/bin:/sbin:/bin"
export AWS=/usr/bin/aws

# The project's Node (>= 22.15 is needed: zstd in node:zlib); pgark runs from a snapshot of dist/
# (a rebuild by someone else mid-run must not change the binary under test).
export NODE="${NODE:-$(readlink -f "$ROOT/node_modules/.bin/node")}"
export PGARK="$BENCH_HOME/bin/pgark"
# V8 compile cache for processes run as postgres (the default /tmp/node-compile-cache may belong
# to root, and then a postgres-run pgark silently starts without a cache, see RESULTS.md)
export PG_COMPILE_CACHE="$BENCH_HOME/cache/node-compile-cache-postgres"

# ---- PostgreSQL 15 (Debian), port and socket private to the benchmarks ----
export PGPORT="${BENCH_PGPORT:-55460}"
export REPLICA_PORT="${BENCH_REPLICA_PORT:-55461}"
export PGDATA="$BENCH_HOME/pgdata"
export PGHOST="$BENCH_HOME/run"
export PGUSER=postgres
export PGDATABASE=postgres
export RUNDIR="$BENCH_HOME/run"
export LOGDIR="$BENCH_HOME/log"
export TMPD="$BENCH_HOME/tmp"
export SCALE="${SCALE:-50}"                       # pgbench scale of the cluster (WAL traffic, live test)

# ---- Ceph RGW of our own (bluestore on a sparse file: a 6 GiB object must fit; memstore keeps
# objects in the OSD's RAM). Started with scripts/objstores/start-ceph-rgw.sh on other ports. ----
export RGW_PORT="${BENCH_RGW_PORT:-27480}"
export RGW_MON_PORT="${BENCH_RGW_MON_PORT:-23310}"
export RGW_TLS_PORT="${BENCH_RGW_TLS_PORT:-27481}"    # stunnel -> RGW, for pgBackRest (https only)
export RGW_DIR="$BENCH_HOME/ceph-rgw"
export RGW_OBJECTSTORE="${BENCH_RGW_OBJECTSTORE:-bluestore}"
export RGW_STORE_BYTES="${BENCH_RGW_STORE_BYTES:-$((40 * 1024 * 1024 * 1024))}"   # sparse file
export S3_URL="http://127.0.0.1:$RGW_PORT"
export S3_TLS_URL="https://127.0.0.1:$RGW_TLS_PORT"
export TLSDIR="$BENCH_HOME/tls"
export STUNNEL_CONF="$TLSDIR/stunnel.conf"
export STUNNEL_PID="$RUNDIR/stunnel.pid"
# credentials of the throw-away RGW (fixed in start-ceph-rgw.sh)
export AWS_ACCESS_KEY_ID=pgarktestaccesskey
export AWS_SECRET_ACCESS_KEY=pgarktestsecretkey
export AWS_DEFAULT_REGION=us-east-1
export AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export AWS_PAGER=""
export BUCKET_PGARK=pgark-bench
export BUCKET_PGBR=pgbackrest
export BUCKET_BARMAN=barman

export PGBR_DIR="$BENCH_HOME/pgbackrest"     # pgBackRest config, spool, logs, locks
export RUNS="${RUNS:-3}"

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# parse_bench_args "$@" — the options every benchmark script takes: --quick, --only LIST, --runs N, --keep,
# -h/--help (prints the script's header comment) into QUICK, ONLY, RUNS_ARG, KEEP (set their defaults first).
# A script with options of its own (each taking a value) defines bench_option NAME VALUE: it sets the value
# and returns 0, or returns 1 for a name it does not know.
parse_bench_args() {
  while [ $# -gt 0 ]; do
    case $1 in
      --quick) QUICK=1 ;;
      --only) ONLY=$2; shift ;;
      --runs) RUNS_ARG=$2; shift ;;
      --keep) KEEP=1 ;;
      -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
      *) if declare -F bench_option >/dev/null && [ $# -gt 1 ] && bench_option "$1" "$2"; then shift
         else die "unknown argument, or one without its value: $1 (see --help)"; fi ;;
    esac
    shift
  done
}
pidalive() { [ -f "$1" ] && kill -0 "$(head -1 "$1")" 2>/dev/null; }

# as_pg CMD... — run as the postgres OS user with the environment above ($AS_PG: the same as an argv prefix)
as_pg_argv() {
  AS_PG=(runuser -u postgres -- env PATH="$PATH" HOME=/var/lib/postgresql PGHOST="$PGHOST" PGPORT="$PGPORT"
    PGUSER="$PGUSER" PGDATABASE="$PGDATABASE" PGDATA="$PGDATA" LANG=C.UTF-8
    AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"
    AWS_DEFAULT_REGION="$AWS_DEFAULT_REGION" AWS_REGION="$AWS_REGION" AWS_EC2_METADATA_DISABLED=true
    NODE_COMPILE_CACHE="$PG_COMPILE_CACHE")
}
as_pg() { as_pg_argv; "${AS_PG[@]}" "$@"; }
psqlc() { as_pg psql -X -q -At -v ON_ERROR_STOP=1 -c "$1"; }
awss3() { "$AWS" --endpoint-url "$S3_URL" s3 "$@"; }
s3util() { S3_URL="$S3_URL" "$NODE" "$BENCH_HOME/bin/s3util.mjs" "$@"; }    # size|rm|mb|parts, see lib/s3util.mjs
s3_rm() { s3util rm "$1" >/dev/null 2>&1 || true; }
s3_bytes() { s3util size "$1" 2>/dev/null | cut -d' ' -f1; }
awss3api() { "$AWS" --endpoint-url "$S3_URL" s3api "$@"; }
