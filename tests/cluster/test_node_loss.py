"""Scenario: the node leading an extension's queue dies mid-run in a 3-node cluster.

A CloudStack-style publisher (persistent text/plain, publisher confirms, retrying what the
broker did not confirm) sends events to the cluster; three worker processes are each connected
to a different node (every worker lists all nodes, its own first); an RPC caller keeps calling.
Mid-run, RabbitMQ on the node that leads the events queue is stopped (`stop_app`: its
connections drop, its replicas go away). Checked: no confirmed event is lost, duplicates are
counted and bounded by what the workers held unacknowledged, every RPC call ends with a reply
or a clear error within its deadline, the workers reconnect to the surviving nodes without a
restart, and the queues keep 3 replicas' worth of quorum (a new leader is elected).

CI size: 200 events; `make faults` (CSEXT_FAULTS_FULL=1): 2,000, and the figures go into
docs/reliability.md between the cluster markers.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import orjson
import pytest
from workerkit import (
    consumers_at_least,
    delete_extension_queues,
    keep_calling,
    settings_for,
    start_worker_process,
    stop_process,
    wait_until,
    write_extension,
)

from csext.worker.amqp import names as c
from csext.worker.amqp import topology
from csext.worker.runtimes.environment import event_key

from .conftest import Cluster

FULL = os.environ.get("CSEXT_FAULTS_FULL") == "1"
EVENTS = 2000 if FULL else 200
RATE = 200.0 if FULL else 50.0
"""Events published per second: slow enough that the node dies in the middle of the stream."""
CONCURRENCY = 4
CALL_TIMEOUT = 4.0
SLACK = 2.0
DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN, END = "<!-- cluster:results:begin -->", "<!-- cluster:results:end -->"

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(900 if FULL else 240)]

EVENT = """#!/bin/sh
sleep 0.01
echo "$CSEXT_EVENT_KEY" >> {out}/done
"""
ECHO = """#!/bin/sh
echo '{{"status":"success"}}'
"""


@dataclass
class Publisher:
    """Publishes with confirms and retries anything unconfirmed, as a careful producer does."""

    url: str
    exchange: str
    confirmed: set[str] = field(default_factory=set)
    retried: int = 0

    async def run(self, keyed: list[tuple[str, bytes]], started: asyncio.Event) -> None:
        connection = await aio_pika.connect(self.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await topology.declare_cloudstack_exchange(channel, self.exchange)
            step = 10
            for index in range(0, len(keyed), step):
                batch = keyed[index : index + step]
                await asyncio.gather(*(self._publish(exchange, key, body) for key, body in batch))
                if index >= len(keyed) // 3:
                    started.set()
                await asyncio.sleep(step / RATE)

    async def _publish(
        self, exchange: aio_pika.abc.AbstractExchange, key: str, body: bytes
    ) -> None:
        for attempt in range(60):
            message = aio_pika.Message(
                body, content_type="text/plain", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            )
            try:
                await exchange.publish(message, key, mandatory=False, timeout=10)
            except Exception:  # nacked (reject-publish during the election) or timed out
                self.retried += 1
                await asyncio.sleep(min(0.1 * (attempt + 1), 1.0))
                continue
            self.confirmed.add(event_key(key, body))
            return
        raise AssertionError(f"{key} was never confirmed")


async def test_queue_leader_node_lost_mid_run(tmp_path: Path, cluster: Cluster, unique: str):
    registry, out = tmp_path / "registry", tmp_path / "out"
    out.mkdir()
    pattern = f"management-server.ActionEvent.VM-START.{unique}.*"
    spec = {"concurrency": CONCURRENCY}
    write_extension(registry, unique, EVENT.format(out=out), patterns=[pattern], spec=spec)
    rpc_name = f"{unique}-rpc"
    write_extension(registry, rpc_name, ECHO, hook="orchestrator", patterns=[])
    exchange = f"{unique}-ex"
    workers, logs = [], []
    for index in range(3):
        settings = settings_for(
            cluster.urls_from(index), registry, exchange, tmp_path / f"w{index}"
        )
        (tmp_path / f"w{index}").mkdir()
        logs.append(tmp_path / f"w{index}" / "worker.log")
        workers.append(start_worker_process(settings, log=logs[-1]))
    queue = c.events_queue(unique)
    stopped: int | None = None
    caller = None
    try:
        probe = cluster.urls[0]
        for name in (queue, c.rpc_queue(rpc_name)):
            await wait_until(lambda n=name: consumers_at_least(probe, n, 3), 90, f"3 on {name}")
        info = cluster.queue_info(queue)
        leader = cluster.node_index(str(info["leader"]))
        members = list(info["members"])  # type: ignore[call-overload]
        assert len(members) == 3, members
        rpc_members = list(cluster.queue_info(c.rpc_queue(rpc_name))["members"])  # type: ignore[call-overload]
        assert len(rpc_members) == 3, rpc_members
        survivor = cluster.urls[(leader + 1) % 3]
        keyed = [
            (f"management-server.ActionEvent.VM-START.{unique}.vm-{i}", orjson.dumps({"id": i}))
            for i in range(EVENTS)
        ]
        publisher = Publisher(survivor, exchange)
        third = asyncio.Event()
        publishing = asyncio.create_task(publisher.run(keyed, third))
        calls: list[tuple[float, str]] = []
        stopping = asyncio.Event()
        # the caller prefers the doomed node: its calls in flight see the node go
        caller = asyncio.create_task(
            keep_calling(cluster.urls_from(leader), rpc_name, calls, stopping, CALL_TIMEOUT)
        )
        await asyncio.wait_for(third.wait(), 120)
        done_before = len(_lines(out / "done"))
        await asyncio.to_thread(cluster.stop_app, leader)
        stopped, lost_at = leader, time.monotonic()
        await asyncio.wait_for(publishing, 300)
        keys = publisher.confirmed
        assert len(keys) == EVENTS
        await wait_until(lambda: set(_lines(out / "done")) >= keys, 180, "every confirmed event")
        drained = time.monotonic() - lost_at
        for name in (queue, c.rpc_queue(rpc_name)):
            await wait_until(
                lambda n=name: consumers_at_least(survivor, n, 3), 90, f"3 consumers on {name}"
            )
        assert all(w.poll() is None for w in workers), "a worker process exited"
        moved = logs[leader].read_text()
        assert "reconnecting to RabbitMQ at" in moved, moved[-3000:]
        new_leader = cluster.queue_info(queue, ask=(leader + 1) % 3)["leader"]
        assert new_leader != cluster.nodes[leader]
        back = len(calls)
        await wait_until(lambda: any(w == "reply" for _, w in calls[back:]), 60, "RPC replies")
        stopping.set()
        await caller
        lines = _lines(out / "done")
        duplicates = len(lines) - len(set(lines))
        bound = 3 * 2 * CONCURRENCY
        assert duplicates <= bound, duplicates
        late = [(s, what) for s, what in calls if s > CALL_TIMEOUT + SLACK]
        assert not late, late
        outcomes = {what for _, what in calls}
        assert outcomes <= {"reply", "BrokerUnavailable", "CallTimeout"}, outcomes
        _record(
            events=EVENTS,
            done_before=done_before,
            retried=publisher.retried,
            duplicates=duplicates,
            bound=bound,
            calls=calls,
            drained=drained,
            leader=cluster.nodes[leader],
            new_leader=str(new_leader),
        )
    finally:
        if caller is not None and not caller.done():
            caller.cancel()
        if stopped is not None:
            await asyncio.to_thread(cluster.start_app, stopped)
        for worker in workers:
            stop_process(worker)
        survivor_url = cluster.urls[(stopped + 1) % 3] if stopped is not None else cluster.urls[0]
        await delete_extension_queues(survivor_url, unique, rpc_name)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _record(**figures: object) -> None:
    """Print the figures; in full runs also write them into docs/reliability.md."""
    calls: list[tuple[float, str]] = figures.pop("calls")  # type: ignore[assignment]
    counts: dict[str, int] = {}
    for _, outcome in calls:
        counts[outcome] = counts.get(outcome, 0) + 1
    slowest = max((s for s, _ in calls), default=0.0)
    text = (
        f"| events published with confirms | {figures['events']} "
        f"({figures['retried']} publishes retried after a nack or timeout) |\n"
        f"| events done before the node stopped | {figures['done_before']} |\n"
        f"| confirmed events lost | 0 |\n"
        f"| duplicates (runs of an event already run) | {figures['duplicates']} "
        f"(bound checked: {figures['bound']}) |\n"
        f"| from the stop to the last event done (publishing went on meanwhile) | "
        f"{figures['drained']:.1f} s |\n"
        f"| RPC calls ({CALL_TIMEOUT:g} s deadline) | "
        + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        + f"; slowest {slowest:.1f} s |\n"
        f"| queue leader | {figures['leader']} stopped, {figures['new_leader']} took over |\n"
        f"| workers | 3 processes, all reconnected without a restart |\n"
    )
    print("\n" + text)
    if not FULL or not DOC.exists():
        return
    doc = DOC.read_text()
    if BEGIN not in doc or END not in doc:
        return
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    body = f"\nLast full run: {stamp} (`make faults`).\n\n| figure | value |\n|---|---|\n{text}"
    DOC.write_text(head + BEGIN + body + END + tail)
