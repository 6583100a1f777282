#!/usr/bin/env bash
# polymsg's test command: everything CI checks, from a fresh machine.
#
#   scripts/test.sh
#
# It starts RabbitMQ and Redis (scripts/services.sh; installs them from Debian
# packages when missing; a RabbitMQ 4.x node beside the system's, see
# scripts/rabbit4.sh), creates .venv with the current python3, installs
# polymsg and every driver under drivers/*/ (editable), then runs ruff, mypy
# --strict, the core tests, each driver's tests and the Sphinx docs build
# (-W). It exits non-zero when any step fails and ends with a line
# "N passed, N failed, N skipped" summed over the pytest runs.
#
# Environment:
#   PYTHON               interpreter for the virtualenv (default: python3)
#   POLYMSG_VENV         virtualenv directory (default: .venv in the checkout)
#   POLYMSG_RABBIT_PORT  RabbitMQ port (default 5673, or a free one if taken)
#   POLYMSG_REDIS_PORT   Redis port (default 6380, or a free one if taken)
#   POLYMSG_RABBIT4_PORT RabbitMQ 4.x node's port (default: the RabbitMQ port + 100)
#   POLYMSG_RABBIT4=0    no RabbitMQ 4.x node (its suites are skipped)
#   POLYMSG_KEEP_SERVICES=1   leave the services running afterwards
#   POLYMSG_SKIP_INSTALL=1    reuse the virtualenv as it is (fast re-runs)
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
PYTHON=${PYTHON:-python3}
VENV=${POLYMSG_VENV:-$ROOT/.venv}
REPORTS="$ROOT/.run/reports"
START=$(date +%s)
FAILED_STEPS=()

say() { printf '\n==> %s\n' "$*"; }

# run NAME CMD...: run a step, remember it when it fails.
run() {
  local name=$1; shift
  say "$name"
  if ! "$@"; then
    echo "FAILED: $name"
    FAILED_STEPS+=("$name")
  fi
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
  status=$(scripts/services.sh status 2>/dev/null) && {
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
  scripts/services.sh start
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

TOTAL_PASSED=0 TOTAL_FAILED=0 TOTAL_SKIPPED=0

# pytest_run NAME DIR TESTS [allow-empty]: run pytest in DIR and add up its counts.
pytest_run() {
  local name=$1 dir=$2 tests=$3 allow_empty=${4:-} xml="$REPORTS/$1.xml" rc counts p=0 f=0 s=0
  say "pytest: $name"
  rm -f "$xml"
  (cd "$dir" && "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$tests" --junitxml="$xml")
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
    TOTAL_PASSED=$((TOTAL_PASSED + p)) TOTAL_FAILED=$((TOTAL_FAILED + f))
    TOTAL_SKIPPED=$((TOTAL_SKIPPED + s))
  fi
  if [ "$rc" = 5 ] && [ "$allow_empty" = allow-empty ]; then
    echo "test.sh: $name has no tests yet"
  elif [ "$rc" != 0 ]; then
    [ "${f:-0}" = 0 ] && TOTAL_FAILED=$((TOTAL_FAILED + 1))  # crashed without counting
    echo "FAILED: pytest $name (exit $rc)"
    FAILED_STEPS+=("pytest $name")
  fi
}

DRIVERS=()
for d in "$ROOT"/drivers/*/; do
  [ -f "$d/pyproject.toml" ] && DRIVERS+=("${d%/}")
done
mkdir -p "$REPORTS"

say "services"
if ! start_services; then
  echo "FAILED: could not start RabbitMQ and Redis"; echo "0 passed, 1 failed"; exit 1
fi
eval "$(scripts/services.sh env)"

say "virtualenv $VENV (drivers: ${DRIVERS[*]:-none})"
if ! make_venv; then
  echo "FAILED: could not build the virtualenv"; echo "0 passed, 1 failed"; exit 1
fi
export PATH="$VENV/bin:$PATH"

run "ruff check" "$VENV/bin/ruff" check "$ROOT"
run "mypy --strict polymsg" "$VENV/bin/mypy" --strict -p polymsg
run "mypy --strict benchmarks" "$VENV/bin/mypy" --strict benchmarks
for d in "${DRIVERS[@]}"; do
  pkgs=()
  for p in $(driver_packages "$d"); do pkgs+=(-p "$p"); done
  [ ${#pkgs[@]} -gt 0 ] && run "mypy --strict $(basename "$d")" \
    env MYPYPATH="$ROOT" bash -c 'cd "$1" && shift && "$0" --strict "$@"' \
    "$VENV/bin/mypy" "$d" "${pkgs[@]}"
done

pytest_run core "$ROOT" tests
pytest_run benchmarks "$ROOT" benchmarks/tests  # the harness (repository only)
# Behaviour both RabbitMQ drivers share, each test run on each of them.
pytest_run amqp "$ROOT" tests-amqp
for d in "${DRIVERS[@]}"; do
  if [ -d "$d/tests" ]; then
    pytest_run "$(basename "$d")" "$d" tests allow-empty
  fi
done

# The RabbitMQ driver suites again, on the RabbitMQ 4.x node with 4.3's
# denials (scripts/services.sh started it), then polymsg's RabbitMQ 4 tests
# (quorum queues, oslo.messaging interop, the three-node cluster).
if [ "${POLYMSG_RABBIT4:-1}" != 0 ]; then
  saved_env=$(scripts/services.sh env)
  eval "$(scripts/services.sh env rabbit4)"
  say "RabbitMQ 4.x node: $POLYMSG_TEST_RABBIT_URL (RabbitMQ $POLYMSG_TEST_RABBIT_VERSION)"
  for d in "${DRIVERS[@]}"; do
    grep -rqs POLYMSG_TEST_RABBIT_URL "$d/tests" && pytest_run "$(basename "$d")@rabbit4" "$d" tests
  done
  rm -f "$REPORTS/rabbit4-cluster.json"
  for t in "$ROOT"/tests-amqp "$ROOT"/tests/rabbit4; do
    [ -d "$t" ] && pytest_run "$(basename "$t")@rabbit4" "$ROOT" "$t" allow-empty
  done
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
  eval "$saved_env"
  unset POLYMSG_TEST_RABBIT_VERSION
fi

run "sphinx docs (-W)" "$VENV/bin/sphinx-build" -q -W --keep-going -b html \
  "$ROOT/docs" "$ROOT/docs/_build/html"

say "summary ($(($(date +%s) - START)) s)"
if [ ${#FAILED_STEPS[@]} -gt 0 ]; then
  printf 'failed step: %s\n' "${FAILED_STEPS[@]}"
else
  echo "every step passed"
fi
echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed, $TOTAL_SKIPPED skipped"
[ ${#FAILED_STEPS[@]} -eq 0 ]
