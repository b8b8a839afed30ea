#!/bin/sh
# The `pgark` executable: a POSIX shell launcher in front of Node (dist/pgark.mjs).
#
# Why a shell script: PostgreSQL runs archive_command once per WAL segment and waits for it.
# The background pusher (wal-push-ahead) has usually uploaded the segment before PostgreSQL
# asks, so the call only has to see that it did. Node needs ~27 ms of CPU just to start; this
# script answers such a call in about a millisecond, without starting Node at all.
#
# What it answers itself (src/repo/quick-markers.ts writes the files it reads, in DIR/.pgark/,
# DIR being the directory of %p, i.e. pg_wal), for `pgark wal-push [--config FILE] PATH` and
# `pgark wal-fetch [--config FILE] NAME PATH`:
#   - wal-push: exit 0 when the background pusher has marked the file archived
#     (DIR/.pgark/archived/NAME, written once the object store confirmed it). While the pusher
#     runs (pusher.pid) and has not failed the file (failed/NAME), it waits for the marker a
#     little, in 10 ms steps.
#   - wal-fetch of a segment: while the background prefetcher runs (DIR/.pgark/prefetch: its
#     key, spool directory and PID), a segment it has downloaded and verified into its spool is
#     moved to %p, and the position is recorded for the prefetcher — what Node's fast path does.
# Only when everything below holds; otherwise Node runs and checks everything itself:
#   - the marker's key equals this call's: the same pgark build, the same config file path and
#     the same postmaster (PID and start time from ./postmaster.pid: PostgreSQL runs these
#     commands in the data directory). So the same repository: the environment, the other
#     source of settings, can only change with a restart. A marker from before a restart or of
#     a restored PGDATA is not trusted;
#   - the marker is newer than the config file (an edited config is not trusted), and for
#     wal-push newer than the WAL file.

build='@PGARK_BUILD@'

# Sets quick_command, quick_key, quick_config and quick_args (the positionals, space-separated:
# checked below to be names and paths without spaces) for a command line this script understands.
quick_invocation() {
  case $1 in wal-push) want=1 ;; wal-fetch) want=2 ;; *) return 1 ;; esac
  quick_command=$1
  shift
  quick_config=${PGARK_CONFIG:-/etc/pgark/pgark.yaml}
  quick_args=
  count=0
  while [ $# -gt 0 ]; do
    case $1 in
      --config) [ $# -ge 2 ] || return 1; quick_config=$2; shift 2 ;;
      --config=*) quick_config=${1#--config=}; shift ;;
      -* | *[!A-Za-z0-9_./-]* | '') return 1 ;;
      *) quick_args="$quick_args $1"; count=$((count + 1)); shift ;;
    esac
  done
  [ "$count" -eq "$want" ] || return 1
  case $quick_config in /*) ;; *) return 1 ;; esac
  postmaster=-
  if [ -f postmaster.pid ]; then
    { IFS= read -r pm_pid && IFS= read -r pm_dir && IFS= read -r pm_start; } 2>/dev/null <postmaster.pid && postmaster="$pm_pid@$pm_start"
  fi
  quick_key="pgark-quick-2 $build $postmaster $quick_config"
}

# Whether the marker file $1 is newer than the config file.
fresh() {
  ! [ "$quick_config" -nt "$1" ]
}

# wal-push NAME-PATH: exits 0 when the pusher has archived the file; returns when Node must answer.
quick_push() {
  wal=$1
  name=${wal##*/}
  case $wal in */*) dir=${wal%/*} ;; *) dir=. ;; esac
  marker=$dir/.pgark/archived/$name
  steps=0
  while :; do
    if [ -f "$marker" ]; then
      IFS= read -r content <"$marker" || return 0
      [ "$content" = "$quick_key" ] && fresh "$marker" && ! [ "$wal" -nt "$marker" ] || return 0
      exit 0
    fi
    [ -f "$dir/.pgark/failed/$name" ] && return 0
    IFS= read -r pid 2>/dev/null <"$dir/.pgark/pusher.pid" || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    steps=$((steps + 1))
    [ "$steps" -le 300 ] || return 0
    sleep 0.01 2>/dev/null || return 0
  done
}

# wal-fetch NAME PATH: exits 0 when a prefetched segment is in place; returns when Node must answer.
quick_fetch() {
  name=$1 target=$2
  case $name in *[!0-9A-F]*) return 0 ;; esac
  [ "${#name}" -eq 24 ] || return 0
  case $target in */*) dir=${target%/*} ;; *) dir=. ;; esac
  pointer=$dir/.pgark/prefetch
  { IFS= read -r key && IFS= read -r spool && IFS= read -r pid; } 2>/dev/null <"$pointer" || return 0
  [ "$key" = "$quick_key" ] && fresh "$pointer" && kill -0 "$pid" 2>/dev/null || return 0
  [ -f "$spool/fetched/$name" ] || return 0
  mv -f -- "$spool/fetched/$name" "$target" 2>/dev/null || return 0
  # The prefetcher follows the position (a missing update only slows the next calls down).
  printf '%s\n' "$name" 2>/dev/null >"$spool/fetch-position.tmp-launcher-$$" &&
    mv -f -- "$spool/fetch-position.tmp-launcher-$$" "$spool/fetch-position" 2>/dev/null
  exit 0
}

if quick_invocation "$@"; then
  # quick_args unquoted on purpose: checked to hold no spaces or glob characters
  case $quick_command in
    wal-push) quick_push $quick_args ;;
    wal-fetch) quick_fetch $quick_args ;;
  esac
  # Processes this call starts (the pusher, the prefetcher) write markers with this call's key.
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
