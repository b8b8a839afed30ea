# bench/lib/services.sh — packages, the pgark snapshot, our own Ceph RGW + stunnel, the PostgreSQL
# cluster. Source after env.sh. Every stop acts only on what these functions started: PostgreSQL
# via pg_ctl on our PGDATA, stunnel by its pid file, Ceph via stop-ceph-rgw.sh on our RGW dir
# (which kills only the pids in that dir's pid file).

BENCH_PACKAGES=(postgresql-15 postgresql-client-15 pgbackrest barman-cli-cloud python3-boto3 awscli stunnel4
  time openssl bc zstd lz4 age gzip curl ceph-mon ceph-osd radosgw ceph-common python3)

ensure_packages() {
  local missing=() p
  for p in "${BENCH_PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" = "ii " ] || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]} (apt-get install ${missing[*]})"
  # the postgresql package must not create and start a default cluster on 5432
  if ! dpkg -s postgresql-15 >/dev/null 2>&1; then
    mkdir -p /etc/postgresql-common
    grep -qs '^create_main_cluster *= *false' /etc/postgresql-common/createcluster.conf ||
      echo 'create_main_cluster = false' >>/etc/postgresql-common/createcluster.conf
  fi
  log "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  local a=(-o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)
  apt-get "${a[@]}" install "${missing[@]}" >"$LOGDIR/apt.log" 2>&1 || {
    apt-get -o DPkg::Lock::Timeout=600 -qq update >>"$LOGDIR/apt.log" 2>&1 || true
    apt-get "${a[@]}" install "${missing[@]}" >>"$LOGDIR/apt.log" 2>&1 || die "apt-get install failed, see $LOGDIR/apt.log"
  }
}

bench_dirs() {
  mkdir -p "$BENCH_HOME" "$RUNDIR" "$LOGDIR" "$TMPD" "$RESULTS_DIR" "$BENCH_HOME/bin" "$BENCH_HOME/cache" "$BENCH_HOME/data"
  chmod 755 "$BENCH_HOME"
  chown postgres:postgres "$RUNDIR" "$LOGDIR" "$TMPD"
  install -d -o postgres -g postgres "$PG_COMPILE_CACHE"
}

# ---- pgark: build it with the project's scripts/build.mjs, into $BENCH_HOME/pgark/dist ----
# BENCH_BUILD=1 (default): build from the clone's src/ in a scratch tree (src/ and node_modules
# are symlinks), so the clone's own dist/ — which tests running in parallel use — is not
# touched. BENCH_BUILD=0: copy the clone's existing dist/ instead.
install_pgark() {
  [ -x "$NODE" ] || die "no Node at $NODE (npm ci in $ROOT)"
  local snap="$BENCH_HOME/pgark" from="$ROOT/dist"
  if [ "${BENCH_BUILD:-1}" = 1 ]; then
    local b="$BENCH_HOME/build"
    rm -rf "$b"; mkdir -p "$b/scripts"
    cp "$ROOT/scripts/build.mjs" "$b/scripts/"; cp "$ROOT/package.json" "$ROOT/tsconfig.json" "$b/"
    ln -s "$ROOT/src" "$b/src"; ln -s "$ROOT/node_modules" "$b/node_modules"
    log "building pgark from $ROOT/src (scripts/build.mjs in $b)"
    (cd "$b" && PATH="$(dirname "$NODE"):$PATH" "$NODE" scripts/build.mjs) || die "build failed"
    from="$b/dist"
  fi
  [ -f "$from/pgark.mjs" ] || die "no $from/pgark.mjs (build pgark first: node scripts/build.mjs)"
  rm -rf "$snap.new"; mkdir -p "$snap.new"
  cp -a "$from" "$snap.new/dist" || die "copying $from failed (a concurrent rebuild?); run again"
  ln -s "$ROOT/node_modules" "$snap.new/node_modules"     # lz4-napi is loaded from node_modules at run time
  rm -rf "$snap"; mv "$snap.new" "$snap"
  # pgark's own launcher (dist/pgark, a shell script that starts Node only when it must), with
  # the project's Node first on PATH (the system's may be older than pgark needs)
  cat >"$PGARK" <<EOF
#!/bin/sh
PATH="$(dirname "$NODE"):\$PATH"; export PATH
exec "$snap/dist/pgark" "\$@"
EOF
  chmod 755 "$PGARK"
  # the benchmarks' S3 helper, bundled like pgark (the unbundled AWS SDK takes seconds to load)
  (cd "$ROOT" && node_modules/.bin/esbuild "$BENCH_DIR/lib/s3util.mjs" --bundle --platform=node --format=esm \
    --target=node22 --log-level=warning --outfile="$BENCH_HOME/bin/s3util.mjs" \
    "--banner:js=import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);") || die "bundling s3util failed"
  BENCH_PGARK_VERSION="$("$PGARK" --version) ($(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)), node $("$NODE" --version)"
  export BENCH_PGARK_VERSION
  log "pgark under test: $BENCH_PGARK_VERSION"
}

# ---- Ceph RGW (our own instance) ----
rgw_up() { curl -s -o /dev/null -m 2 "$S3_URL/"; }
srv_pids() { cat "$RGW_DIR/ceph-rgw.pid" 2>/dev/null; head -1 "$STUNNEL_PID" 2>/dev/null; }
# CPU seconds used so far by the S3 side (ceph-mon + ceph-osd + radosgw + stunnel)
srv_cpu() {
  local tot=0 p hz; hz=$(getconf CLK_TCK)
  for p in $(srv_pids); do
    [ -r "/proc/$p/stat" ] || continue
    tot=$(awk -v t="$tot" -v hz="$hz" '{print t + ($14+$15)/hz}' "/proc/$p/stat")
  done
  echo "$tot"
}

start_rgw() {
  log "Ceph RGW ($RGW_OBJECTSTORE) on $S3_URL, dir $RGW_DIR"
  PGARK_RGW_DIR="$RGW_DIR" PGARK_RGW_PORT="$RGW_PORT" PGARK_RGW_MON_PORT="$RGW_MON_PORT" \
    PGARK_RGW_OBJECTSTORE="$RGW_OBJECTSTORE" PGARK_RGW_STORE_BYTES="$RGW_STORE_BYTES" PGARK_RGW_TCP_NODELAY=1 \
    "$ROOT/scripts/objstores/start-ceph-rgw.sh" >"$RUNDIR/rgw.env" 2>>"$LOGDIR/ceph-rgw-start.log" ||
    { tail -5 "$LOGDIR/ceph-rgw-start.log" >&2; die "Ceph RGW did not start"; }
  local b
  for b in "$BUCKET_PGARK" "$BUCKET_PGBR" "$BUCKET_BARMAN"; do s3util mb "$b" || die "cannot create bucket $b"; done
}
stop_rgw() { PGARK_RGW_DIR="$RGW_DIR" "$ROOT/scripts/objstores/stop-ceph-rgw.sh" "$@" 2>&1 | sed 's/^/  /' >&2; }

# ---- stunnel: TLS on $RGW_TLS_PORT -> RGW (pgBackRest 2.45 speaks only https to S3) ----
start_stunnel() {
  mkdir -p "$TLSDIR"
  if [ ! -f "$TLSDIR/cert.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
      -keyout "$TLSDIR/key.pem" -out "$TLSDIR/cert.pem" 2>/dev/null
    chmod 644 "$TLSDIR/cert.pem"; chmod 600 "$TLSDIR/key.pem"
  fi
  cat >"$STUNNEL_CONF" <<EOF
pid = $STUNNEL_PID
output = $LOGDIR/stunnel.log
debug = 4
foreground = no
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[rgwtls]
accept = 127.0.0.1:$RGW_TLS_PORT
connect = 127.0.0.1:$RGW_PORT
cert = $TLSDIR/cert.pem
key = $TLSDIR/key.pem
EOF
  if pidalive "$STUNNEL_PID"; then return 0; fi
  log "stunnel TLS 127.0.0.1:$RGW_TLS_PORT -> $RGW_PORT"
  stunnel "$STUNNEL_CONF" || die "stunnel failed"
  local i; for i in $(seq 50); do [ -s "$STUNNEL_PID" ] && break; sleep 0.1; done
}
stop_stunnel() {
  if pidalive "$STUNNEL_PID"; then
    local p; p=$(head -1 "$STUNNEL_PID"); kill "$p"
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$STUNNEL_PID"
}

# ---- PostgreSQL 15 cluster (port $PGPORT) ----
pg_running() { as_pg pg_ctl -D "$PGDATA" status >/dev/null 2>&1; }
pg_init() {
  [ -f "$PGDATA/PG_VERSION" ] && return 0
  log "initdb -k $PGDATA (port $PGPORT)"
  install -d -o postgres -g postgres -m 700 "$PGDATA"
  as_pg initdb -k -D "$PGDATA" -U postgres -A trust >"$LOGDIR/initdb.log" || die "initdb failed"
  cat >>"$PGDATA/postgresql.conf" <<EOF

# ---- pgark benchmarks (bench/lib/services.sh) ----
port = $PGPORT
listen_addresses = ''
unix_socket_directories = '$RUNDIR'
wal_level = replica
archive_mode = on
archive_command = '/bin/true'     # set per benchmark phase with ALTER SYSTEM
max_wal_senders = 10
max_wal_size = 1GB
log_line_prefix = '%m [%p] '
EOF
}
pg_start() {
  pg_init
  pg_running && return 0
  log "starting PostgreSQL 15 on port $PGPORT"
  as_pg pg_ctl -D "$PGDATA" -l "$LOGDIR/postgres.log" -w -t 300 start >/dev/null || die "postgres did not start, see $LOGDIR/postgres.log"
}
pg_stop() { if [ -f "$PGDATA/PG_VERSION" ] && pg_running; then log "stopping PostgreSQL ($PGPORT)"; as_pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null; fi; }

set_archive_command() {  # set_archive_command 'cmd with %p'
  psqlc "alter system set archive_command = \$ac\$$1\$ac\$"
  psqlc "select pg_reload_conf()" >/dev/null
  sleep 0.5
}
# wait until the archiver has no .ready left (or timeout seconds; default 300)
wait_archiver() {
  local i n=$(( ${1:-300} * 5 ))
  for i in $(seq "$n"); do
    ls "$PGDATA/pg_wal/archive_status/" 2>/dev/null | grep -q '\.ready$' || return 0
    sleep 0.2
  done
  log "archiver backlog did not drain"; return 1
}

# pgbench tables at $SCALE in database postgres (idempotent)
ensure_pgbench() {
  if [ "$(psqlc "select to_regclass('pgbench_branches') is not null")" = t ] &&
     [ "$(psqlc "select count(*) from pgbench_branches")" = "$SCALE" ]; then return 0; fi
  log "pgbench -i -s $SCALE"
  set_archive_command '/bin/true'
  as_pg pgbench -i -q -s "$SCALE" postgres >"$LOGDIR/pgbench-init.log" 2>&1 || die "pgbench -i failed"
  psqlc "checkpoint"
}

# rgw_parts BUCKET/KEY — the parts of the newest multipart upload of KEY, from our RGW's request log
# (RGW 16 ignores ?partNumber= on HEAD, so the log is where part sizes can be seen):
# "N parts: COUNT×SIZE, ...; max K parts in flight, RGW busy with parts P % of the upload's span"
rgw_parts() {
  grep -F "\"PUT /$1?" "$RGW_DIR/log/client.rgw.0.log" 2>/dev/null | grep -F 'partNumber=' | awk '
    function secs(t,   a) { split(t, a, ":"); return a[1] * 3600 + a[2] * 60 + a[3] }
    { q = $0; sub(/.*"PUT [^?]*\?/, "", q); sub(/ HTTP.*/, "", q)
      n = split(q, kv, "&"); pn = ""; up = ""
      for (i = 1; i <= n; i++) { split(kv[i], a, "="); if (a[1] == "partNumber") pn = a[2]; if (a[1] == "uploadId") up = a[2] }
      r = $0; sub(/.*HTTP\/1\.1" /, "", r); split(r, f, " ")
      e = substr($1, 12, 12); b = $0; sub(/.*\[[0-9]+\/[A-Za-z]+\/[0-9]+:/, "", b); b = substr(b, 1, 12)
      if (f[1] == 200) { size[up, pn] = f[2]; st[up, pn] = secs(b); en[up, pn] = secs(e)
        if (!(up in seen)) { seen[up] = 1; order[++u] = up }; if (pn + 0 > maxp[up]) maxp[up] = pn + 0 } }
    END { if (!u) { print "no multipart upload in the RGW log"; exit }
      up = order[u]; out = ""; prev = ""; cnt = 0; m = maxp[up]
      for (p = 1; p <= m; p++) { s = size[up, p]; if (s == prev) cnt++; else { if (cnt) out = out sprintf("%s%d×%s", (out ? ", " : ""), cnt, prev); prev = s; cnt = 1 } }
      if (cnt) out = out sprintf("%s%d×%s", (out ? ", " : ""), cnt, prev)
      lo = 1e9; hi = 0; peak = 0
      for (p = 1; p <= m; p++) { if (st[up, p] < lo) lo = st[up, p]; if (en[up, p] > hi) hi = en[up, p]
        k = 0; for (q = 1; q <= m; q++) if (st[up, q] <= st[up, p] && en[up, q] > st[up, p]) k++; if (k > peak) peak = k }
      # time with at least one part in flight: union of the intervals (parts sorted by start = by number, nearly)
      busy = 0; cs = -1; ce = -1
      for (p = 1; p <= m; p++) { if (st[up, p] > ce) { if (ce > cs) busy += ce - cs; cs = st[up, p]; ce = en[up, p] } else if (en[up, p] > ce) ce = en[up, p] }
      if (ce > cs) busy += ce - cs
      printf "%d parts: %s; max %d in flight, a part in flight %.0f %% of %.1f s\n", m, out, peak, (hi > lo ? 100 * busy / (hi - lo) : 100), hi - lo }'
}

# pgbr_s3_repo_lines PATH — pgBackRest's repo1 settings for the RGW bucket (through stunnel: 2.45 speaks only https)
pgbr_s3_repo_lines() {
  cat <<EOF
repo1-type=s3
repo1-path=$1
repo1-s3-bucket=$BUCKET_PGBR
repo1-s3-endpoint=127.0.0.1
repo1-storage-port=$RGW_TLS_PORT
repo1-s3-region=us-east-1
repo1-s3-key=$AWS_ACCESS_KEY_ID
repo1-s3-key-secret=$AWS_SECRET_ACCESS_KEY
repo1-s3-uri-style=path
repo1-storage-verify-tls=n
EOF
}

# load_realistic DB ROWS — the realistic data set (sql/realistic-*.sql) into DB, replacing an earlier one: rows
# inserted by 2 sessions, then the 4 indexes built 2 at a time, vacuum freeze + analyze and a checkpoint
load_realistic() {
  local pq=(psql -X -q -At -v ON_ERROR_STOP=1 -d "$1") half=$(($2 / 2)) p1 p2
  as_pg "${pq[@]}" -c "set client_min_messages = warning" -c "drop schema if exists realistic cascade" -f "$BENCH_DIR/sql/realistic-schema.sql" >/dev/null
  as_pg "${pq[@]}" -v tbl=realistic.events -v lo=1 -v hi=$half -f "$BENCH_DIR/sql/realistic-insert.sql" & p1=$!
  as_pg "${pq[@]}" -v tbl=realistic.events -v lo=$((half + 1)) -v hi="$2" -f "$BENCH_DIR/sql/realistic-insert.sql" & p2=$!
  wait $p1; wait $p2
  as_pg "${pq[@]}" -c "set maintenance_work_mem='1GB'" -c "create index events_attrs_gin on realistic.events using gin (attrs)" & p1=$!
  as_pg "${pq[@]}" -c "set maintenance_work_mem='512MB'" -c "alter table realistic.events add constraint events_pkey primary key (id)" \
    -c "create index events_account_created_idx on realistic.events (account_id, created_at)" \
    -c "create index events_ref_idx on realistic.events (ref)" & p2=$!
  wait $p1; wait $p2
  as_pg "${pq[@]}" -c "vacuum (freeze, analyze) realistic.events" -c "checkpoint"
}
