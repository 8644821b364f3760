#!/bin/bash
# A local 3-node RabbitMQ cluster on this one machine, without containers (`make cluster`, and
# the tests/cluster fixture). Each node has its own name, AMQP port, distribution port, data,
# log and plugins files under $CSEXT_CLUSTER_BASE (default /tmp/csext-cluster); they share the
# rabbitmq user's Erlang cookie (same HOME), and nodes 2 and 3 `join_cluster` node 1.
# The machine's own broker (rabbit@<host>, port 5672) is never touched.
#
#   scripts/cluster.sh start         start the three nodes (fresh data) and cluster them
#   scripts/cluster.sh stop          stop the three nodes
#   scripts/cluster.sh status        cluster_status as node 1 sees it
#   scripts/cluster.sh urls          the AMQP URLs, comma-separated (CSEXT_AMQP_URL takes this)
#   scripts/cluster.sh stop-app N    stop RabbitMQ on node N (the Erlang VM stays: a node loss)
#   scripts/cluster.sh start-app N   start it again; it rejoins the cluster by itself
#
# Ports: node N listens for AMQP on $((CSEXT_CLUSTER_PORT + N)) (default 5680+N, so
# 5681-5683) and for Erlang distribution on 25680+N.
set -euo pipefail
base=${CSEXT_CLUSTER_BASE:-/tmp/csext-cluster}
port0=${CSEXT_CLUSTER_PORT:-5680}
nodes=(1 2 3)

node_name() { echo "csext-c$1@localhost"; }
amqp_port() { echo $((port0 + $1)); }
listening() { (echo > "/dev/tcp/127.0.0.1/$(amqp_port "$1")") 2>/dev/null; }
ctl() { local n=$1; shift; rabbitmqctl -q -n "$(node_name "$n")" "$@"; }

start_node() {
  local n=$1 dir="$base/c$1"
  if listening "$n"; then echo "node $n already listening on :$(amqp_port "$n")"; return; fi
  rm -rf "$dir"
  mkdir -p "$dir/mnesia" "$dir/log"
  echo "[]." > "$dir/plugins"           # no management plugin: its port would clash
  : > "$dir/rabbitmq.conf"
  chown -R rabbitmq:rabbitmq "$dir"
  (
    ulimit -n 20000 || true
    export HOME=/var/lib/rabbitmq RABBITMQ_NODENAME="$(node_name "$n")" \
      RABBITMQ_NODE_PORT="$(amqp_port "$n")" RABBITMQ_DIST_PORT=$((port0 + 20000 + n)) \
      RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
      RABBITMQ_FEATURE_FLAGS_FILE="$dir/mnesia/feature_flags" RABBITMQ_PID_FILE="$dir/pid" \
      RABBITMQ_ENABLED_PLUGINS_FILE="$dir/plugins" RABBITMQ_CONFIG_FILE="$dir/rabbitmq"
    setsid nohup setpriv --reuid rabbitmq --regid rabbitmq --init-groups \
      /usr/lib/rabbitmq/bin/rabbitmq-server > "$dir/server.out" 2>&1 < /dev/null &
  )
}

wait_listening() {
  local n=$1
  for _ in $(seq 120); do
    if listening "$n"; then return 0; fi
    sleep 0.5
  done
  echo "node $n did not start; see $base/c$n/server.out and $base/c$n/log" >&2
  return 1
}

join() {
  local n=$1
  if ctl 1 cluster_status --formatter json | python3 -c '
import json, sys
status = json.load(sys.stdin)
sys.exit(0 if sys.argv[1] in status.get("disk_nodes", []) else 1)' "$(node_name "$n")"; then
    return
  fi
  ctl "$n" stop_app
  ctl "$n" join_cluster "$(node_name 1)"
  ctl "$n" start_app
}

urls() {
  local out=() n
  for n in "${nodes[@]}"; do out+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/"); done
  (IFS=,; echo "${out[*]}")
}

case "${1:-start}" in
  start)
    for n in "${nodes[@]}"; do start_node "$n"; done
    for n in "${nodes[@]}"; do wait_listening "$n"; done
    for n in "${nodes[@]}"; do ctl "$n" await_startup; done
    # guest may log in from 127.0.0.1 only (loopback_users default): that is all we use.
    for n in 2 3; do join "$n"; done
    echo "cluster up: $(urls)" ;;
  stop)
    for n in "${nodes[@]}"; do
      if ctl "$n" status >/dev/null 2>&1; then ctl "$n" stop || true; fi
    done
    echo "cluster stopped" ;;
  status)
    ctl 1 cluster_status ;;
  urls)
    urls ;;
  stop-app)
    ctl "${2:?node number}" stop_app ;;
  start-app)
    ctl "${2:?node number}" start_app ;;
  *)
    echo "usage: $0 start|stop|status|urls|stop-app N|start-app N" >&2; exit 64 ;;
esac
