"""`csext test` judges an Orchestrator `prepare` as CloudStack does: the WHOLE stdout is the JSON
merge patch (ExternalPathPayloadProvisioner.prepareExternalProvisioning, apache/cloudstack
plugins/hypervisors/external/.../ExternalPathPayloadProvisioner.java @0337e34), not its last
JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from workerkit import write_extension

SCRIPT = """#!/bin/sh
case "$CASE" in
  chatty) echo "allocating MACs..."; echo '{"details":{"proxmox_vmid":"106"}}' ;;
  patch)  printf '{\\n  "details": {"proxmox_vmid": "106"}\\n}\\n' ;;
  empty)  echo "" ;;
esac
"""


def test_prepare_cases_are_judged_on_the_whole_stdout(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    folder = write_extension(registry, "prep", SCRIPT, hook="orchestrator", patterns=[])
    cases = folder / "tests"
    cases.mkdir()
    payload = {"cloudstack.vm.details": {"name": "i-2-4-VM", "details": {"deployvm": "true"}}}
    for name, expect in (
        # CloudStack fails this deploy with "Failed to parse VM": so must the case.
        ("chatty", {"outcome": "failed"}),
        (
            "patch",
            {"outcome": "success", "result": {"vm_patch": {"details": {"proxmox_vmid": "106"}}}},
        ),
        ("empty", {"outcome": "success", "result": {"vm_patch": None}}),
    ):
        case = {"action": "prepare", "payload": payload, "env": {"CASE": name}, "expect": expect}
        (cases / f"{name}.yaml").write_text(json.dumps(case))  # JSON is YAML
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    done = subprocess.run(
        [sys.executable, "-m", "csext.cli", "test", "prep", "--registry", str(registry), "--json"],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    results = {r["name"]: r for r in json.loads(done.stdout)}
    assert all(r["passed"] for r in results.values()), results
    assert "Failed to parse VM" in results["chatty"]["error"]
    merged = results["patch"]["result"]["vm_details"]
    assert merged["details"] == {"deployvm": "true", "proxmox_vmid": "106"}
    assert done.returncode == 0
