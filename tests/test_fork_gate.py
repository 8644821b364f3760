"""With per-run cgroups, a warm coprocess must never be born inside an exec run's cgroup."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from csext.worker.runtimes.coprocess import CoprocessLimits, CoprocessRuntime
from csext.worker.runtimes.runner import ExecRunner, RunRequest, install_child_watcher

COPROCESS = """#!/usr/bin/env python3
import json, sys
born_in = open("/proc/self/cgroup").read().strip().splitlines()[-1].split(":", 2)[2]
for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.write(json.dumps({"id": request["id"], "exit_code": 0, "stdout": born_in}) + "\\n")
    sys.stdout.flush()
"""


def cgroup_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text().strip().splitlines()[-1].split(":", 2)[2]


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[ExecRunner]:
    """An exec runner with per-run cgroups (skips where there are none); its pool removed after."""
    install_child_watcher()
    runner = ExecRunner(run_dir=tmp_path / "runs", output_cap=65536, kill_grace=0.5, cgroups="auto")
    if runner.cgroups is None:
        pytest.skip(f"per-run cgroups unavailable here: {runner.cgroups_reason}")
    yield runner
    runner.close()


async def test_coprocesses_spawned_during_exec_runs_are_born_outside_them(
    tmp_path: Path, runner: ExecRunner
):
    entry = tmp_path / "co.py"
    entry.write_text(
        COPROCESS.replace("/usr/bin/env python3", os.path.realpath("/usr/bin/python3"))
    )
    entry.chmod(0o755)
    runtime = CoprocessRuntime(
        CoprocessLimits(output_cap=65536, kill_grace=0.5, max_requests=1),
        fork_gate=runner.fork_gate,
    )
    exec_request = RunRequest(
        entrypoint=Path("/bin/true"),
        action="a",
        payload=b"{}",
        timeout=10,
        env={"PATH": "/bin"},
        cwd=tmp_path,
    )
    co_request = RunRequest(
        entrypoint=entry,
        action="a",
        payload=b"{}",
        timeout=10,
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    home = cgroup_of(os.getpid())
    born_in: list[str] = []

    async def coprocess_calls() -> None:
        for _ in range(40):  # max_requests=1: every call starts a new coprocess
            result = await runtime.run("co", co_request, concurrency=1)
            assert result.exit_code == 0, result
            born_in.append(result.stdout.decode())

    async def exec_runs() -> None:
        for _ in range(200):
            assert (await runner.run(exec_request)).exit_code == 0

    try:
        await asyncio.gather(coprocess_calls(), exec_runs(), exec_runs())
    finally:
        await runtime.aclose()
    assert born_in, "no coprocess observed"
    assert all(group == home for group in born_in), set(born_in) - {home}


async def test_empty_run_cgroups_are_reused_and_dirty_ones_removed(
    tmp_path: Path, runner: ExecRunner
):
    """A run's cgroup is pooled when the run left nothing behind, else killed and removed."""
    where = tmp_path / "where"
    clean = tmp_path / "clean"
    clean.write_text("#!/bin/sh\ncat /proc/self/cgroup\n")
    dirty = tmp_path / "dirty"
    dirty.write_text(
        "#!/bin/sh\nsetsid sleep 300 </dev/null >/dev/null 2>&1 &\n"
        f"cat /proc/self/cgroup > {where}\n"
    )
    for script in (clean, dirty):
        script.chmod(0o755)

    def request(entry: Path) -> RunRequest:
        return RunRequest(entry, "a", b"{}", 10, {"PATH": "/usr/bin:/bin"}, tmp_path)

    first = (await runner.run(request(clean))).stdout
    second = (await runner.run(request(clean))).stdout
    assert first == second and first.strip() != b"0::/" + cgroup_of(os.getpid()).encode()
    await runner.run(request(dirty))
    used = where.read_text().strip().split(":", 2)[2]
    assert used == first.decode().strip().split(":", 2)[2], "the pooled cgroup was reused"
    assert not (runner.cgroups.parent / Path(used).name).exists(), (
        "the cgroup a daemon was left in is removed, not pooled"
    )
    third = (await runner.run(request(clean))).stdout
    assert third != first, "a new cgroup after the dirty one was removed"
