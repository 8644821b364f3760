"""Short-lived broker clients (CLI commands): one way to connect, one way to read a queue.

`connect` takes one URL or several (comma-separated, the nodes of a cluster) and returns the
first connection that opens, so `csext call`, `csext dead` and `csext runs` keep working while
a node is down. Each node gets an equal share of what is left of the timeout, so one node that
hangs (rather than refusing) cannot use up the time of the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue

from csext.schemas.errors import BrokerUnavailable
from csext.worker.settings import redact_url, split_urls

CONNECT_TIMEOUT = 5.0


async def connect(amqp_url: str, timeout: float = CONNECT_TIMEOUT) -> AbstractConnection:
    """A plain (non-robust) connection to the first URL that answers; BrokerUnavailable names
    every broker tried and why, never a password."""
    urls = split_urls(amqp_url)
    deadline = time.monotonic() + timeout
    failures: list[str] = []
    for index, url in enumerate(urls):
        share = max(0.1, (deadline - time.monotonic()) / (len(urls) - index))
        try:
            return await aio_pika.connect(url, timeout=share)
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
            reason = str(exc) or type(exc).__name__
            failures.append(f"{redact_url(url)}: {reason}")
    raise BrokerUnavailable(f"cannot reach RabbitMQ at {'; '.join(failures)}")


async def consume_until_quiet(
    queue: AbstractQueue,
    on_message: Callable[[AbstractIncomingMessage], Awaitable[bool]],
    *,
    quiet: float = 0.5,
    timeout: float = 30.0,
    arguments: dict[str, Any] | None = None,
) -> None:
    """Feed messages to `on_message` until it returns True (enough), the queue stays quiet for
    `quiet` seconds, or `timeout` passes. For CLI reads of csext.dead and csext.runs.log.

    Time spent inside `on_message` (a replay or purge awaiting publisher confirms on a busy
    broker) is not quiet: the read goes on until it has returned."""
    last = time.monotonic()
    busy = 0
    enough = asyncio.Event()

    async def consume(message: AbstractIncomingMessage) -> None:
        nonlocal last, busy
        last = time.monotonic()
        busy += 1
        try:
            if await on_message(message):
                enough.set()
        finally:
            busy -= 1
            last = time.monotonic()

    tag = await queue.consume(consume, arguments=arguments)
    deadline = time.monotonic() + timeout
    while (
        not enough.is_set()
        and (busy or time.monotonic() - last < quiet)
        and time.monotonic() < deadline
    ):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(enough.wait(), quiet / 5)
    if queue.channel.is_closed:  # the connection dropped: what was read is not the whole
        raise BrokerUnavailable(
            f"lost the connection to RabbitMQ while reading {queue.name}",
            fix="check that RabbitMQ is up (rabbitmqctl status), then run the command again",
        )
    await queue.cancel(tag)
