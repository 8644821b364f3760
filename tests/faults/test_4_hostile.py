"""Scenario 4: hostile extensions, through a real worker process, and the runner's cgroup layer.

Each hostile extension must produce a reported run (an RPC reply saying what happened), leave
no process behind, and leave the worker responsive. What the process group alone cannot catch
(a descendant that calls setsid) is caught by the per-run cgroup where the machine allows one;
the test says which applied. A worker killed with SIGKILL leaves its runs behind: the next
worker start-up kills them (process-group record, or the run's cgroup) and removes their
payload files.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from workerkit import settings_for, write_extension

from csext.worker.amqp import names as c
from csext.worker.amqp.rpc_client import RpcClient
from csext.worker.runtimes.runner import ExecRunner, RunRequest

from ._kit import (
    cgroups_available,
    consumers_at_least,
    delete_queues,
    kill_all,
    processes_with_env,
    start_worker,
    stop,
    wait_for,
)
from .conftest import FULL, size

SCENARIO = "4 hostile extensions"
pytestmark = [pytest.mark.timeout(600 if FULL else 120)]

CGROUPS, CGROUPS_WHY = cgroups_available()

HOSTILE = {
    "past-deadline": ("sleep 30\n", "timeout"),
    "ignores-sigterm": ("trap '' TERM\nsleep 30 & wait; sleep 30\n", "timeout"),
    "setsid-grandchild": (
        "setsid sh -c 'setsid sleep 300 & sleep 300' </dev/null >/dev/null 2>&1 &\n"
        'echo \'{"status":"success"}\'\n',
        None,
    ),
    "floods-stdout": ("head -c {flood} /dev/zero\n", None),
    "exits-before-reading": ("exit 0\n", None),
    "closes-stdout-keeps-running": ("exec >&- 2>&-\nsleep 30\n", "timeout"),
    "reads-stdin": ('cat\necho \'{"status":"success"}\'\n', None),
}


async def test_hostile_extensions(tmp_path, amqp_url, unique, report):
    flood = size(100, 1024) * 1024 * 1024
    registry = tmp_path / "registry"
    registry.mkdir()
    names = {}
    for kind, (body, _) in HOSTILE.items():
        name = f"{unique}-{kind}"
        names[kind] = name
        script = "#!/bin/sh\n" + body.replace("{flood}", str(flood))
        write_extension(
            registry, name, script, hook="orchestrator", patterns=[], spec={"timeout": 2}
        )
    ok = f"{unique}-ok"
    write_extension(
        registry, ok, '#!/bin/sh\necho \'{"status":"success"}\'\n', hook="orchestrator", patterns=[]
    )
    settings = settings_for(amqp_url, registry, f"{unique}-ex", tmp_path)
    report.load(
        f"{len(HOSTILE)} hostile extensions, {flood >> 20} MiB flood, "
        f"cgroups: {'on' if CGROUPS else 'off (' + CGROUPS_WHY + ')'}"
    )
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        for name in [*names.values(), ok]:
            await wait_for(
                lambda n=name: consumers_at_least(amqp_url, c.rpc_queue(n), 1), 60, "consumer"
            )
        async with RpcClient(amqp_url) as client:
            replies = await asyncio.gather(
                *(client.call(name, "status", {}, timeout=60) for name in names.values())
            )
            for (kind, (_, error)), reply in zip(HOSTILE.items(), replies, strict=True):
                got = reply.error.kind if reply.error else None
                assert got == error, (kind, reply)
            flooded = replies[list(HOSTILE).index("floods-stdout")]
            assert flooded.truncated.stdout and len(flooded.stdout) <= settings.output_cap
            report.check(
                "every run reported: timeouts for the three that outlive their deadline, "
                "success for the others, the flood cut at the output cap and flagged"
            )
            left = {k: processes_with_env(f"CSEXT_EXTENSION={n}") for k, n in names.items()}
            escaped = left.pop("setsid-grandchild")
            assert not any(left.values()), left
            if CGROUPS:
                assert not escaped, escaped
                report.check("no process left behind, setsid'd grandchildren included (cgroup)")
            else:
                kill_all(escaped)
                report.check(
                    "no process left in the process group; setsid'd grandchildren "
                    f"escape without cgroups ({CGROUPS_WHY})"
                )
            assert (await client.call(ok, "status", {}, timeout=20)).exit_code == 0
            assert worker.poll() is None
            report.check("the worker answers a normal call afterwards")
        assert not list((settings.run_dir).iterdir()), "payload files left"
    finally:
        stop(worker)
        await delete_queues(amqp_url, *names.values(), ok)


@pytest.mark.skipif(not CGROUPS, reason=f"no per-run cgroups here: {CGROUPS_WHY}")
async def test_cgroup_kills_a_double_forked_setsid_grandchild(tmp_path, report):
    report.load("1 run whose grandchild double-forks out of its session")
    runner = ExecRunner(run_dir=tmp_path / "runs", output_cap=4096, kill_grace=0.2, cgroups="auto")
    assert runner.cgroups is not None, runner.cgroups_reason
    pidfile = tmp_path / "daemon"
    script = tmp_path / "ext"
    script.write_text(
        f"#!/bin/sh\nsetsid sh -c 'sh -c \"echo \\$\\$ > {pidfile}; "
        "exec sleep 300\" &' </dev/null >/dev/null 2>&1\n"
        f"while [ ! -s {pidfile} ]; do sleep 0.01; done\necho done\n"
    )
    script.chmod(0o755)
    request = RunRequest(
        entrypoint=script,
        action="a",
        payload=b"{}",
        timeout=10,
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    result = await runner.run(request)
    assert result.exit_code == 0 and result.stdout == b"done\n"
    pid = int(pidfile.read_text())
    assert not _alive(pid), f"daemonised grandchild {pid} survived the run"
    runner.close()  # removes the pooled (empty) run cgroups; the killed one is gone already
    assert not [
        p
        for p in runner.cgroups.parent.iterdir()
        if p.name.startswith("run-") and p.name.startswith(runner._dir_prefix)
    ]
    report.check("the daemonised grandchild is dead when the run is reported; its cgroup removed")


@pytest.mark.parametrize("cgroups", ["off", "auto"])
async def test_kill_9_worker_leaves_nothing_after_restart(
    tmp_path, amqp_url, unique, cgroups, report
):
    if cgroups == "auto" and not CGROUPS:
        pytest.skip(f"no per-run cgroups here: {CGROUPS_WHY}")
    registry, out = tmp_path / "registry", tmp_path / "out"
    registry.mkdir()
    out.mkdir()
    script = (
        f"#!/bin/sh\nsleep 300 &\necho $! >> {out}/pids\n"
        f"setsid sleep 300 &\necho $! >> {out}/escaped\necho $$ >> {out}/pids\nwait\n"
    )
    write_extension(
        registry, unique, script, hook="orchestrator", patterns=[], spec={"timeout": 120}
    )
    settings = settings_for(amqp_url, registry, f"{unique}-ex", tmp_path)
    report.load(f"worker SIGKILLed mid-run, run_cgroups={cgroups}")
    extra = {"CSEXT_RUN_CGROUPS": cgroups}
    worker = start_worker(settings, tmp_path / "worker.log", **extra)
    try:
        await wait_for(lambda: consumers_at_least(amqp_url, c.rpc_queue(unique), 1), 60, "rpc")
        async with RpcClient(amqp_url) as client:
            call = asyncio.create_task(client.call(unique, "status", {}, timeout=5))
            await wait_for(lambda: len(_lines(out / "pids")) >= 2, 30, "run started")
            payloads = list(settings.run_dir.glob("run-*/payload.json"))
            assert payloads and all(p.stat().st_mode & 0o777 == 0o600 for p in payloads)
            worker.kill()
            worker.wait(10)
            pids = [int(p) for p in _lines(out / "pids")]
            escaped = [int(p) for p in _lines(out / "escaped")]
            assert all(_alive(p) for p in pids), "the runs outlive a SIGKILLed worker"
            with contextlib.suppress(Exception):
                await call
        worker = start_worker(settings, tmp_path / "worker.log", **extra)
        await wait_for(lambda: consumers_at_least(amqp_url, c.rpc_queue(unique), 1), 60, "back")
        await wait_for(lambda: not any(_alive(p) for p in pids), 10, "stale runs killed")
        assert not any(p.exists() for p in payloads), "stale payload files removed"
        checked = "the process group"
        if cgroups == "auto":
            await wait_for(lambda: not any(_alive(p) for p in escaped), 10, "escaped killed")
            checked = "everything, setsid'd ones too (cgroup)"
        else:
            kill_all(escaped)
        report.check(
            f"the restarted worker killed {checked} the dead worker's run left, "
            "and removed its 0600 payload file"
        )
    finally:
        stop(worker)
        kill_all(processes_with_env(f"CSEXT_EXTENSION={unique}"))
        await delete_queues(amqp_url, unique)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"
