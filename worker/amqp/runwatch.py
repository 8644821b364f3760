"""Follow the run history live: every record that reaches the `csext.runs.log` stream, as it
arrives, starting a given number of seconds back (what `csext top` feeds on).

The stream is fed by every worker of the fleet, so one reader sees them all, whichever host
they run on, without knowing where they are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from csext.schemas.errors import CsextError
from csext.worker.amqp import names as c
from csext.worker.amqp.broker import connect

OnRecords = Callable[[list[dict[str, Any]]], None]


def records_of(body: bytes) -> list[dict[str, Any]]:
    """The records in one stream message (a JSON array of them; one object is read too)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    items = doc if isinstance(doc, list) else [doc]
    return [item for item in items if isinstance(item, dict)]


async def follow_runs(
    amqp_url: str, since: float, on_records: OnRecords, stop: asyncio.Event
) -> None:
    """Call `on_records` with every batch of records from `since` seconds ago on, until `stop`
    is set. CsextError when the broker or the stream is not there."""
    connection = await connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        try:
            queue = await channel.get_queue(c.RUNS_LOG_QUEUE, ensure=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            raise CsextError(
                f"no run history yet: {c.RUNS_LOG_QUEUE} does not exist (start a worker once)"
            ) from None

        async def on_message(message: AbstractIncomingMessage) -> None:
            await message.ack()
            on_records(records_of(message.body))

        offset = datetime.fromtimestamp(time.time() - since, tz=UTC)
        tag = await queue.consume(on_message, arguments={"x-stream-offset": offset})
        closed = asyncio.ensure_future(_closed(channel))
        waiting = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({closed, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            closed.cancel()
        if not stop.is_set():
            raise CsextError("lost the connection to RabbitMQ while following the run history")
        await queue.cancel(tag)


async def _closed(channel: aio_pika.abc.AbstractChannel) -> None:
    while not channel.is_closed:
        await asyncio.sleep(0.5)
