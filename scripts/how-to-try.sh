#!/usr/bin/env bash
# Printed by `make run` before the worker starts: commands to try from another terminal.
# Usage: scripts/how-to-try.sh [REGISTRY] [BIN] [WEB_PORT]
set -euo pipefail

REGISTRY="${1:-extensions}"
BIN="${2:-.venv/bin}"
WEB_PORT="${3:-8080}"

cat <<MSG

Starting a csext worker on the registry '$REGISTRY' (Ctrl-C stops it, a second Ctrl-C kills
running extensions), with the web UI and HTTP API beside it:

  http://127.0.0.1:$WEB_PORT/    (sign in with the token printed below; API docs at /api/v1/docs)

Try it from another terminal:

  # call an extension the way CloudStack would (RPC, waits for the reply)
  echo '{"name": "world"}' | $BIN/csext call hello greet --payload -

  # publish a VM state change exactly as CloudStack's event bus does
  uuid=\$(cat /proc/sys/kernel/random/uuid)
  echo '{"resource":"VirtualMachine","id":"'\$uuid'","old-state":"Starting","new-state":"Running","status":"postStateTransitionEvent"}' \\
    | $BIN/csext emit --category ResourceStateEvent --type OperationSucceeded \\
        --resource-type VirtualMachine --uuid \$uuid --body -

  $BIN/csext list        # the extensions in the registry
  $BIN/csext --help      # everything else

MSG
