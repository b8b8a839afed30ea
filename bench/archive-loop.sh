#!/usr/bin/env bash
# bench/archive-loop.sh WALDIR N 'archive_command with %p / %f' [CALL_LOG]
# Does what PostgreSQL's archiver does with the first N segments staged in WALDIR (a pg_wal-like
# directory with archive_status/<seg>.ready): for each segment in name order, runs the command
# through /bin/sh (the archiver uses system()), and on success renames .ready to .done.
# Stops at the first failure (exit 1). CALL_LOG, if given, gets one line per call:
# segment, wall ms of that call, exit status. Run as the postgres OS user.
set -eu
dir=$1; n=$2; cmd_t=$3; calls=${4:-}
count=0
[ -n "$calls" ] && : >"$calls"
for f in $(ls "$dir" | grep -E '^[0-9A-F]{24}$' | sort | head -n "$n"); do
  c=${cmd_t//%p/$dir/$f}; c=${c//%f/$f}
  t0=$(date +%s%N)
  rc=0; /bin/sh -c "$c" || rc=$?
  [ -n "$calls" ] && printf '%s\t%s\t%s\n' "$f" "$(( ($(date +%s%N) - t0) / 1000 ))" "$rc" >>"$calls"
  [ "$rc" = 0 ] || { echo "archive command failed for $f (exit $rc)" >&2; exit 1; }
  [ -f "$dir/archive_status/$f.ready" ] && mv "$dir/archive_status/$f.ready" "$dir/archive_status/$f.done"
  count=$((count + 1))
done
echo "archived $count segments"
