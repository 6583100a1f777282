#!/usr/bin/env bash
# Start or stop the RabbitMQ and Redis servers polymsg's tests use.
#
#   scripts/services.sh start   install (Debian packages, when missing) and start both
#   scripts/services.sh start rabbit|rabbit4|redis...   start only those (scripts/test.sh
#                               starts the RabbitMQ 4.x node beside its first suites)
#   scripts/services.sh stop    stop what `start` started
#   scripts/services.sh env     print the environment the tests read
#   scripts/services.sh env rabbit4   the same, pointing the tests at the RabbitMQ 4.x node
#   scripts/services.sh status  exit 0 when both answer (RabbitMQ: this checkout's node)
#
# `start` also starts a RabbitMQ 4.x node (scripts/rabbit4.sh: the system's
# rabbitmq-server when it is 4.x, else one in a cached Debian 13 tree) with
# RabbitMQ 4.3's denials on (no transient non-exclusive queues, no global
# QoS), on POLYMSG_RABBIT4_PORT (default: the RabbitMQ port + 100), unless
# POLYMSG_RABBIT4=0.
#
# Both listen on loopback only, on their own ports, with their data under
# .run/ in the checkout, so they never touch a system broker. Ports come from
# POLYMSG_RABBIT_PORT (5673) and POLYMSG_REDIS_PORT (6380); the RabbitMQ node
# name follows the port, so two checkouts on two ports never clash in epmd.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN="$ROOT/.run"
RABBIT_PORT=${POLYMSG_RABBIT_PORT:-5673}
RABBIT_BIN=/usr/lib/rabbitmq/bin   # the real scripts; /usr/sbin wrappers switch user
REDIS_PORT=${POLYMSG_REDIS_PORT:-6380}
if [ "$RABBIT_PORT" = 5673 ]; then NODE=polymsg@localhost; else NODE="polymsg$RABBIT_PORT@localhost"; fi
RABBIT4_PORT=${POLYMSG_RABBIT4_PORT:-$((RABBIT_PORT + 100))}
RABBIT4_NODE="polymsg4_$RABBIT4_PORT"
RABBIT4="$ROOT/scripts/rabbit4.sh"

# True when something accepts TCP connections on 127.0.0.1:$1.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

rabbit_env() {
  export HOME="$RUN/rabbitmq"            # the Erlang cookie lives here
  export RABBITMQ_NODENAME="$NODE"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$RABBIT_PORT"
  export RABBITMQ_DIST_PORT=$((RABBIT_PORT + 20000))
  export RABBITMQ_MNESIA_BASE="$RUN/rabbitmq/mnesia"
  export RABBITMQ_LOG_BASE="$RUN/rabbitmq/log"
  export RABBITMQ_CONFIG_FILE="$RUN/rabbitmq/rabbitmq"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$RUN/rabbitmq/enabled_plugins"
  export RABBITMQ_PID_FILE="$RUN/rabbitmq/rabbit.pid"
  export ERL_EPMD_ADDRESS=127.0.0.1
}

install_missing() {
  local missing=()
  command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || missing+=(rabbitmq-server)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "services: installing ${missing[*]} from Debian packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

start_rabbit() {
  rabbit_env
  mkdir -p "$RUN/rabbitmq/log" "$RUN/rabbitmq/mnesia"
  echo "[]." > "$RABBITMQ_ENABLED_PLUGINS_FILE"
  printf 'loopback_users = none\nlisteners.tcp.default = 127.0.0.1:%s\n' "$RABBIT_PORT" > "$RABBITMQ_CONFIG_FILE.conf"
  if "$RABBIT_BIN/rabbitmq-diagnostics" -q ping >/dev/null 2>&1; then
    echo "services: RabbitMQ already running on 127.0.0.1:$RABBIT_PORT"; return
  fi
  if port_busy "$RABBIT_PORT"; then
    echo "services: port $RABBIT_PORT is taken by another process (not this checkout's" \
         "RabbitMQ); set POLYMSG_RABBIT_PORT to a free port" >&2
    exit 1
  fi
  (setsid "$RABBIT_BIN/rabbitmq-server" > "$RUN/rabbitmq/log/console.log" 2>&1 &)
  for _ in $(seq 1 120); do
    if "$RABBIT_BIN/rabbitmqctl" -q await_startup --timeout 5 >/dev/null 2>&1; then
      echo "services: RabbitMQ up on 127.0.0.1:$RABBIT_PORT"; return
    fi
    sleep 1
  done
  echo "services: RabbitMQ did not start"; tail -30 "$RUN/rabbitmq/log/console.log"; exit 1
}

stop_rabbit() {
  rabbit_env
  "$RABBIT_BIN/rabbitmqctl" -q stop >/dev/null 2>&1 || true
}

start_redis() {
  mkdir -p "$RUN/redis"
  if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    echo "services: Redis already running on 127.0.0.1:$REDIS_PORT"; return
  fi
  if port_busy "$REDIS_PORT"; then
    echo "services: port $REDIS_PORT is taken by a process that is not Redis;" \
         "set POLYMSG_REDIS_PORT to a free port" >&2
    exit 1
  fi
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$RUN/redis" --daemonize yes \
    --pidfile "$RUN/redis/redis.pid" --logfile "$RUN/redis/redis.log" --save "" --appendonly no
  for _ in $(seq 1 50); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && { echo "services: Redis up on 127.0.0.1:$REDIS_PORT"; return; }
    sleep 0.1
  done
  echo "services: Redis did not start"; exit 1
}

stop_redis() {
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
}

start_rabbit4() {
  [ "${POLYMSG_RABBIT4:-1}" = 0 ] && return 0
  bash "$RABBIT4" start "$RABBIT4_NODE" "$RABBIT4_PORT"
}

stop_rabbit4() {
  bash "$RABBIT4" stop "$RABBIT4_NODE" 2>/dev/null || true
}

case "${1:-}" in
  start)
    install_missing
    if [ $# -le 1 ]; then start_rabbit; start_rabbit4; start_redis; exit 0; fi
    for what in "${@:2}"; do
      case "$what" in
        rabbit) start_rabbit ;;
        rabbit4) start_rabbit4 ;;
        redis) start_redis ;;
        *) echo "services: unknown service $what (rabbit, rabbit4, redis)" >&2; exit 2 ;;
      esac
    done
    ;;
  stop) stop_rabbit; stop_rabbit4; stop_redis ;;
  status)
    rc=0
    if (rabbit_env; "$RABBIT_BIN/rabbitmq-diagnostics" -q ping >/dev/null 2>&1); then
      echo "services: RabbitMQ running on 127.0.0.1:$RABBIT_PORT"
    else echo "services: RabbitMQ not running on 127.0.0.1:$RABBIT_PORT"; rc=1; fi
    if [ "${POLYMSG_RABBIT4:-1}" != 0 ]; then
      if bash "$RABBIT4" ctl "$RABBIT4_NODE" -q status >/dev/null 2>&1; then
        echo "services: RabbitMQ 4 running on 127.0.0.1:$RABBIT4_PORT"
      else echo "services: RabbitMQ 4 not running on 127.0.0.1:$RABBIT4_PORT"; rc=1; fi
    fi
    if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
      echo "services: Redis running on 127.0.0.1:$REDIS_PORT"
    else echo "services: Redis not running on 127.0.0.1:$REDIS_PORT"; rc=1; fi
    exit $rc
    ;;
  env)
    if [ "${2:-}" = rabbit4 ]; then
      echo "export POLYMSG_TEST_RABBIT_URL=rabbit://guest:guest@127.0.0.1:$RABBIT4_PORT/"
      echo "export POLYMSG_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
      echo "export POLYMSG_TEST_RABBITMQCTL='$(bash "$RABBIT4" ctl-command "$RABBIT4_NODE")'"
      echo "export POLYMSG_TEST_RABBIT_VERSION=$(bash "$RABBIT4" version 2>/dev/null | head -1)"
      exit 0
    fi
    echo "export POLYMSG_TEST_RABBIT_URL=rabbit://guest:guest@127.0.0.1:$RABBIT_PORT/"
    echo "export POLYMSG_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
    echo "export POLYMSG_TEST_RABBITMQCTL='env HOME=$RUN/rabbitmq RABBITMQ_NODENAME=$NODE $RABBIT_BIN/rabbitmqctl'"
    echo "unset POLYMSG_TEST_RABBIT_VERSION"  # set by `env rabbit4` only
    ;;
  *) echo "usage: $0 start [rabbit|rabbit4|redis...]|stop|status|env [rabbit4]" >&2; exit 2 ;;
esac
