"""Declare csext's part of the broker, idempotently.

Every declaration here must match on every redeclare (type, durability, arguments), or RabbitMQ
closes the channel with PRECONDITION_FAILED; so other code (CLI, tests, clients) declares through
these functions rather than by hand.
"""

from __future__ import annotations

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from pamqp.common import FieldTable

from . import constants as c
from .settings import Settings

RPC_MAX_TTL_MS = 3_600_000
"""Upper bound on how long an RPC call may wait in its queue, whatever its own expiration."""


async def declare_cloudstack_exchange(channel: AbstractChannel, name: str) -> AbstractExchange:
    """Exactly as CloudStack's RabbitMQEventBus declares it: topic, durable, not auto-delete."""
    return await channel.declare_exchange(name, ExchangeType.TOPIC, durable=True)


async def declare_rpc_exchange(channel: AbstractChannel) -> AbstractExchange:
    """csext.rpc routes by extension name; anything unroutable goes to the unrouted queue."""
    await channel.declare_exchange(c.RPC_UNROUTED_EXCHANGE, ExchangeType.FANOUT, durable=True)
    return await channel.declare_exchange(
        c.RPC_EXCHANGE,
        ExchangeType.DIRECT,
        durable=True,
        arguments={"alternate-exchange": c.RPC_UNROUTED_EXCHANGE},
    )


async def declare_runs_exchange(channel: AbstractChannel) -> AbstractExchange:
    return await channel.declare_exchange(c.RUNS_EXCHANGE, ExchangeType.TOPIC, durable=True)


async def declare_runs_log(channel: AbstractChannel, settings: Settings) -> AbstractQueue:
    """A RabbitMQ stream keeping recent run records, bounded by size and age, readable from any
    host (`csext runs`, `csext show`) without a database."""
    queue = await channel.declare_queue(
        c.RUNS_LOG_QUEUE,
        durable=True,
        arguments={
            "x-queue-type": "stream",
            "x-max-length-bytes": settings.runs_log_max_bytes,
            "x-max-age": settings.runs_log_max_age,
        },
    )
    await queue.bind(c.RUNS_EXCHANGE, "#")
    return queue


async def declare_control_exchange(channel: AbstractChannel) -> AbstractExchange:
    return await channel.declare_exchange(c.CONTROL_EXCHANGE, ExchangeType.FANOUT, durable=True)


DEAD_LETTER_BROWSE_LIMIT = 1_000_000
"""csext.dead's delivery limit: browsing returns messages (`csext dead list`), which counts as a
delivery; RabbitMQ 4's default limit (20) would drop dead letters after 20 looks."""


async def declare_dead_letter_queue(channel: AbstractChannel) -> AbstractQueue:
    """csext.dead: quorum (replicated), bound to csext.dlx with `#`."""
    exchange = await channel.declare_exchange(
        c.DEAD_LETTER_EXCHANGE, ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(
        c.DEAD_LETTER_QUEUE,
        durable=True,
        arguments={"x-queue-type": "quorum", "x-delivery-limit": DEAD_LETTER_BROWSE_LIMIT},
    )
    await queue.bind(exchange, "#")
    return queue


async def declare_dead_letters(channel: AbstractChannel) -> AbstractExchange:
    await declare_dead_letter_queue(channel)
    return await channel.get_exchange(c.DEAD_LETTER_EXCHANGE, ensure=False)


async def declare_unrouted_queue(channel: AbstractChannel) -> AbstractQueue:
    queue = await channel.declare_queue(
        c.RPC_UNROUTED_QUEUE, durable=True, arguments={"x-message-ttl": RPC_MAX_TTL_MS}
    )
    await queue.bind(c.RPC_UNROUTED_EXCHANGE, "")
    return queue


async def declare_base(channel: AbstractChannel, settings: Settings) -> None:
    """The exchanges and queues shared by all extensions."""
    if settings.declare_cloudstack_exchange:
        await declare_cloudstack_exchange(channel, settings.cloudstack_exchange)
    await declare_rpc_exchange(channel)
    await declare_runs_exchange(channel)
    await declare_runs_log(channel, settings)
    await declare_control_exchange(channel)
    await declare_dead_letters(channel)
    await declare_unrouted_queue(channel)


def events_queue_arguments(settings: Settings) -> FieldTable:
    """Quorum: replicated, delivery count kept; poison messages dead-lettered at the limit."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.delivery_limit,
        "x-dead-letter-exchange": c.DEAD_LETTER_EXCHANGE,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_events_queue(
    channel: AbstractChannel, extension: str, settings: Settings
) -> AbstractQueue:
    return await channel.declare_queue(
        c.events_queue(extension), durable=True, arguments=events_queue_arguments(settings)
    )


async def declare_rpc_queue(channel: AbstractChannel, extension: str) -> AbstractQueue:
    """Classic and durable: RPC calls carry their own deadline (expiration), and a call that
    keeps killing workers is bounded by it, so the quorum queue's extra write latency buys
    nothing on the call path (see docs/architecture.md)."""
    return await channel.declare_queue(
        c.rpc_queue(extension), durable=True, arguments={"x-message-ttl": RPC_MAX_TTL_MS}
    )
