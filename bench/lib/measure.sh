# bench/lib/measure.sh — timing one command, and the results file. Source after env.sh + services.sh.
#
# measure [--pg] -- CMD...   runs CMD (as postgres with --pg) under /usr/bin/time -v, inside a
# cpuacct cgroup of its own when cgroup v1's cpuacct is available. Sets:
#   M_WALL   wall seconds (date +%s.%N around the command)
#   M_USER M_SYS   user/sys CPU of CMD and every child it waited for (time -v)
#   M_CPU    CPU seconds of everything that ran in the cgroup, including detached daemons
#            (pgBackRest's async archiver, pgark's background wal-prefetch); = user+sys without cgroup
#   M_RSS_KB peak RSS of the largest single process among CMD and its waited-for children (time -v)
#   M_SRV_CPU CPU seconds used meanwhile by the S3 side (ceph-mon/osd/radosgw + stunnel)
#   M_RC     exit status. CMD's stdout+stderr go to $TMPD/last.out (or $M_OUT if set).
# After CMD exits, waits (up to 60 s) until nothing else is left in the cgroup, so a detached
# daemon's CPU is counted and it cannot leak into the next measurement. Before CMD starts, `sync`
# writes back what earlier steps left dirty (a restored cluster, a deleted directory): on this
# VM writeback of 1.6 GB costs seconds of kernel CPU, which would otherwise land on whichever
# tool runs next.

CG_ROOT=/sys/fs/cgroup/cpuacct
CG=""
cg_setup() {
  [ -n "$CG" ] && return 0
  if [ -w "$CG_ROOT" ] && [ -f "$CG_ROOT/cpuacct.usage" ]; then
    CG="$CG_ROOT/pgark-bench-$$"
    mkdir -p "$CG" 2>/dev/null || CG=""
  fi
  [ -n "$CG" ] || log "no writable cgroup v1 cpuacct: CPU of detached processes is not counted"
}
# cgroupfs files report size 0: test the content, not [ -s ]
cg_busy() { [ -n "$(cat "$CG/cgroup.procs" 2>/dev/null)" ]; }
cg_cleanup() {
  [ -n "$CG" ] && [ -d "$CG" ] || return 0
  local i; for i in $(seq 100); do cg_busy || break; sleep 0.1; done
  rmdir "$CG" 2>/dev/null || log "cgroup $CG still has processes: $(tr '\n' ' ' <"$CG/cgroup.procs")"
}
cg_wait_empty() {  # cg_wait_empty SECONDS
  [ -n "$CG" ] || return 0
  local i; for i in $(seq $(( ${1:-60} * 10 ))); do cg_busy || return 0; sleep 0.1; done
  log "processes still running in the cgroup after ${1:-60}s: $(tr '\n' ' ' <"$CG/cgroup.procs")"
}

measure() {
  local pg=0
  while [ $# -gt 0 ]; do case $1 in --pg) pg=1; shift ;; --) shift; break ;; *) break ;; esac; done
  local tf="$TMPD/time.out" out="${M_OUT:-$TMPD/last.out}" s0 s1 t0 t1 c0=0 c1=0
  rm -f "$tf"; chmod 777 "$TMPD" 2>/dev/null || true
  cg_setup
  if [ -n "$CG" ]; then cg_wait_empty 60; fi
  sync
  if [ -n "$CG" ]; then c0=$(cat "$CG/cpuacct.usage"); fi
  local -a run=(/usr/bin/time -v -o "$tf" "$@")
  if [ "$pg" = 1 ]; then as_pg_argv; run=("${AS_PG[@]}" "${run[@]}"); fi
  M_LOAD=$(cut -d' ' -f1 /proc/loadavg)   # 1-min load average when the command starts (the machine is shared)
  s0=$(srv_cpu); t0=$(date +%s.%N)
  set +e
  if [ -n "$CG" ]; then
    bash -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' _ "$CG" "${run[@]}" >"$out" 2>&1
  else
    "${run[@]}" >"$out" 2>&1
  fi
  M_RC=$?
  set -e
  t1=$(date +%s.%N)
  cg_wait_empty 60
  s1=$(srv_cpu)
  M_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b - a}')
  M_USER=$(awk -F': ' '/User time/{print $2}' "$tf" 2>/dev/null); M_USER=${M_USER:-0}
  M_SYS=$(awk -F': ' '/System time/{print $2}' "$tf" 2>/dev/null); M_SYS=${M_SYS:-0}
  M_RSS_KB=$(awk -F': ' '/Maximum resident set size/{print $2}' "$tf" 2>/dev/null); M_RSS_KB=${M_RSS_KB:-0}
  if [ -n "$CG" ]; then c1=$(cat "$CG/cpuacct.usage"); M_CPU=$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.2f", (b - a) / 1e9}')
  else M_CPU=$(awk -v u="$M_USER" -v s="$M_SYS" 'BEGIN{printf "%.2f", u + s}'); fi
  M_SRV_CPU=$(awk -v a="$s0" -v b="$s1" 'BEGIN{printf "%.2f", b - a}')
  if [ "$M_RC" != 0 ]; then log "command failed (rc=$M_RC): $*"; tail -5 "$out" | sed 's/^/    /' >&2; fi
}

# ---- results: one TSV per script run (previous one moved to results/old/) ----
RES_COLS="ts\tsection\tcase\tside\ttool\trun\twall_s\tuser_s\tsys_s\tcpu_s\tmaxrss_kb\tsrv_cpu_s\tbasis_bytes\tout_bytes\trc\tload1\tnote"
res_init() {   # res_init NAME  -> $RES_FILE
  RES_FILE="$RESULTS_DIR/$1.tsv"; mkdir -p "$RESULTS_DIR/old"
  [ -f "$RES_FILE" ] && mv "$RES_FILE" "$RESULTS_DIR/old/$1.$(date +%Y%m%d-%H%M%S).tsv"
  printf "$RES_COLS\n" >"$RES_FILE"
}
# res_row SECTION CASE SIDE(pgark|peer) TOOL RUN BASIS_BYTES OUT_BYTES [NOTE]
res_row() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date +%FT%T)" "$1" "$2" "$3" "$4" "$5" \
    "$M_WALL" "$M_USER" "$M_SYS" "$M_CPU" "$M_RSS_KB" "$M_SRV_CPU" "$6" "$7" "$M_RC" "$M_LOAD" "${8:-}" >>"$RES_FILE"
  log "$1 | $2 | $4 run$5: wall=${M_WALL}s cpu=${M_CPU}s (user ${M_USER} sys ${M_SYS}) rss=$((M_RSS_KB / 1024))MiB srv_cpu=${M_SRV_CPU}s out=$7 rc=$M_RC"
}

# meta.json next to the results: machine, versions, knobs
write_meta() {  # write_meta NAME key=value...
  local f="$RESULTS_DIR/$1.meta.json"; shift
  {
    echo "{"
    echo "  \"date\": \"$(date -u +%FT%TZ)\","
    echo "  \"host\": {\"cpus\": $(nproc), \"cpu\": \"$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)\", \"mem_gib\": $(awk '/MemTotal/{printf "%.0f", $2/1048576}' /proc/meminfo), \"kernel\": \"$(uname -r)\", \"loadavg_at_start\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"},"
    echo "  \"pgark\": \"$BENCH_PGARK_VERSION\","
    echo "  \"versions\": {\"postgresql\": \"$($PGBIN/postgres --version | awk '{print $3}')\", \"pgbackrest\": \"$(pgbackrest version 2>/dev/null | awk '{print $2}')\", \"barman_cloud\": \"$(barman-cloud-wal-archive --version 2>/dev/null | awk '{print $2}')\", \"awscli\": \"$($AWS --version 2>/dev/null | awk '{print $1}')\", \"zstd\": \"$(zstd -V | grep -o 'v[0-9.]*' | head -1)\", \"lz4\": \"$(lz4 -V 2>&1 | grep -o 'v[0-9.]*' | head -1)\", \"gzip\": \"$(gzip -V | awk 'NR==1{print $2}')\", \"age\": \"$(age --version)\", \"ceph\": \"$(radosgw --version 2>/dev/null | awk '{print $3}')\"},"
    local kv first=1
    echo "  \"settings\": {"
    for kv in "$@"; do
      [ $first = 1 ] || echo ","
      printf '    "%s": "%s"' "${kv%%=*}" "${kv#*=}"; first=0
    done
    echo; echo "  }"
    echo "}"
  } >"$f"
}
