"""Tell every running worker that the registry changed (fanout exchange `csext.control`).

The store commits first and broadcasts second: the commit is the truth, the broadcast only
makes workers reload sooner (they also notice changes on disk by themselves). So the CLI calls
this best-effort, with a short timeout, and a broker that is down costs a warning, never the
change.
"""

from __future__ import annotations

import asyncio
import logging

import aio_pika
import orjson

from csext.worker.amqp import broker
from csext.worker.amqp.names import CONTROL_EXCHANGE
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
