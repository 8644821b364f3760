"""Run records are batched per routing key and flushed on time, on size and on close."""

from __future__ import annotations

import logging
from typing import Any

import aio_pika
import orjson
import pytest
from workerkit import wait_until

from csext.schemas.run import Outcome, RunResult
from csext.worker.amqp import topology
from csext.worker.amqp.records import RunRecorder, build_record


def _record(extension: str, outcome: Outcome, exit_code: int = 0) -> dict[str, Any]:
    run = RunResult(exit_code=exit_code, stdout=b"", stderr=b"", duration_ms=1)
    return build_record(
        run_id="r",
        extension=extension,
        version="1",
        hook="event",
        action="a",
        kind="event",
        attempt=1,
        outcome=outcome,
        run=run,
        event_key="k",
    )


async def _collect(channel: aio_pika.abc.AbstractChannel, unique: str) -> list[tuple[str, Any]]:
    exchange = await topology.declare_runs_exchange(channel)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, f"{unique}.#")
    seen: list[tuple[str, Any]] = []

    async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        seen.append((message.routing_key or "", orjson.loads(message.body)))

    await queue.consume(keep, no_ack=True)
    return seen


@pytest.mark.asyncio
async def test_batches_per_routing_key_on_time_and_size(amqp_url: str, unique: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        seen = await _collect(channel, unique)
        runs = await channel.get_exchange("csext.runs", ensure=False)
        timed = RunRecorder(runs, flush_interval=0.2, max_batch=100)
        for _ in range(3):
            timed.record(_record(unique, Outcome.SUCCESS))
        timed.record(_record(unique, Outcome.FAILED, 2))
        # Neither full nor closed: the timer sends them.
        await wait_until(lambda: len(seen) == 2, timeout=10)
        by_key = dict(seen)
        assert [r["outcome"] for r in by_key[f"{unique}.success"]] == ["success"] * 3
        assert [r["exit_code"] for r in by_key[f"{unique}.failed"]] == [2]

        seen.clear()
        sized = RunRecorder(runs, flush_interval=3600, max_batch=100)
        for _ in range(250):  # 2 full batches go at once, the rest on close
            sized.record(_record(unique, Outcome.SUCCESS))
        await wait_until(lambda: len(seen) == 2, timeout=10)
        await sized.aclose()
        await wait_until(lambda: len(seen) == 3, timeout=10)
        assert [len(body) for _, body in seen] == [100, 100, 50]


@pytest.mark.asyncio
async def test_failures_are_logged_successes_only_when_asked(
    caplog: pytest.LogCaptureFixture, unique: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="csext.runs")
    quiet, loud = RunRecorder(None), RunRecorder(None, log_successes=True)
    quiet.record(_record(unique, Outcome.SUCCESS))
    quiet.record(_record(unique, Outcome.FAILED, 1))
    quiet.record(_record(unique, Outcome.TIMEOUT))
    loud.record(_record(unique, Outcome.SUCCESS))
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("INFO", f"run {unique} failed"),
        ("WARNING", f"run {unique} timeout"),
        ("INFO", f"run {unique} success"),
    ]
