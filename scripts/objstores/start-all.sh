#!/usr/bin/env bash
# start-all.sh — start the three object stores pgark's integration tests use (Ceph RGW, Swift with
# s3api, Azurite), concurrently, and print all their `export KEY=value` lines on stdout:
#   eval "$(scripts/objstores/start-all.sh)"
# Missing Debian packages are installed first, in one apt-get call (concurrent apt-get runs would
# only queue on the dpkg lock). Each server is idempotent (already running: its env is printed
# again). Exit status is non-zero if any of them failed; the ones that did start keep running
# (stop them with stop-all.sh). The combined env also goes to $PGARK_TEST_HOME/objstores.env.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BASE=${PGARK_TEST_HOME:-/var/tmp/pgark-test}
T0=$(date +%s%N)
log() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); echo "[start-all +$((ms/1000)).$(printf '%03d' $((ms%1000)))s] $*" >&2; }

# command:package pairs the start scripts need (keep in sync with them)
need=()
for c in ceph-mon:ceph-mon ceph-osd:ceph-osd radosgw:radosgw radosgw-admin:radosgw ceph:ceph-common \
         swift-proxy-server:swift-proxy swift-account-server:swift-account swift-container-server:swift-container \
         swift-object-server:swift-object curl:curl /usr/bin/python3:python3; do
  command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
done
/usr/bin/python3 -c 'import swift.common.ring' 2>/dev/null || need+=(swift)
if [ ${#need[@]} -gt 0 ]; then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  [ "$(id -u)" = 0 ] || { log "ERROR: missing Debian packages: ${need[*]}; install them as root"; exit 1; }
  log "installing ${need[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  a=(-o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)
  apt-get "${a[@]}" install "${need[@]}" >&2 2>&1 \
    || { apt-get -o DPkg::Lock::Timeout=600 -qq update >&2 || true; apt-get "${a[@]}" install "${need[@]}" >&2; }
  log "installed"
fi

mkdir -p "$BASE"
OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT
pids=(); names=(ceph-rgw swift-s3api azurite)
for n in "${names[@]}"; do
  "$HERE/start-$n.sh" >"$OUT/$n.env" 2>"$OUT/$n.err" &
  pids+=($!)
done
fail=0
for i in "${!names[@]}"; do
  if wait "${pids[i]}"; then
    log "${names[i]}: $(tail -n 1 "$OUT/${names[i]}.err" | sed 's/^\[[^]]*\] //')"
  else
    fail=1; log "ERROR: start-${names[i]}.sh failed:"; sed 's/^/    /' "$OUT/${names[i]}.err" >&2
  fi
done
[ "$fail" = 0 ] || { log "some servers failed to start; stop the others with $HERE/stop-all.sh"; exit 1; }
cat "$OUT"/{ceph-rgw,swift-s3api,azurite}.env > "$OUT/all.env"
sed 's/^export //' "$OUT/all.env" > "$BASE/objstores.env"
cat "$OUT/all.env"
log "all ready"
