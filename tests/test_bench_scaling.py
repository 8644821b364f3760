"""Benchmark 9's CPU budgets and benchmark 2's pipe floor, on the real kernel and broker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import core, scaling


def test_a_budget_limits_a_busy_process() -> None:
    """A shell spinning inside a 0.25-core budget is throttled, and lives in that cgroup."""
    try:
        budgets = scaling.CpuBudgets("t" + str(time.monotonic_ns())[-6:])
    except RuntimeError as exc:
        pytest.skip(str(exc))
    procs = budgets.make(0)
    spin = subprocess.Popen(
        [
            "/bin/sh",
            "-c",
            'echo $$ > "$0" && exec timeout 1 sh -c "while :; do :; done"',
            str(procs),
        ]
    )
    try:
        spin.wait(10)
        assert budgets.throttled() > 0.2  # ~0.75 s of each second
    finally:
        budgets.remove()
    assert not budgets.groups


@pytest.mark.broker
async def test_pipe_floor_answers_through_warm_coprocesses(tmp_path: Path, amqp_url: str) -> None:
    """`python -m bench.floors pipe` drains a queue through warm coprocesses of the sdk."""
    ctx = core.Ctx(amqp_url=amqp_url, smoke=True, tmp=tmp_path)
    script = tmp_path / "run"
    script.write_text(core.coprocess_script())
    script.chmod(0o755)
    queue = ctx.name("pipe")
    connection = await core.connect(ctx)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
    await core.preload(ctx, "", queue, core.event_body(0), 50)
    floor = core.spawn(core.floor_argv(ctx, "pipe", queue, 16, script), tmp_path / "floor.log")
    try:
        connection = await core.connect(ctx)
        async with connection:
            channel = await connection.channel()
            give_up = time.monotonic() + 60
            while await core.ready_count(channel, queue):
                assert time.monotonic() < give_up, (tmp_path / "floor.log").read_text()
                assert floor.poll() is None, (tmp_path / "floor.log").read_text()
                await asyncio.sleep(0.05)
            await asyncio.sleep(1)  # the last deliveries are answered and acked
            core.stop(floor)  # whatever was not acked goes back to the queue now
            await asyncio.sleep(0.5)
            assert await core.ready_count(channel, queue) == 0
    finally:
        core.stop(floor)
        await core.delete_queues(ctx, queue)
