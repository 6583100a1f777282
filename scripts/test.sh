#!/usr/bin/env bash
# polymsg's test command: everything CI checks, from a fresh machine.
#
#   scripts/test.sh
#
# Setup: RabbitMQ and Redis start (scripts/services.sh; installed from Debian
# packages when missing) while .venv is built with the current python3
# (polymsg and every driver under drivers/*/, editable); the RabbitMQ 4.x node
# (scripts/rabbit4.sh: the system's rabbitmq-server when it is 4.x, as on
# Debian 13, else one in a cached Debian 13 tree made with debootstrap, as on
# Debian 12) starts at the same time, with RabbitMQ 4.3's denials on.
#
# Then four lanes run at once, as they share no broker state (each test
# session works in a virtual host of its own; each lane's output is printed
# once all have ended; POLYMSG_TEST_LANES=serial runs them one after the
# other, printing as they go):
#   checks      ruff, mypy --strict (core, benchmarks, each driver), the Sphinx
#               docs (-W), then the zmq driver's tests (loopback sockets, Redis)
#               and the benchmark harness's
#   rabbit      on the system's RabbitMQ (3.10 on Debian 12, 4.0 on Debian 13):
#               the core tests, then each RabbitMQ driver's own tests
#   amqp        tests-amqp (the tests both RabbitMQ drivers share, each test
#               run on each): all of it on the system's RabbitMQ, then on the
#               RabbitMQ 4.x node what its topology and denials change: the
#               failure matrix, declarations, the cross-driver tests
#               ($AMQP_ON_RABBIT4)
#   rabbit4     on the RabbitMQ 4.x node, only what its topology and denials
#               change: each RabbitMQ driver's conformance suite (classic
#               queues, as durable as RabbitMQ 4 wants them; not the aio
#               variant), then tests/rabbit4 (the conformance scenarios quorum
#               queues and stream fanout change, oslo.messaging on quorum
#               queues, delivery limits, the three-node cluster)
# It exits non-zero when any step fails, and ends with each step's time, each
# pytest run's counts and a line "N passed, N failed, N skipped" summed over
# the pytest runs.
#
# Environment:
#   PYTHON               interpreter for the virtualenv (default: python3)
#   POLYMSG_VENV         virtualenv directory (default: .venv in the checkout)
#   POLYMSG_RABBIT_PORT  RabbitMQ port (default 5673, or a free one if taken)
#   POLYMSG_REDIS_PORT   Redis port (default 6380, or a free one if taken)
#   POLYMSG_RABBIT4_PORT RabbitMQ 4.x node's port (default: the RabbitMQ port + 100;
#                        the cluster of tests/rabbit4 takes the three above it)
#   POLYMSG_RABBIT4=0    no RabbitMQ 4.x node (its lane is left out)
#   POLYMSG_TEST_LANES=serial   one lane after the other
#   POLYMSG_KEEP_SERVICES=1   leave the services running afterwards
#   POLYMSG_SKIP_INSTALL=1    reuse the virtualenv as it is (fast re-runs)
#   PYTEST_ADDOPTS       passed on to every pytest run (e.g. --durations=20)
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
PYTHON=${PYTHON:-python3}
VENV=${POLYMSG_VENV:-$ROOT/.venv}
REPORTS="$ROOT/.run/reports"
START=$(date +%s)

say() { printf '\n==> %s\n' "$*"; }

# The lanes run in subshells: what they find out goes to files under $STATE.
STATE="$ROOT/.run/test-state"

# timed NAME CMD...: run CMD and note how long it took; its exit status.
timed() {
  local name=$1 t0 rc
  shift
  t0=$(date +%s)
  "$@"
  rc=$?
  printf '%s\t%s\n' "$(($(date +%s) - t0))" "$name" >> "$STATE/times"
  return $rc
}

failed() { echo "FAILED: $1"; echo "$1" >> "$STATE/failed"; }

# run NAME CMD...: run a step, remember it when it fails.
run() {
  local name=$1; shift
  say "$name"
  timed "$name" "$@" || failed "$name"
}

# A free TCP port on 127.0.0.1 at or above $1 (also checks $1+20000 when $2 = dist).
free_port() {
  local port=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null \
    || { [ "${2:-}" = dist ] && (exec 3<>"/dev/tcp/127.0.0.1/$((port + 20000))") 2>/dev/null; }; do
    port=$((port + 1))
  done
  echo "$port"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Reuse this checkout's running services; otherwise start our own (on free
# ports when the defaults belong to someone else) and stop them on exit.
start_services() {
  export POLYMSG_RABBIT_PORT=${POLYMSG_RABBIT_PORT:-5673}
  export POLYMSG_REDIS_PORT=${POLYMSG_REDIS_PORT:-6380}
  local status
  status=$(POLYMSG_RABBIT4=0 scripts/services.sh status 2>/dev/null) && {
    echo "test.sh: reusing the services already running for this checkout"
    return 0
  }
  # A busy port (another checkout's service, whose stop is not ours to call)
  # moves ours to a free one. Only RabbitMQ can be told apart as ours (its
  # Erlang cookie lives in this checkout's .run/).
  if port_busy "$POLYMSG_RABBIT_PORT" && ! grep -q "RabbitMQ running" <<<"$status"; then
    POLYMSG_RABBIT_PORT=$(free_port $((POLYMSG_RABBIT_PORT + 1)) dist)
    echo "test.sh: RabbitMQ port taken by another process; using $POLYMSG_RABBIT_PORT"
  fi
  if port_busy "$POLYMSG_REDIS_PORT"; then
    POLYMSG_REDIS_PORT=$(free_port $((POLYMSG_REDIS_PORT + 1)))
    echo "test.sh: Redis port taken by another process; using $POLYMSG_REDIS_PORT"
  fi
  if [ "${POLYMSG_KEEP_SERVICES:-0}" != 1 ]; then
    trap 'say "stopping services"; scripts/services.sh stop' EXIT
  fi
  scripts/services.sh start rabbit redis  # the rabbit4 lane starts the RabbitMQ 4.x node
}

make_venv() {
  local want have
  want=$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')
  have=$("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || true)
  if [ "$want" != "$have" ]; then
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
      # Debian's python3 needs the pythonX.Y-venv package for ensurepip.
      local minor
      minor=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      echo "test.sh: installing python$minor-venv from Debian packages"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "python$minor-venv" >/dev/null || return 1
      rm -rf "$VENV"
      "$PYTHON" -m venv "$VENV" || return 1
    fi
  fi
  [ "${POLYMSG_SKIP_INSTALL:-0}" = 1 ] && [ -n "$have" ] && return 0
  local args=(-e "$ROOT[test,lint,docs]" "oslo.messaging>=14")
  local d
  for d in "${DRIVERS[@]}"; do args+=(-e "$d[test]"); done
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q "${args[@]}"
}

# Packages of a driver distribution (mypy runs in its directory, with its own
# config; MYPYPATH points at core, since mypy cannot follow editable installs): its top-level dirs holding __init__.py.
driver_packages() {
  local p
  for p in "$1"/*/__init__.py; do
    [ -e "$p" ] || continue
    p=$(basename "$(dirname "$p")")
    [ "$p" = tests ] || echo "$p"
  done
}

# pytest_run NAME DIR [allow-empty] -- PYTEST-ARGS...: run pytest in DIR, note its counts.
pytest_run() {
  local name=$1 dir=$2 allow_empty="" xml="$REPORTS/$1.xml" rc counts p=0 f=0 s=0
  shift 2
  if [ "${1:-}" = allow-empty ]; then allow_empty=1; shift; fi
  [ "${1:-}" = -- ] && shift
  say "pytest: $name"
  rm -f "$xml"
  (cd "$dir" && timed "pytest $name" "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
     --junitxml="$xml" "$@")
  rc=$?
  if [ -f "$xml" ]; then
    counts=$("$VENV/bin/python" - "$xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = f = s = 0
for suite in suites:
    t += int(suite.get("tests", 0))
    f += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    s += int(suite.get("skipped", 0))
print(t - f - s, f, s)
EOF
)
    read -r p f s <<<"$counts"
  fi
  if [ "$rc" = 5 ] && [ -n "$allow_empty" ]; then
    echo "test.sh: $name has no tests yet"
  elif [ "$rc" != 0 ]; then
    [ "${f:-0}" = 0 ] && f=1  # crashed without counting
    failed "pytest $name (exit $rc)"
  fi
  printf '%s\t%s\t%s\t%s\n' "$p" "$f" "$s" "$name" >> "$STATE/counts"
}

# The lanes wait for the virtualenv the main script builds meanwhile.
await_venv() {
  while [ ! -e "$STATE/venv.done" ]; do sleep 1; done
  [ "$(cat "$STATE/venv.done")" = ok ]
}

# Driver distributions whose tests need RabbitMQ (they read its URL).
needs_rabbit() { grep -rqs POLYMSG_TEST_RABBIT_URL "$1/tests"; }

lane_checks() {
  await_venv || return 0
  run "ruff check" "$VENV/bin/ruff" check "$ROOT"
  run "mypy --strict polymsg" "$VENV/bin/mypy" --strict -p polymsg
  run "mypy --strict benchmarks" "$VENV/bin/mypy" --strict benchmarks
  local d p pkgs
  for d in "${DRIVERS[@]}"; do
    pkgs=()
    for p in $(driver_packages "$d"); do pkgs+=(-p "$p"); done
    [ ${#pkgs[@]} -gt 0 ] && run "mypy --strict $(basename "$d")" \
      env MYPYPATH="$ROOT" bash -c 'cd "$1" && shift && "$0" --strict "$@"' \
      "$VENV/bin/mypy" "$d" "${pkgs[@]}"
  done
  run "sphinx docs (-W)" "$VENV/bin/sphinx-build" -q -W --keep-going -b html \
    "$ROOT/docs" "$ROOT/docs/_build/html"
  for d in "${DRIVERS[@]}"; do
    if [ -d "$d/tests" ] && ! needs_rabbit "$d"; then
      pytest_run "$(basename "$d")" "$d" allow-empty -- tests
    fi
  done
  pytest_run benchmarks "$ROOT" -- benchmarks/tests  # the harness (repository only)
}

lane_rabbit() {
  await_venv || return 0
  pytest_run core "$ROOT" -- tests
  for d in "${DRIVERS[@]}"; do
    if [ -d "$d/tests" ] && needs_rabbit "$d"; then
      pytest_run "$(basename "$d")" "$d" allow-empty -- tests
    fi
  done
}

# tests-amqp's modules whose outcome the RabbitMQ 4.x topology and denials change.
AMQP_ON_RABBIT4="test_failures.py test_declarations.py test_interop_drivers.py"

# Behaviour both RabbitMQ drivers share, each test run on each of them: all of
# it on the system's RabbitMQ, then what the 4.x node changes there.
lane_amqp() {
  await_venv || return 0
  pytest_run amqp "$ROOT" -- tests-amqp
  [ "${POLYMSG_RABBIT4:-1}" != 0 ] || return 0
  while [ ! -e "$STATE/rabbit4.done" ]; do sleep 1; done
  [ "$(cat "$STATE/rabbit4.done")" = ok ] || return 0
  eval "$(scripts/services.sh env rabbit4)"
  local f files=()
  for f in $AMQP_ON_RABBIT4; do files+=("tests-amqp/$f"); done
  pytest_run "amqp@rabbit4" "$ROOT" -- "${files[@]}"
}

lane_rabbit4() {
  say "RabbitMQ 4.x node"
  if ! timed "RabbitMQ 4.x node (start)" scripts/services.sh start rabbit4; then
    echo failed > "$STATE/rabbit4.done"
    failed "RabbitMQ 4.x node (start)"; return 0
  fi
  echo ok > "$STATE/rabbit4.done"
  await_venv || return 0
  eval "$(scripts/services.sh env rabbit4)"
  say "RabbitMQ 4.x node: $POLYMSG_TEST_RABBIT_URL (RabbitMQ $POLYMSG_TEST_RABBIT_VERSION)"
  local d f files=()
  # Each RabbitMQ driver's conformance suite (not its polymsg.aio variant, which
  # adds nothing a broker changes: it runs in the rabbit lane).
  for d in "${DRIVERS[@]}"; do
    [ -d "$d/tests" ] && needs_rabbit "$d" || continue
    files=()
    for f in "$d"/tests/test_*conformance*.py; do [ -e "$f" ] && files+=("tests/${f##*/}"); done
    [ ${#files[@]} -gt 0 ] && pytest_run "$(basename "$d")@rabbit4" "$d" -- "${files[@]}" \
      -k "not Aio"
  done
  rm -f "$REPORTS/rabbit4-cluster.json"
  pytest_run "rabbit4" "$ROOT" allow-empty -- tests/rabbit4
  if [ -f "$REPORTS/rabbit4-cluster.json" ]; then
    say "three-node cluster figures"
    "$VENV/bin/python" - "$REPORTS/rabbit4-cluster.json" <<'EOF'
import json
import sys

for f in json.load(open(sys.argv[1])):
    print(f"{f['scenario']:>22} {f['driver']:<13} casts sent {f['casts_sent']}, executed "
          f"{f['executed']}, lost {f['lost']}, duplicated {f['duplicated']}; calls "
          f"{f['calls']}, failed {f['calls_failed']}, longest {f['longest_call']} s; "
          f"calls succeed again after {f['seconds_to_resume']} s")
EOF
  fi
}

DRIVERS=()
for d in "$ROOT"/drivers/*/; do
  [ -f "$d/pyproject.toml" ] && DRIVERS+=("${d%/}")
done
mkdir -p "$REPORTS"
rm -rf "$STATE"
mkdir -p "$STATE"
: > "$STATE/times"
: > "$STATE/counts"

LANES=(checks rabbit)
[ "${POLYMSG_RABBIT4:-1}" != 0 ] && LANES+=(rabbit4)
LANES+=(amqp)  # after rabbit4 when serial: its last part runs on the 4.x node
SERIAL=0
[ "${POLYMSG_TEST_LANES:-}" = serial ] && SERIAL=1

say "services"
if ! timed "services" start_services; then
  echo "FAILED: could not start RabbitMQ and Redis"; echo "0 passed, 1 failed"; exit 1
fi
eval "$(scripts/services.sh env)"

# The rabbit4 lane starts its node (on Debian 12 first building its tree, once
# per machine) while the virtualenv is built.
declare -A LANE_OF=()  # background lane pid -> lane name
if [ $SERIAL = 0 ] && [ "${POLYMSG_RABBIT4:-1}" != 0 ]; then
  lane_rabbit4 > "$STATE/lane-rabbit4.log" 2>&1 &
  LANE_OF[$!]=rabbit4
fi

say "virtualenv $VENV (drivers: ${DRIVERS[*]:-none})"
if timed "virtualenv" make_venv; then
  echo ok > "$STATE/venv.done"
else
  echo failed > "$STATE/venv.done"
  failed "virtualenv"
fi
export PATH="$VENV/bin:$PATH"

if [ $SERIAL = 1 ]; then
  for lane in "${LANES[@]}"; do
    say "lane $lane"
    (lane_"$lane")
  done
else
  for lane in checks rabbit amqp; do
    lane_"$lane" > "$STATE/lane-$lane.log" 2>&1 &
    LANE_OF[$!]=$lane
  done
  say "lanes running: ${LANES[*]} (each one's output follows when it ends)"
  while [ ${#LANE_OF[@]} -gt 0 ]; do
    ended=""
    wait -n -p ended "${!LANE_OF[@]}"
    [ -n "$ended" ] || break
    say "lane ${LANE_OF[$ended]} ended after $(($(date +%s) - START)) s: its output"
    cat "$STATE/lane-${LANE_OF[$ended]}.log"
    unset "LANE_OF[$ended]"
  done
fi

say "summary ($(($(date +%s) - START)) s)"
echo "seconds per step (the lanes ran at once):"
sort -rn "$STATE/times" | awk -F'\t' '{ printf "%6d  %s\n", $1, $2 }'
echo "pytest runs: passed, failed, skipped"
awk -F'\t' '{ printf "%6d %4d %4d  %s\n", $1, $2, $3, $4 }' "$STATE/counts"
read -r TOTAL_PASSED TOTAL_FAILED TOTAL_SKIPPED < <(awk -F'\t' \
  '{ p += $1; f += $2; s += $3 } END { print p + 0, f + 0, s + 0 }' "$STATE/counts")
if [ -s "$STATE/failed" ]; then
  sed 's/^/failed step: /' "$STATE/failed"
else
  echo "every step passed"
fi
echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed, $TOTAL_SKIPPED skipped"
[ ! -s "$STATE/failed" ]
