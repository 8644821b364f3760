#!/usr/bin/env python3
"""local-orchestrator: a CloudStack Orchestrator extension that keeps VMs in a JSON file.

CloudStack's contract, unchanged: `local-orchestrator.py <action> <payload-file> <timeout>`,
one JSON object on stdout, exit 0 only on success. State: $STATE_FILE, a JSON object
{vm internal name: {"uuid", "state": "running"|"stopped", "vmid"}}, locked while changed.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STATE_FILE = os.environ.get("STATE_FILE", "/tmp/csext-local-orchestrator.json")


def answer(ok: bool = True, **fields: Any) -> int:
    status = {"status": "success"} if ok else {"status": "error"}
    print(json.dumps({**status, **fields}))
    return 0 if ok else 1


@contextmanager
def state() -> Iterator[dict[str, Any]]:
    """The VM table, exclusively locked; written back when the block succeeds."""
    with open(STATE_FILE, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        text = handle.read()
        vms = json.loads(text) if text.strip() else {}
        yield vms
        handle.seek(0)
        handle.truncate()
        json.dump(vms, handle, indent=1, sort_keys=True)


def vm_name(payload: dict[str, Any]) -> str:
    details = payload.get("cloudstack.vm.details") or {}
    return payload.get("virtualmachinename") or details.get("name") or ""


def power(vm: dict[str, Any] | None) -> str:
    if vm is None:
        return "PowerUnknown"
    return "PowerOn" if vm["state"] == "running" else "PowerOff"


def act(action: str, name: str, payload: dict[str, Any]) -> int:
    with state() as vms:
        vm = vms.get(name)
        if action == "prepare":
            return answer(details={"local_vmid": str(len(vms) + 100)})
        if action in ("create", "deploy"):
            details = (payload.get("cloudstack.vm.details") or {}).get("details") or {}
            vms[name] = {
                "uuid": payload.get("virtualmachineid"),
                "state": "running",
                "vmid": details.get("local_vmid"),
            }
            return answer(message=f"created {name}")
        if action == "delete":
            vms.pop(name, None)  # idempotent: a VM that is gone counts as deleted
            return answer(message=f"deleted {name}")
        if action == "stop" and vm is None:
            return answer(message=f"{name} does not exist: nothing to stop")
        if vm is None:
            return answer(False, error=f"no such VM: {name}")
        vm["state"] = "stopped" if action == "stop" else "running"
        return answer(message=f"{action} {name}: {vm['state']}")


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        return answer(False, error="usage: local-orchestrator.py <action> <payload-file> [timeout]")
    action, path = argv[1].lower(), argv[2]
    with open(path, encoding="utf-8") as handle:
        payload = json.load(handle)
    name = vm_name(payload)
    if action == "status":
        with state() as vms:
            return answer(power_state=power(vms.get(name)))
    if action == "statuses":
        with state() as vms:
            return answer(power_state={n: power(vm).lower() for n, vm in vms.items()})
    if action == "getconsole":
        return answer(console={"host": "127.0.0.1", "port": 5900, "protocol": "vnc"})
    if action == "listvms":  # a custom action: CloudStack's UI shows `message`
        with state() as vms:
            return answer(printmessage="true", message=sorted(vms))
    if action in ("prepare", "create", "deploy", "start", "stop", "reboot", "delete"):
        return act(action, name, payload)
    return answer(False, error=f"unknown action {argv[1]}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
