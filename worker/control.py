"""Tell every running worker that the registry changed (fanout exchange `csext.control`), and
ask the fleet (status, sync: `ask_fleet`, answered by worker/fleet.py).

The store commits first and broadcasts second: the commit is the truth, the broadcast only
makes workers reload sooner (they also notice changes on disk by themselves). So the CLI calls
this best-effort, with a short timeout, and a broker that is down costs a warning, never the
change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from csext.worker.amqp import broker
from csext.worker.amqp.names import CONTROL_EXCHANGE, DIRECT_REPLY_TO
from csext.worker.settings import redact_url

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 3.0
"""Seconds the whole connect + declare + publish may take."""


def registry_changed_body(extension: str, change: str, commit: str | None) -> bytes:
    return orjson.dumps(
        {"event": "registry-changed", "extension": extension, "change": change, "commit": commit}
    )


async def publish_registry_changed(
    amqp_url: str,
    extension: str,
    change: str,
    commit: str | None = None,
    *,
    timeout: float = PUBLISH_TIMEOUT,
) -> None:
    """Publish one `registry-changed` broadcast; raises on failure (TimeoutError, AMQP errors)."""
    async with asyncio.timeout(timeout):
        connection = await broker.connect(amqp_url, timeout)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                CONTROL_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
            )
            message = aio_pika.Message(
                registry_changed_body(extension, change, commit),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            )
            await exchange.publish(message, routing_key="")
    log.debug("published registry-changed for %s (%s)", extension, change)


def notify_best_effort(
    amqp_url: str, extension: str, change: str, commit: str | None = None
) -> str | None:
    """Publish from synchronous code; returns a warning to show when it failed, else None."""
    try:
        asyncio.run(publish_registry_changed(amqp_url, extension, change, commit))
    except Exception as exc:  # any failure: the change stands, the workers poll the disk anyway
        log.debug("registry-changed broadcast failed", exc_info=True)
        reason = str(exc) or type(exc).__name__
        return (
            f"warning: could not tell workers to reload ({redact_url(amqp_url)}: {reason}); "
            "the change is committed and workers will notice it on disk"
        )
    return None


# --- asking the fleet (`csext fleet`) ---------------------------------------------------------

FLEET_WAIT = 2.0
"""Seconds `csext fleet` collects answers: every live worker answers within milliseconds."""


async def ask_fleet(
    amqp_url: str,
    request: Mapping[str, object],
    *,
    wait: float = FLEET_WAIT,
    expect: int | None = None,
) -> list[dict[str, object]]:
    """Broadcast `request` on csext.control and collect the workers' answers (direct reply-to).

    There is no list of workers anywhere: whoever answers within `wait` seconds is the fleet
    (stops early once `expect` answers came). A worker that does not answer in time is absent
    from the result, which `csext fleet` reports as such."""
    answers: list[dict[str, object]] = []
    enough = asyncio.Event()
    correlation_id = uuid.uuid4().hex

    async def on_answer(message: AbstractIncomingMessage) -> None:
        if message.correlation_id != correlation_id:
            return
        with contextlib.suppress(orjson.JSONDecodeError):
            answer = orjson.loads(message.body)
            if isinstance(answer, dict):
                answers.append(answer)
        if expect is not None and len(answers) >= expect:
            enough.set()

    connection = await broker.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=False)
        replies = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
        await replies.consume(on_answer, no_ack=True)
        exchange = await channel.declare_exchange(
            CONTROL_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        )
        message = aio_pika.Message(
            orjson.dumps(request),
            content_type="application/json",
            correlation_id=correlation_id,
            reply_to=DIRECT_REPLY_TO,
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
        )
        await exchange.publish(message, routing_key="")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(enough.wait(), wait)
    return answers
