#!/usr/bin/env bash
# RabbitMQ 4.x nodes for polymsg's tests, beside whatever RabbitMQ the system has.
#
#   scripts/rabbit4.sh tree                  make sure a RabbitMQ 4.x is at hand (see below)
#   scripts/rabbit4.sh start NAME PORT [CONF] start node NAME on 127.0.0.1:PORT
#   scripts/rabbit4.sh stop NAME             stop it (rabbitmqctl stop)
#   scripts/rabbit4.sh kill NAME             kill -9 it (its beam process only)
#   scripts/rabbit4.sh join NAME SEED        make node NAME a member of SEED's cluster
#   scripts/rabbit4.sh forget NAME           delete node NAME's data (it must be stopped)
#   scripts/rabbit4.sh ctl NAME ARGS...      rabbitmqctl against it
#   scripts/rabbit4.sh ctl-command NAME      print a shell command that runs rabbitmqctl against it
#   scripts/rabbit4.sh version               print the RabbitMQ version the nodes run
#
# Where the RabbitMQ 4.x comes from:
# - a machine whose own rabbitmq-server is 4.x (Debian 13: 4.0.5) runs it directly;
# - otherwise (Debian 12: 3.10.8) a minimal Debian 13 ("trixie") tree is made with
#   debootstrap from the mirror apt already uses, rabbitmq-server is installed in it,
#   and its nodes run under chroot. The tree is cached in $POLYMSG_RABBIT4_TREE
#   (default /var/cache/polymsg/trixie-rabbitmq), outside any checkout, so only the
#   first run on a machine builds it (a few minutes); later runs reuse it.
#
# Every node has its own name (NAME@localhost), AMQP port, distribution port
# (PORT + 20000), Erlang cookie, data directory and epmd port
# ($POLYMSG_RABBIT4_EPMD_PORT, default 4370), so it never meets the system's
# node (epmd 4369) nor another checkout's nodes of another name. Nodes started
# with the same epmd port can be clustered (rabbitmqctl join_cluster).
#
# The node's rabbitmq.conf denies what RabbitMQ 4.3 removes, so tests see a 4.3
# broker's refusals on 4.0:
#   deprecated_features.permit.transient_nonexcl_queues = false
#   deprecated_features.permit.global_qos = false
# CONF (a file) is appended to it. POLYMSG_RABBIT4_DENY=0 leaves the denials
# out: RabbitMQ 4.0.5 cannot always tell at boot whether a cluster uses
# transient queues, and a cluster node that restarts with the denial on then
# refuses to start (failed_to_deny_deprecated_features), so the cluster
# tests run their nodes without it (polymsg's declarations are checked on
# the single node, which has it).
set -euo pipefail

TREE=${POLYMSG_RABBIT4_TREE:-/var/cache/polymsg/trixie-rabbitmq}
EPMD_PORT=${POLYMSG_RABBIT4_EPMD_PORT:-4370}
SUITE=trixie
# Data of the nodes (inside the tree when chrooted: the chroot sees nothing else).
STATE_REL=var/lib/polymsg-nodes

die() { echo "rabbit4: $*" >&2; exit 1; }

# The system's RabbitMQ major version (empty when not installed).
system_major() {
  local v
  v=$(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || true)
  echo "${v%%.*}"
}

# "direct" when the system's own RabbitMQ is 4.x or newer, else "chroot".
mode() {
  local major
  major=$(system_major)
  if [ -n "$major" ] && [ "$major" -ge 4 ] 2>/dev/null; then echo direct; else echo chroot; fi
}

# The first deb.debian.org-style mirror apt uses for Debian itself.
debian_mirror() {
  local uri
  uri=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
          /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -oE 'https?://[^ ]+/debian/?' | grep -v security | head -1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

make_tree() {
  [ -x "$TREE/usr/lib/rabbitmq/bin/rabbitmq-server" ] && return 0
  command -v debootstrap >/dev/null 2>&1 || {
    echo "rabbit4: installing debootstrap from Debian packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  }
  mkdir -p "$(dirname "$TREE")"
  exec 9>"$TREE.lock"
  flock 9   # another checkout may be building it right now
  [ -x "$TREE/usr/lib/rabbitmq/bin/rabbitmq-server" ] && return 0
  local mirror new="$TREE.new" t0
  mirror=$(debian_mirror)
  t0=$(date +%s)
  echo "rabbit4: building a Debian $SUITE tree with RabbitMQ in $TREE (from $mirror; once per machine)"
  rm -rf "$new"
  debootstrap --variant=minbase "$SUITE" "$new" "$mirror" > "$TREE.debootstrap.log" 2>&1 \
    || { tail -20 "$TREE.debootstrap.log" >&2; die "debootstrap failed (log: $TREE.debootstrap.log)"; }
  # No service starts inside the tree while packages install.
  printf '#!/bin/sh\nexit 101\n' > "$new/usr/sbin/policy-rc.d"
  chmod +x "$new/usr/sbin/policy-rc.d"
  cp /etc/hosts "$new/etc/hosts"
  chroot "$new" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    rabbitmq-server >> "$TREE.debootstrap.log" 2>&1 \
    || { tail -20 "$TREE.debootstrap.log" >&2; die "installing rabbitmq-server in the tree failed"; }
  chroot "$new" apt-get clean
  mv "$new" "$TREE"
  echo "rabbit4: tree ready in $(($(date +%s) - t0)) s: RabbitMQ $(tree_version)"
}

tree_version() {
  chroot "$TREE" dpkg-query -W -f '${Version}' rabbitmq-server
}

version() {
  if [ "$(mode)" = direct ]; then dpkg-query -W -f '${Version}\n' rabbitmq-server
  else make_tree >/dev/null; tree_version; echo; fi
}

# Path of a node's state, as seen from the host and as seen by the node.
host_state() { if [ "$(mode)" = direct ]; then echo "/var/lib/polymsg-nodes/$1"; else echo "$TREE/$STATE_REL/$1"; fi; }
node_state() { if [ "$(mode)" = direct ]; then echo "/var/lib/polymsg-nodes/$1"; else echo "/$STATE_REL/$1"; fi; }

# run_in NAME CMD ARGS...: run a RabbitMQ script for node NAME (in the tree when chrooted).
run_in() {
  local name=$1 cmd=$2 state port
  shift 2
  state=$(node_state "$name")
  port=$(cat "$(host_state "$name")/port" 2>/dev/null || echo 0)
  local envs=(
    HOME="$state" RABBITMQ_NODENAME="$name@localhost"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$port"
    RABBITMQ_DIST_PORT=$((port + 20000)) ERL_EPMD_PORT="$EPMD_PORT" ERL_EPMD_ADDRESS=127.0.0.1
    RABBITMQ_MNESIA_BASE="$state/mnesia" RABBITMQ_LOG_BASE="$state/log"
    RABBITMQ_CONFIG_FILE="$state/rabbitmq" RABBITMQ_ENABLED_PLUGINS_FILE="$state/enabled_plugins"
    RABBITMQ_PID_FILE="$state/rabbit.pid" RABBITMQ_ADVANCED_CONFIG_FILE="$state/advanced.config"
    RABBITMQ_CONF_ENV_FILE="$state/rabbitmq-env.conf"
    PATH=/usr/lib/rabbitmq/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 LC_ALL=C.UTF-8
  )
  if [ "$(mode)" = direct ]; then
    env -i "${envs[@]}" "/usr/lib/rabbitmq/bin/$cmd" "$@"
  else
    ensure_proc
    env -i "${envs[@]}" chroot "$TREE" "/usr/lib/rabbitmq/bin/$cmd" "$@"
  fi
}

# The Erlang VM reads /proc (memory, CPUs); the tree gets the host's, once.
ensure_proc() {
  mountpoint -q "$TREE/proc" 2>/dev/null || mount -t proc proc "$TREE/proc"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_node() {
  local name=$1 port=$2 conf=${3:-} state
  [ "$(mode)" = direct ] || make_tree
  state=$(host_state "$name")
  mkdir -p "$state/log" "$state/mnesia"
  echo "$port" > "$state/port"
  [ -f "$state/.erlang.cookie" ] || { head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$state/.erlang.cookie"; }
  # All nodes of one epmd port share a cookie, so they can be clustered.
  local shared
  shared="$(dirname "$state")/cookie-$EPMD_PORT"
  [ -f "$shared" ] || cp "$state/.erlang.cookie" "$shared"
  cp "$shared" "$state/.erlang.cookie"
  chmod 400 "$state/.erlang.cookie"
  echo "[]." > "$state/enabled_plugins"
  echo "[]." > "$state/advanced.config"
  : > "$state/rabbitmq-env.conf"
  {
    echo "loopback_users = none"
    echo "listeners.tcp.default = 127.0.0.1:$port"
    if [ "${POLYMSG_RABBIT4_DENY:-1}" = 1 ]; then
      echo "deprecated_features.permit.transient_nonexcl_queues = false"
      echo "deprecated_features.permit.global_qos = false"
    fi
    [ -n "$conf" ] && cat "$conf"
  } > "$state/rabbitmq.conf"
  if run_in "$name" rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    echo "rabbit4: $name already running on 127.0.0.1:$port"; return 0
  fi
  port_busy "$port" && die "port $port is taken by another process; pick another"
  setsid env "POLYMSG_RABBIT4_TREE=$TREE" "POLYMSG_RABBIT4_EPMD_PORT=$EPMD_PORT" \
     bash "$0" _server "$name" > "$state/log/console.log" 2>&1 < /dev/null &
  local server=$! _
  for _ in $(seq 1 120); do
    if run_in "$name" rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1; then
      echo "rabbit4: $name (RabbitMQ $(version)) up on 127.0.0.1:$port"; return 0
    fi
    kill -0 "$server" 2>/dev/null || break   # the node gave up: no use waiting
    sleep 1
  done
  tail -30 "$state/log/console.log" >&2
  die "$name did not start"
}

# The beam process of node NAME (its pid file).
node_pid() {
  cat "$(host_state "$1")/rabbit.pid" 2>/dev/null || true
}

case "${1:-}" in
  tree) if [ "$(mode)" = direct ]; then echo "rabbit4: the system's RabbitMQ is 4.x; no tree needed"
        else make_tree; echo "rabbit4: tree $TREE: RabbitMQ $(tree_version)"; fi ;;
  version) version ;;
  start) [ $# -ge 3 ] || die "usage: $0 start NAME PORT [CONF]"; start_node "$2" "$3" "${4:-}" ;;
  _server) run_in "$2" rabbitmq-server ;;
  stop) run_in "$2" rabbitmqctl -q stop >/dev/null 2>&1 || true ;;
  kill)
    pid=$(node_pid "$2")
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true ;;
  ctl) name=$2; shift 2; run_in "$name" rabbitmqctl "$@" ;;
  join)
    # A node that just booted sometimes fails start_app after the join
    # (failed_to_deny_deprecated_features); a reset and a second try succeed.
    for attempt in 1 2 3; do
      run_in "$2" rabbitmqctl -q stop_app
      run_in "$2" rabbitmqctl -q reset
      if run_in "$2" rabbitmqctl -q join_cluster "$3@localhost" \
          && run_in "$2" rabbitmqctl -q start_app \
          && run_in "$2" rabbitmqctl -q await_startup --timeout 60; then
        exit 0
      fi
      echo "rabbit4: joining $2 to $3 failed (attempt $attempt)" >&2
      sleep 2
    done
    die "could not join $2 to $3" ;;
  forget) rm -rf "$(host_state "$2")" ;;
  ctl-command) printf 'bash %q ctl %q' "$(cd "$(dirname "$0")" && pwd)/rabbit4.sh" "$2" ;;
  *) sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
