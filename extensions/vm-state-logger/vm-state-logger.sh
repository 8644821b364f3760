#!/usr/bin/env bash
# vm-state-logger: one line per VM state change, appended to $LOG_FILE.
#   vm-state-logger.sh <category> <payload-file> <timeout>
# The payload is csext's event payload: routing-key parts plus normalised fields
# (old_state, new_state, resource_id, event, event_date_time) and CloudStack's body.
set -euo pipefail

category="${1:?usage: vm-state-logger.sh <category> <payload-file> <timeout>}"
payload="${2:?payload file missing}"
log_file="${LOG_FILE:?set LOG_FILE in spec.env}"

field() {  # the string value of a top-level key of the (one-line) payload, or "-"
  local value
  value="$(sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" "$payload" | head -n 1)"
  printf '%s' "${value:--}"
}

if [ "$category" != "ResourceStateEvent" ]; then
  echo "vm-state-logger: ignoring $category"
  exit 0
fi

line="$(field event_date_time) vm=$(field resource_id) $(field old_state) -> $(field new_state) ($(field event))"
# One write per line: concurrent runs append whole lines.
printf '%s\n' "$line" >> "$log_file"
echo "logged: $line"
