#!/usr/bin/env bash
# start-ceph-rgw.sh — a throw-away Ceph RADOS Gateway (S3 API) on loopback for pgark's integration tests.
#
# Debian 12 packages (Ceph 16.2 "pacific"): one ceph-mon, one ceph-osd (memstore: objects live in
# the OSD's RAM and vanish when it stops) and radosgw with the beast frontend. No ceph-mgr: object
# I/O works without one (`ceph -s` then says HEALTH_WARN, harmless). The cluster is rebuilt from an
# empty dir on every start that does not find it running.
#
# stdout: `export KEY=value` lines: S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
#         use: eval "$(scripts/objstores/start-ceph-rgw.sh)". The same lines without `export` go to
#         $DIR/env (for `node --env-file`). No bucket is created: tests make their own.
# stderr: progress.  PIDs (mon, osd, rgw; one a line): $DIR/ceph-rgw.pid.
# Idempotent: when it is already running, only the env is printed again. Stop: stop-ceph-rgw.sh.
#
# Knobs: PGARK_TEST_HOME (/var/tmp/pgark-test), PGARK_RGW_DIR ($PGARK_TEST_HOME/ceph-rgw),
#        PGARK_RGW_PORT (17480), PGARK_RGW_MON_PORT (13300), PGARK_RGW_OBJECTSTORE (memstore|bluestore),
#        PGARK_RGW_STORE_BYTES (8 GiB), PGARK_RGW_TCP_NODELAY (1; 0 only to measure the Nagle stall),
#        PGARK_RGW_START_TIMEOUT (300 s, for each step).
# Why tcp_nodelay=1: beast writes the response headers and body in separate small writes; with
# Nagle on, the body waits for the client's delayed ACK and every small GET on a kept-alive
# connection takes ~40 ms extra.
set -euo pipefail

BASE=${PGARK_TEST_HOME:-/var/tmp/pgark-test}
DIR=${PGARK_RGW_DIR:-$BASE/ceph-rgw}
PORT=${PGARK_RGW_PORT:-17480}
MON_PORT=${PGARK_RGW_MON_PORT:-13300}
ACCESS=pgarktestaccesskey        # test-only credentials of the throw-away cluster
SECRET=pgarktestsecretkey
OBJECTSTORE=${PGARK_RGW_OBJECTSTORE:-memstore}
STORE_BYTES=${PGARK_RGW_STORE_BYTES:-8589934592}
TCP_NODELAY=${PGARK_RGW_TCP_NODELAY:-1}
STORAGE_CLASSES="STANDARD_IA ONEZONE_IA INTELLIGENT_TIERING GLACIER GLACIER_IR DEEP_ARCHIVE REDUCED_REDUNDANCY"
TIMEOUT=${PGARK_RGW_START_TIMEOUT:-300}
PIDFILE=$DIR/ceph-rgw.pid
CONF=$DIR/ceph.conf
ENDPOINT=http://127.0.0.1:$PORT
HERE=$(cd "$(dirname "$0")" && pwd)

T0=$(date +%s%N)
log() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); echo "[start-ceph-rgw +$((ms/1000)).$(printf '%03d' $((ms%1000)))s] $*" >&2; }
die() { log "ERROR: $*"; [ -d "$DIR/log" ] && log "logs: $DIR/log"; [ "${SPAWNED:-0}" = 1 ] && { log "stopping what this start spawned"; "$HERE/stop-ceph-rgw.sh" >&2 || true; }; exit 1; }

print_env() {
  local lines
  lines="S3_ENDPOINT=$ENDPOINT
AWS_ACCESS_KEY_ID=$ACCESS
AWS_SECRET_ACCESS_KEY=$SECRET
AWS_REGION=us-east-1"
  echo "$lines" > "$DIR/env"
  echo "$lines" | sed 's/^/export /'
}
is_ours() { # a live ceph-mon/ceph-osd/radosgw process
  local pid=$1 exe
  [ -n "$pid" ] && [ -e "/proc/$pid" ] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  case "${exe% (deleted)}" in */ceph-mon|*/ceph-osd|*/radosgw) return 0;; *) return 1;; esac
}
http_up() { curl -s -o /dev/null -m 2 "$ENDPOINT/"; }
apt_install() { # install Debian packages; waits for the dpkg lock; updates the lists only if needed
  [ "$(id -u)" = 0 ] || die "missing Debian packages: $*; install them as root: apt-get install --no-install-recommends $*"
  log "installing $* (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  local a=(-o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)
  apt-get "${a[@]}" install "$@" >&2 2>&1 && return 0
  apt-get -o DPkg::Lock::Timeout=600 -qq update >&2 || true
  apt-get "${a[@]}" install "$@" >&2 || die "apt-get install $* failed"
}

# ---- already running? ----
if [ -s "$PIDFILE" ]; then
  alive=0; n=0
  while read -r p; do n=$((n+1)); is_ours "$p" && alive=$((alive+1)); done < "$PIDFILE"
  if [ "$n" -eq 3 ] && [ "$alive" -eq 3 ] && command -v curl >/dev/null && http_up; then
    log "already running (pids $(tr '\n' ' ' < "$PIDFILE"))"; print_env; exit 0
  fi
  log "stale or partial instance: stopping it, then starting from scratch"
  "$HERE/stop-ceph-rgw.sh" >&2 || true
fi

# ---- install what is missing ----
need=()
for c in ceph-mon:ceph-mon ceph-osd:ceph-osd radosgw:radosgw radosgw-admin:radosgw ceph:ceph-common curl:curl /usr/bin/python3:python3; do
  command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
done
[ ${#need[@]} -eq 0 ] || apt_install $(printf '%s\n' "${need[@]}" | sort -u)

for p in "$PORT" "$MON_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port 127.0.0.1:$p is already in use (set PGARK_RGW_PORT / PGARK_RGW_MON_PORT)"; fi
done

T0=$(date +%s%N)
log "creating a new cluster in $DIR"
rm -rf "$DIR"
mkdir -p "$DIR"/{mon,osd,run,log,rgw,tmp}
FSID=$(cat /proc/sys/kernel/random/uuid)
frontend="beast endpoint=127.0.0.1:$PORT"
[ "$TCP_NODELAY" = 1 ] && frontend+=" tcp_nodelay=1"

cat > "$CONF" <<EOF
[global]
fsid = $FSID
mon_host = v2:127.0.0.1:$MON_PORT
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
public_network = 127.0.0.0/8
cluster_network = 127.0.0.0/8
# no cephx inside this throw-away cluster (S3 requests are still signed and checked by RGW)
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
# daemons default to ms_mon_client_mode=secure, which cannot work without cephx
ms_mon_client_mode = crc secure
run_dir = $DIR/run
log_file = $DIR/log/\$name.log
keyring = $DIR/keyring
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_crush_chooseleaf_type = 0
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_max_pg_per_osd = 1000
mon_warn_on_pool_no_redundancy = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
# never let the mon shut itself down on a nearly full disk
mon_data_avail_crit = 0
mon_data_avail_warn = 0
[mon]
# commit map changes every 0.1 s instead of 1 s: the whole start is ~4x faster
paxos_propose_interval = 0.1
paxos_min_wait = 0.01
mon_data = $DIR/mon/\$cluster-\$id
admin_socket = $DIR/run/\$name.asok
[osd]
osd_data = $DIR/osd/\$cluster-\$id
admin_socket = $DIR/run/\$name.asok
osd_objectstore = $OBJECTSTORE
memstore_device_bytes = $STORE_BYTES
bluestore_block_path = $DIR/osd/block
bluestore_block_create = true
bluestore_block_size = $STORE_BYTES
bluestore_cache_autotune = false
bluestore_cache_size = 134217728
osd_memory_target = 939524096
[client.admin]
log_file = /dev/null
admin_socket =
[client.rgw.0]
admin_socket = $DIR/run/\$name.asok
rgw_data = $DIR/rgw
rgw_frontends = $frontend
rgw_dns_name = localhost
rgw_thread_pool_size = 64
# pgark's first part size is a setting (part-size, minimum 1 KiB) and parts grow from there: the
# tests prove the growth with 1 KiB parts, which RGW's 5 MiB minimum (EntityTooSmall) would refuse
rgw_multipart_min_part_size = 1024
# reclaim the tails of deleted objects after 60 s instead of 2 h (memstore keeps them in RAM)
rgw_gc_obj_min_wait = 60
rgw_gc_processor_period = 60
# SSE over plain HTTP (test only): SSE-C, and SSE-KMS with a built-in test key "testkey"
rgw_crypt_require_ssl = false
rgw_crypt_s3_kms_backend = testing
rgw_crypt_s3_kms_encryption_keys = testkey=$(head -c 32 /dev/urandom | base64)
EOF
export CEPH_CONF=$CONF
ceph_() { timeout 120 ceph -c "$CONF" "$@"; }
wait_for() { # wait_for <what> <seconds> <command...>
  local what=$1 secs=$2; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}
spawn() { # spawn <name> <cmd...>: in the background, in its own session; PID appended to the pid file
  local name=$1; shift
  setsid "$@" </dev/null >>"$DIR/log/$name.out" 2>&1 &
  local pid=$!
  echo "$pid" >> "$PIDFILE"
  sleep 0.1
  is_ours "$pid" || die "$name exited at once: $(tail -5 "$DIR/log/$name.out")"
  log "$name started, pid $pid"
}

# ---- monitor ----
ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/tmp/monmap" >/dev/null
ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/tmp/monmap" --keyring "$DIR/keyring" >>"$DIR/log/mon.out" 2>&1 || die "ceph-mon --mkfs failed"
: > "$PIDFILE"; SPAWNED=1
spawn mon ceph-mon -c "$CONF" -f -i a
wait_for "ceph-mon quorum" "$TIMEOUT" ceph_ mon stat
log "mon in quorum"

# ---- OSD ----
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
OSD_ID=$(ceph_ osd new "$OSD_UUID") || die "ceph osd new failed"
mkdir -p "$DIR/osd/ceph-$OSD_ID"
ceph-osd -c "$CONF" -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" >>"$DIR/log/osd.out" 2>&1 || die "ceph-osd --mkfs failed"
spawn osd ceph-osd -c "$CONF" -f -i "$OSD_ID"
osd_up() { ceph_ osd dump -f json | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["osds"] and d["osds"][0]["up"]==1 else 1)'; }
wait_for "osd.$OSD_ID up" "$TIMEOUT" osd_up
log "osd.$OSD_ID up"

# ---- RGW zone: test user (this also creates the default zone), extra storage classes ----
radosgw-admin -c "$CONF" user create --uid=pgark-test --display-name="pgark tests" --access-key="$ACCESS" --secret-key="$SECRET" >/dev/null 2>>"$DIR/log/radosgw-admin.out" \
  || die "radosgw-admin user create failed: $(tail -3 "$DIR/log/radosgw-admin.out")"
# extra storage classes: edit the zonegroup and zone JSON once each (4 radosgw-admin runs instead of 14)
radosgw-admin -c "$CONF" zonegroup get > "$DIR/tmp/zonegroup.json" 2>>"$DIR/log/radosgw-admin.out" || die "zonegroup get failed"
radosgw-admin -c "$CONF" zone get > "$DIR/tmp/zone.json" 2>>"$DIR/log/radosgw-admin.out" || die "zone get failed"
/usr/bin/python3 - "$DIR/tmp/zonegroup.json" "$DIR/tmp/zone.json" $STORAGE_CLASSES <<'PY' || die "editing the zone JSON failed"
import json, sys
zg_file, zone_file, classes = sys.argv[1], sys.argv[2], sys.argv[3:]
zg = json.load(open(zg_file))
for t in zg['placement_targets']:
    if t['name'] == 'default-placement':
        t['storage_classes'] = sorted(set(t.get('storage_classes', [])) | set(classes) | {'STANDARD'})
json.dump(zg, open(zg_file, 'w'))
zone = json.load(open(zone_file))
for p in zone['placement_pools']:
    if p['key'] == 'default-placement':
        for sc in classes:
            p['val']['storage_classes'].setdefault(sc, {'data_pool': 'default.rgw.%s.data' % sc.lower()})
json.dump(zone, open(zone_file, 'w'))
PY
radosgw-admin -c "$CONF" zonegroup set --infile "$DIR/tmp/zonegroup.json" >/dev/null 2>>"$DIR/log/radosgw-admin.out" || die "zonegroup set failed: $(tail -3 "$DIR/log/radosgw-admin.out")"
radosgw-admin -c "$CONF" zone set --rgw-zone default --infile "$DIR/tmp/zone.json" >/dev/null 2>>"$DIR/log/radosgw-admin.out" || die "zone set failed: $(tail -3 "$DIR/log/radosgw-admin.out")"
log "user and storage classes created"

# ---- radosgw ----
spawn rgw radosgw -c "$CONF" -f -n client.rgw.0
wait_for "radosgw on $ENDPOINT" "$TIMEOUT" http_up
log "ready: $ENDPOINT ($frontend, objectstore=$OBJECTSTORE, data in $DIR)"
print_env
