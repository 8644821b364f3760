"""Scenario 11: a RabbitMQ memory alarm under load (`set_vm_memory_high_watermark`).

On a throwaway node (never the shared broker: an alarm blocks every publisher on the node),
a worker works through a backlog of events when the alarm goes off. RabbitMQ then blocks every
connection that publishes. The worker must keep running events and acking them (it publishes
on a connection of its own, and holds its run records while that one is blocked); `csext
forward` must fail at once with a message that says the broker blocks publishers; a publisher
that keeps publishing through the alarm is held by the broker. When the alarm clears: every
event confirmed to the publisher ran (0 lost) and every run record arrives (0 lost).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import orjson
import pytest
from private_broker import PrivateBroker, available, private_broker
from workerkit import settings_for, write_extension

from csext.worker.amqp import names as c
from csext.worker.amqp import topology
from csext.worker.runtimes.environment import event_key

from ._kit import consumers_at_least, publish_many, start_worker, stop, wait_for
from .conftest import FULL, size

SCENARIO = "11 memory alarm"
pytestmark = [pytest.mark.broker, pytest.mark.timeout(900 if FULL else 300)]

EVENT = """#!/bin/sh
sleep 0.05
echo "$CSEXT_EVENT_KEY" >> {out}/done
"""
ECHO = """#!/bin/sh
echo '{"status":"success","message":"up"}'
"""


@pytest.fixture(scope="module")
def node() -> Iterator[PrivateBroker]:
    """A node of this test's own (tests/private_broker.py): the alarm blocks every publisher
    on its node, so never the shared broker."""
    ready, why = available()
    if not ready:
        pytest.skip(why)
    with private_broker() as broker:
        yield broker


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


FORWARD = (sys.executable, "-m", "csext.cli", "forward")


def forward(url: str, extension: str, payload: Path, timeout: float) -> tuple[int, str, float]:
    """`csext forward` as CloudStack runs it; (exit status, stdout, seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSEXT_")}
    env["CSEXT_AMQP_URL"] = url
    started = time.monotonic()
    done = subprocess.run(
        [*FORWARD, "--extension", extension, "status", str(payload), f"{timeout:g}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout + 30,
    )
    return done.returncode, done.stdout, time.monotonic() - started


class RecordTap:
    """Every run record the workers publish for `extension`, on a consume-only connection
    (RabbitMQ never blocks a connection that does not publish)."""

    def __init__(self, url: str, extension: str) -> None:
        self._url = url
        self._extension = extension
        self.records: list[dict[str, object]] = []

    async def __aenter__(self) -> RecordTap:
        self._connection = await aio_pika.connect(self._url)
        channel = await self._connection.channel()
        exchange = await topology.declare_runs_exchange(channel)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, f"{self._extension}.#")
        await queue.consume(self._take, no_ack=True)
        return self

    async def _take(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.records.extend(orjson.loads(message.body))

    async def __aexit__(self, *exc: object) -> None:
        await self._connection.close()


async def test_memory_alarm_under_load(tmp_path, node, report):
    before, during = size(200, 2000), size(100, 1000)
    unique = f"t{os.getpid()}"
    registry, out = tmp_path / "registry", tmp_path / "out"
    registry.mkdir()
    out.mkdir()
    pattern = f"management-server.ActionEvent.VM-START.{unique}.*"
    write_extension(
        registry, unique, EVENT.format(out=out), patterns=[pattern], spec={"concurrency": 2}
    )
    echo = f"{unique}-echo"
    write_extension(registry, echo, ECHO, hook="orchestrator", patterns=[])
    settings = settings_for(node.url, registry, f"{unique}-ex", tmp_path)
    keyed = [
        (f"management-server.ActionEvent.VM-START.{unique}.vm-{i}", orjson.dumps({"id": i}))
        for i in range(before + during)
    ]
    keys = {event_key(key, body) for key, body in keyed}
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps({"virtual_machine": {"name": "vm-1"}}))
    report.load(
        f"{before} events queued, memory alarm set mid-backlog, {during} more published "
        "during the alarm; `csext forward` during and after"
    )
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log)
    late: asyncio.Task[int] | None = None
    try:
        for queue in (c.events_queue(unique), c.rpc_queue(echo)):
            await wait_for(lambda q=queue: consumers_at_least(node.url, q, 1), 90, "consumers")
        async with RecordTap(node.url, unique) as tap:
            published = await publish_many(node.url, settings.cloudstack_exchange, keyed[:before])
            assert published == before
            await wait_for(lambda: len(lines(out / "done")) >= before // 5, 60, "some done")
            node.ctl("set_vm_memory_high_watermark", "0.0000001")
            await wait_for(lambda: _alarmed(node), 30, "the memory alarm")
            report.check("memory alarm in effect (rabbit_alarm: resource_limit memory)")

            status, text, took = forward(node.url, echo, payload, 20)
            assert status == 1 and "blocking publishers" in text, text
            assert "low on memory" in text and "is a csext worker running" not in text, text
            report.check(
                f"`csext forward` during the alarm: exit 1 after {took:.1f} s of its 20 s, "
                "saying the broker is blocking publishers (low on memory)"
            )

            late = asyncio.create_task(
                publish_many(node.url, settings.cloudstack_exchange, keyed[before:])
            )
            await wait_for(lambda: "blocking this worker's publishing" in log.read_text(), 60, "")
            states = connection_states(node)
            assert states.get("publishing") == "blocked", states
            assert states.get("consuming") in ("blocking", "running"), states
            first = set(keys_of(keyed[:before]))
            await wait_for(lambda: set(lines(out / "done")) >= first, 120, "backlog done")
            await wait_for(lambda: _queue_empty(node, unique), 60, "backlog acked")
            assert _alarmed(node), "the alarm cleared by itself?"
            assert not late.done(), "the broker let a publisher through during the alarm"
            arrived = len(tap.records)
            assert arrived < before, arrived
            report.check(
                f"during the alarm RabbitMQ blocked the worker's publishing connection, not its "
                f"consuming one ({states}): the worker ran and acked all {before} queued events "
                f"(queue empty) while holding run records ({arrived} of {before} arrived); the "
                "test's own publisher was held"
            )

            node.ctl("set_vm_memory_high_watermark", "0.4")
            assert await asyncio.wait_for(late, 120) == during
            await wait_for(lambda: set(lines(out / "done")) >= keys, 120, "every event done")
            await wait_for(
                lambda: {r["event_key"] for r in tap.records} >= keys, 60, "every run record"
            )
            report.check(
                f"alarm cleared: 0 of {before + during} confirmed events lost, every run "
                f"record arrived ({len(tap.records)} records)"
            )
            status, text, _ = forward(node.url, echo, payload, 20)
            assert status == 0 and '"up"' in text, text
            report.check("`csext forward` works again once the alarm cleared")
    finally:
        node.ctl("set_vm_memory_high_watermark", "0.4")
        if late is not None and not late.done():
            late.cancel()
        stop(worker)


def keys_of(keyed: list[tuple[str, bytes]]) -> list[str]:
    return [event_key(key, body) for key, body in keyed]


def connection_states(node: PrivateBroker) -> dict[str, str]:
    """The state RabbitMQ gives the worker's two connections (running, blocking: not blocked
    yet as it did not publish, blocked: not read until the alarm clears)."""
    states = {}
    for line in node.ctl("list_connections", "state", "client_properties").splitlines()[1:]:
        state, _, props = line.partition("\t")
        name = re.search(r'\{"connection_name","([^"]*)"\}', props)
        if name is None or not name.group(1).startswith("csext ") or "forward" in name.group(1):
            continue  # a blocked `csext forward` stays listed until the alarm clears
        states["publishing" if name.group(1).endswith(" publishing") else "consuming"] = state
    return states


def _alarmed(node: PrivateBroker) -> bool:
    return "memory" in node.ctl("eval", "rabbit_alarm:get_alarms().")


def _queue_empty(node: PrivateBroker, extension: str) -> bool:
    """Ready and unacked messages of the events queue are both 0."""
    listed = node.ctl("list_queues", "name", "messages")
    for line in listed.splitlines():
        parts = line.split()
        if parts and parts[0] == c.events_queue(extension):
            return parts[1:] == ["0"]
    return False
