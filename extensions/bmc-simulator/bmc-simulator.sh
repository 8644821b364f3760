#!/usr/bin/env bash
# bmc-simulator: out-of-band management without hardware.
#   bmc-simulator.sh <on|off|cycle|reset|soft|status> <payload-file> <timeout>
# The payload carries address, port, username, password. Each address has a power state in
# $BMC_STATE_DIR/<address>. Credentials must match $BMC_USERNAME and $BMC_PASSWORD_SHA256 (the
# sha256 hex of the password, so no password sits in the manifest), else the
# answer is an authentication failure (exit 77), like ipmitool's "RAKP 2 HMAC is invalid".
# The password is never printed.
set -euo pipefail

action="${1:?usage: bmc-simulator.sh <action> <payload-file> <timeout>}"
payload="${2:?payload file missing}"
state_dir="${BMC_STATE_DIR:-/tmp/csext-bmc-simulator}"

field() {
  sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" "$payload" | head -n 1
}

address="$(field address)"
if [ -z "$address" ] || [[ "$address" == */* ]] || [[ "$address" == .* ]]; then
  echo '{"status":"error","error":"payload needs a plain address"}'
  exit 1
fi
given_hash="$(printf '%s' "$(field password)" | sha256sum | cut -d' ' -f1)"
if [ "$(field username)" != "${BMC_USERNAME:-admin}" ] || [ "$given_hash" != "${BMC_PASSWORD_SHA256:-}" ]; then
  echo '{"status":"error","auth_failure":true,"error":"authentication failed for this BMC user"}'
  exit 77
fi

mkdir -p "$state_dir"
state_file="$state_dir/$address"
current="$(cat "$state_file" 2>/dev/null || echo off)"

case "$action" in
  status)
    echo "Chassis Power is $current"   # ipmitool's own wording, which csext understands too
    exit 0
    ;;
  on|cycle|reset) new=on ;;
  off|soft) new=off ;;
  *)
    echo "{\"status\":\"error\",\"error\":\"unknown operation $action\"}"
    exit 1
    ;;
esac
if { [ "$action" = "cycle" ] || [ "$action" = "reset" ]; } && [ "$current" = "off" ]; then
  echo '{"status":"error","error":"host is off: power it on instead"}'
  exit 1
fi
printf '%s\n' "$new" > "$state_file"
state="$([ "$new" = on ] && echo On || echo Off)"
echo "{\"status\":\"success\",\"power_state\":\"$state\"}"
