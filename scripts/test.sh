#!/usr/bin/env bash
# scripts/test.sh — pgark's whole test run (`npm test`):
#   1. installs missing Debian packages (APT_PACKAGES below, one apt-get call; needs root),
#      and node_modules (npm ci) in a fresh clone;
#   2. starts the object stores (Ceph RGW, Swift s3api, Azurite) in the background while it
#      builds (scripts/build.mjs) and typechecks (tsc --noEmit);
#   3. exports the servers' env and runs every test/unit/**/*.test.ts and
#      test/integration/**/*.test.ts with the project's Node 24 (node --test, 2 files at a time);
#   4. stops the servers on exit (also on failure or Ctrl-C) and exits with the test runner's status.
# Several runs on one machine share the servers (same ports and $PGARK_TEST_HOME; every test
# makes its own buckets): each run registers in $PGARK_TEST_HOME/runs/ under a lock, and the
# last one to leave stops them.
#
# Arguments go to `node --test`; if any is not an option (e.g. a test file), it replaces the
# default globs:  npm test -- test/unit/lz4.test.ts   npm test -- --test-name-pattern=wal
# Env: PGARK_TEST_SKIP_SERVERS=1   no object stores (tests needing them are skipped)
#      PGARK_TEST_KEEP_SERVERS=1   leave the object stores running afterwards (faster reruns)
#      PGARK_TEST_SKIP_BUILD=1     no build and no typecheck
#      PGARK_TEST_CONCURRENCY (2), PGARK_TEST_TIMEOUT_MS (600000 per test)
set -euo pipefail

# Debian packages the tests need. Add yours here: whatever is missing is installed in one call.
APT_PACKAGES=(
  curl age lz4 zstd
  acl   # setfacl: lets the clusters' OS user traverse a checkout under /root (see below)
  # Ceph RGW: scripts/objstores/start-ceph-rgw.sh
  ceph-mon ceph-osd radosgw ceph-common python3
  # OpenStack Swift with s3api: scripts/objstores/start-swift-s3api.sh
  swift swift-proxy swift-account swift-container swift-object
)

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="$ROOT/node_modules/.bin:$PATH"   # the project's Node 24 first, also for the clusters' archive_command
T0=$(date +%s%N)
log() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); echo "[test.sh +$((ms/1000)).$(printf '%03d' $((ms%1000)))s] $*" >&2; }

# ---- 1. Debian packages, node_modules ----
missing=()
for p in "${APT_PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" = "ii " ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "ERROR: missing Debian packages: ${missing[*]}"
    log "install them as root: apt-get install --no-install-recommends ${missing[*]}"
    exit 2
  fi
  log "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt_args=(-o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)
  if ! apt-get "${apt_args[@]}" install "${missing[@]}" >&2; then
    apt-get -o DPkg::Lock::Timeout=600 -qq update >&2 || true
    apt-get "${apt_args[@]}" install "${missing[@]}" >&2
  fi
  log "Debian packages installed"
fi
if [ ! -f node_modules/.package-lock.json ] || [ ! -x node_modules/.bin/node ]; then
  command -v npm >/dev/null || { log "ERROR: node_modules is missing and there is no npm to install it"; exit 2; }
  log "installing node_modules (npm ci)"
  npm ci --no-audit --no-fund >&2
fi
log "node $(node --version)"

# ---- as root, PostgreSQL runs as the OS user pgark-test (test/support/postgres.ts), and so do
# archive_command and restore_command, i.e. pgark itself: that user must reach this checkout.
# A clone under /root (mode 0700) is not reachable: grant that one user traverse-only access (an
# ACL entry u:pgark-test:--x) on the directories in the way. Undo: setfacl -x u:pgark-test DIR
TEST_USER=pgark-test
if [ "$(id -u)" = 0 ]; then
  id -u "$TEST_USER" >/dev/null 2>&1 \
    || useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
         --comment 'pgark tests, PostgreSQL clusters' "$TEST_USER" 2>/dev/null || id -u "$TEST_USER" >/dev/null
  as_test_user() { setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --clear-groups "$@"; }
  reachable() { as_test_user test -x "$ROOT/node_modules/.bin/node" && as_test_user test -r "$ROOT/package.json"; }
  if ! reachable; then
    d=""
    IFS=/ read -ra parts <<< "${ROOT#/}"
    for part in "${parts[@]}"; do
      d="$d/$part"
      if ! as_test_user test -x "$d"; then
        setfacl -m "u:$TEST_USER:x" "$d" && log "granted $TEST_USER traverse access to $d (ACL; undo: setfacl -x u:$TEST_USER $d)"
      fi
    done
    reachable || { log "ERROR: $TEST_USER cannot read $ROOT (PostgreSQL and pgark run as that user in the tests): make the checkout world-readable (chmod -R o+rX) or clone it elsewhere"; exit 2; }
  fi
fi

# ---- 2. object stores in the background, build and typecheck meanwhile ----
TMP=$(mktemp -d)
BASE=${PGARK_TEST_HOME:-/var/tmp/pgark-test}
RUNS=$BASE/runs
LOCK=$BASE/servers.lock
SERVERS_STARTED=0
is_test_run() { [ -e "/proc/$1" ] && tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -q 'scripts/test.sh'; }
cleanup() {
  local rc=$?
  if [ "$SERVERS_STARTED" = 1 ]; then
    if [ -n "${SERVERS_PID:-}" ]; then wait "$SERVERS_PID" 2>/dev/null || true; fi
    (
      flock -w 900 9 || { log "ERROR: timed out waiting for $LOCK; not stopping the object stores"; exit 0; }
      rm -f "$RUNS/$$"
      others=0
      for f in "$RUNS"/*; do
        [ -e "$f" ] || continue
        if is_test_run "$(basename "$f")"; then others=$((others+1)); else rm -f "$f"; fi
      done
      if [ "$others" -gt 0 ]; then
        log "$others other test run(s) still use the object stores: leaving them running"
      elif [ "${PGARK_TEST_KEEP_SERVERS:-0}" = 1 ]; then
        log "leaving the object stores running (PGARK_TEST_KEEP_SERVERS=1); stop them with scripts/objstores/stop-all.sh"
      else
        scripts/objstores/stop-all.sh 9>&- 2>/dev/null || true
        log "object stores stopped"
      fi
    ) 9>"$LOCK"
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "${PGARK_TEST_SKIP_SERVERS:-0}" = 1 ]; then
  log "PGARK_TEST_SKIP_SERVERS=1: not starting the object stores"
else
  mkdir -p "$RUNS"
  SERVERS_STARTED=1
  # register, then start (or find running) under the lock that the last run's stop also takes
  # (9>&-: the servers must not inherit the lock's fd, or they would hold the lock forever)
  ( flock -w 900 9 || { echo "[test.sh] ERROR: timed out waiting for $LOCK" >&2; exit 1; }
    touch "$RUNS/$$"; scripts/objstores/start-all.sh 9>&- ) 9>"$LOCK" >"$TMP/servers.env" 2>"$TMP/servers.log" &
  SERVERS_PID=$!
fi

if [ "${PGARK_TEST_SKIP_BUILD:-0}" != 1 ]; then
  if [ -f scripts/build.mjs ]; then
    node scripts/build.mjs
    log "built"
  fi
  tsc -p tsconfig.json --noEmit
  log "typechecked"
fi

if [ "$SERVERS_STARTED" = 1 ]; then
  if ! wait "$SERVERS_PID"; then
    SERVERS_PID=
    cat "$TMP/servers.log" >&2
    log "ERROR: the object stores did not start"
    exit 2
  fi
  SERVERS_PID=
  grep -E '^\[start-all' "$TMP/servers.log" | grep -v 'all ready' | sed 's/^/  /' >&2 || true
  # shellcheck disable=SC1091
  source "$TMP/servers.env"
  log "object stores ready"
fi

# ---- 3. tests ----
patterns=('test/unit/**/*.test.ts' 'test/integration/**/*.test.ts')   # quoted: node --test expands the globs itself
opts=()
for a in "$@"; do
  case "$a" in -*) opts+=("$a");; *) [ "${own:-0}" = 1 ] || { patterns=(); own=1; }; patterns+=("$a");; esac
done
log "node --test ${patterns[*]} ${opts[*]}"
set +e
node --test --test-concurrency="${PGARK_TEST_CONCURRENCY:-2}" --test-timeout="${PGARK_TEST_TIMEOUT_MS:-600000}" "${opts[@]}" "${patterns[@]}"
status=$?
set -e
log "tests finished with status $status"
exit "$status"
