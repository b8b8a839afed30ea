#!/usr/bin/env bash
# start-swift-s3api.sh — OpenStack Swift 2.30 (Debian 12 packages) with its s3api middleware: a
# second, stricter S3-compatible server for pgark's integration tests, on loopback.
#
# Four Python processes (account, container, object servers and the proxy that answers S3), one
# replica, one "disk" directory. Everything (rings, configs, data) lives in $DIR; /etc/swift is not
# touched. Rebuilt from an empty dir on every start that does not find it running.
#
# stdout: `export KEY=value` lines: SWIFT_S3_ENDPOINT SWIFT_S3_ACCESS_KEY_ID SWIFT_S3_SECRET_ACCESS_KEY
#         SWIFT_S3_REGION (distinct names, so they can be exported next to RGW's AWS_* ones).
#         The same lines without `export` go to $DIR/env. No bucket is created.
# PIDs (one a line): $DIR/swift.pid. Idempotent. Stop: stop-swift-s3api.sh.
# S3 credentials come from tempauth: access key "test:tester", secret "testing".
# Knobs: PGARK_TEST_HOME (/var/tmp/pgark-test), PGARK_SWIFT_DIR ($PGARK_TEST_HOME/swift),
#        PGARK_SWIFT_S3_PORT (18480), PGARK_SWIFT_ACCOUNT_PORT/CONTAINER_PORT/OBJECT_PORT
#        (16212/16211/16210), PGARK_SWIFT_START_TIMEOUT (300 s: generous, a busy 2-core machine
#        once needed 90 s).
set -euo pipefail

BASE=${PGARK_TEST_HOME:-/var/tmp/pgark-test}
DIR=${PGARK_SWIFT_DIR:-$BASE/swift}
PORT=${PGARK_SWIFT_S3_PORT:-18480}
ACCOUNT_PORT=${PGARK_SWIFT_ACCOUNT_PORT:-16212}
CONTAINER_PORT=${PGARK_SWIFT_CONTAINER_PORT:-16211}
OBJECT_PORT=${PGARK_SWIFT_OBJECT_PORT:-16210}
PIDFILE=$DIR/swift.pid
TIMEOUT=${PGARK_SWIFT_START_TIMEOUT:-300}
ENDPOINT=http://127.0.0.1:$PORT
HERE=$(cd "$(dirname "$0")" && pwd)

T0=$(date +%s%N)
log() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); echo "[start-swift-s3api +$((ms/1000)).$(printf '%03d' $((ms%1000)))s] $*" >&2; }
die() { log "ERROR: $*"; [ -d "$DIR/log" ] && log "logs: $DIR/log"; [ "${SPAWNED:-0}" = 1 ] && { log "stopping what this start spawned"; "$HERE/stop-swift-s3api.sh" >&2 || true; }; exit 1; }
print_env() {
  local lines
  lines="SWIFT_S3_ENDPOINT=$ENDPOINT
SWIFT_S3_ACCESS_KEY_ID=test:tester
SWIFT_S3_SECRET_ACCESS_KEY=testing
SWIFT_S3_REGION=us-east-1"
  echo "$lines" > "$DIR/env"
  echo "$lines" | sed 's/^/export /'
}
is_ours() {
  local pid=$1
  [ -n "$pid" ] && [ -e "/proc/$pid" ] || return 1
  tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -qE "swift-(account|container|object|proxy)-server $DIR/etc/"
}
http_up() { curl -sf -m 2 -o /dev/null "$ENDPOINT/healthcheck"; }
apt_install() { # install Debian packages; waits for the dpkg lock; updates the lists only if needed
  [ "$(id -u)" = 0 ] || die "missing Debian packages: $*; install them as root: apt-get install --no-install-recommends $*"
  log "installing $* (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  local a=(-o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)
  apt-get "${a[@]}" install "$@" >&2 2>&1 && return 0
  apt-get -o DPkg::Lock::Timeout=600 -qq update >&2 || true
  apt-get "${a[@]}" install "$@" >&2 || die "apt-get install $* failed"
}

if [ -s "$PIDFILE" ]; then
  alive=0; n=0
  while read -r p; do n=$((n+1)); is_ours "$p" && alive=$((alive+1)); done < "$PIDFILE"
  if [ "$n" -eq 4 ] && [ "$alive" -eq 4 ] && command -v curl >/dev/null && http_up; then
    log "already running (pids $(tr '\n' ' ' < "$PIDFILE"))"; print_env; exit 0
  fi
  log "stale or partial instance: stopping it, then starting from scratch"
  "$HERE/stop-swift-s3api.sh" >&2 || true
fi

need=()
for c in swift-proxy-server:swift-proxy swift-account-server:swift-account swift-container-server:swift-container \
         swift-object-server:swift-object swift-ring-builder:swift curl:curl; do
  command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
done
[ ${#need[@]} -eq 0 ] || apt_install $(printf '%s\n' "${need[@]}" | sort -u)

for p in "$PORT" "$ACCOUNT_PORT" "$CONTAINER_PORT" "$OBJECT_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port 127.0.0.1:$p is already in use (see the PGARK_SWIFT_*_PORT knobs)"; fi
done

T0=$(date +%s%N)
log "creating a new instance in $DIR"
rm -rf "$DIR"; mkdir -p "$DIR"/{etc,srv/d1,log}
# run the servers as the invoking user: Swift would otherwise switch to the "swift" user, which
# cannot write into a root-owned $DIR
RUN_USER=$(id -un)
cat > "$DIR/etc/swift.conf" <<EOF
[swift-hash]
swift_hash_path_suffix = pgark-test
swift_hash_path_prefix = pgark-test
[storage-policy:0]
name = Policy-0
default = yes
EOF
# the three rings in one Python process (what `swift-ring-builder create/add/rebalance` does, but
# ~0.4 s instead of ~4.5 s for nine CLI runs)
(cd "$DIR/etc" && /usr/bin/python3 - "$ACCOUNT_PORT" "$CONTAINER_PORT" "$OBJECT_PORT" <<'PY') >"$DIR/log/rings.log" 2>&1 || die "building the rings failed: $(tail -n 5 "$DIR/log/rings.log")"
import sys
from swift.common.ring import RingBuilder
for name, port in zip(('account', 'container', 'object'), map(int, sys.argv[1:4])):
    b = RingBuilder(8, 1, 1)  # part_power 8, 1 replica, min_part_hours 1
    b.add_dev({'id': 0, 'region': 1, 'zone': 1, 'ip': '127.0.0.1', 'port': port, 'replication_ip': '127.0.0.1',
               'replication_port': port, 'device': 'd1', 'weight': 1.0, 'meta': ''})
    b.rebalance()
    b.save(name + '.builder')
    b.get_ring().save(name + '.ring.gz')
PY
log "rings built"
for t in account:$ACCOUNT_PORT container:$CONTAINER_PORT object:$OBJECT_PORT; do
  n=${t%%:*}; p=${t#*:}
  cat > "$DIR/etc/$n-server.conf" <<EOF
[DEFAULT]
devices = $DIR/srv
mount_check = false
bind_ip = 127.0.0.1
bind_port = $p
workers = 0
user = $RUN_USER
swift_dir = $DIR/etc
log_name = $n-server
# no syslog socket here: logs are printed by -v into $DIR/log
log_address = $DIR/no-syslog
[pipeline:main]
pipeline = $n-server
[app:$n-server]
use = egg:swift#$n
EOF
done
cat > "$DIR/etc/proxy-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $PORT
workers = 0
user = $RUN_USER
swift_dir = $DIR/etc
log_name = proxy-server
log_address = $DIR/no-syslog
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:cache]
# tempauth needs the cache middleware in the pipeline, but no memcached runs: the proxy logs
# "All memcached servers error-limited" now and then, which is harmless here
use = egg:swift#memcache
memcache_servers = 127.0.0.1:1
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
# parts smaller than 5 MiB (EntityTooSmall otherwise): pgark's part-size setting goes down to 1 KiB
min_segment_size = 1024
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
EOF

: > "$PIDFILE"; SPAWNED=1
for n in account container object proxy; do
  setsid "swift-$n-server" "$DIR/etc/$n-server.conf" -v </dev/null >"$DIR/log/$n.log" 2>&1 &
  echo $! >> "$PIDFILE"
done
log "started pids $(tr '\n' ' ' < "$PIDFILE")"
end=$(( $(date +%s) + TIMEOUT ))
until http_up; do
  while read -r p; do is_ours "$p" || die "a swift server exited: $(tail -n 3 "$DIR"/log/*.log)"; done < "$PIDFILE"
  [ "$(date +%s)" -lt "$end" ] || die "timed out after ${TIMEOUT}s"
  sleep 0.2
done
# the proxy answers /healthcheck before the account/container/object servers listen: wait for them too
for p in "$ACCOUNT_PORT" "$CONTAINER_PORT" "$OBJECT_PORT"; do
  until (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do
    while read -r q; do is_ours "$q" || die "a swift server exited: $(tail -n 3 "$DIR"/log/*.log)"; done < "$PIDFILE"
    [ "$(date +%s)" -lt "$end" ] || die "timed out after ${TIMEOUT}s waiting for port $p"
    sleep 0.1
  done
done
log "ready: $ENDPOINT (swift + s3api, data in $DIR/srv)"
print_env
