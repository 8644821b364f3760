#!/usr/bin/env python3
"""netns-recorder: a CloudStack NetworkOrchestrator that plans, but never applies.

For each command CloudStack sends, it writes the `ip netns` / `ip` / `iptables` commands a
namespace-based implementation (like cloudstack-extensions' Network-Namespace) would run, as one
JSON line in $RECORD_FILE, and answers as CloudStack expects. Useful to review what a network
offering would do, and as a starting point for a real driver.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from typing import Any

RECORD_FILE = os.environ.get("RECORD_FILE", "/tmp/csext-netns-recorder.jsonl")


def prefix_length(payload: dict) -> str:
    """`10.1.1.0/24` → `24` (CloudStack sends the network's CIDR)."""
    return str(payload.get("cidr", "/0")).split("/")[-1]


def decoded(value: Any) -> Any:
    """fw_rules, acl_rules, vm_data, restore_data: nested JSON or base64 JSON."""
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return json.loads(text if text[0] in "[{" else base64.b64decode(text))
    return value or []


def plan(command: str, envelope: dict[str, Any]) -> list[str]:
    p = envelope.get("payload") or {}
    ns = f"cs-net-{p.get('network_id') or envelope.get('network_id') or 'x'}"
    vlan = str(p.get("vlan") or "")
    if command == "implement-network":
        return [
            f"ip netns add {ns}",
            f"ip link add link eth0 name vlan{vlan} type vlan id {vlan}",
            f"ip link set vlan{vlan} netns {ns}",
            f"ip -n {ns} addr add {p.get('gateway')}/{prefix_length(p)} dev vlan{vlan}",
        ]
    if command in ("shutdown-network", "destroy-network"):
        return [f"ip netns delete {ns}"]
    if command == "assign-ip":
        return [f"ip -n {ns} addr add {p.get('public_ip')} dev pub{p.get('public_vlan')}"]
    if command == "release-ip":
        return [f"ip -n {ns} addr del {p.get('public_ip')} dev pub{p.get('public_vlan')}"]
    if command == "add-static-nat":
        return [
            f"ip netns exec {ns} iptables -t nat -A PREROUTING -d {p.get('public_ip')} "
            f"-j DNAT --to {p.get('private_ip')}"
        ]
    if command == "apply-fw-rules":
        return [
            f"ip netns exec {ns} iptables -A FORWARD -p {r.get('protocol', 'all')} "
            f"-s {r.get('cidr', r.get('source_cidr', '0.0.0.0/0'))} -j ACCEPT"
            for r in decoded(p.get("fw_rules"))
        ]
    if command == "add-dhcp-entry":
        return [f"echo '{p.get('mac')},{p.get('ip')}' >> /var/lib/cs-dhcp/{ns}.hosts"]
    return [f"# {command}: nothing to do in a namespace"]


def answer(command: str, envelope: dict[str, Any]) -> dict[str, Any]:
    p = envelope.get("payload") or {}
    if command == "ensure-network-device":
        return {
            "device": "netns-recorder",
            "namespace_prefix": "cs-net-",
            "previous": bool(p.get("current_details")),
        }
    if command == "implement-network":
        return {"status": "success", "network.broadcast_uri": f"vlan://{p.get('vlan')}"}
    if command == "custom-action":
        return {"status": "success", "message": f"{envelope.get('action')}: recorded"}
    return {"status": "success"}


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(
            json.dumps(
                {
                    "status": "error",
                    "error": "usage: netns-recorder.py <command> <payload-file> [timeout]",
                }
            )
        )
        return 1
    command = argv[1]
    with open(argv[2], encoding="utf-8") as handle:
        envelope = json.load(handle)
    try:
        commands = plan(command, envelope)
    except (ValueError, TypeError, AttributeError) as error:  # e.g. fw_rules not JSON
        print(json.dumps({"status": "error", "error": f"{command}: {error}"}))
        return 1
    record = {"time": time.time(), "command": command, "would_run": commands}
    with open(RECORD_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(answer(command, envelope)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
