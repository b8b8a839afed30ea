#!/usr/bin/env bash
# start-azurite.sh — Azurite (Microsoft's Azure Storage emulator), blob service only, on loopback,
# for pgark's integration tests. Azurite 3.35.0 is a devDependency of the project: it is run from
# node_modules with the project's own Node (node_modules/.bin/node), nothing is installed here.
# Starts from an empty data dir every time it does not find it running.
#
# stdout: `export KEY=value` lines: AZURE_STORAGE_CONNECTION_STRING AZURE_STORAGE_ACCOUNT
#         AZURE_STORAGE_KEY AZURE_STORAGE_BLOB_ENDPOINT (the public development account
#         devstoreaccount1). The same lines without `export` go to $DIR/env. No container is created.
# PID: $DIR/azurite.pid. Idempotent. Stop: stop-azurite.sh.
# Runs with --skipApiVersionCheck (newer SDKs send a newer x-ms-version) and --disableTelemetry.
# Knobs: PGARK_TEST_HOME (/var/tmp/pgark-test), PGARK_AZURITE_DIR ($PGARK_TEST_HOME/azurite),
#        PGARK_AZURITE_PORT (20000), PGARK_AZURITE_IN_MEMORY=1 (keep blobs in RAM),
#        PGARK_AZURITE_EXTRA_ARGS (e.g. "--loose"), PGARK_AZURITE_START_TIMEOUT (300 s).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BASE=${PGARK_TEST_HOME:-/var/tmp/pgark-test}
DIR=${PGARK_AZURITE_DIR:-$BASE/azurite}
PORT=${PGARK_AZURITE_PORT:-20000}
PIDFILE=$DIR/azurite.pid
TIMEOUT=${PGARK_AZURITE_START_TIMEOUT:-300}
NODE=$ROOT/node_modules/.bin/node
MAIN=$ROOT/node_modules/azurite/dist/src/blob/main.js
ACCOUNT=devstoreaccount1   # Azurite's well-known development account and key (public, test only)
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
ENDPOINT=http://127.0.0.1:$PORT/$ACCOUNT

T0=$(date +%s%N)
log() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); echo "[start-azurite +$((ms/1000)).$(printf '%03d' $((ms%1000)))s] $*" >&2; }
die() { log "ERROR: $*"; [ "${SPAWNED:-0}" = 1 ] && { log "stopping what this start spawned"; "$HERE/stop-azurite.sh" >&2 || true; }; exit 1; }
print_env() {
  local lines
  lines="AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=$ACCOUNT;AccountKey=$KEY;BlobEndpoint=$ENDPOINT;'
AZURE_STORAGE_ACCOUNT=$ACCOUNT
AZURE_STORAGE_KEY=$KEY
AZURE_STORAGE_BLOB_ENDPOINT=$ENDPOINT"
  echo "$lines" > "$DIR/env"
  echo "$lines" | sed 's/^/export /'
}
is_ours() { # a live node process running azurite's blob main.js on our data dir
  local pid=$1
  [ -n "$pid" ] && [ -e "/proc/$pid" ] || return 1
  tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -qF "azurite/dist/src/blob/main.js --blobHost 127.0.0.1 --blobPort $PORT --location $DIR/data"
}
http_up() { [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$ENDPOINT?comp=list")" != 000 ]; }

if [ -s "$PIDFILE" ] && is_ours "$(cat "$PIDFILE")" && command -v curl >/dev/null && http_up; then
  log "already running (pid $(cat "$PIDFILE"))"; print_env; exit 0
fi
[ -s "$PIDFILE" ] && { log "stale instance: stopping it"; "$HERE/stop-azurite.sh" >&2 || true; }

[ -x "$NODE" ] && [ -f "$MAIN" ] || die "$NODE or $MAIN is missing: run \`npm ci\` in $ROOT first"
if ! command -v curl >/dev/null; then
  [ "$(id -u)" = 0 ] || die "curl is missing: apt-get install curl"
  log "installing curl (apt-get)"; export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends curl >&2 \
    || { apt-get -o DPkg::Lock::Timeout=600 -qq update >&2; apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends curl >&2; }
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then die "port 127.0.0.1:$PORT is already in use (set PGARK_AZURITE_PORT)"; fi

rm -rf "$DIR"; mkdir -p "$DIR/data"
args=(--blobHost 127.0.0.1 --blobPort "$PORT" --location "$DIR/data" --disableTelemetry --skipApiVersionCheck --silent)
[ "${PGARK_AZURITE_IN_MEMORY:-0}" = 1 ] && args+=(--inMemoryPersistence)
# shellcheck disable=SC2206
[ -n "${PGARK_AZURITE_EXTRA_ARGS:-}" ] && args+=($PGARK_AZURITE_EXTRA_ARGS)
setsid "$NODE" "$MAIN" "${args[@]}" </dev/null >"$DIR/azurite.log" 2>&1 &
echo $! > "$PIDFILE"; SPAWNED=1
log "started pid $(cat "$PIDFILE"): $("$NODE" --version) azurite-blob ${args[*]}"
end=$(( $(date +%s) + TIMEOUT ))
until http_up; do
  is_ours "$(cat "$PIDFILE")" || die "azurite exited: $(tail -5 "$DIR/azurite.log")"
  [ "$(date +%s)" -lt "$end" ] || die "timed out after ${TIMEOUT}s; log: $DIR/azurite.log"
  sleep 0.1
done
log "ready: $ENDPOINT (data in $DIR/data)"
print_env
