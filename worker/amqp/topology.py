"""Declare csext's part of the broker, idempotently.

Every declaration here must match on every redeclare (type, durability, arguments), or RabbitMQ
closes the channel with PRECONDITION_FAILED; so other code (CLI, tests, clients) declares through
these functions rather than by hand.
"""

from __future__ import annotations

import logging

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.exceptions import ChannelPreconditionFailed
from pamqp.common import FieldTable

from csext.worker.amqp import names as c
from csext.worker.settings import Settings

log = logging.getLogger(__name__)

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
    arguments: FieldTable = {
        "x-queue-type": "stream",
        "x-max-length-bytes": settings.runs_log_max_bytes,
        "x-max-age": settings.runs_log_max_age,
    }
    queue = await _declare_keeping_arguments(
        channel, c.RUNS_LOG_QUEUE, arguments, "delete it (its run records go with it)"
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


def rpc_queue_arguments(settings: Settings | None) -> FieldTable:
    """Classic on one node; quorum, sized like the events queues, on a cluster.

    On a cluster a durable classic queue lives on one node only: while that node is down the
    queue cannot be declared anywhere, and a worker reconnecting to another node fails to
    restore its channels and keeps reconnecting (every extension stops, not only RPC). A quorum
    queue is served by any majority of its replicas. RabbitMQ >= 3.10 keeps message TTL and
    per-message expiration (the call's deadline) on quorum queues.
    """
    arguments: FieldTable = {"x-message-ttl": RPC_MAX_TTL_MS}
    size = quorum_group_size(settings) if settings is not None else None
    if size is not None:
        arguments.update({"x-queue-type": "quorum", "x-quorum-initial-group-size": size})
    return arguments


async def declare_unrouted_queue(
    channel: AbstractChannel, settings: Settings | None = None
) -> AbstractQueue:
    queue = await _declare_keeping_arguments(
        channel,
        c.RPC_UNROUTED_QUEUE,
        rpc_queue_arguments(settings),
        "delete it (calls waiting in it are answered by the callers' timeouts)",
    )
    await queue.bind(c.RPC_UNROUTED_EXCHANGE, "")
    return queue


async def declare_disabled_queue(
    channel: AbstractChannel, settings: Settings | None = None
) -> AbstractQueue:
    """csext.rpc.disabled: calls to extensions the fleet's registry has disabled (its bindings
    are kept by worker/fleet.py); same arguments as an RPC queue."""
    return await _declare_keeping_arguments(
        channel,
        c.RPC_DISABLED_QUEUE,
        rpc_queue_arguments(settings),
        "delete it (calls waiting in it are answered by the callers' timeouts)",
    )


async def declare_base(channel: AbstractChannel, settings: Settings) -> None:
    """The exchanges and queues shared by all extensions."""
    if settings.declare_cloudstack_exchange:
        await declare_cloudstack_exchange(channel, settings.cloudstack_exchange)
    await declare_rpc_exchange(channel)
    await declare_runs_exchange(channel)
    await declare_runs_log(channel, settings)
    await declare_control_exchange(channel)
    await declare_dead_letters(channel)
    await declare_unrouted_queue(channel, settings)


MAX_QUORUM_SIZE = 5
"""Replicas past 5 add write latency and no useful tolerance (RabbitMQ's own advice)."""


def quorum_group_size(settings: Settings) -> int | None:
    """Replicas for a quorum queue: `quorum_size`, else sized from the cluster's URLs.

    Odd sizes are kept: 4 replicas survive one lost node, as 3 do, for one more write. One URL
    gives None (no argument): RabbitMQ's default, and queues declared before this setting
    existed stay equivalent.
    """
    if settings.quorum_size:
        return settings.quorum_size
    nodes = len(settings.amqp_urls)
    if nodes <= 1:
        return None
    size = min(nodes, MAX_QUORUM_SIZE)
    return size - 1 if size > 2 and size % 2 == 0 else size


def events_queue_arguments(settings: Settings) -> FieldTable:
    """Quorum: replicated, delivery count kept; poison messages dead-lettered at the limit."""
    arguments: FieldTable = {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.delivery_limit,
        "x-dead-letter-exchange": c.DEAD_LETTER_EXCHANGE,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    size = quorum_group_size(settings)
    if size is not None:
        arguments["x-quorum-initial-group-size"] = size
    return arguments


async def declare_events_queue(
    channel: AbstractChannel, extension: str, settings: Settings
) -> AbstractQueue:
    return await _declare_keeping_arguments(
        channel,
        c.events_queue(extension),
        events_queue_arguments(settings),
        "let it drain, delete it",
    )


async def _declare_keeping_arguments(
    channel: AbstractChannel, name: str, arguments: FieldTable, how: str
) -> AbstractQueue:
    """Declare a durable queue, or use it as it is when it was declared with other arguments.

    A queue's arguments cannot change: after an operator changes `delivery_limit` or the runs
    log bounds, the existing queues keep the old values, and declaring them with the new ones
    would close the channel (PRECONDITION_FAILED) and stop the worker from starting. So the
    declaration is tried first on a throwaway channel; on a mismatch the queue is used as it
    is, with a warning that says how to apply the new value (`how`: what to do with the queue).
    """
    mismatch = await _declare_mismatch(channel, name, arguments)
    if mismatch is None:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    log.warning(
        "queue %s keeps the arguments it was first declared with (%s); the new settings apply "
        "to new queues. To apply them here: stop the workers, %s (rabbitmqctl delete_queue %s) "
        "and start again",
        name,
        mismatch,
        how,
        name,
    )
    return await channel.declare_queue(name, passive=True)


async def _declare_mismatch(
    channel: AbstractChannel, queue: str, arguments: FieldTable
) -> str | None:
    """The broker's reason when declaring `queue` with `arguments` fails as inequivalent, None
    when it succeeds; tried on a channel of its own, since the failure closes the channel."""
    underlay = await channel.get_underlay_channel()
    probe = await underlay.connection.channel()
    try:
        await probe.queue_declare(queue, durable=True, arguments=arguments)
    except ChannelPreconditionFailed as exc:
        return str(exc.args[0] if exc.args else exc)
    finally:
        if not probe.is_closed:
            await probe.close()
    return None


async def declare_rpc_queue(
    channel: AbstractChannel, extension: str, settings: Settings | None = None
) -> AbstractQueue:
    """Classic and durable on one node: RPC calls carry their own deadline (expiration), and a
    call that keeps killing workers is bounded by it, so the quorum queue's extra write latency
    buys nothing on the call path (see docs/architecture.md). On a cluster (several broker
    URLs), quorum: see `rpc_queue_arguments`."""
    return await _declare_keeping_arguments(
        channel,
        c.rpc_queue(extension),
        rpc_queue_arguments(settings),
        "delete it (calls waiting in it are answered by the callers' timeouts)",
    )
