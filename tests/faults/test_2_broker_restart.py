"""Scenario 2: the broker restarts (`rabbitmqctl stop_app` / `start_app`) under load.

The broker restarted is a node of this test's own (tests/private_broker.py), never the shared
one every other test (and other sessions on this machine) uses; `start_app` always runs (in a
`finally`). The worker process must reconnect by itself and consume again; no event the
publisher had confirmed may be lost; RPC callers get a reply or a clear error, never a hang
past their deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from private_broker import PrivateBroker, available, private_broker
from workerkit import keep_calling, settings_for, write_extension

from csext.worker.amqp import names as c
from csext.worker.runtimes.environment import event_key

from ._kit import consumers_at_least, delete_queues, publish_many, start_worker, stop, wait_for
from .conftest import FULL, size

SCENARIO = "2 broker restarted"
pytestmark = [pytest.mark.broker, pytest.mark.timeout(600 if FULL else 150)]

OUTAGE = 3.0
CALL_TIMEOUT = 4.0
SLACK = 2.0

EVENT = """#!/bin/sh
sleep 0.01
echo "$CSEXT_EVENT_KEY" >> {out}/done
"""
ECHO = """#!/bin/sh
echo '{{"status":"success"}}'
"""


@pytest.fixture(scope="module")
def node() -> Iterator[PrivateBroker]:
    ready, why = available()
    if not ready:
        pytest.skip(why)
    with private_broker() as broker:
        yield broker


def lines(path: Path) -> set[str]:
    return set(path.read_text().split()) if path.exists() else set()


async def test_broker_restart_under_load(tmp_path, node, unique, report):
    amqp_url = node.url
    events = size(200, 2000)
    registry, out = tmp_path / "registry", tmp_path / "out"
    registry.mkdir()
    out.mkdir()
    pattern = f"management-server.ActionEvent.VM-START.{unique}.*"
    write_extension(
        registry, unique, EVENT.format(out=out), patterns=[pattern], spec={"concurrency": 4}
    )
    rpc_name = f"{unique}-rpc"
    write_extension(registry, rpc_name, ECHO, hook="orchestrator", patterns=[])
    settings = settings_for(amqp_url, registry, f"{unique}-ex", tmp_path)
    keyed = [
        (f"management-server.ActionEvent.VM-START.{unique}.vm-{i}", orjson.dumps({"id": i}))
        for i in range(events)
    ]
    keys = {event_key(key, body) for key, body in keyed}
    report.load(
        f"{events} events (half before, half after the restart), RPC calls "
        f"every 0.2 s, {OUTAGE:g} s outage"
    )
    worker = start_worker(settings, tmp_path / "worker.log")
    calls: list[tuple[float, str]] = []
    caller = None
    try:
        queues = (c.events_queue(unique), c.rpc_queue(rpc_name))
        for queue in queues:
            await wait_for(lambda q=queue: consumers_at_least(amqp_url, q, 1), 60, "consumers")
        half = events // 2
        assert await publish_many(amqp_url, settings.cloudstack_exchange, keyed[:half]) == half
        await wait_for(lambda: len(lines(out / "done")) >= half // 4, 60, "some events done")
        stopping = asyncio.Event()
        caller = asyncio.create_task(
            keep_calling(amqp_url, rpc_name, calls, stopping, CALL_TIMEOUT)
        )
        try:
            await asyncio.to_thread(node.stop_app)
            await asyncio.sleep(OUTAGE)
        finally:
            await asyncio.to_thread(node.start_app)
        restarted = time.monotonic()
        for queue in queues:
            await wait_for(
                lambda q=queue: consumers_at_least(amqp_url, q, 1), 90, f"consumers back on {queue}"
            )
        report.check("the worker reconnected by itself: consumers back on its event and RPC queues")
        assert worker.poll() is None
        rest = keyed[half:]
        assert await publish_many(amqp_url, settings.cloudstack_exchange, rest) == len(rest)
        await wait_for(lambda: lines(out / "done") >= keys, 120, "every confirmed event done")
        report.check(f"0 of {events} confirmed events lost")
        back = len(calls)
        await wait_for(
            lambda: any(what == "reply" for _, what in calls[back:]), 90, "RPC replies again"
        )
        recovered = time.monotonic() - restarted
        stopping.set()
        await caller
        late = [(s, what) for s, what in calls if s > CALL_TIMEOUT + SLACK]
        assert not late, late
        outcomes = sorted({what for _, what in calls})
        assert set(outcomes) <= {"reply", "BrokerUnavailable", "CallTimeout"}, "\n".join(outcomes)
        report.check(
            f"{len(calls)} RPC calls: each got a reply or a clear error within its "
            f"{CALL_TIMEOUT:g} s deadline (seen: {', '.join(outcomes)}); replies again "
            f"{recovered:.0f} s after start_app"
        )
    finally:
        if caller is not None and not caller.done():
            caller.cancel()
        stop(worker)
        await delete_queues(amqp_url, unique, rpc_name)
