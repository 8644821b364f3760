"""Which workers consume which extension, as the broker sees it.

Every worker process consumes `csext.rpc.unrouted` (to answer calls to unknown extensions at
once), so its consumer count is the number of worker processes attached to this broker; an
extension's own queues say how many of them consume it and how much work waits. Plain AMQP
(passive declares) is enough: no management plugin needed. Naming the workers themselves would
need the management API, which a locked-down broker may not offer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection

from csext.schemas.errors import CsextError
from csext.store.query import Summary
from csext.worker.amqp import names as c
from csext.worker.amqp.broker import connect


@dataclass(frozen=True, slots=True)
class QueueState:
    queue: str
    exists: bool
    consumers: int = 0
    messages: int = 0


@dataclass(frozen=True, slots=True)
class ExtensionConsumers:
    name: str
    status: str
    hook: str
    queue: QueueState
    ran_on: list[str] = field(default_factory=list)
    """Workers (host:pid) that ran it in the last hour, from the run log."""

    @property
    def consumed(self) -> bool:
        return self.queue.consumers > 0


@dataclass(slots=True)
class WorkerStatus:
    broker: str
    """up, or why it cannot be reached."""
    workers: int = 0
    """Worker processes attached (consumers of csext.rpc.unrouted)."""
    dead_letters: int = 0
    extensions: list[ExtensionConsumers] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.broker == "up" and self.workers > 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["running"] = self.running
        for item, ext in zip(data["extensions"], self.extensions, strict=True):
            item["consumed"] = ext.consumed
        return data


async def _queue(connection: AbstractConnection, name: str) -> QueueState:
    """A passive declare (it closes its channel when the queue does not exist)."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelClosed:
        return QueueState(name, False)
    result = queue.declaration_result
    state = QueueState(name, True, result.consumer_count or 0, result.message_count or 0)
    await channel.close()
    return state


def _queue_of(row: Summary) -> str:
    return c.events_queue(row.name) if row.hook == "event" else c.rpc_queue(row.name)


async def status(amqp_url: str, rows: list[Summary]) -> WorkerStatus:
    """The broker's view of the workers and of each extension's queue."""
    try:
        connection = await connect(amqp_url, timeout=3.0)
    except CsextError as exc:
        return WorkerStatus(broker=str(exc))
    async with connection:
        unrouted = await _queue(connection, c.RPC_UNROUTED_QUEUE)
        dead = await _queue(connection, c.DEAD_LETTER_QUEUE)
        found = WorkerStatus("up", unrouted.consumers, dead.messages)
        for row in rows:
            state = await _queue(connection, _queue_of(row))
            found.extensions.append(ExtensionConsumers(row.name, row.status, row.hook, state))
    return found
