#!/usr/bin/env python3
"""free-memory-planner: a deployment planner that puts user VMs where memory is free.

    free-memory-planner.py can-handle <payload-file> <timeout>       exit 0 = yes, 1 = no
    free-memory-planner.py order-clusters <payload-file> <timeout>   {"clusters": [ids]}

Handles user VMs only (system VMs keep CloudStack's planner). Orders the candidate clusters
(`clusters` in the payload) by free memory, most first; clusters in the avoid list, and clusters
with less than MIN_FREE_FRACTION of their memory free or too little for the VM, are left out.
No candidates listed: no preference (empty output).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def free_memory(cluster: dict[str, Any]) -> int:
    if cluster.get("free_memory") is not None:
        return int(cluster["free_memory"])
    return int(cluster.get("total_memory") or 0) - int(cluster.get("used_memory") or 0)


def order(request: dict[str, Any]) -> list[int]:
    avoid = set((request.get("avoid") or {}).get("clusters") or [])
    offering = (request.get("vm") or {}).get("service_offering") or {}
    needed = int(offering.get("ram_size") or 0) * 1024 * 1024
    min_fraction = float(os.environ.get("MIN_FREE_FRACTION", "0.05"))
    fit = []
    for cluster in request.get("clusters") or []:
        free, total = free_memory(cluster), int(cluster.get("total_memory") or 0)
        if cluster["id"] in avoid or free < needed:
            continue
        if total and free < total * min_fraction:
            continue
        fit.append((free, cluster["id"]))
    return [cid for _, cid in sorted(fit, key=lambda item: (-item[0], item[1]))]


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(
            json.dumps({"error": "usage: free-memory-planner.py <action> <payload-file> [timeout]"})
        )
        return 2
    with open(argv[2], encoding="utf-8") as handle:
        request = json.load(handle)
    if argv[1] == "can-handle":
        vm_type = ((request.get("vm") or {}).get("type") or "User").lower()
        print(json.dumps({"can_handle": vm_type == "user"}))
        return 0 if vm_type == "user" else 1
    if argv[1] == "order-clusters":
        if request.get("clusters"):
            print(json.dumps({"clusters": order(request)}))
        return 0  # nothing printed: no preference
    print(json.dumps({"error": f"unknown action {argv[1]}"}))
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
