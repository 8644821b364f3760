#!/usr/bin/env python3
"""cpu-passthrough: set libvirt's host-passthrough CPU mode on KVM guests.

    cpu-passthrough.py transform <payload-file> <timeout>   {"xml": ...} -> new XML on stdout
    cpu-passthrough.py on-start|on-stop <payload-file> <timeout>   nothing to do

`<cpu mode="host-passthrough" check="none" migratable="on">`, keeping the VM's `<topology>`,
`<numa>` and `<cache>` children (a CPU model and feature list make no sense in this mode).
Prints nothing (= unchanged) when the VM is already in that mode or is not in VM_PREFIXES.
Note: live migration then needs identical CPUs on source and destination hosts.
"""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET

KEEP = ("topology", "numa", "cache")


def wanted(name: str) -> bool:
    prefixes = [p.strip() for p in os.environ.get("VM_PREFIXES", "").split(",") if p.strip()]
    return not prefixes or any(name.startswith(p) for p in prefixes)


def transform(xml: str) -> str:
    """The new XML, or "" when nothing changes."""
    domain = ET.fromstring(xml)
    if not wanted(domain.findtext("name") or ""):
        return ""
    cpu = domain.find("cpu")
    if cpu is not None and cpu.get("mode") == "host-passthrough":
        return ""
    kept = [child for child in (cpu if cpu is not None else []) if child.tag in KEEP]
    if cpu is None:
        cpu = ET.SubElement(domain, "cpu")
    tail = cpu.tail  # clear() drops it, and with it the indentation of what follows
    cpu.clear()
    cpu.attrib.update({"mode": "host-passthrough", "check": "none", "migratable": "on"})
    for child in kept:
        child.tail = None
    cpu.extend(kept)
    cpu.tail = tail
    return ET.tostring(domain, encoding="unicode")


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: cpu-passthrough.py <action> <payload-file> [timeout]", file=sys.stderr)
        return 2
    with open(argv[2], encoding="utf-8") as handle:
        request = json.load(handle)
    if argv[1] == "transform":
        print(transform(request["xml"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
