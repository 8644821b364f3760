"""A call for an extension no worker serves fails at once (after a short grace), never at the
caller's timeout: `csext forward`, `csext call` and `csext ipmitool`, as a user runs them.

The extension's RPC queue outlives its workers, so a published call would sit there until
CloudStack's own timeout (by default the global `wait`, 1800 s, for VM actions). The callers
ask the broker first (a passive Queue.Declare returns the consumer count) and give a worker
only `worker_grace` seconds to appear.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from workerkit import (
    delete_extension_queues,
    queue_messages,
    running_worker,
    settings_for,
    wait_until,
    write_extension,
)

from csext.bridges import forward
from csext.worker.amqp import names as c

pytestmark = pytest.mark.broker

CSEXT = [sys.executable, "-m", "csext.cli"]
SCRIPT = '#!/bin/sh\necho "served $1"\n'
OOB_SCRIPT = '#!/bin/sh\necho \'{"power_state": "On"}\'\n'


def clean_env(amqp_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    env["CSEXT_AMQP_URL"] = amqp_url
    env.update(extra)
    return env


async def run(args: list[str], env: dict[str, str], bound: float = 60) -> tuple[int, str, str]:
    """The command in a thread (an in-process worker started meanwhile reaps children, which
    asyncio's own child watcher would then never see exit)."""

    def blocking() -> subprocess.CompletedProcess[bytes]:
        # A bound against hangs, far below the 600 s timeouts passed: not a timing assertion.
        return subprocess.run(
            args, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=bound
        )

    done = await asyncio.to_thread(blocking)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.fixture
def payload_file(tmp_path: Path) -> Path:
    path = tmp_path / "payload.json"
    path.write_text(json.dumps({"virtualmachinename": "i-2-4-VM"}))
    return path


async def test_queue_without_consumer_fails_after_the_grace(
    amqp_url: str, unique: str, tmp_path: Path, payload_file: Path
) -> None:
    registry = tmp_path / "registry"
    write_extension(registry, unique, SCRIPT, hook="orchestrator", patterns=[])
    oob = f"{unique}-bmc"
    write_extension(registry, oob, OOB_SCRIPT, hook="oob-management", patterns=[])
    try:
        async with running_worker(settings_for(amqp_url, registry, f"ex-{unique}", tmp_path)):
            pass  # declares the queues; once it stops nothing consumes them
        env = clean_env(amqp_url, CSEXT_WORKER_GRACE="0.5")

        code, out, _ = await run(
            [*CSEXT, "forward", "-e", unique, "status", str(payload_file), "600"], env
        )
        assert code == 1
        [line] = out.splitlines()
        answer = json.loads(line)
        assert answer["status"] == "error"
        assert f"no csext worker serves extension {unique!r}" in answer["error"]
        assert c.rpc_queue(unique) in answer["error"]

        code, out, err = await run([*CSEXT, "call", unique, "status", "--timeout", "600"], env)
        assert code == 69 and out == ""
        assert f"no csext worker serves extension {unique!r}" in err

        config = tmp_path / "csext.yaml"
        config.write_text(f"amqp_url: {amqp_url}\nipmitool_extension: {oob}\nworker_grace: 0.5\n")
        ipmi_env = clean_env(amqp_url, CSEXT_CONFIG=str(config))
        del ipmi_env["CSEXT_AMQP_URL"]  # from the config file, with worker_grace
        argv = ["-I", "lanplus", "-R", "1", "-v", "-H", "10.0.0.9", "chassis", "power", "status"]
        code, out, err = await run([*CSEXT, "ipmitool", *argv], ipmi_env)
        assert code == 1 and out == ""
        assert f"no csext worker serves extension {oob!r}" in err
        # The calls expired with the grace: nothing is left to run after the callers gave up.
        await wait_until(
            lambda: _empty(amqp_url, c.rpc_queue(unique)), what="the expired calls gone"
        )
    finally:
        await delete_extension_queues(amqp_url, unique, oob)


async def _empty(amqp_url: str, queue: str) -> bool:
    return await queue_messages(amqp_url, queue) == 0


async def test_unknown_extension_without_any_worker_fails_after_the_grace(
    amqp_url: str, unique: str, tmp_path: Path, payload_file: Path
) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    async with running_worker(settings_for(amqp_url, registry, f"ex-{unique}", tmp_path)):
        pass  # the RPC topology exists; no worker runs any more
    env = clean_env(amqp_url, CSEXT_WORKER_GRACE="0.5")
    code, out, _ = await run(
        [*CSEXT, "forward", "-e", f"{unique}-nope", "start", str(payload_file), "600"], env
    )
    assert code == 1
    error = json.loads(out)["error"]
    assert f"no csext worker answered for extension '{unique}-nope'" in error
    assert "has no queue" in error


async def test_a_worker_that_appears_within_the_grace_serves_the_call(
    amqp_url: str, unique: str, tmp_path: Path, payload_file: Path
) -> None:
    registry = tmp_path / "registry"
    write_extension(registry, unique, SCRIPT, hook="orchestrator", patterns=[])
    settings = settings_for(amqp_url, registry, f"ex-{unique}", tmp_path)
    try:
        async with running_worker(settings):
            pass
        env = clean_env(amqp_url, CSEXT_WORKER_GRACE="60")
        call = asyncio.create_task(
            run([*CSEXT, "forward", "-e", unique, "start", str(payload_file), "600"], env)
        )
        await wait_until(
            lambda: _waiting(amqp_url, c.rpc_queue(unique)), what="the call in the queue"
        )
        async with running_worker(settings):
            code, out, _ = await call
        assert (code, out) == (0, "served start\n")
    finally:
        await delete_extension_queues(amqp_url, unique)


async def _waiting(amqp_url: str, queue: str) -> bool:
    return await queue_messages(amqp_url, queue) >= 1


def test_missing_default_config_is_not_an_error(tmp_path: Path) -> None:
    default = forward.DEFAULT_CONFIG_FILE
    if os.path.exists(default):
        pytest.skip(f"{default} exists on this machine")
    # What every generated shim sets: the default path, which need not exist.
    assert forward.config_path({"CSEXT_CONFIG": default}) is None
    assert forward.amqp_url({"CSEXT_CONFIG": default}) == forward.DEFAULT_AMQP_URL
    assert forward.worker_grace({}) == forward.DEFAULT_WORKER_GRACE
    with pytest.raises(forward.ForwardError, match="does not exist"):
        forward.config_path({"CSEXT_CONFIG": str(tmp_path / "named.yaml")})
    with pytest.raises(forward.ForwardError, match="worker_grace"):
        forward.worker_grace({"CSEXT_WORKER_GRACE": "soon"})


async def test_generated_shim_works_without_a_config_file(
    amqp_url: str, unique: str, tmp_path: Path, payload_file: Path
) -> None:
    if os.path.exists(forward.DEFAULT_CONFIG_FILE):
        pytest.skip(f"{forward.DEFAULT_CONFIG_FILE} exists on this machine")
    shim_dir = tmp_path / "cs"
    shim_dir.mkdir()
    code, _, err = await run(
        [*CSEXT, "shim", unique, "--output", str(shim_dir)], clean_env(amqp_url)
    )
    assert code == 0, err
    shim = shim_dir / unique / f"{unique}.sh"
    assert "CSEXT_CONFIG=/etc/csext/csext.yaml" in shim.read_text()
    registry = tmp_path / "registry"
    write_extension(registry, unique, SCRIPT, hook="orchestrator", patterns=[])
    try:
        async with running_worker(settings_for(amqp_url, registry, f"ex-{unique}", tmp_path)):
            # The broker URL comes from the environment here (the test's own vhost); the
            # default config file does not exist, and that is no error.
            code, out, _ = await run(
                [str(shim), "status", str(payload_file), "60"], clean_env(amqp_url)
            )
        assert (code, out) == (0, "served status\n")
    finally:
        await delete_extension_queues(amqp_url, unique)
