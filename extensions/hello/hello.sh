#!/usr/bin/env bash
# hello: the smallest csext extension.
#   hello.sh <action> <payload-file> <timeout>
# An event (action = the category) prints one line; `greet` answers a JSON greeting.
set -euo pipefail

action="${1:?usage: hello.sh <action> <payload-file> <timeout>}"
payload="${2:?payload file missing}"

# The first "name":"..." of the payload, without needing jq.
name="$(sed -n 's/.*"name" *: *"\([^"]*\)".*/\1/p' "$payload" | head -n 1)"

case "$action" in
  greet)
    printf '{"status":"success","message":"hello, %s"}\n' "${name:-world}"
    ;;
  *Event)
    key="$(sed -n 's/.*"routing_key" *: *"\([^"]*\)".*/\1/p' "$payload")"
    printf 'hello: got %s %s\n' "$action" "$key"
    ;;
  *)
    printf '{"status":"error","error":"unknown action %s"}\n' "$action"
    exit 1
    ;;
esac
