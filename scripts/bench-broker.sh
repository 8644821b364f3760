#!/bin/bash
# A second local RabbitMQ node for `make bench`: port 5673, open-file limit 20000, state under
# /tmp/csext-bench-broker. Why: the reliability suite restarts the default node, and the Debian
# package's node runs with a soft open-file limit of 1024 (its wrapper starts it through `su`,
# which resets limits through PAM), too few for benchmark 7's 1,000 quorum queues.
# Usage: scripts/bench-broker.sh start|stop, then
#   .venv/bin/python -m bench --amqp-url amqp://guest:guest@127.0.0.1:5673/
set -euo pipefail
base=/tmp/csext-bench-broker
node=csext-bench@localhost
case "${1:-start}" in
  start)
    if (echo > /dev/tcp/127.0.0.1/5673) 2>/dev/null; then echo "already listening on :5673"; exit 0; fi
    mkdir -p "$base/mnesia" "$base/log"
    echo "[]." > "$base/plugins"
    : > "$base/rabbitmq.conf"
    chown -R rabbitmq:rabbitmq "$base"
    (
      ulimit -n 20000
      export HOME=/var/lib/rabbitmq RABBITMQ_NODENAME=$node RABBITMQ_NODE_PORT=5673 \
        RABBITMQ_DIST_PORT=25673 RABBITMQ_MNESIA_BASE=$base/mnesia RABBITMQ_LOG_BASE=$base/log \
        RABBITMQ_FEATURE_FLAGS_FILE=$base/mnesia/feature_flags RABBITMQ_PID_FILE=$base/pid \
        RABBITMQ_ENABLED_PLUGINS_FILE=$base/plugins RABBITMQ_CONFIG_FILE=$base/rabbitmq
      setsid nohup setpriv --reuid rabbitmq --regid rabbitmq --init-groups \
        /usr/lib/rabbitmq/bin/rabbitmq-server > "$base/server.out" 2>&1 < /dev/null &
    )
    for _ in $(seq 60); do
      if (echo > /dev/tcp/127.0.0.1/5673) 2>/dev/null; then echo "up on :5673 ($node)"; exit 0; fi
      sleep 1
    done
    echo "did not start; see $base/server.out and $base/log" >&2; exit 1 ;;
  stop)
    rabbitmqctl -n "$node" stop ;;
  *)
    echo "usage: $0 start|stop" >&2; exit 64 ;;
esac
