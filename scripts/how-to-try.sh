#!/usr/bin/env bash
# Printed by `make run` before the worker starts: commands to try from another terminal.
# Usage: scripts/how-to-try.sh [REGISTRY] [BIN] [WEB_PORT]
set -euo pipefail

REGISTRY="${1:-extensions}"
BIN="${2:-.venv/bin}"
WEB_PORT="${3:-8080}"
METRICS_PORT="${4:-}"

cat <<MSG

Starting a csext worker on the registry '$REGISTRY' (Ctrl-C stops it, a second Ctrl-C kills
running extensions), with the web UI and HTTP API beside it:

  http://127.0.0.1:$WEB_PORT/    (sign in with the token printed below; OpenAPI at /api/v1/openapi.json)
MSG
if [ -n "$METRICS_PORT" ]; then
  cat <<MSG
  http://127.0.0.1:$METRICS_PORT/metrics    (Prometheus metrics; /healthz, /readyz beside it)
MSG
fi
cat <<MSG

Try it from another terminal:

  # call an extension the way CloudStack would (RPC, waits for the reply)
  echo '{"name": "world"}' | $BIN/csext call hello greet --payload -

  # publish a VM state change exactly as CloudStack's event bus does
  uuid=\$(cat /proc/sys/kernel/random/uuid)
  echo '{"resource":"VirtualMachine","id":"'\$uuid'","old-state":"Starting","new-state":"Running","status":"postStateTransitionEvent"}' \\
    | $BIN/csext emit --category ResourceStateEvent --type OperationSucceeded \\
        --resource-type VirtualMachine --uuid \$uuid --body -

  $BIN/csext top         # live runs/s, p50/p99, failures, in flight per extension
  $BIN/csext list        # the extensions in the registry
  $BIN/csext --help      # everything else

MSG
