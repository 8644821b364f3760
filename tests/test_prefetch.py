"""Prefetch end to end: how many deliveries a worker holds, and a live change reaching it.

Observed from the broker's side: a delivery the worker holds (running or waiting for a run
slot) is no longer counted as ready in the queue.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from workerkit import (
    delete_extension_queues,
    publish_event,
    queue_messages,
    running_worker,
    settings_for,
    wait_until,
    write_extension,
)

from csext.schemas.event import build_routing_key
from csext.worker.amqp.names import events_queue

pytestmark = pytest.mark.broker

KEY = build_routing_key("ActionEvent", "VM.START", "VirtualMachine", "vm-7")
GATED = """#!/bin/sh
echo x >> {out}/started
while [ ! -e {out}/gate ]; do sleep 0.05; done
"""


def started(out: Path) -> int:
    path = out / "started"
    return len(path.read_text().splitlines()) if path.exists() else 0


async def publish(amqp_url: str, exchange: str, count: int) -> None:
    for _ in range(count):
        await publish_event(amqp_url, exchange, KEY, b'{"event":"VM.START"}')


@pytest.fixture
def gated(tmp_path: Path, unique: str):
    registry, out = tmp_path / "registry", tmp_path / "out"
    out.mkdir()

    def write(**spec: object) -> None:
        write_extension(
            registry,
            unique,
            GATED.format(out=out),
            patterns=["management-server.ActionEvent.#"],
            spec={"timeout": 60, **spec},
        )

    return registry, out, write


async def test_prefetch_holds_deliveries_beyond_the_running_ones(gated, unique, amqp_url, tmp_path):
    registry, out, write = gated
    write(concurrency=1, prefetch=3)
    settings = settings_for(amqp_url, registry, f"{unique}-pf", tmp_path)
    queue = events_queue(unique)
    try:
        async with running_worker(settings):
            await publish(amqp_url, settings.cloudstack_exchange, 5)
            await wait_until(lambda: started(out) == 1, what="the first run")
            await wait_until(
                lambda: _ready_is(amqp_url, queue, 2), what="3 held, 2 ready", timeout=10
            )
            assert started(out) == 1, "spec.concurrency still bounds the runs"
            await _open_gate_and_drain(out, amqp_url, queue, 5)
    finally:
        (out / "gate").touch()
        await delete_extension_queues(amqp_url, unique)


async def test_a_live_concurrency_change_reaches_the_prefetch(gated, unique, amqp_url, tmp_path):
    """RabbitMQ applies basic.qos only to consumers started after it: without consuming
    again, raising spec.concurrency live would leave the old prefetch (1) in force."""
    registry, out, write = gated
    write(concurrency=1)
    settings = settings_for(amqp_url, registry, f"{unique}-pf-live", tmp_path)
    queue = events_queue(unique)
    try:
        async with running_worker(settings) as worker:
            await publish(amqp_url, settings.cloudstack_exchange, 6)
            await wait_until(lambda: started(out) == 1, what="the first run")
            await wait_until(lambda: _ready_is(amqp_url, queue, 5), what="1 held, 5 ready")

            write(concurrency=3)
            await worker.reconcile()
            # The run already started keeps the old limit; the new consumer takes 3 more.
            await wait_until(lambda: started(out) == 4, what="3 more runs", timeout=10)
            await wait_until(lambda: _ready_is(amqp_url, queue, 2), what="4 held, 2 ready")
            await _open_gate_and_drain(out, amqp_url, queue, 6)
    finally:
        (out / "gate").touch()
        await delete_extension_queues(amqp_url, unique)


async def _ready_is(amqp_url: str, queue: str, count: int) -> bool:
    return await queue_messages(amqp_url, queue) == count


async def _open_gate_and_drain(out: Path, amqp_url: str, queue: str, events: int) -> None:
    (out / "gate").touch()
    await wait_until(lambda: started(out) == events, what="every event ran")
    await wait_until(lambda: _ready_is(amqp_url, queue, 0), what="all settled")
