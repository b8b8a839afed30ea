#!/bin/sh
# The `pgark` executable: a POSIX shell launcher in front of Node (dist/pgark.mjs).
#
# Why a shell script: PostgreSQL runs archive_command once per WAL segment and waits for it.
# The background pusher (wal-push-ahead) has usually uploaded the segment before PostgreSQL
# asks, so the call only has to see that it did. Node needs ~27 ms of CPU just to start; this
# script answers such a call in about a millisecond, without starting Node at all.
#
# The quick answer: for `pgark wal-push [--config FILE] PATH`, the pusher writes
# DIR/.pgark/archived/NAME (DIR: the directory of PATH, i.e. pg_wal) once the object store has
# confirmed NAME, containing the key below of the call that started the pusher. Exit 0 is
# answered here only when all of these hold, else Node runs and checks everything itself:
#   - the marker's key equals this call's: the same pgark build and the same config file path
#     (so the same repository, as long as the environment is the same — PostgreSQL's can only
#     change with a restart, see the next point);
#   - the marker is newer than the WAL file, than the config file and than ./postmaster.pid
#     (PostgreSQL runs archive_command in the data directory and rewrites that file at each
#     start: a marker from before a restart, a restored PGDATA or an edited config is not
#     trusted).
# While the pusher runs (DIR/.pgark/pusher.pid) and has not failed NAME (DIR/.pgark/failed/NAME),
# the script waits for the marker a little, in 10 ms steps; then Node takes over.
# src/repo/quick-markers.ts writes these files; docs/FORMAT.md describes them.

build='@PGARK_BUILD@'

# Sets quick_key, quick_config and quick_wal for a wal-push command line this script understands.
quick_invocation() {
  [ "$1" = wal-push ] || return 1
  shift
  quick_config=${PGARK_CONFIG:-/etc/pgark/pgark.yaml}
  quick_wal=
  while [ $# -gt 0 ]; do
    case $1 in
      --config) [ $# -ge 2 ] || return 1; quick_config=$2; shift 2 ;;
      --config=*) quick_config=${1#--config=}; shift ;;
      -*) return 1 ;;
      *) [ -z "$quick_wal" ] || return 1; quick_wal=$1; shift ;;
    esac
  done
  [ -n "$quick_wal" ] || return 1
  case $quick_config in /*) ;; *) return 1 ;; esac
  quick_key="pgark-quick-1 $build $quick_config"
}

# Exits 0 when the pusher has archived the file; returns when Node must answer.
quick_push() {
  name=${quick_wal##*/}
  case $quick_wal in */*) dir=${quick_wal%/*} ;; *) dir=. ;; esac
  marker=$dir/.pgark/archived/$name
  steps=0
  while :; do
    if [ -f "$marker" ]; then
      IFS= read -r content <"$marker" || return 0
      [ "$content" = "$quick_key" ] || return 0
      [ "$dir/$name" -nt "$marker" ] || [ "$quick_config" -nt "$marker" ] || [ postmaster.pid -nt "$marker" ] && return 0
      exit 0
    fi
    [ -f "$dir/.pgark/failed/$name" ] && return 0
    IFS= read -r pid <"$dir/.pgark/pusher.pid" 2>/dev/null || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    steps=$((steps + 1))
    [ "$steps" -le 300 ] || return 0
    sleep 0.01 2>/dev/null || return 0
  done
}

if quick_invocation "$@"; then
  quick_push
  # The pusher this call may start writes markers with this call's key.
  PGARK_INTERNAL_QUICK_KEY=$quick_key
  export PGARK_INTERNAL_QUICK_KEY
fi

# Node: dist/pgark.mjs next to this script (found through symlinks, e.g. node_modules/.bin/pgark).
self=$0
case $self in */*) ;; *) self=$(command -v -- "$self") ;; esac
real=$(readlink -f -- "$self" 2>/dev/null) || real=$self
if ! command -v node >/dev/null 2>&1; then
  echo "pgark: error: node is not on PATH ($PATH); hint: install Node.js >= 22.15, or set PATH in the environment PostgreSQL starts with" >&2
  exit 2
fi
exec node "${real%/*}/pgark.mjs" "$@"
